"""Readers hold a lock, so recycling never changes a held array (issue #13, protocol 1.1
rules 2 and 3), and recycling is on by default."""

from __future__ import annotations

import fcntl
import gc
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, Item, ItemNotFound
from ramxchg.formats import base
from tests.conftest import lock_is_free

SPAWN = mp.get_context("spawn")

FRAME = (256, 1024)  # 512 KiB of uint16


def _by_get(ch: Channel, name: str) -> Item:
    return ch.get(name)


def _by_latest(ch: Channel, name: str) -> Item:
    item = ch.latest()
    assert item is not None
    assert item.name == name
    return item


def _by_items(ch: Channel, name: str) -> Item:
    return next(item for item in ch.items() if item.name == name)


def _by_subscription(ch: Channel, name: str) -> Item:
    with ch.subscribe() as sub:
        while True:
            item = sub.get(timeout=10)
            if item.name == name:
                return item


READERS: dict[str, Callable[[Channel, str], Item]] = {
    "get": _by_get,
    "latest": _by_latest,
    "items": _by_items,
    "subscription": _by_subscription,
}


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("how", ["array", "copy-on-write", "view"])
def test_a_mapped_array_holds_a_shared_lock_until_it_is_freed(
    root: Path, fmt: str, how: str
) -> None:
    """Fails on 1e11b05: readers took no lock."""
    ch = Channel(f"lock-{fmt}-{how}", format=fmt)
    item = ch.put(np.arange(1000.0), "a")
    path = item.path
    with ch.get("a") as reading:
        array = reading.open("c") if how == "copy-on-write" else reading.array
        if how == "view":
            array = array[10:20]
        assert not lock_is_free(path)
    assert not lock_is_free(path), "closing the item dropped the lock of an array still in use"
    assert float(array[0]) in (0.0, 10.0)
    del array
    gc.collect()
    assert lock_is_free(path)


def test_reading_metadata_keeps_no_lock(root: Path) -> None:
    ch = Channel("meta")
    ch.put(np.arange(10), "a")
    item = ch.get("a")
    assert item.shape == (10,)
    assert item.nbytes == 80
    assert lock_is_free(item.path)


@pytest.mark.parametrize("recycle", [None, 2], ids=["default", "recycle=2"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_held_arrays_never_change_while_recycled_files_turn_over(
    root: Path, recycle: int | None, reader: str
) -> None:
    """Fails on 1e11b05 with recycle=2 (1 -> 3, the issue's example); with the default
    settings it fails because nothing was recycled."""
    ch = Channel(f"turnover-{reader}", keep_last=1, recycle=recycle)
    read = READERS[reader]
    held: dict[int, np.ndarray] = {}
    inodes: set[int] = set()
    for value in range(300):
        item = ch.put(np.full(FRAME, value, np.uint16), f"f{value}")
        inodes.add(os.stat(item.path).st_ino)
        if value % 30 == 0:
            with read(ch, item.name) as kept:
                held[value] = kept.array  # kept past close(), while the item is deleted
    for value, array in held.items():
        assert int(array.min()) == int(array.max()) == value, f"item {value} changed"
    assert len(inodes) < 100, "files were not recycled"


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_held_array_keeps_its_file_out_of_the_pool_rotation(root: Path, fmt: str) -> None:
    ch = Channel(f"held-{fmt}", keep_last=1, format=fmt)
    first = ch.put(np.full(FRAME, 1, np.uint16), "a")
    kept = ch.get("a").array
    inode = os.stat(first.path).st_ino
    for value in range(2, 12):
        newer = ch.put(np.full(FRAME, value, np.uint16))
        assert os.stat(newer.path).st_ino != inode, "a held file was written over"
    assert int(kept.min()) == int(kept.max()) == 1


def test_create_hands_out_uninitialised_memory_unless_zero(root: Path) -> None:
    ch = Channel("empty", keep_last=1)
    ch.put(np.full(FRAME, 9, np.uint16))
    ch.put(np.full(FRAME, 9, np.uint16))  # the first one's file is in the pool now
    with ch.create(FRAME, np.uint16) as recycled:
        assert int(recycled.max()) == 9, "not recycled: the test proves nothing"
        del recycled
    ch.put(np.full(FRAME, 9, np.uint16))
    with ch.create(FRAME, np.uint16, zero=True) as zeroed:
        assert int(zeroed.max()) == 0
        zeroed[0, 0] = 1
        del zeroed
    assert int(ch.latest().array.sum()) == 1


def test_recycling_is_on_by_default_and_recycle_0_turns_it_off(root: Path) -> None:
    """Fails on 1e11b05: recycle defaulted to 0."""
    assert Channel("default").config.recycle > 0
    off = Channel("off", recycle=0, keep_last=1)
    on = Channel("on", keep_last=1)
    for ch, reused in ((off, False), (on, True)):
        inodes = {os.stat(ch.put(np.zeros(FRAME, np.uint16)).path).st_ino for _ in range(10)}
        assert (len(inodes) < 10) is reused


def test_a_reader_waits_briefly_for_a_writer_lock_then_reads_without_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(base, "READ_LOCK_SECONDS", 0.05)
    ch = Channel("foreign")
    path = ch.put(np.arange(10), "a").path
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a foreign process that holds it for good
        with ch.get("a") as item:
            np.testing.assert_array_equal(item.array, np.arange(10))
    finally:
        os.close(fd)
    assert "without the reader lock" in caplog.text


def test_an_item_deleted_while_it_is_opened_is_not_found(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted between the open and the lock, its file may be recycled by then."""
    ch = Channel("vanishing")
    ch.put(np.arange(10), "a")
    real = base.try_lock

    def deleted_first(fd: int, *, shared: bool = False) -> bool:
        if "a" in ch:
            ch.delete("a")  # another process deletes it just now
        return real(fd, shared=shared)

    monkeypatch.setattr(base, "try_lock", deleted_first)
    with pytest.raises(ItemNotFound):
        ch.get("a").array  # noqa: B018


def test_a_name_replaced_several_times_between_open_and_lock_is_opened_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded machine can preempt a reader between its open and its lock several times
    while `put(replace=True)` runs: each time the name holds a newer file, which is read,
    not reported missing (test_replace's reader saw 2 misses in 300 replacements)."""
    ch = Channel("cam")
    ch.put(np.zeros(8), "frame")
    real = base._lock_shared
    replaced = []

    def replaced_before_each_lock(fd: int, path: str | Path, info: os.stat_result) -> bool:
        if len(replaced) < 4:
            ch.put(np.full(8, float(len(replaced) + 1)), "frame", replace=True)
            replaced.append(info.st_ino)
        return real(fd, path, info)

    monkeypatch.setattr(base, "_lock_shared", replaced_before_each_lock)
    with ch.get("frame") as item:
        assert float(item.array[0]) == 4.0
    assert len(replaced) == 4


def _empty_then_remove(path: str, emptied: Any, remove: Any) -> None:
    """What removing a recycled item file does: lock it exclusively, empty it, unlink it."""
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    emptied.set()
    remove.wait(30)
    os.unlink(path)
    os.close(fd)


def test_metadata_of_an_item_being_emptied_and_removed_reads_as_gone(root: Path) -> None:
    """A file is emptied under its exclusive lock, then unlinked (a deleted item the pool
    does not take, a trimmed pool): the item's shape read meanwhile is ItemNotFound,
    never CorruptItem (on 5174c3d the empty header raised CorruptItem at once)."""
    item = Channel("meta").put(np.arange(10))
    emptied, remove = SPAWN.Event(), SPAWN.Event()
    remover = SPAWN.Process(target=_empty_then_remove, args=(str(item.path), emptied, remove))
    remover.start()
    assert emptied.wait(30)
    threading.Timer(0.3, remove.set).start()  # the remover unlinks a moment later
    with pytest.raises(ItemNotFound):
        item.shape  # noqa: B018
    remover.join(30)
    assert remover.exitcode == 0
