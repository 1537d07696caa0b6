"""HDF5 items: what only HDF5 does (named datasets and groups, attributes, other tools
reading our files, files written by other tools, links out of the file). What every format
does is tests/contracts/test_format_contract.py.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from ramxchg import Channel, CorruptItem, InvalidName, UnsupportedDtype
from ramxchg.formats import format_for, get_format
from ramxchg.formats.hdf5 import ALIGN_THRESHOLD, ALIGNMENT, JSON_ATTRS
from tests.conftest import mapped_from

needs_h5dump = pytest.mark.skipif(shutil.which("h5dump") is None, reason="needs h5dump")

ROUND_TRIPS: dict[str, np.ndarray] = {
    "bool": np.array([[True, False, True]]),
    "complex64": np.arange(6, dtype=np.complex64).reshape(2, 3) * (1 + 2j),
    "complex128": np.array([1e300 + 1j, -0.5j]),
    "fixed_strings": np.array([b"alpha", b"be", b""], dtype="S5"),
    "structured": np.array(
        [(1.5, b"ab", [1, 2]), (-2.0, b"xyz", [3, 4])],
        dtype=[("x", "<f4"), ("name", "S3"), ("pair", "<i2", (2,))],
    ),
    "aligned_structured": np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "<f8")], align=True)),
    "zero_d": np.array(42.5),
    "empty": np.zeros((0, 4), dtype=np.int32),
    "big_endian": np.arange(5, dtype=">i4"),
    "float16": np.linspace(0, 1, 7, dtype=np.float16),
}


@pytest.fixture
def ch(root: Path) -> Channel:
    return Channel("h5", format="hdf5")


@pytest.mark.parametrize("key", sorted(ROUND_TRIPS))
def test_h5py_reads_every_dtype_we_write(ch: Channel, key: str) -> None:
    original = ROUND_TRIPS[key]
    item = ch.put({key: original})
    with h5py.File(item.path, "r") as h5file:
        assert h5file[key].dtype == original.dtype
        np.testing.assert_array_equal(h5file[key][()], original)


def test_one_array_is_dataset_data_and_channel_default_is_hdf5(ch: Channel) -> None:
    item = ch.put(np.arange(12.0).reshape(3, 4))
    assert item.path.suffix == ".h5"
    assert item.format == "hdf5"
    assert Channel("h5").config.format == "hdf5"
    np.testing.assert_array_equal(item.array, np.arange(12.0).reshape(3, 4))
    assert isinstance(mapped_from(item.array), mmap.mmap)
    assert format_for(item.path) is get_format("hdf5")
    with h5py.File(item.path, "r") as h5file:
        assert list(h5file) == ["data"]


def test_non_contiguous_inputs_are_stored_in_c_order(ch: Channel) -> None:
    base = np.arange(60, dtype=np.int64).reshape(6, 10)
    arrays = {"transposed": base.T, "strided": base[::2, ::3], "fortran": np.asfortranarray(base)}
    item = ch.put(arrays)
    for key, original in arrays.items():
        np.testing.assert_array_equal(item.arrays[key], original)
    assert all(item.zero_copy.values())


def test_slash_names_create_groups(ch: Channel) -> None:
    item = ch.put({"raw/image": np.ones((4, 4), "u2"), "raw/meta/t": np.arange(3), "x": 1.0})
    assert sorted(item.arrays) == ["raw/image", "raw/meta/t", "x"]
    with h5py.File(item.path, "r") as h5file:
        assert isinstance(h5file["raw"], h5py.Group)
        assert isinstance(h5file["raw/meta"], h5py.Group)
        np.testing.assert_array_equal(h5file["raw/meta/t"][()], np.arange(3))


@pytest.mark.parametrize(
    "names", [[""], ["/a"], ["a/"], ["a//b"], ["a/./b"], ["a/../b"], ["a", "a/b"]]
)
def test_bad_dataset_names_are_refused(ch: Channel, names: list[str], no_leaks: None) -> None:
    with pytest.raises(InvalidName):
        ch.put({name: np.zeros(2) for name in names})
    assert ch.names() == []


def test_attrs_are_root_attributes_and_json_only_when_needed(ch: Channel) -> None:
    attrs = {
        "exposure": 0.01,
        "frames": 3,
        "ok": True,
        "camera": "left",
        "nothing": None,
        "roi": [1, 2, 3, 4],
        "nested": {"a": [1, None, "x"]},
        "huge": 1 << 70,
    }
    item = ch.put(np.zeros(3), attrs=attrs)
    assert item.attrs == attrs
    with h5py.File(item.path, "r") as h5file:
        stored = h5file.attrs
        assert stored["exposure"].dtype == np.float64
        assert stored["exposure"] == 0.01
        assert stored["frames"] == 3
        assert stored["ok"] == np.True_
        assert stored["camera"] == "left"
        assert sorted(json.loads(stored[JSON_ATTRS])) == ["huge", "nested", "nothing", "roi"]
        assert json.loads(stored["nested"]) == {"a": [1, None, "x"]}
    # the file alone (no sidecar) gives the same attrs
    dropped = ch.path / "copy.h5"
    shutil.copyfile(item.path, dropped)
    assert ch.get("copy").sidecar is None
    assert ch.get("copy").attrs == attrs


def test_reserved_attr_key_is_refused(ch: Channel, no_leaks: None) -> None:
    with pytest.raises(ValueError, match="reserved"):
        ch.put(np.zeros(3), attrs={JSON_ATTRS: 1})


@pytest.mark.parametrize(
    "dtype",
    [
        h5py.string_dtype(),
        h5py.vlen_dtype(np.int32),
        np.dtype("U5"),
        np.dtype("M8[s]"),
    ],
    ids=["vlen-string", "vlen-int", "unicode", "datetime"],
)
def test_unstorable_dtypes_are_refused(ch: Channel, dtype: np.dtype, no_leaks: None) -> None:
    with pytest.raises(UnsupportedDtype):
        ch.put({"x": np.zeros(2, dtype=dtype)})
    with pytest.raises(UnsupportedDtype), ch.create({"x": ((2,), dtype)}):
        pass
    assert ch.names() == []


# -- zero-copy producer ---------------------------------------------------------------------


def test_create_views_are_the_datasets(ch: Channel, no_leaks: None) -> None:
    layout = {"image": ((256, 512), "uint16"), "mask": ((256, 512), "bool"), "t": ((), "f8")}
    with ch.create(layout, name="frame") as arrays:
        assert set(arrays) == {"image", "mask", "t"}
        arrays["image"][:] = np.arange(512, dtype=np.uint16)
        arrays["mask"][::2] = True
        arrays["t"][()] = 1.25
    item = ch.get("frame")
    with h5py.File(item.path, "r") as h5file:
        np.testing.assert_array_equal(h5file["image"][0], np.arange(512))
        assert h5file["mask"][()].sum() == 128 * 512
        assert h5file["t"][()] == 1.25
        dcpl = h5file["image"].id.get_create_plist()
        assert dcpl.get_layout() == h5py.h5d.CONTIGUOUS
        assert dcpl.get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY
        assert dcpl.get_fill_time() == h5py.h5d.FILL_TIME_NEVER
    assert all(item.zero_copy.values())


@needs_h5dump
def test_h5dump_reads_what_create_wrote(ch: Channel) -> None:
    with ch.create({"grp/image": ((4, 3), "int32")}, name="dumped", attrs={"who": "me"}) as a:
        a["grp/image"][:] = np.arange(12, dtype=np.int32).reshape(4, 3) * 7
    path = ch.get("dumped").path
    result = subprocess.run(
        ["h5dump", "-d", "/grp/image", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    values = [int(v) for v in re.findall(r"-?\d+", result.stdout.split("DATA {", 1)[1])]
    # each row is printed as "(row,0): a, b, c"
    assert values == [
        n for row in range(4) for n in (row, 0, *(7 * (3 * row + c) for c in range(3)))
    ]
    header = subprocess.run(
        ["h5dump", "-H", "-A", str(path)], capture_output=True, text=True, check=False
    )
    assert header.returncode == 0, header.stderr
    assert 'ATTRIBUTE "who"' in header.stdout


def test_large_datasets_are_aligned_and_small_items_stay_small(ch: Channel) -> None:
    big = ch.put({"small": np.zeros(10), "big": np.zeros(ALIGN_THRESHOLD, np.uint8)})
    with h5py.File(big.path, "r") as h5file:
        assert h5file["big"].id.get_offset() % ALIGNMENT == 0
    small = ch.put(np.zeros(100))
    assert os.path.getsize(small.path) < 800 + 8192


# -- zero-copy consumer ---------------------------------------------------------------------


def _read_held(path: str, queue: mp.Queue, go: mp.Event) -> None:  # type: ignore[type-arg]
    os.environ["HDF5_USE_FILE_LOCKING"] = "TRUE"
    item = Channel(Path(path).parent).get(Path(path).stem)
    total = float(item.array.sum())
    queue.put(total)
    go.wait(60)  # keep the file open and mapped while the other reader starts


def test_consumers_ignore_hdf5_file_locks(ch: Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    item = ch.put(np.ones(1000), name="busy")
    # Someone (an HDF5 writer, say) holds an exclusive lock on the published file.
    holder = os.open(item.path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "TRUE")
    ctx = mp.get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    readers = [ctx.Process(target=_read_held, args=(str(item.path), queue, go)) for _ in range(2)]
    try:
        for reader in readers:
            reader.start()
        assert [queue.get(timeout=60), queue.get(timeout=60)] == [1000.0, 1000.0]
        np.testing.assert_array_equal(ch.get("busy").array, np.ones(1000))
    finally:
        go.set()
        for reader in readers:
            reader.join(timeout=60)
        os.close(holder)
    assert [reader.exitcode for reader in readers] == [0, 0]


# -- files written by other tools -----------------------------------------------------------


def _drop(ch: Channel, name: str, build: Callable[[h5py.File], None], tmp_path: Path) -> Path:
    """Write a file with h5py outside the channel, then copy it in as ``<name>.h5``."""
    outside = tmp_path / f"{name}.h5"
    with h5py.File(outside, "w") as h5file:
        build(h5file)
    target = ch.path / f"{name}.h5"
    shutil.copyfile(outside, target)
    return target


def test_chunked_gzip_file_dropped_in_is_read_through_h5py(ch: Channel, tmp_path: Path) -> None:
    data = np.arange(100_000, dtype=np.float32).reshape(100, 1000)

    def build(h5file: h5py.File) -> None:
        h5file.create_dataset("zipped", data=data, chunks=(10, 100), compression="gzip")
        h5file.create_dataset("tiny", data=np.arange(4), compression=None, chunks=None)
        h5file.create_dataset("compact", data=np.arange(3), dcpl=_compact_plist())
        h5file["zipped"].attrs["units"] = "K"
        h5file["zipped"].attrs["scale"] = np.array([1.0, 2.0])
        h5file["alias"] = h5py.SoftLink("/tiny")
        h5file.attrs["origin"] = b"matlab"

    _drop(ch, "foreign", build, tmp_path)
    item = ch.get("foreign")
    assert item.sidecar is None
    np.testing.assert_array_equal(item.arrays["zipped"], data)
    np.testing.assert_array_equal(item.arrays["compact"], np.arange(3))
    assert item.zero_copy == {"compact": False, "tiny": True, "zipped": False}
    assert not item.arrays["zipped"].flags.writeable
    assert item.attrs == {"origin": "matlab"}
    assert item.dataset_attrs["zipped"]["units"] == "K"
    np.testing.assert_array_equal(item.dataset_attrs["zipped"]["scale"], [1.0, 2.0])


def _compact_plist() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    return dcpl


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the channel whose atime shows whether anyone read it."""
    path = tmp_path / "secret.h5"
    with h5py.File(path, "w") as h5file:
        h5file["x"] = np.full(16, 7777, dtype=np.int64)
    stamp = os.stat(path)
    os.utime(path, ns=(0, stamp.st_mtime_ns))  # relatime: any read now updates atime
    return path


def _never_read(path: Path) -> bool:
    return os.stat(path).st_atime_ns == 0


def test_read_detector_works(outside: Path) -> None:
    with h5py.File(outside, "r") as h5file:
        h5file["x"][()]
    assert not _never_read(outside)


@pytest.mark.parametrize("kind", ["external_link", "external_storage", "virtual"])
def test_links_out_of_the_file_are_refused_unread(
    ch: Channel, tmp_path: Path, outside: Path, kind: str
) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.full(16, 7777, dtype=np.int64).tobytes())
    os.utime(raw, ns=(0, os.stat(raw).st_mtime_ns))

    def build(h5file: h5py.File) -> None:
        h5file["inside"] = np.arange(3)
        if kind == "external_link":
            h5file["x"] = h5py.ExternalLink(str(outside), "/x")
        elif kind == "external_storage":
            h5file.create_dataset("x", shape=(16,), dtype="<i8", external=[(str(raw), 0, 128)])
        else:
            layout = h5py.VirtualLayout(shape=(16,), dtype="<i8")
            layout[:] = h5py.VirtualSource(str(outside), "x", shape=(16,))
            h5file.create_virtual_dataset("x", layout)

    path = _drop(ch, f"hostile_{kind}", build, tmp_path)
    item = ch.get(path.stem)
    with pytest.raises(CorruptItem, match="never") as info:
        item.arrays  # noqa: B018
    assert info.value.path == str(path)
    with pytest.raises(CorruptItem):
        item.shape  # noqa: B018
    assert _never_read(outside)
    assert _never_read(raw)


def test_describe_reads_metadata_only(ch: Channel) -> None:
    item = ch.put({"a": np.zeros((3, 4), "u2"), "g/b": np.zeros(5, "c8")})
    assert get_format("hdf5").describe(item.path) == {
        "a": ((3, 4), np.dtype("u2")),
        "g/b": ((5,), np.dtype("c8")),
    }
    assert item.nbytes == 3 * 4 * 2 + 5 * 8
    with pytest.raises(ValueError, match="holds 2 arrays"):
        item.shape  # noqa: B018


def test_damaged_metadata_gives_data_or_corrupt_item(ch: Channel) -> None:
    """Random byte flips in groups, datasets and JSON attributes never raise anything but
    `CorruptItem` (the format contract does the same for files of one array)."""
    good = ch.put({"a": np.arange(100.0), "g/b": np.ones((3, 3), "u2")}, attrs={"l": [1]})
    whole = good.path.read_bytes()
    rng = random.Random(1)
    refused = []
    for case in range(300):
        damaged = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(2100)] = rng.randrange(256)
        (ch.path / f"d{case}.h5").write_bytes(damaged)
        try:
            item = ch.get(f"d{case}")
            item.arrays, item.attrs, item.dataset_attrs  # noqa: B018
        except CorruptItem as exc:
            refused.append((exc.path, str(ch.path / f"d{case}.h5")))
    assert refused
    assert all(got == expected for got, expected in refused)
