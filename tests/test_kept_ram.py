"""The RAM a consumer's kept mappings (formats/kept.py) hold is never out of a producer's
reach: a file deleted while only kept mappings map it gives its pages back at once."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, NotRamBackedWarning
from tests.conftest import mounted_tmpfs, wait_for

SPAWN = mp.get_context("spawn")
ITEM = 4 << 20  # bytes of data: with its header, large enough for a kept mapping
TIMEOUT = 60


def _read_then_idle(root: str, count: int, done: Any, stop: Any) -> None:
    """Read ``count`` items of channel "ram" whole and let go of them, then sit idle (a
    consumer busy elsewhere, or waiting for an item that needs the RAM it keeps)."""
    warnings.simplefilter("ignore", NotRamBackedWarning)  # warned about in the test
    sub = Channel("ram", root=root).subscribe()
    for _ in range(count):
        with sub.get(timeout=TIMEOUT) as item:
            item.array.sum()
    done.set()
    stop.wait(TIMEOUT)
    sub.close()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A RAM disk of our own, 64 MiB: its free space is what this test frees."""
    with mounted_tmpfs(tmp_path / "ram", 64 << 20) as mounted:
        yield mounted


@pytest.mark.root
def test_files_deleted_while_an_idle_consumer_keeps_them_mapped_give_their_ram_back(
    mount: Path,
) -> None:
    ch = Channel("ram", root=mount, recycle=1)
    names = [ch.put(np.full(ITEM, n, np.uint8)).name for n in range(4)]
    done, stop = SPAWN.Event(), SPAWN.Event()
    consumer = SPAWN.Process(target=_read_then_idle, args=(str(mount), 4, done, stop))
    consumer.start()
    try:
        assert done.wait(TIMEOUT)
        for name in names:  # one goes into the pool (recycle=1), three are unlinked
            ch.delete(name)
        # Room only if the deleted files' pages came back, the consumer's mappings
        # of them notwithstanding (on 47d3edf: RamDiskFull, 8 MiB held by them).
        ch.put(np.ones(60 << 20, np.uint8))
    finally:
        stop.set()
        consumer.join(TIMEOUT)
    assert consumer.exitcode == 0


def _hold_then_wait(root: str, held: Any, let_go: Any) -> None:
    """Read the first item of channel "ram" and hold its array until told to let go,
    then wait for a next item (which comes only to end the test)."""
    sub = Channel("ram", root=root).subscribe()
    item = sub.get(timeout=TIMEOUT)
    array = item.array
    item.close()
    held.set()
    let_go.wait(TIMEOUT)
    del array
    sub.get(timeout=TIMEOUT)
    sub.close()


def _deleted_maps(root: Path, pid: int) -> list[str]:
    """The mappings of deleted files under ``root`` that process ``pid`` has."""
    with open(f"/proc/{pid}/maps") as maps:
        return [line for line in maps if str(root) in line and line.rstrip().endswith("(deleted)")]


def test_a_consumer_waiting_for_items_lets_go_of_files_deleted_while_it_held_them(
    root: Path,
) -> None:
    ch = Channel("ram", recycle=1)
    item = ch.put(np.ones(ITEM, np.uint8))
    held, let_go = SPAWN.Event(), SPAWN.Event()
    consumer = SPAWN.Process(target=_hold_then_wait, args=(str(root), held, let_go))
    consumer.start()
    try:
        assert held.wait(TIMEOUT)
        ch.delete(item.name)  # mapped by the consumer: neither pooled nor emptied
        assert _deleted_maps(root, consumer.pid or 0)
        let_go.set()
        # Its kept mapping is all that holds the file's RAM now; on 47d3edf it stayed
        # until the next item came.
        wait_for(lambda: not _deleted_maps(root, consumer.pid or 0), 10, "the mapping to go")
        ch.put(np.ones(8, np.uint8))
        consumer.join(TIMEOUT)
        assert consumer.exitcode == 0
    finally:
        if consumer.is_alive():
            consumer.kill()
            consumer.join(TIMEOUT)


def _produce_then_idle(root: str, orders: Any, done: Any) -> None:
    """Put what ``orders`` say (a count of items), then sit idle with the channel open."""
    warnings.simplefilter("ignore", NotRamBackedWarning)  # warned about in the test
    ch = Channel("ram", root=root)
    while (count := orders.get(timeout=TIMEOUT)) is not None:
        for n in range(count):
            ch.put(np.full(ITEM, n, np.uint8))
        done.put(count)
    done.put(None)


@pytest.mark.root
def test_a_dropped_channel_gives_its_ram_back_while_its_producer_keeps_files_mapped(
    mount: Path,
) -> None:
    ch = Channel("ram", root=mount, recycle=4)
    orders, done = SPAWN.Queue(), SPAWN.Queue()
    producer = SPAWN.Process(target=_produce_then_idle, args=(str(mount), orders, done))
    producer.start()
    try:
        orders.put(4)
        assert done.get(timeout=TIMEOUT) == 4
        for item in ch.items():  # into the pool
            ch.delete(item.name)
        orders.put(4)  # written into the pooled files, which it keeps mapped now
        assert done.get(timeout=TIMEOUT) == 4
        ch.drop()  # (another process: `ramxchg rm`) while the producer sits idle
        # on 47d3edf: its mappings held the 4 files' 16 MiB
        assert shutil.disk_usage(mount).used < ITEM
    finally:
        orders.put(None)
        producer.join(TIMEOUT)
    assert producer.exitcode == 0
