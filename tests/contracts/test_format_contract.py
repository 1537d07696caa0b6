"""The format contract: what every item file format promises, checked for each one.

Like zarr's store tests, one suite runs over every implementation. The formats are read
from the registry (`ramxchg.formats.suffixes` and `format_for`), so a new format gets
the whole suite by being registered (`ramxchg.formats.register`, done before the tests
are collected): there is no list of formats to extend here. What one format alone does
(numpy's reader, HDF5 groups and foreign files) stays in tests/test_channel.py and
tests/test_hdf5.py.

The suite drives the public API (`Channel(..., format=...)`, ``put``, ``create``,
``get``) and, where the property belongs to the format itself (``describe``,
``nbytes_for``), the format objects of the registry.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing as mp
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem, UnsupportedDtype
from ramxchg.formats import Format, format_for, suffixes
from tests.conftest import mapped_from, wait_for


def registered_formats() -> list[Format]:
    """Every format the registry knows, one per suffix."""
    found = [format_for(f"item{suffix}") for suffix in suffixes()]
    return [fmt for fmt in found if fmt is not None]


FORMATS = registered_formats()


def _structured(dtype: Any, rows: int, fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """A structured array built from zeros, so padding bytes are zero (comparable)."""
    array = np.zeros(rows, dtype)
    fill(array)
    return array


def _fill_aligned(array: np.ndarray) -> None:
    array["a"] = [1, 2, 3]
    array["b"] = [0.5, -1.5, 1e300]


def _fill_nested(array: np.ndarray) -> None:
    array["pos"]["x"] = [1, -2]
    array["pos"]["y"] = [0.25, 8.0]
    array["tag"] = [b"ok", b"no"]


WIDE = np.dtype([(f"field{i}", "<f8") for i in range(300)])

#: Every format stores these exactly. They are what `formats.base.check_dtype` sends
#: people to ("a numeric, bool, string or structured dtype"), in every byte order and
#: shape: 0-d, empty, several dimensions, several pages.
REQUIRED: dict[str, np.ndarray] = {
    "bool": np.array([[True, False, True]]),
    "int8": np.array([-128, 0, 127], np.int8),
    "uint16": np.arange(0, 65536, 4096, dtype=np.uint16),
    "int64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
    "uint64": np.array([0, 2**64 - 1], np.uint64),
    "float16": np.linspace(0, 1, 7, dtype=np.float16),
    "float32": np.array([np.inf, -0.0, 1.5], np.float32),
    "float64": np.array([np.nan, -np.inf, 1e-300]),
    "complex64": np.arange(6, dtype=np.complex64).reshape(2, 3) * (1 + 2j),
    "complex128": np.array([1e300 + 1j, -0.5j]),
    "big_endian_int": np.arange(24, dtype=">u4").reshape(2, 3, 4),
    "big_endian_float": np.array([1.5, -2.0, np.pi], ">f8"),
    "big_endian_complex": np.array([1 + 2j, -3j], ">c16"),
    "bytes": np.array([b"alpha", b"be", b""], "S5"),
    "structured": np.array(
        [(1.5, b"ab", [1, 2]), (-2.0, b"xyz", [3, 4])],
        dtype=[("x", "<f4"), ("name", "S3"), ("pair", ">i2", (2,))],
    ),
    "aligned_structured": _structured(
        np.dtype([("a", "u1"), ("b", "<f8")], align=True), 3, _fill_aligned
    ),
    "nested_structured": _structured(
        [("pos", [("x", "<i2"), ("y", "<f4")]), ("tag", "S2")], 2, _fill_nested
    ),
    "wide_structured": _structured(WIDE, 2, lambda a: a.__setitem__("field299", [1.0, 2.0])),
    "zero_d": np.array(42.5),
    "zero_d_int": np.array(-7, np.int16),
    "empty": np.zeros((0, 4), np.int32),
    "empty_trailing": np.zeros((3, 0)),
    "three_d": np.arange(60, dtype=np.int16).reshape(3, 4, 5),
    "several_pages": np.arange(1 << 18, dtype=np.float64),
}

#: A format may store these or refuse them with `UnsupportedDtype`, alike in ``put`` and
#: ``create``, and nothing else.
OPTIONAL: dict[str, np.ndarray] = {
    "unicode": np.array(["héllo", "wörld"], "U5"),
    "datetime64": np.array(["2020-01-01", "2021-06-30"], "datetime64[D]"),
    "timedelta64": np.array([5, -3], "timedelta64[s]"),
    "void": np.frombuffer(b"abcdefgh", "V4").copy(),
    "structured_unicode": np.array([("ab",)], [("a", "U2")]),
    "long_double": np.array([1.5, -2.25], np.longdouble),
    "very_wide_structured": np.zeros(
        2, [(f"a_rather_long_field_name_number_{i:04d}", "<f8") for i in range(1000)]
    ),
}

#: No format stores these: reading them back would unpickle.
OBJECTS: dict[str, np.ndarray] = {
    "object": np.array([1, "x", None], dtype=object),
    "nested_object": np.zeros(2, dtype=[("a", "i4"), ("o", object)]),
}


@pytest.fixture(params=FORMATS, ids=[fmt.name for fmt in FORMATS])
def fmt(request: pytest.FixtureRequest) -> Format:
    return request.param


@pytest.fixture
def ch(root: Path, fmt: Format) -> Channel:
    return Channel(f"contract-{fmt.name}", format=fmt.name)


def _assert_same(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Same dtype (byte order and field offsets included), shape and bytes."""
    assert got.dtype == expected.dtype, what
    assert got.dtype.str == expected.dtype.str, what
    assert got.shape == expected.shape, what
    assert got.tobytes() == expected.tobytes(), what


def _put_and_create(ch: Channel, original: np.ndarray, stem: str, **kwargs: Any) -> list[str]:
    """Publish ``original`` once with ``put`` and once with ``create`` filled in place."""
    ch.put(original, f"put-{stem}", **kwargs)
    with ch.create(original.shape, original.dtype, name=f"created-{stem}", **kwargs) as array:
        array[...] = original
    return [f"put-{stem}", f"created-{stem}"]


def _check_round_trip(ch: Channel, name: str, original: np.ndarray, attrs: Any) -> None:
    with ch.get(name) as item:
        array = item.array
        _assert_same(array, original, name)
        assert (item.shape, item.dtype, item.nbytes) == (
            original.shape,
            original.dtype,
            original.nbytes,
        )
        assert item.attrs == attrs
        assert not array.flags.writeable
        assert item.zero_copy == {"data": True}, "a format maps the arrays it wrote itself"
        if original.nbytes:
            assert isinstance(mapped_from(array), mmap.mmap)


# -- dtypes and shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(REQUIRED))
def test_every_required_dtype_and_shape_round_trips(ch: Channel, case: str, no_leaks: None) -> None:
    original = REQUIRED[case]
    attrs = {"case": case, "nested": [1, {"a": None}]}
    for name in _put_and_create(ch, original, case, attrs=attrs):
        _check_round_trip(ch, name, original, attrs)


@pytest.mark.parametrize("case", sorted(OPTIONAL))
def test_other_dtypes_round_trip_or_are_refused_alike(
    ch: Channel, case: str, no_leaks: None
) -> None:
    original = OPTIONAL[case]
    try:
        names = _put_and_create(ch, original, case)
    except UnsupportedDtype:
        assert ch.names() == [], "a refused dtype published something"
        with pytest.raises(UnsupportedDtype), ch.create(original.shape, original.dtype):
            pass  # create refuses what put refused
        assert ch.names() == []
        return
    for name in names:
        _check_round_trip(ch, name, original, {})


@pytest.mark.parametrize("case", sorted(OBJECTS))
def test_object_dtypes_are_refused_before_writing(ch: Channel, case: str, no_leaks: None) -> None:
    original = OBJECTS[case]
    with pytest.raises(UnsupportedDtype) as info:
        ch.put(original, "o")
    assert isinstance(info.value, TypeError)
    with pytest.raises(UnsupportedDtype), ch.create(3, original.dtype, name="o"):
        pass
    assert ch.names() == []


def test_non_contiguous_inputs_round_trip(ch: Channel) -> None:
    base = np.arange(60, dtype=np.int64).reshape(6, 10)
    inputs = {"transposed": base.T, "strided": base[::2, ::3], "fortran": np.asfortranarray(base)}
    for name, original in inputs.items():
        np.testing.assert_array_equal(ch.put(original, name).array, original)
        assert ch.get(name).shape == original.shape


# -- write == allocate, describe == open ----------------------------------------------------


def test_put_and_create_write_the_same_bytes(ch: Channel, fmt: Format) -> None:
    """Fails on 28845df for hdf5: each dataset recorded the time it was written."""
    for case, original in REQUIRED.items():
        ch.put(original, f"put-{case}")
    start = int(time.time())  # a format that stores when it wrote would now differ
    wait_for(lambda: int(time.time()) > start, what="the clock to pass a whole second")
    for case, original in REQUIRED.items():
        with ch.create(original.shape, original.dtype, name=f"created-{case}") as array:
            array[...] = original
    for case in REQUIRED:
        written, allocated = ch.get(f"put-{case}"), ch.get(f"created-{case}")
        assert written.path.read_bytes() == allocated.path.read_bytes(), case
        _assert_same(allocated.array, written.array, case)


def test_describe_says_what_open_maps(ch: Channel, fmt: Format) -> None:
    for case, original in REQUIRED.items():
        path = ch.put(original, case).path
        described = fmt.describe(path)
        opened = fmt.open(path)
        try:
            mapped = {key: (a.shape, a.dtype) for key, a in opened.arrays.items()}
        finally:
            opened.release()
        assert described == mapped == {"data": (original.shape, original.dtype)}, case
        assert ch.get(case).layouts() == described, case


def test_describe_open_reads_the_open_file_not_its_path(ch: Channel, fmt: Format) -> None:
    """A producer checks what it wrote through its own descriptor: whatever the path
    names by then (here, a garbage file in its place) is not read."""
    for case, original in REQUIRED.items():
        path = ch.put(original, case).path
        described = fmt.describe(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.rename(path, path.with_name(f".{case}.away"))
            path.write_bytes(b"not an item")
            assert fmt.describe_open(fd, os.fstat(fd).st_size, path) == described, case
        finally:
            os.close(fd)
        with pytest.raises(CorruptItem, match=str(path)):
            fmt.describe(path)
        path.unlink()


def test_nbytes_for_covers_the_file(ch: Channel, fmt: Format) -> None:
    """The free-space checks rely on it; a recycled file is reused only at exactly that
    size. Fails on 28845df for hdf5: wide structured dtypes were under-estimated."""
    for case, original in REQUIRED.items():
        needed = fmt.nbytes_for({"data": (original.shape, original.dtype)})
        size = os.path.getsize(ch.put(original, case).path)
        assert needed >= size, case
        if fmt.recyclable:
            assert needed == size, case


# -- copy-on-write, views, a second process -------------------------------------------------


def test_delivered_arrays_are_read_only_views_of_the_file(ch: Channel) -> None:
    item = ch.put(np.zeros(4096, dtype=np.uint8), "z")
    array = item.array
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 1
    mapping = mapped_from(array)
    assert isinstance(mapping, mmap.mmap)
    offset = array.ctypes.data - np.frombuffer(mapping, np.uint8).ctypes.data
    # a write through another mapping of the file shows: same pages, no copy
    with open(item.path, "r+b") as raw, mmap.mmap(raw.fileno(), 0) as writable:
        writable[offset + 4095] = 7
    assert array[-1] == 7
    item.close()


def test_copy_on_write_never_reaches_the_file_or_other_readers(ch: Channel) -> None:
    original = np.arange(1000.0)
    item = ch.put(original, "cow")
    before = item.path.read_bytes()
    other_reader = ch.get("cow").array
    private = item.open("c")
    assert private.flags.writeable
    private[:] = -1
    assert (private == -1).all()
    np.testing.assert_array_equal(other_reader, original)
    np.testing.assert_array_equal(ch.get("cow").open("c"), original)
    assert item.path.read_bytes() == before
    with pytest.raises(ValueError, match="mode"):
        item.open("w")


def _read_in_child(folder: str, names: list[str], queue: mp.Queue) -> None:  # type: ignore[type-arg]
    ch = Channel(folder)
    seen = {}
    for name in names:
        with ch.get(name) as item:
            array = item.array
            seen[name] = (
                array.dtype,
                array.shape,
                hashlib.sha256(array.tobytes()).hexdigest(),
                item.attrs,
                item.seq,
                item.zero_copy,
                type(mapped_from(array)).__name__,
            )
    queue.put(seen)


def test_a_second_process_reads_what_the_first_wrote(ch: Channel) -> None:
    cases = ("several_pages", "structured", "big_endian_complex", "zero_d", "empty")
    expected = {}
    for case in cases:
        original = REQUIRED[case]
        for name in _put_and_create(ch, original, case, attrs={"case": case}):
            expected[name] = (original, {"case": case}, ch.get(name).seq)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(str(ch.path), list(expected), queue))
    child.start()
    try:
        seen = queue.get(timeout=60)
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0
    for name, (original, attrs, seq) in expected.items():
        dtype, shape, digest, got_attrs, got_seq, zero_copy, base = seen[name]
        assert (dtype, dtype.str, shape) == (original.dtype, original.dtype.str, original.shape)
        assert digest == hashlib.sha256(original.tobytes()).hexdigest(), name
        assert (got_attrs, got_seq, zero_copy) == (attrs, seq, {"data": True}), name
        if original.nbytes:
            assert base == "mmap", name


# -- malformed files ------------------------------------------------------------------------

GOOD = np.arange(1000, dtype=np.float64)


def _garbage(size: int) -> bytes:
    return random.Random(size).randbytes(size)


#: Ways a file of `GOOD` (its bytes ``whole``) goes bad; the data is its last bytes.
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda whole: b"",
    "first_byte_only": lambda whole: whole[:1],
    "cut_in_the_metadata": lambda whole: whole[: (len(whole) - GOOD.nbytes) // 2],
    "cut_before_the_data": lambda whole: whole[: len(whole) - GOOD.nbytes],
    "cut_in_the_data": lambda whole: whole[: len(whole) - GOOD.nbytes // 2],
    "one_byte_short": lambda whole: whole[:-1],
    "garbage": lambda whole: _garbage(len(whole)),
    "garbage_header": lambda whole: _garbage(64) + whole[64:],
    "zeros": lambda whole: bytes(len(whole)),
}


def _assert_corrupt(ch: Channel, name: str, path: Path) -> None:
    """Reading the metadata and mapping the data both raise `CorruptItem` naming ``path``."""
    for read in (lambda item: item.layouts(), lambda item: item.arrays):
        with pytest.raises(CorruptItem) as info:
            read(ch.get(name))
        assert info.value.path == str(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_malformed_files_raise_corrupt_item_naming_the_file(
    ch: Channel, fmt: Format, kind: str, no_leaks: None
) -> None:
    whole = ch.put(GOOD, "good").path.read_bytes()
    path = ch.path / f"bad{fmt.suffix}"
    path.write_bytes(CORRUPTIONS[kind](whole))
    _assert_corrupt(ch, "bad", path)


@pytest.mark.parametrize(
    ("fmt", "other"),
    [(fmt, other) for fmt in FORMATS for other in FORMATS if other is not fmt],
    ids=lambda fmt: fmt.name,
)
def test_a_file_of_another_format_is_corrupt(
    root: Path, ch: Channel, fmt: Format, other: Format
) -> None:
    written = Channel(f"other-{other.name}", format=other.name).put(GOOD, "good")
    path = ch.path / f"foreign{fmt.suffix}"
    shutil.copyfile(written.path, path)
    _assert_corrupt(ch, "foreign", path)


def test_truncating_a_published_item_is_detected(ch: Channel) -> None:
    item = ch.put(GOOD, "cut")
    listed = ch.get("cut")  # found before the file was cut, opened after
    size = item.path.stat().st_size
    for cut in (size - 1, size - GOOD.nbytes // 2):
        os.truncate(item.path, cut)
        with pytest.raises(CorruptItem) as info:
            listed.arrays  # noqa: B018
        assert info.value.path == str(item.path)
        _assert_corrupt(ch, "cut", item.path)


def test_damaged_metadata_gives_the_data_or_corrupt_item(ch: Channel, fmt: Format) -> None:
    """Random byte flips before the data never raise anything but `CorruptItem`."""
    whole = ch.put(GOOD, "good", attrs={"l": [1]}).path.read_bytes()
    metadata = len(whole) - GOOD.nbytes
    rng = random.Random(1)
    refused = []
    for case in range(300):
        damaged = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(metadata)] = rng.randrange(256)
        path = ch.path / f"d{case}{fmt.suffix}"
        path.write_bytes(damaged)
        try:
            with ch.get(f"d{case}") as item:
                item.layouts(), item.arrays, item.attrs
        except CorruptItem as exc:
            refused.append((exc.path, str(path)))
        path.unlink()
    assert refused
    assert all(got == expected for got, expected in refused)


def test_links_fifos_and_folders_are_not_items(ch: Channel, fmt: Format, tmp_path: Path) -> None:
    outside = tmp_path / f"secret{fmt.suffix}"
    shutil.copyfile(ch.put(GOOD, "good").path, outside)
    os.utime(outside, ns=(0, os.stat(outside).st_mtime_ns))  # relatime: a read sets atime
    (ch.path / f"link{fmt.suffix}").symlink_to(outside)
    os.mkfifo(ch.path / f"fifo{fmt.suffix}")
    (ch.path / f"folder{fmt.suffix}").mkdir()
    assert ch.names() == ["good"]
    for name in ("link", "fifo", "folder"):
        for read in (lambda item: item.layouts(), lambda item: item.arrays):
            with pytest.raises(CorruptItem, match="not a regular file"):
                read(ch.get(name))
    assert os.stat(outside).st_atime_ns == 0, "the link's target was read"
