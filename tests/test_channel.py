"""The core channel, with .npy items: publish, read, names, settings, errors, and what
only .npy does. What every format does is tests/contracts/test_format_contract.py.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import ramxchg
from ramxchg import (
    Channel,
    CorruptItem,
    InvalidName,
    InvalidSetting,
    ItemExists,
    ItemNotFound,
    RamxchgError,
)
from ramxchg.formats.npy import MID_PAGE, MID_PAGE_BYTES
from tests.conftest import tmp_files, warned_if_not_ram


def test_an_item_is_a_plain_npy_file_named_after_it(root: Path, no_leaks: None) -> None:
    ch = Channel("cam")
    data = np.random.default_rng(0).random((64, 32))
    item = ch.put(data, "frame", attrs={"exposure": 0.5})
    assert item.path == root / "cam" / "frame.npy"
    with ch.get("frame") as got:
        assert (got.name, got.seq, got.format) == ("frame", 1, "npy")
    np.testing.assert_array_equal(np.load(root / "cam" / "frame.npy"), data)  # numpy reads it
    assert tmp_files(ch) == []


def test_auto_names_are_zero_padded_sequence_numbers(root: Path) -> None:
    ch = Channel("seq")
    names = [ch.put(np.array([i])).name for i in range(12)]
    assert names == sorted(names)
    assert names[0] == "000000000001"
    assert [it.seq for it in ch.items()] == list(range(1, 13))
    assert ch.names() == names
    assert list(ch) == names
    assert len(ch) == 12
    latest = ch.latest()
    assert latest is not None
    assert latest.name == names[-1]


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_create_works_where_the_kernel_refuses_huge_page_advice(
    root: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """A kernel built without transparent huge pages answers MADV_HUGEPAGE with EINVAL
    (here: an advice no kernel knows). That is advice, not a need: create goes on."""
    import mmap

    monkeypatch.setattr(mmap, "MADV_HUGEPAGE", 0x7FFF, raising=False)
    ch = Channel("advice", root=root, format=fmt)
    shape = (4 << 20,)  # 4 MiB: huge pages are asked for from 2 MiB
    layout = shape if fmt == "npy" else {"data": (shape, np.uint8)}
    with ch.create(layout, np.uint8, name="x") as made:
        (made if fmt == "npy" else made["data"])[:] = 5
    assert int(ch.get("x").arrays["data"].sum()) == 5 * (4 << 20)


def test_create_fills_in_place_and_publishes_on_exit(root: Path, no_leaks: None) -> None:
    ch = Channel("create")
    with ch.create((128, 64), "uint16", name="img", attrs={"n": 1}) as frame:
        assert frame.flags.writeable
        assert "img" not in ch  # not visible before the block ends
        frame[:] = 3
        del frame
    item = ch.get("img")
    assert item.attrs == {"n": 1}
    assert int(item.array.sum()) == 3 * 128 * 64
    item.close()
    assert tmp_files(ch) == []


def test_exception_inside_create_publishes_nothing(root: Path, no_leaks: None) -> None:
    ch = Channel("create-fail")

    def fill_then_fail() -> None:
        with ch.create(100, "f8", name="x") as frame:
            frame[:] = 1
            raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        fill_then_fail()
    assert "x" not in ch
    assert len(ch) == 0
    assert tmp_files(ch) == []
    assert not (ch.path / ".ramxchg" / "meta" / "x.json").exists()


def test_published_items_are_immutable(root: Path) -> None:
    ch = Channel("immutable")
    ch.put(np.arange(3), "a")
    with pytest.raises(ItemExists) as info:
        ch.put(np.arange(5), "a")
    assert info.value.name == "a"
    assert isinstance(info.value, FileExistsError)
    with pytest.raises(ItemExists), ch.create(3, "i8", name="a"):
        pass
    np.testing.assert_array_equal(ch.get("a").array, np.arange(3))
    assert tmp_files(ch) == []


def test_a_file_appearing_under_the_name_during_publish_is_not_replaced(root: Path) -> None:
    ch = Channel("race")
    foreign = np.arange(4)
    with pytest.raises(ItemExists), ch.create(3, "i8", name="a") as frame:  # noqa: PT012
        frame[:] = 9
        np.save(ch.path / "a.npy", foreign)  # another program wins the name meanwhile
        del frame
    np.testing.assert_array_equal(np.load(ch.path / "a.npy"), foreign)
    assert tmp_files(ch) == []


@pytest.mark.parametrize(
    "array",
    [
        np.array(5.5),
        np.zeros((0, 3)),
        np.array([True, False, True]),
        np.array([1 + 2j, -3j], dtype=np.complex64),
        np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
        np.array([b"ab", b"cde"], dtype="S3"),
        np.array(["héllo", "wörld"], dtype="U5"),
        np.zeros(3, dtype=[("a", "<i4"), ("b", ">f8", (2,))]),
        np.arange(24, dtype=">u4").reshape(2, 3, 4),
    ],
    ids=lambda a: str(a.dtype) + str(a.shape),
)
def test_numpy_reads_every_dtype_we_write(root: Path, array: np.ndarray) -> None:
    item = Channel("dtypes").put(array)
    loaded = np.load(item.path)
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize("how", ["put", "create"])
def test_large_items_start_their_data_mid_page_and_small_ones_stay_compact(
    root: Path, how: str
) -> None:
    """Data of 1 MiB and up starts 2048 bytes into a page (a copy between it and a buffer
    starting at or 16 bytes into a page never hits 4K aliasing); np.load still reads it."""
    ch = Channel("pages")
    large = np.resize(np.arange(251, dtype=np.uint8), (2, MID_PAGE_BYTES // 2))
    if how == "put":
        item = ch.put(large)
    else:
        with ch.create(large.shape, large.dtype) as target:
            target[...] = large
        item = ch.get(ch.names()[-1])
    assert item.array.ctypes.data % 4096 == MID_PAGE
    with open(item.path, "rb") as file:
        assert np.lib.format.read_magic(file) == (1, 0)
        np.lib.format.read_array_header_1_0(file)  # numpy's own limits accept the header
        assert file.tell() == MID_PAGE
    np.testing.assert_array_equal(np.load(item.path), large)
    np.testing.assert_array_equal(np.load(item.path, mmap_mode="r"), large)
    small = ch.put(np.arange(MID_PAGE_BYTES // 8 - 1, dtype=np.uint8))
    assert os.path.getsize(small.path) - small.array.nbytes == 128


def test_fortran_order_kept_and_strided_written_contiguously(root: Path) -> None:
    ch = Channel("order")
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    got = ch.put(fortran).array
    assert got.flags.f_contiguous
    assert not got.flags.c_contiguous
    np.testing.assert_array_equal(got, fortran)
    strided = np.arange(100)[::7]
    got = ch.put(strided).array
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, strided)


def test_array_likes_are_accepted(root: Path) -> None:
    ch = Channel("likes")
    np.testing.assert_array_equal(ch.put([[1, 2], [3, 4]]).array, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("attrs", "error"),
    [({"f": object()}, TypeError), ({"x": float("nan")}, ValueError), ([1, 2], TypeError)],
)
def test_non_json_attrs_are_refused_before_writing(
    root: Path, attrs: object, error: type[Exception]
) -> None:
    ch = Channel("attrs")
    with pytest.raises(error):
        ch.put(np.zeros(3), "a", attrs=attrs)  # type: ignore[arg-type]
    assert "a" not in ch
    assert tmp_files(ch) == []


BAD_NAMES = [
    "",
    "x" * 201,
    "../escape",
    "/abs/path",
    "a/b",
    "a\\b",
    "nul\x00byte",
    ".hidden",
    "trailing.",
    "CON",
    "nul",
    "com1",
    "Lpt9.npy",
    "aux.txt",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth "full"
    "a b",
    "caf\u00e9",
    "dot\u2024leader",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_raise_before_touching_the_disk(root: Path, name: str) -> None:
    ch = Channel("names")
    before = sorted(p.name for p in ch.path.rglob("*"))
    for call in (
        lambda: ch.put(np.zeros(1), name),
        lambda: ch.get(name),
        lambda: ch.delete(name),
    ):
        with pytest.raises(InvalidName):
            call()
    with pytest.raises(InvalidName), ch.create(1, "u1", name=name):
        pass
    assert name not in ch
    assert sorted(p.name for p in ch.path.rglob("*")) == before
    assert sorted(p.name for p in root.iterdir()) == ["names"]


def test_good_names_are_accepted(root: Path) -> None:
    ch = Channel("names-ok")
    for name in ["a", "A-b_c.d", "x" * 200, "frame.000001", "console", "null"]:
        assert ch.put(np.zeros(1), name).name == name


def test_missing_items_raise_item_not_found(root: Path) -> None:
    ch = Channel("missing")
    with pytest.raises(ItemNotFound) as info:
        ch.get("nope")
    assert isinstance(info.value, KeyError)
    assert "nope" in str(info.value)
    with pytest.raises(ItemNotFound):
        ch.delete("nope")
    assert ch.latest() is None


def test_delete_keeps_existing_mappings_valid(root: Path) -> None:
    ch = Channel("delete")
    item = ch.put(np.arange(1000), "a")
    array = item.array
    ch.delete("a")
    assert "a" not in ch
    assert not (ch.path / ".ramxchg" / "meta" / "a.json").exists()
    assert int(array.sum()) == sum(range(1000))


def test_hidden_and_foreign_files_are_ignored(root: Path) -> None:
    ch = Channel("foreign")
    (ch.path / ".partial.npy").write_bytes(b"junk")
    (ch.path / "notes.txt").write_text("hello")
    np.save(ch.path / "legacy.npy", np.arange(3))
    assert ch.names() == ["legacy"]
    legacy = ch.get("legacy")
    assert legacy.seq is None
    assert legacy.attrs == {}
    np.testing.assert_array_equal(legacy.array, np.arange(3))


def _write_header(path: Path, header: bytes, payload: bytes = b"") -> None:
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload)


CORRUPT_FILES = {
    "header-length-past-end": lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\xff\xff{'descr'"),
    "not-a-dict": lambda p: _write_header(p, b"[1, 2, 3]\n"),
    "code-in-header": lambda p: _write_header(p, b"__import__('os').system('true')\n"),
    "negative-shape": lambda p: _write_header(
        p, b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }\n"
    ),
    "bad-descr": lambda p: _write_header(
        p, b"{'descr': 'nonsense', 'fortran_order': False, 'shape': (1,), }\n"
    ),
    "pickled-objects": lambda p: p.write_bytes(_pickled_npy()),
    "unknown-version": lambda p: p.write_bytes(b"\x93NUMPY\x09\x00" + b"\x00" * 100),
}


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _pickled_npy() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", sorted(CORRUPT_FILES))
def test_malformed_npy_headers_raise_corrupt_item_naming_the_file(root: Path, kind: str) -> None:
    ch = Channel("corrupt")
    path = ch.path / "bad.npy"
    CORRUPT_FILES[kind](path)
    item = ch.get("bad")
    with pytest.raises(CorruptItem) as info:
        _ = item.array
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_a_header_longer_than_the_first_read_is_read_whole(root: Path) -> None:
    """A 300-field structured dtype: a ~6.7 KB version-1 header, and no data after it."""
    ch = Channel("wide")
    dtype = np.dtype([(f"field{i}", "<f8") for i in range(300)])
    for rows in (0, 2):
        written = np.zeros((rows,), dtype)
        ch.put(written, f"rows{rows}")
        item = ch.get(f"rows{rows}")
        assert item.array.dtype == dtype
        assert item.shape == (rows,)
        np.testing.assert_array_equal(np.load(item.path), item.array)


def test_truncated_item_reports_the_numbers(root: Path) -> None:
    ch = Channel("numbers")
    (ch.path / "t.npy").write_bytes(_npy_bytes(np.zeros(100))[:-80])
    with pytest.raises(CorruptItem) as info:
        _ = ch.get("t").shape
    assert info.value.expected_bytes == 128 + 800
    assert info.value.actual_bytes == 128 + 720
    assert "928" in str(info.value)
    assert "848" in str(info.value)


def test_errors_survive_pickling_with_their_numbers(root: Path) -> None:
    error = ramxchg.RamDiskFull("full", path="/x", needed_bytes=10, free_bytes=2)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is ramxchg.RamDiskFull
    assert (clone.path, clone.needed_bytes, clone.free_bytes) == ("/x", 10, 2)
    assert str(clone) == "full"
    assert isinstance(clone, OSError)
    for cls in (InvalidName, ItemNotFound, ItemExists, CorruptItem, ramxchg.ChannelFull):
        assert issubclass(cls, RamxchgError)


def test_absolute_path_uses_an_existing_folder_as_a_channel(root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exchange"
    folder.mkdir()
    np.save(folder / "existing.npy", np.ones(2))
    with warned_if_not_ram(folder):
        ch = Channel(str(folder))
    assert ch.path == folder
    assert ch.names() == ["existing"]
    ch.put(np.zeros(2), "new")
    np.testing.assert_array_equal(np.load(folder / "new.npy"), np.zeros(2))


def test_channel_settings_are_stored_and_checked(root: Path) -> None:
    Channel("cfg", keep_last=5)
    assert Channel("cfg").config.keep_last == 5
    with pytest.raises(ramxchg.ConfigMismatch, match="keep_last"):
        Channel("cfg", keep_last=6)
    stored = json.loads((root / "cfg" / ".ramxchg" / "config.json").read_text())
    assert stored["keep_last"] == 5


BAD_SETTINGS = [
    ("keep_last", 2.5),
    ("keep_last", True),
    ("keep_last", 0),
    ("keep_last", "3"),
    ("max_bytes", -1),
    ("max_bytes", 1.5),
    ("max_items", False),
    ("max_items", 0),
    ("ttl", float("nan")),
    ("ttl", float("inf")),
    ("ttl", -1.0),
    ("ttl", True),
    ("ttl", "1"),
    ("reserve_bytes", -1),
    ("reserve_bytes", 2.0),
    ("recycle", -1),
    ("recycle", True),
    ("recycle", 0.5),
    ("format", "zip"),
    ("format", 3),
    ("mode", 0o70000),
    ("mode", "700"),
    ("mode", True),
]


@pytest.mark.parametrize(("setting", "value"), BAD_SETTINGS)
def test_bad_settings_are_refused_before_anything_is_stored(
    root: Path, setting: str, value: object
) -> None:
    with pytest.raises(InvalidSetting, match=setting) as info:
        Channel("cfg", **{setting: value})  # type: ignore[arg-type]
    assert (info.value.setting, repr(info.value.value)) == (setting, repr(value))
    assert isinstance(info.value, ValueError)
    assert os.listdir(root) == [], "nothing was created"
    ch = Channel("cfg")  # the channel is still usable with sound settings
    ch.put(np.arange(3))
    assert ch.config.keep_last is None


@pytest.mark.parametrize(("setting", "value"), [s for s in BAD_SETTINGS if s[0] != "mode"])
def test_a_bad_stored_config_is_a_corrupt_item_naming_the_setting(
    root: Path, setting: str, value: object
) -> None:
    ch = Channel("cfg")
    config = ch.path / ".ramxchg" / "config.json"
    stored = json.loads(config.read_text())
    config.unlink()
    config.write_text(json.dumps({**stored, setting: value}))  # another program wrote it
    with pytest.raises(CorruptItem, match=f"{config}.*{setting}"):
        Channel("cfg")


def _put_concurrently(root: str, producer: int, threads: int, count: int) -> None:
    """``threads`` threads share one Channel, each publishing ``count`` auto-named items."""
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel("many")

    def produce(thread: int) -> None:
        for i in range(count):
            ch.put(np.array([producer, thread, i]), attrs={"from": [producer, thread, i]})

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_concurrent_producers_get_distinct_numbers_in_publish_order(root: Path) -> None:
    """Three processes with two threads each: every number once, names in sequence order."""
    producers, threads, count = 3, 2, 150
    ctx = mp.get_context("spawn")
    children = [
        ctx.Process(target=_put_concurrently, args=(str(root), p, threads, count))
        for p in range(producers)
    ]
    for child in children:
        child.start()
    _put_concurrently(str(root), producers, threads, count)  # this process joins in
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    items = Channel("many").items()
    total = (producers + 1) * threads * count
    assert [item.seq for item in items] == list(range(1, total + 1))
    assert [item.name for item in items] == [f"{seq:012d}" for seq in range(1, total + 1)]
    sent = {tuple(item.array.tolist()) for item in items}
    assert len(sent) == total
    assert all(item.attrs["from"] == list(item.array) for item in items)


def test_item_too_large_for_the_disk_raises_ram_disk_full(root: Path) -> None:
    ch = Channel("huge")
    free = shutil.disk_usage(ch.path).free
    with pytest.raises(ramxchg.RamDiskFull) as info, ch.create(free + (1 << 30), "u1", name="b"):
        pass
    assert info.value.needed_bytes > free
    assert str(ch.path) in str(info.value)
    assert tmp_files(ch) == []
