"""Lifetime: arrays outlive their items, and dropped subscriptions release what they hold.

A consumer keeps every array it receives while each item is closed, acked and
deleted behind it, and drops its subscription unclosed every `REOPEN_EVERY` items (a
notebook cell run again). At the end it reads every kept array against its producer's
checksum: an array whose mapping had been unmapped would kill it (SIGSEGV) or read
other data.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, Item
from tests.reliability._work import checksum, publish_random, resources, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
#: Largest item: every array is held until the end, so the full profile holds ~200 MB.
MAX_BYTES = 256 << 10
#: The consumer drops its subscription, unclosed, and subscribes again this often.
REOPEN_EVERY = 25
#: Descriptors the consumer may gain after its first subscription (watchdog, h5py), and
#: the 4 its channel handle holds open between items: groups/, groups/g/ and its claims/
#: and acks/ (`retention.HELD_GROUP_FOLDERS`; a fixed number, not one per subscription).
SLACK = 8


def _inotify_instances() -> int:
    fd_dir = "/proc/self/fd"
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(f"{fd_dir}/{fd}"))
        except FileNotFoundError:  # the descriptor listdir used
            continue
    return targets.count("anon_inode:inotify")


def _mappings_of(folder: Path) -> int:
    """Memory mappings of this process over files of ``folder`` (deleted ones too)."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if f" {folder}/" in line)


def _take_array(item: Item, how: int) -> np.ndarray:
    """The item's array, the item then released in one of four ways."""
    if how == 0:
        with item:
            return item.array
    if how == 1:
        array = item.array
        item.close()
        return array
    if how == 2:
        return item.open("c")  # a mapping of its own, copy-on-write
    return item.array[:]  # a view; the item is dropped unclosed


def _keep_every_array(root: str, count: int, out: Connection) -> None:
    warm_up()
    ch = Channel("life", root=root)
    fds = resources()[0]
    kept: list[tuple[np.ndarray, Any, Any, str]] = []
    sub = ch.subscribe("g")
    while len(kept) < count:
        item = sub.get(timeout=120)
        attrs = item.attrs
        array = _take_array(item, len(kept) % 4)
        item.ack()  # the only group: the item is deleted now
        kept.append((array, attrs["crc"], attrs["n"], attrs["id"]))
        del item, array
        if len(kept) % REOPEN_EVERY == 0:
            sub = ch.subscribe("g")  # the previous one is dropped unclosed
    sub.close()
    left_on_disk = len(ch)
    bad = [i for array, crc, n, i in kept if array.size != n or checksum(array) != crc]
    ids = [i for _, _, _, i in kept]
    held = _mappings_of(ch.path)
    del kept
    gc.collect()
    freed = _mappings_of(ch.path)
    out.send((ids, bad, left_on_disk, held, freed, resources()[0] - fds, _inotify_instances()))


def test_arrays_outlive_their_deleted_items(root: Path, profile: Profile, figures: Figures) -> None:
    count = profile.soak_items
    ch = Channel("life")
    ch.subscribe("g").close()  # registered first: its acks delete every item
    receive, send = SPAWN.Pipe(duplex=False)
    consumer = SPAWN.Process(target=_keep_every_array, args=(str(root), count, send))
    consumer.start()
    rng = np.random.default_rng(11)
    for i in range(count):
        publish_random(ch, rng, MAX_BYTES, id=str(i))
    wait([receive, consumer.sentinel])  # its report, or its death (pytest-timeout: a hang)
    consumer.join(0 if receive.poll() else 10)
    assert receive.poll(), f"the consumer reported nothing (exit code {consumer.exitcode})"
    ids, bad, left_on_disk, held, freed, more_fds, inotify = receive.recv()
    consumer.join(60)
    assert consumer.exitcode == 0, f"consumer died with exit code {consumer.exitcode}"
    assert sorted(ids, key=int) == [str(i) for i in range(count)], "lost or delivered twice"
    assert bad == [], "arrays changed after their items were deleted"
    assert left_on_disk == 0, "acked items are deleted while their arrays live"
    assert held >= count, "kept arrays map their own (deleted) files"
    assert freed == 0, "mappings outlive the last array over them"
    assert more_fds <= SLACK, "dropped subscriptions leak descriptors"
    assert inotify == 0, "dropped subscriptions leak inotify instances"
    figures.runs = f"{count} items, every array kept to the end"
    figures.faults = (
        "each item closed (4 ways), acked and deleted before its array is read; "
        f"subscription dropped unclosed every {REOPEN_EVERY} items"
    )
    figures.lost = count - len(set(ids))
    figures.partial = len(bad)
