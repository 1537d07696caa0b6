"""Recycled item files: reuse of consumed items' pages, never of a file an array still maps."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, Item, Subscription
from ramxchg._store import pool as pool_module
from tests.conftest import before_the_next_lock, lock_is_free
from tests.reliability._work import checksum

SPAWN = mp.get_context("spawn")
FRAME = (512, 1024)  # 1 MiB of uint16


def _pool(ch: Channel) -> list[str]:
    return sorted(os.listdir(ch.path / ".ramxchg" / "pool"))


def _consume_one(ch: Channel, group: str = "g") -> tuple[str, int]:
    """Take one item, read it, let go of its array and ack it: (name, inode)."""
    with ch.subscribe(group) as sub:
        item = sub.get(timeout=10)
        inode = os.stat(item.path).st_ino
        with item:
            assert item.array.size
        item.ack()
        return item.name, inode


def test_an_acked_item_file_is_reused_by_the_next_item_of_its_size(root: Path) -> None:
    ch = Channel("recycle", recycle=2)
    ch.subscribe("g").close()
    ch.put(np.full(FRAME, 1, dtype=np.uint16), "a")
    _, old_inode = _consume_one(ch)
    assert "a" not in ch
    assert len(_pool(ch)) == 1
    new = ch.put(np.full(FRAME, 2, dtype=np.uint16), "b")
    assert os.stat(new.path).st_ino == old_inode  # the same pages, written in place
    assert _pool(ch) == []
    np.testing.assert_array_equal(new.array, 2)


def test_an_acked_item_whose_array_is_still_held_is_never_written_over(root: Path) -> None:
    """The contract of 1e11b05 ("do not use an item's arrays once it is deleted") is
    gone: the array holds its file's reader lock, so the file is not recycled."""
    ch = Channel("recycle-held", recycle=2)
    ch.subscribe("g").close()
    ch.put(np.full(FRAME, 1, dtype=np.uint16), "a")
    with ch.subscribe("g") as sub:
        item = sub.get(timeout=10)
        old_inode = os.stat(item.path).st_ino
        with item:
            old_view = item.array
        item.ack()
    assert "a" not in ch
    assert _pool(ch) == []  # mapped: freed when the reader lets go, not pooled
    new = ch.put(np.full(FRAME, 2, dtype=np.uint16), "b")
    assert os.stat(new.path).st_ino != old_inode
    assert int(old_view.min()) == int(old_view.max()) == 1


def test_a_file_a_reader_still_maps_takes_no_pooled_file_s_place(root: Path) -> None:
    """A full pool makes way for a file of a new size by removing one of another size,
    but not for a file that is not pooled after all (a reader maps it): that would lose
    a pooled file for nothing."""
    ch = Channel("recycle-evict", recycle=2)
    small = np.zeros(FRAME[0] * FRAME[1] // 4, np.uint16)  # 256 KiB
    with ch.subscribe("g") as sub:
        ch.put(small, "a")
        ch.put(small, "b")  # two files in flight at once
        for _ in range(2):
            sub.get(timeout=5).ack()
        assert len(_pool(ch)) == 2  # full
        ch.put(np.ones(FRAME, np.uint16), "big")
        item = sub.get(timeout=5)
        with item:
            held = item.array  # its reader lock stays with the array
        assert item.ack() is True
    assert "big" not in ch
    assert len(_pool(ch)) == 2, "a pooled file went for a file that was not pooled"
    assert int(held.min()) == 1


def test_nothing_is_reused_before_every_group_acked(root: Path) -> None:
    ch = Channel("recycle-wait", recycle=2)
    ch.subscribe("g").close()
    first = ch.put(np.full(FRAME, 1, dtype=np.uint16), "a")
    second = ch.put(np.full(FRAME, 2, dtype=np.uint16), "b")
    assert os.stat(first.path).st_ino != os.stat(second.path).st_ino
    np.testing.assert_array_equal(first.array, 1)
    assert _pool(ch) == []


def test_other_sizes_capacity_and_create(root: Path) -> None:
    ch = Channel("recycle-sizes", recycle=1)
    ch.subscribe("g").close()
    for value in (1, 2):
        ch.put(np.full(FRAME, value, dtype=np.uint16))
    _consume_one(ch)
    _consume_one(ch)
    assert len(_pool(ch)) == 1  # capacity 1: the second file was freed
    small = ch.put(np.zeros(10, dtype=np.uint16))
    assert len(_pool(ch)) == 1  # a different size never takes a pooled file
    np.testing.assert_array_equal(small.array, 0)
    with ch.create(FRAME, np.uint16, name="made") as frame:
        frame[:] = 7
        del frame
    assert _pool(ch) == []  # create() took the pooled file
    np.testing.assert_array_equal(ch.get("made").array, 7)


@pytest.mark.parametrize(
    "dtype", [np.dtype([("x" * 47, "f8")]), np.dtype([("y" * 46, "f8")]), np.dtype("f8")]
)
def test_a_fortran_ordered_array_fits_a_file_recycled_from_a_c_ordered_one(
    root: Path, dtype: np.dtype
) -> None:
    """A header says 'fortran_order': True or False: the C-order item's file, recycled,
    is the size the Fortran-order item needs (for the first dtype, 64 bytes too long on
    b6f35e1: its put raised ValueError), and np.load reads the item in its order."""
    ch = Channel("fortran", recycle=1)
    fortran = np.zeros((100, 100), dtype=dtype, order="F")
    fortran[dtype.names[0] if dtype.names else ...] = np.arange(10_000.0).reshape(100, 100)
    ch.delete(ch.put(np.ascontiguousarray(fortran)).name)
    assert len(_pool(ch)) == 1
    item = ch.put(fortran)
    assert _pool(ch) == []  # written into the recycled file
    loaded = np.load(item.path)
    assert loaded.flags.f_contiguous
    np.testing.assert_array_equal(loaded, fortran)
    np.testing.assert_array_equal(item.array, fortran)


def test_without_recycle_and_for_hdf5_files_are_freed(root: Path) -> None:
    plain = Channel("no-recycle", recycle=0)
    plain.subscribe("g").close()
    plain.put(np.zeros(FRAME, dtype=np.uint16))
    _consume_one(plain)
    assert _pool(plain) == []
    h5 = Channel("h5-recycle", recycle=4, format="hdf5")
    h5.subscribe("g").close()
    h5.put(np.zeros(FRAME, dtype=np.uint16))
    _consume_one(h5)
    assert _pool(h5) == []


def _verify(root: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ["RAMXCHG_ROOT"] = root
    ok = 0
    with Channel("recycle-stream").subscribe("g") as sub:
        for _ in range(count):
            item = sub.get(timeout=30)
            if checksum(item.array) == item.attrs["crc"]:
                ok += 1  # checked before ack: the contract a consumer must follow
            item.close()
            item.ack()
    out.put(ok)


def test_a_stream_through_recycled_files_is_never_corrupt(root: Path) -> None:
    count = 300
    ch = Channel("recycle-stream", recycle=4, max_items=4)
    ch.subscribe("g").close()
    out = SPAWN.Queue()
    consumer = SPAWN.Process(target=_verify, args=(str(root), count, out))
    consumer.start()
    rng = np.random.default_rng(3)
    inodes = set()
    for _ in range(count):
        frame = rng.integers(0, 65535, FRAME, dtype=np.uint16)
        item = ch.put(frame, attrs={"crc": checksum(frame)}, timeout=30)
        with contextlib.suppress(FileNotFoundError):  # the consumer may be done with it
            inodes.add(item.path.stat().st_ino)
    assert out.get(timeout=120) == count
    consumer.join(30)
    assert consumer.exitcode == 0
    assert len(inodes) < count // 2, "files were not recycled"
    assert len(ch) == 0


@pytest.mark.parametrize("value", [0, 3])
def test_recycle_is_stored_with_the_channel(root: Path, value: int) -> None:
    Channel(f"stored-{value}", recycle=value)
    assert Channel(f"stored-{value}").config.recycle == value


def test_a_pool_full_of_another_size_makes_room(root: Path) -> None:
    ch = Channel("recycle-shapes", recycle=1)
    ch.subscribe("g").close()
    ch.put(np.zeros(10, dtype=np.uint16))
    _consume_one(ch)
    assert len(_pool(ch)) == 1  # a small file holds the only place
    ch.put(np.full(FRAME, 1, dtype=np.uint16))
    _, big_inode = _consume_one(ch)
    [pooled] = _pool(ch)
    assert os.stat(ch.path / ".ramxchg" / "pool" / pooled).st_ino == big_inode
    reused = ch.put(np.full(FRAME, 2, dtype=np.uint16))
    assert os.stat(reused.path).st_ino == big_inode


def test_a_pool_swapped_for_a_link_or_a_planted_hard_link_is_never_written(
    root: Path, tmp_path: Path
) -> None:
    ch = Channel("recycle-hostile", recycle=2, keep_last=1)
    size = ch.put(np.zeros(FRAME, np.uint16)).path.stat().st_size
    outside = root / "outside"  # same filesystem: a hard link works
    outside.mkdir()
    victim = outside / f"{size}.1.cafe"
    victim.write_bytes(b"v" * size)
    pool = ch.path / ".ramxchg" / "pool"
    os.link(victim, pool / victim.name)  # a pooled file that is someone else's data
    ch.put(np.ones(FRAME, np.uint16))  # takes the pooled file: on 3c44b6e, writes into it
    assert victim.read_bytes() == b"v" * size
    for name in os.listdir(pool):
        (pool / name).unlink()
    pool.rmdir()
    pool.symlink_to(outside)  # the whole pool a link, in both directions
    for value in (2, 3):
        ch.put(np.full(FRAME, value, np.uint16))  # keep_last=1 pools the one before
    assert sorted(os.listdir(outside)) == [victim.name]
    assert victim.read_bytes() == b"v" * size
    np.testing.assert_array_equal(ch.latest().array, 3)


def _stream_primed(ch: Channel, sub: Subscription) -> Item:
    """One item through ``sub`` (its ack lists the groups: the next ack guesses from that
    listing that it is the item's last, and finds room in the pool for its file before
    the publish lock), then the next item, delivered: it is in the file the first one
    left in the pool."""
    ch.put(np.zeros(FRAME, np.uint16), "first")
    sub.get(timeout=5).ack()
    ch.put(np.ones(FRAME, np.uint16), "frame")
    assert _pool(ch) == []
    return sub.get(timeout=5)


def test_a_file_a_reader_maps_once_the_ack_holds_the_lock_is_not_pooled(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader (here `Channel.get`'s array) maps the item while its last ack waits for the
    publish lock: its file must not go into the pool, where it would hold a place no
    producer can use (a producer never takes a file a reader holds) until the reader
    lets go. Whether a reader holds the file is looked at under the lock."""
    ch = Channel("mapped")
    with ch.subscribe("g") as sub:
        item = _stream_primed(ch, sub)
        # its reader lock held by the array
        held = before_the_next_lock(
            monkeypatch, sub._retention.counter, lambda: Channel("mapped").get("frame").array
        )
        assert item.ack() is True
        assert "frame" not in ch
        assert _pool(ch) == [], "a file a reader maps went into the pool"
        assert int(held[0].min()) == 1, "the reader's array changed"


def test_whether_a_reader_holds_an_item_file_is_looked_at_only_under_the_publish_lock(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking takes the file's exclusive lock for an instant. Outside the publish lock a
    deletion running meanwhile (another handle's `delete`, keep_last, gc) would take that
    for a reader's lock, and unlink the file without emptying it (or pooling it): its
    pages would stay with whoever kept a mapping of it."""
    ch = Channel("probe")
    lock_file = ch.path / ".ramxchg" / "seq"
    probes: list[bool] = []  # per look at an item file: was the publish lock held?

    def probing(fd: int, **kwargs: Any) -> bool:
        if os.fstat(fd).st_ino == item_ino:  # the item's file, not a pooled one
            probes.append(not lock_is_free(lock_file))
        return real(fd, **kwargs)

    with ch.subscribe("g") as sub:
        item = _stream_primed(ch, sub)
        item_ino, real = os.stat(item.path).st_ino, pool_module.try_lock
        monkeypatch.setattr(pool_module, "try_lock", probing)
        assert item.ack() is True
    assert probes, "the ack never looked whether a reader holds the file"
    assert all(probes), f"looked at without the publish lock: {probes}"
