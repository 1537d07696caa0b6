"""Channel.put_file_bytes: an item file copied byte for byte, with its origin in the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem, ItemExists
from tests.conftest import tmp_files

ORIGIN = {"host": "acq-pc", "channel": "/dev/shm/x/cam", "name": "f", "seq": 7, "published_ns": 1}


def test_npy_file_is_copied_byte_for_byte_with_origin(root: Path) -> None:
    source = Channel("src")
    item = source.put(np.arange(12, dtype=">i4").reshape(3, 4), name="f", attrs={"gain": 2})
    raw = item.path.read_bytes()
    copied = Channel("dst").put_file_bytes(
        np.frombuffer(raw, np.uint8), "f", format="npy", attrs=item.attrs, origin=ORIGIN
    )
    assert copied.path.read_bytes() == raw
    assert copied.attrs == {"gain": 2}
    assert copied.origin == ORIGIN
    assert item.origin is None  # published here, not copied
    sidecar = json.loads((root / "dst" / ".ramxchg" / "meta" / "f.json").read_text())
    assert sidecar["origin"] == ORIGIN
    assert "origin" not in sidecar["attrs"]


def test_hdf5_file_keeps_its_datasets_and_attributes(root: Path) -> None:
    arrays = {"image": np.eye(3, dtype="f2"), "meta/mask": np.array([True, False])}
    item = Channel("src").put(arrays, name="h", format="hdf5", attrs={"run": [1, "a"]})
    copied = Channel("dst").put_file_bytes(
        item.path.read_bytes(), format="hdf5", attrs=item.sidecar.attrs
    )
    assert copied.name == "000000000001"  # named like any put without a name
    assert copied.attrs == {"run": [1, "a"]}
    for key, array in arrays.items():
        np.testing.assert_array_equal(copied.arrays[key], array)
    copied.close()


def test_garbage_is_refused_and_nothing_is_left(root: Path) -> None:
    channel = Channel("dst")
    good = Channel("src").put(np.zeros(1000), name="g").path.read_bytes()
    with pytest.raises(CorruptItem):
        channel.put_file_bytes(good[:-8], "cut", format="npy")  # shorter than its header says
    with pytest.raises(CorruptItem):
        channel.put_file_bytes(b"not an hdf5 file", "junk", format="hdf5")
    assert len(channel) == 0
    assert tmp_files(channel) == []
    channel.put_file_bytes(good, "g", format="npy")
    with pytest.raises(ItemExists):
        channel.put_file_bytes(good, "g", format="npy")


def test_recycled_pages_are_overwritten_in_place(root: Path) -> None:
    channel = Channel("dst", recycle=2)
    first = channel.put(np.full(4096, 7.0), name="a")
    raw = Channel("src").put(np.arange(4096.0), name="b").path.read_bytes()
    inode = first.path.stat().st_ino
    channel.delete(first.name)  # its file goes to the pool: same size as ``raw``
    copied = channel.put_file_bytes(raw, "b", format="npy")
    assert copied.path.stat().st_ino == inode  # the pooled file, written over
    np.testing.assert_array_equal(copied.array, np.arange(4096.0))


def test_a_recycled_file_is_filled_through_the_producers_mapping(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge's copy at the destination is a memcpy into pages already in place, as a
    `put` is, not a write through the page cache."""
    channel = Channel("dst", recycle=2)
    frame = np.zeros(1 << 18, np.uint8)  # 256 KiB: big enough for a kept mapping
    channel.delete(channel.put(frame, name="a").name)  # into the pool
    raw = Channel("src").put(np.arange(frame.size, dtype=np.uint8), name="b").path.read_bytes()

    def no_write(*args: object) -> None:
        raise AssertionError("wrote through the page cache")

    monkeypatch.setattr("ramxchg.formats.base.pwrite_all", no_write)
    copied = channel.put_file_bytes(raw, "b", format="npy")
    assert copied.path.read_bytes() == raw
