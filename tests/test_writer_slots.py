"""A producer keeps its recycled files mapped: ``put`` is a memcpy, ``create`` a loan."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel
from ramxchg._store.safedir import SafeDir
from ramxchg._store.slots import CHECK_SECONDS, MIN_MAPPED_BYTES, WriterSlots
from ramxchg._store.tmpfiles import is_locking_name
from ramxchg.formats.base import WriteTarget
from tests.conftest import mapped_from, mounted_tmpfs, wait_for

FRAME = (256, 1024)  # 256 KiB of uint8: above the size below which no mapping is kept


def _consume(ch: Channel, name: str) -> None:
    """Read an item, let go of its array and delete it (into the pool)."""
    with ch.get(name) as item:
        assert item.array.size
    ch.delete(name)


def _deleted_mappings() -> list[str]:
    """Files of ours this process still maps although they have no name any more."""
    with open("/proc/self/maps") as maps:
        return [line for line in maps if ".ramxchg" in line and line.endswith("(deleted)\n")]


def test_create_lends_the_memory_of_a_recycled_file_again(root: Path, no_leaks: None) -> None:
    ch = Channel("loan", recycle=2)
    ch.put(np.zeros(FRAME, np.uint8), "first")
    _consume(ch, "first")  # pooled
    with ch.create(FRAME, np.uint8, "a") as array:
        array[...] = 1
        lent = mapped_from(array)
    del array
    _consume(ch, "a")
    with ch.create(FRAME, np.uint8, "b") as array:
        assert mapped_from(array) is lent  # the same mapping, already faulted in
        array[...] = 2
    del array
    with ch.get("b") as item:
        np.testing.assert_array_equal(item.array, 2)
    del ch, lent


def test_a_pooled_file_that_cannot_be_lent_nor_removed_is_let_go(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its pages cannot be had (ENOSPC) and its temporary name cannot be removed at once
    (a PermissionError, as for a file still mapped on Windows): the file is closed and
    its lock dropped all the same, the space reclaimed (the sweep takes the name) and
    the put made in a new file. On 13c7b3c the PermissionError came out of the put, and
    the descriptor, with its lock, leaked."""
    ch = Channel("no-loan", recycle=2)
    ch.put(np.zeros(FRAME, np.uint8), "a")
    _consume(ch, "a")  # pooled: the next put takes it and asks for a loan
    fds_before = set(os.listdir("/proc/self/fd"))
    unlink, refused = SafeDir.unlink, []

    def no_pages(self: WriterSlots, target: WriteTarget, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def busy_once(self: SafeDir, name: str) -> bool:
        if is_locking_name(name) and not refused:
            refused.append(name)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return unlink(self, name)

    monkeypatch.setattr(WriterSlots, "lend", no_pages)
    monkeypatch.setattr(SafeDir, "unlink", busy_once)
    assert ch.put(np.ones(FRAME, np.uint8), "b").name == "b"
    monkeypatch.undo()
    assert refused
    assert "could not remove" in caplog.text
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    assert os.listdir(ch.path / ".ramxchg" / "tmp") == []
    with ch.get("b") as item:
        np.testing.assert_array_equal(item.array, 1)


def test_put_into_a_recycled_file_writes_every_byte(root: Path, no_leaks: None) -> None:
    ch = Channel("memcpy", recycle=2)
    for value in range(1, 5):
        published = ch.put(np.full(FRAME, value, np.uint8), f"i{value}")
        with ch.get(published.name) as item:
            np.testing.assert_array_equal(item.array, value)
        _consume(ch, published.name)
    del ch


def test_the_mapping_of_a_file_that_left_the_pool_is_let_go(root: Path) -> None:
    ch = Channel("gone", recycle=2)
    ch.put(np.zeros(FRAME, np.uint8), "a")
    _consume(ch, "a")
    ch.put(np.ones(FRAME, np.uint8), "b")  # the recycled file, now mapped by this producer
    _consume(ch, "b")
    pool = ch.path / ".ramxchg" / "pool"
    for name in os.listdir(pool):  # what another process draining the pool does
        os.unlink(pool / name)
    assert _deleted_mappings()  # held until this producer writes again...
    ch.put(np.ones(8, np.uint8), "c")
    assert _deleted_mappings() == []  # ...then its RAM goes back to the disk


def test_a_file_another_handle_pooled_and_removed_is_let_go_within_the_check_interval(
    root: Path,
) -> None:
    """Not every put checks the mappings (one fstat each): one that its pool gives no sign
    of is let go by a put at most `CHECK_SECONDS` after the last check."""
    ch, other = Channel("gone", recycle=2), Channel("gone")
    ch.put(np.zeros(FRAME, np.uint8), "a")
    _consume(other, "a")
    ch.put(np.ones(FRAME, np.uint8), "b")  # the recycled file, now mapped by this producer
    _consume(other, "b")  # pooled by another handle: this producer never saw it there
    pool = ch.path / ".ramxchg" / "pool"
    for name in os.listdir(pool):
        os.unlink(pool / name)
    started = time.monotonic()

    def put_then_look() -> bool:
        ch.put(np.ones(8, np.uint8))
        return not _deleted_mappings()

    wait_for(put_then_look, CHECK_SECONDS + 5, "the producer to let go of the gone file")
    assert time.monotonic() - started < CHECK_SECONDS + 5


# --- attacks on the slots (review of issue #15) -------------------------------------

SPAWN = mp.get_context("spawn")
FORK = mp.get_context("fork")
SMALL_DISK = 16 << 20
HELD = 4 << 20  # one recycled file a producer keeps mapped: 4 MiB of a 16 MiB disk


def _keep_a_slot(root: str, ready: Any, done: Any) -> None:
    """A producer that writes into a recycled file (so keeps it mapped), deletes that
    item into the pool, and then sits idle: alive, its mapping kept."""
    ch = Channel("slots", root=root, recycle=2)
    for name in ("a", "b"):  # "b" goes into the file "a" left in the pool
        ch.put(np.ones(HELD, np.uint8), name)
        ch.delete(name)
    ready.set()
    done.wait(60)


@pytest.mark.root
def test_a_full_disk_gets_back_the_ram_another_producer_keeps_mapped(tmp_path: Path) -> None:
    """Another live producer's mapping of a pooled file must not keep its RAM from the
    producer that finds the disk full and empties the pool (docs/protocol.md §11 rule 5)."""
    with mounted_tmpfs(tmp_path / "disk", SMALL_DISK) as disk:
        ready, done = SPAWN.Event(), SPAWN.Event()
        producer = SPAWN.Process(target=_keep_a_slot, args=(str(disk), ready, done))
        producer.start()
        try:
            wait_for(ready.is_set, 60, "the producer to keep its slot")
            assert _maps_of_ours(str(producer.pid)), "the producer maps its recycled file"
            ch = Channel("slots", root=disk, recycle=2)
            # Fits only once the pooled file's 4 MiB are back.
            ch.put(np.zeros(14 << 20, np.uint8), "big")
            with ch.get("big") as item:
                assert not item.array.any()
        finally:
            done.set()
            producer.join(30)


def _maps_of_ours(pid: str) -> list[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return [line for line in maps if ".ramxchg" in line]


def _report_maps(out: Any) -> None:
    out.put(_maps_of_ours("self"))


def test_a_forked_child_does_not_inherit_the_writable_mappings(root: Path) -> None:
    """A worker forked from a producer (multiprocessing's fork start method) must not
    keep the producer's writable mappings: it holds no lock, so it has no business
    writing there, and they would keep the files' RAM for as long as it lives."""
    ch = Channel("fork", recycle=2)
    for name in ("a", "b"):
        ch.put(np.ones(FRAME, np.uint8), name)
        ch.delete(name)
    assert _maps_of_ours("self"), "the producer keeps its recycled file mapped"
    out = FORK.Queue()
    child = FORK.Process(target=_report_maps, args=(out,))
    child.start()
    try:
        assert out.get(timeout=30) == []
    finally:
        child.join(30)
    del ch


def test_a_create_array_kept_after_its_block_cannot_change_the_item(root: Path) -> None:
    """``create`` lends the producer's mapping: an array kept after the block (which the
    docs forbid) must not write into the published item, or a later one recycled into
    the same file, under its readers."""
    ch = Channel("kept", recycle=2)
    ch.put(np.zeros(FRAME, np.uint8), "first")
    _consume(ch, "first")  # pooled: the next create lends a kept mapping
    with ch.create(FRAME, np.uint8, "a") as kept:
        kept[...] = 1
    with pytest.raises(ValueError, match="read-only"):
        kept[...] = 2
    with ch.get("a") as item:
        np.testing.assert_array_equal(item.array, 1)
    del kept, ch


def _put_after_a_pooled_file_shrank(root: str, out: Any) -> None:
    ch = Channel("shrunk", root=root, recycle=2)
    for name in ("a", "b"):  # "b" goes into the file "a" left: this producer maps it
        ch.put(np.ones(FRAME, np.uint8), name)
        ch.delete(name)
    pool = Path(root) / "shrunk" / ".ramxchg" / "pool"
    for name in os.listdir(pool):  # another program of ours shortens it, name unchanged
        os.truncate(pool / name, 4096)
    ch.put(np.full(FRAME, 7, np.uint8), "c")
    with ch.get("c") as item:
        out.put(item.array.shape == FRAME and bool((item.array == 7).all()))


def test_a_pooled_file_that_shrank_is_not_written_past_its_end(root: Path) -> None:
    """The pool names a file by the size it had: the kept mapping must not be written
    past the file's end now (SIGBUS kills the producer), and the item must be whole."""
    out = SPAWN.Queue()
    producer = SPAWN.Process(target=_put_after_a_pooled_file_shrank, args=(str(root), out))
    producer.start()
    producer.join(60)
    assert producer.exitcode == 0
    assert out.get(timeout=5) is True


def _put_uniform_forever(root: str, going: Any) -> None:
    """Items of one size, each all one byte value (a torn one shows two values); with
    ``keep_last=2`` each put recycles an older item's file, which this producer maps."""
    ch = Channel("killed", root=root, recycle=2, keep_last=2)
    for i in range(10**9):
        ch.put(np.full(4 << 20, i % 251, np.uint8))
        if i == 10:
            going.set()


@pytest.mark.slow
def test_a_producer_killed_while_copying_into_its_mapping_shows_no_torn_item(
    root: Path,
) -> None:
    ch = Channel("killed", recycle=2, keep_last=2)
    for _ in range(2):
        going = SPAWN.Event()
        producer = SPAWN.Process(target=_put_uniform_forever, args=(str(root), going))
        producer.start()
        wait_for(going.is_set, 60, "the producer to recycle")
        os.kill(producer.pid, signal.SIGKILL)  # most likely in a memcpy of 4 MiB
        producer.join(30)
        for item in ch.items():
            with item:
                assert len(np.unique(item.array)) == 1, f"{item.name} is torn"
    del ch


def test_a_mapping_lent_to_one_writer_survives_another_thread_letting_go_of_it(
    tmp_path: Path,
) -> None:
    """Threads putting on one channel share its slots: a writer that was lent a mapping
    still writes into it after another thread evicted or cleared it (a drain on a full
    disk, a put of another file with a full set of slots), instead of failing on a
    closed mapping."""
    size = MIN_MAPPED_BYTES * 4
    slots = WriterSlots(1)
    targets = []
    for name in ("a", "b"):
        fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, size)
        targets.append(WriteTarget(fd, str(tmp_path / name), size))
    first, second = targets
    slots.lend(first, size)
    slots.lend(second, size)  # capacity 1: the first file's mapping is evicted
    slots.clear()  # and the second's, as a full disk's drain from another thread does
    for value, target in enumerate(targets, start=1):
        assert target.mapping is not None
        np.frombuffer(target.mapping, np.uint8)[:] = value
        target.mapping = None
        with open(target.path, "rb") as file:
            assert set(file.read()) == {value}
        os.close(target.fd)
