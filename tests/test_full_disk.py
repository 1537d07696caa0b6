"""A full RAM disk: a real, small tmpfs mounted by the test (needs root)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ramxchg._store.publish
from ramxchg import Channel, RamDiskFull
from ramxchg.disks import format_size
from ramxchg.disks.probe import advice, info
from tests.conftest import mounted, mounted_tmpfs, tmp_files

pytestmark = pytest.mark.root

SIZE = 4 << 20


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at a temporary folder."""
    with mounted_tmpfs(tmp_path / "small", SIZE) as mountpoint:
        yield mountpoint


def test_item_larger_than_the_free_space_is_refused_up_front(small_tmpfs: Path) -> None:
    ch = Channel("full", root=small_tmpfs)
    with pytest.raises(RamDiskFull) as info:
        ch.put(np.zeros(SIZE, dtype=np.uint8), "big")
    error = info.value
    assert error.needed_bytes > error.free_bytes
    assert _shows(str(error), error.free_bytes)
    assert "big" not in ch
    assert tmp_files(ch) == []


@pytest.mark.parametrize(("how", "fmt"), [("put", "npy"), ("create", "npy"), ("create", "hdf5")])
def test_disk_filling_up_while_writing_raises_and_leaves_nothing(
    small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch, how: str, fmt: str
) -> None:
    ch = Channel("race", root=small_tmpfs, format=fmt)
    ch.put(np.ones(SIZE // 2, dtype=np.uint8), "first")
    # Another writer takes the space between our free-space check and our write:
    # skip the up-front check so the real ENOSPC from the kernel is what we meet.
    monkeypatch.setattr(ramxchg._store.publish, "check_room", lambda layout, needed, reclaim: None)
    big = np.full(SIZE * 3 // 4, 5, dtype=np.uint8)
    free = shutil.disk_usage(small_tmpfs).free
    with pytest.raises(RamDiskFull) as info:  # noqa: PT012
        if how == "put":
            ch.put(big, "second")
        elif fmt == "npy":
            with ch.create(big.shape, big.dtype, name="second") as frame:
                frame[:] = big  # never reached: allocation fails first, no SIGBUS
        else:
            with ch.create({"data": (big.shape, big.dtype)}, name="second") as frames:
                frames["data"][:] = big  # never reached either
    assert info.value.errno == 28
    assert info.value.needed_bytes >= big.nbytes
    assert ch.names() == ["first"]
    assert tmp_files(ch) == []
    assert shutil.disk_usage(small_tmpfs).free == free  # no page of it kept
    # once space is freed the channel works again
    ch.delete("first")
    np.testing.assert_array_equal(ch.put(big, "second").array, big)


def test_item_that_fits_but_whose_sidecar_does_not_raises_and_leaves_nothing(
    small_tmpfs: Path,
) -> None:
    ch = Channel("brim", root=small_tmpfs)
    ch.put(np.zeros(1, dtype=np.uint8), "first")  # the counter file takes its page now
    sidecars = ch.path / ".ramxchg" / "meta"
    seq_before = (ch.path / ".ramxchg" / "seq").read_bytes()
    # The item (a 128-byte .npy header and its data) takes every free page but leaves
    # less than one page: its data fits, a sidecar needs a page of its own and does not.
    free = shutil.disk_usage(small_tmpfs).free
    data = np.full(free - 128 - 100, 7, dtype=np.uint8)
    with pytest.raises(RamDiskFull) as info:
        ch.put(data, "brimful", attrs={"note": "x" * 50})
    error = info.value
    assert error.errno == 28
    assert str(ch.path) in str(error)
    assert error.needed_bytes > 0
    assert _shows(str(error), error.needed_bytes)
    assert ch.names() == ["first"]
    assert sorted(os.listdir(sidecars)) == ["first.json"]  # no partial sidecar
    assert tmp_files(ch) == []
    assert (ch.path / ".ramxchg" / "seq").read_bytes() == seq_before  # no number used up
    # once space is freed the channel works again, under the same name
    ch.delete("first")
    np.testing.assert_array_equal(ch.put(data, "brimful").array, data)


def _shows(message: str, size: int) -> bool:
    """Does the error message give ``size``: for people, or in bytes where that is closer?"""
    return format_size(size) in message or f"{size} bytes" in message


def test_a_ramfs_with_no_size_to_report_takes_large_items(tmp_path: Path) -> None:
    """ramfs has no size: statvfs says 0 bytes, of 0. The up-front room check must not
    read that as full (it refused every item of 16 MiB and more)."""
    with mounted("ramfs", tmp_path / "ramfs", "mode=0700") as root:
        assert os.statvfs(root).f_blocks == 0, "this ramfs reports a size"
        assert advice(info(root)) == [], "a ramfs called a small RAM disk"
        ch = Channel("big", root=root)
        data = np.arange(32 << 20, dtype=np.uint8)
        ch.put(data, "put")
        with ch.create(data.shape, np.uint8, name="created") as array:
            array[:] = data
        assert np.array_equal(ch.get("put").array, data)
        assert np.array_equal(ch.get("created").array, data)
