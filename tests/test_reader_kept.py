"""A consumer keeps its mappings of recycled files and reads later items through them
(issue #15): no new mapping per item, and still every lock rule of protocol 1.1."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel
from ramxchg._delivery.subscription import RESCAN_SECONDS
from ramxchg.formats import kept
from tests.conftest import lock_is_free

SPAWN = mp.get_context("spawn")
FORK = mp.get_context("fork")
BIG = 4 << 20  # bytes of data: with its header, a file large enough for a kept mapping
TIMEOUT = 60


def _read_only_maps(root: Path | str, pid: int | str = "self") -> list[str]:
    """The read-only shared mappings (a reader's) of files under ``root`` a process has."""
    with open(f"/proc/{pid}/maps") as maps:
        return [line for line in maps if str(root) in line and " r--s " in line]


def _pool(ch: Channel) -> list[str]:
    return os.listdir(ch.path / ".ramxchg" / "pool")


def _inode(path: Path) -> int:
    return os.stat(path).st_ino


# -- a consumer in a process of its own, told what to do one step at a time ----------------


def _consumer(root: str, orders: Any, answers: Any) -> None:
    """Follow group "g" of channel "kept" under ``root``, step by step as ``orders`` say."""
    ch = Channel("kept", root=root)
    sub = ch.subscribe("g")
    item: Any = None
    held: Any = None
    while True:
        order = orders.get(timeout=TIMEOUT)
        if order == "read":  # read the next item whole, let go of it, ack it
            item = sub.get(timeout=TIMEOUT)
            with item:
                values = np.unique(item.array)
            item.ack()
            answers.put((item.name, values.tolist()))
        elif order == "hold":  # take the next item and keep a view of it, item closed
            item = sub.get(timeout=TIMEOUT)
            with item:
                held = item.array[1:]
            answers.put(item.name)
        elif order == "check":  # has the held view changed?
            answers.put(np.unique(held).tolist())
        elif order == "let go":
            held = None
            gc.collect()
            answers.put(True)
        elif order == "ack":
            answers.put(item.ack())
        elif order == "close":
            sub.close()
            answers.put(True)
        elif order == "stop":
            return


class Consumer:
    """The process running `_consumer`."""

    def __init__(self, root: Path) -> None:
        self.orders, self.answers = SPAWN.Queue(), SPAWN.Queue()
        self.process = SPAWN.Process(target=_consumer, args=(str(root), self.orders, self.answers))
        self.process.start()

    def __call__(self, order: str) -> Any:
        self.orders.put(order)
        return self.answers.get(timeout=TIMEOUT)

    def maps(self, root: Path) -> list[str]:
        return _read_only_maps(root, self.process.pid or 0)

    def stop(self) -> None:
        self.orders.put("stop")
        self.process.join(TIMEOUT)
        assert self.process.exitcode == 0


@pytest.fixture
def channel(root: Path) -> Channel:
    ch = Channel("kept", recycle=2)
    ch.subscribe("g").close()
    return ch


@pytest.fixture
def consumer(root: Path, channel: Channel) -> Any:
    started = Consumer(root)
    yield started
    started.stop()


def _put(ch: Channel, value: int, nbytes: int = BIG) -> Path:
    return ch.put(np.full(nbytes, value, np.uint8)).path


def _put_inode(ch: Channel, value: int, nbytes: int = BIG) -> int:
    """Publish an item: the inode of its file."""
    return _inode(_put(ch, value, nbytes))


def test_a_recycled_file_is_read_through_the_mapping_kept_from_its_last_item(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    first = _put_inode(channel, 1)
    assert consumer("read")[1] == [1]
    assert len(consumer.maps(root)) == 1, "the consumer keeps the file mapped"
    for value in range(2, 6):
        assert _put_inode(channel, value) == first, "the kept mapping kept the file from the pool"
        assert consumer("read")[1] == [value]
        assert len(consumer.maps(root)) == 1, "a new mapping for the same file"


def test_the_reader_lock_lasts_as_long_as_the_users_views_not_the_kept_mapping(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    first = _put_inode(channel, 1)
    consumer("read")  # the file is mapped and kept from now on
    second = _put(channel, 2)
    assert _inode(second) == first
    consumer("hold")  # through the kept mapping: a view of its array, the item closed
    assert not lock_is_free(second), "a view of a kept mapping holds no reader lock"
    assert consumer("check") == [2]
    consumer("let go")
    assert lock_is_free(second), "the kept mapping holds the reader lock"
    assert consumer("ack")
    assert _put_inode(channel, 3) == first, "the file never went back into circulation"
    assert consumer("read")[1] == [3]


def _hold_past_ack(channel: Channel, consumer: Consumer) -> int:
    """Have the consumer hold a view of an item read through its kept mapping, and ack
    the item: deleted, not pooled, since the view still maps it. The file's inode."""
    first = _put_inode(channel, 1)
    consumer("read")
    assert _put_inode(channel, 2) == first
    consumer("hold")
    assert consumer("ack")
    return first


def test_a_view_held_past_its_ack_never_changes(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    first = _hold_past_ack(channel, consumer)
    for value in range(3, 9):
        assert _put_inode(channel, value) != first
        assert consumer("read")[1] == [value]
        assert consumer("check") == [2], "a held view changed"
    consumer("let go")


@pytest.mark.parametrize("change", [-1, +1], ids=["shrunk", "grown"])
def test_a_pooled_file_of_a_new_size_is_mapped_again(
    root: Path, channel: Channel, consumer: Consumer, change: int
) -> None:
    """The pool names a file by its size; one whose size changed there (another program
    of ours) comes back as an item of that size: the old mapping no longer fits it."""
    first = _put_inode(channel, 1)
    consumer("read")
    (pooled,) = _pool(channel)
    pool = channel.path / ".ramxchg" / "pool"
    size = os.stat(pool / pooled).st_size + change * (1 << 20)
    os.truncate(pool / pooled, size)
    os.rename(pool / pooled, pool / f"{size}.{pooled.split('.', 1)[1]}")
    assert _put_inode(channel, 2, BIG + change * (1 << 20)) == first
    assert consumer("read")[1] == [2]


def test_a_kept_mapping_of_a_file_emptied_in_the_pool_neither_crashes_nor_stays(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    """A full disk empties the pool (truncated to 0 bytes, then unlinked): the consumer's
    mapping then reaches past the end of the file, and must never be read there."""
    _put(channel, 1)
    consumer("read")
    (pooled,) = _pool(channel)
    os.truncate(channel.path / ".ramxchg" / "pool" / pooled, 0)
    assert len(consumer.maps(root)) == 1
    os.unlink(channel.path / ".ramxchg" / "pool" / pooled)
    _put(channel, 2)  # a new file
    assert consumer("read")[1] == [2]
    assert not [line for line in consumer.maps(root) if "(deleted)" in line]


def test_a_file_truncated_in_the_pool_and_written_again_reads_right(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    first = _put_inode(channel, 1)
    consumer("read")
    (pooled,) = _pool(channel)
    os.truncate(channel.path / ".ramxchg" / "pool" / pooled, 4096)  # its pages go
    assert _put_inode(channel, 2) == first  # the producer writes it whole again
    assert consumer("read")[1] == [2]


def test_the_mapping_of_a_deleted_file_goes_at_a_rescan_while_items_come(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    """The mapping goes at the subscription's rescan (once a second in `get`): it is not
    checked on every delivery (one fstat per kept mapping, ~10% of a 1 MB item's rate)."""
    _put(channel, 1)
    consumer("read")
    (pooled,) = _pool(channel)
    os.unlink(channel.path / ".ramxchg" / "pool" / pooled)  # another process drains it
    assert [line for line in consumer.maps(root) if "(deleted)" in line], "kept till then"
    deadline = time.monotonic() + 10 * RESCAN_SECONDS
    value = 1
    while [line for line in consumer.maps(root) if "(deleted)" in line]:
        assert time.monotonic() < deadline, "the deleted file's mapping was kept"
        value = value % 250 + 1
        _put(channel, value, 1 << 10)  # whatever its size: a small item is mapped anew
        assert consumer("read")[1] == [value]


def test_an_item_acked_while_its_array_is_held_is_let_go_with_the_array(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    _hold_past_ack(channel, consumer)
    assert [line for line in consumer.maps(root) if "(deleted)" in line]
    consumer("let go")
    assert consumer.maps(root) == [], "the deleted file's RAM is still held"


def test_close_lets_go_of_every_kept_mapping(
    root: Path, channel: Channel, consumer: Consumer
) -> None:
    _put(channel, 1)
    consumer("read")
    assert consumer.maps(root)
    consumer("close")
    assert consumer.maps(root) == []


# -- in this process ------------------------------------------------------------------------


def _read_all(sub: Any) -> list[int]:
    item = sub.get(timeout=TIMEOUT)
    with item:
        values = np.unique(item.array).tolist()
    item.ack()
    return values


def _report_maps(root: str, answers: Any) -> None:
    answers.put(_read_only_maps(root))


def test_a_forked_child_keeps_no_mapping(root: Path, channel: Channel) -> None:
    with channel.subscribe("g") as sub:
        _put(channel, 1)
        assert _read_all(sub) == [1]
        assert _read_only_maps(root)
        answers = FORK.Queue()
        child = FORK.Process(target=_report_maps, args=(str(root), answers))
        child.start()
        try:
            assert answers.get(timeout=TIMEOUT) == []
        finally:
            child.join(TIMEOUT)


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_at_most_so_many_mappings_are_kept(
    root: Path, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    if bound == "count":
        monkeypatch.setattr(kept, "KEPT_MAPPINGS", 2)
    else:  # room for two files, on a disk of this size
        disk = os.statvfs(root)
        monkeypatch.setattr(kept, "KEPT_DISK_SHARE", 2.5 * BIG / (disk.f_blocks * disk.f_frsize))
    ch = Channel("bounded", recycle=8)
    ch.subscribe("g").close()
    with ch.subscribe("g") as sub:
        for value in range(24):  # five files in turn: four behind, one being read
            _put(ch, value)
            if value >= 4:
                assert _read_all(sub) == [value - 4]
        assert len(_read_only_maps(root)) == 2


@pytest.mark.parametrize("nbytes", [1 << 10, 64 << 10])
def test_small_items_are_mapped_anew(root: Path, channel: Channel, nbytes: int) -> None:
    """A mapping of a few pages costs no more than keeping it."""
    with channel.subscribe("g") as sub:
        for value in range(3):
            _put(channel, value, nbytes)
            assert _read_all(sub) == [value]
            assert _read_only_maps(root) == []


def test_items_from_256_kib_are_kept(root: Path, channel: Channel) -> None:
    """At 1 MB keeping the mapping costs less than mapping each item anew (one check of
    the kept mappings per delivery: docs/benchmarks.md, issue #15)."""
    with channel.subscribe("g") as sub:
        for value in range(3):  # one file, recycled for each item
            _put(channel, value, 1 << 20)
            assert _read_all(sub) == [value]
        assert len(_read_only_maps(root)) == 1


def test_files_dropped_in_by_other_programs_are_not_kept(root: Path, channel: Channel) -> None:
    with channel.subscribe("g", settle=0.0) as sub:
        np.save(root / "dropped.npy", np.full(BIG, 7, np.uint8))
        os.rename(root / "dropped.npy", channel.path / "dropped.npy")  # complete at once
        assert _read_all(sub) == [7]
        assert _read_only_maps(root) == []


def test_copy_on_write_opens_are_not_kept(root: Path, channel: Channel) -> None:
    with channel.subscribe("g") as sub:
        _put(channel, 1)
        item = sub.get(timeout=TIMEOUT)
        writable = item.open("c")
        writable[0] = 9
        del writable
        item.close()
        assert _read_only_maps(root) == []
        assert np.unique(item.array).tolist() == [1]
        item.close()


def test_an_items_whole_file_is_read_through_the_kept_mapping(root: Path, channel: Channel) -> None:
    """`Item.file_bytes` (what a bridge forwards) reads a recycled file through the
    subscription's kept mapping, and holds the reader lock while it lives."""
    with channel.subscribe("g") as sub:
        for value in range(4):  # one file, recycled for each item
            path = _put(channel, value)
            item = sub.get(timeout=TIMEOUT)
            whole = item.file_bytes()
            assert bytes(whole) == path.read_bytes()
            assert not whole.flags.writeable
            assert len(_read_only_maps(root)) == 1, "a new mapping for the same file"
            assert not lock_is_free(path), "the whole file's bytes hold no reader lock"
            del whole
            assert lock_is_free(path)
            item.close()
            item.ack()


def test_an_items_whole_file_outside_a_subscription_is_mapped_and_let_go(
    root: Path, channel: Channel
) -> None:
    path = _put(channel, 3)
    whole = channel.get(path.stem).file_bytes()
    assert bytes(whole) == path.read_bytes()
    assert len(_read_only_maps(root)) == 1
    assert not lock_is_free(path)
    del whole
    assert _read_only_maps(root) == []
    assert lock_is_free(path)
