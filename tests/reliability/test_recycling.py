"""Recycling never changes a held array: readers in other processes keep arrays of items
that ``keep_last=1`` deletes at once, while the channel (default settings: recycling on)
writes hundreds of later items into recycled files."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, Item, ItemNotFound
from tests.conftest import items_until
from tests.reliability._work import checksum, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
#: Items published, per profile.
ITEMS = {"fast": 400, "full": 5000}
#: A reader keeps the array of one item in this many it reads.
KEEP_EVERY = 4
#: Few shapes, so that most items find a recycled file of their size.
SHAPES = [((256, 1024), "<u2"), ((128, 1024), "<f4"), ((1000,), "<i8")]

Held = list[tuple[np.ndarray, int, int]]


def _keep(item: Item, held: Held) -> None:
    """Keep the item's array past ``close()``, with the checksum its producer stored."""
    try:
        with item:
            attrs = item.attrs
            held.append((item.array, attrs["crc"], attrs["n"]))
    except ItemNotFound:
        pass  # deleted by keep_last before we opened it: nothing held


def _changed(held: Held) -> int:
    return sum(checksum(array) != crc or array.size != n for array, crc, n in held)


def _hold(root: str, how: str, ready: Any, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type,type-arg]
    """A reader that keeps arrays while they are deleted and their files recycled; it
    releases ``ready`` once it follows the channel."""
    warm_up()
    ch = Channel("recycling", root=root)
    held: Held = []
    read = 0
    if how == "subscription":
        with ch.subscribe() as sub:
            ready.release()
            for item in items_until(sub, stop):
                read += 1
                if read % KEEP_EVERY == 0:
                    _keep(item, held)
                item.close()
    else:
        last = None
        ready.release()
        while not stop.is_set():
            latest = ch.latest()
            if latest is None or latest.name == last:
                continue
            last = latest.name
            read += 1
            if read % KEEP_EVERY == 0:
                with contextlib.suppress(ItemNotFound):  # get(): gone since the listing
                    _keep(ch.get(latest.name) if read % 2 else latest, held)
    out.put((len(held), _changed(held)))


def _publish(ch: Channel, rng: np.random.Generator, count: int) -> int:
    """Publish ``count`` random items of `SHAPES`; how many went into a recycled file."""
    inodes: set[int] = set()
    reused = 0
    for i in range(count):
        shape, dtype = SHAPES[int(rng.integers(len(SHAPES)))]
        array = rng.integers(0, 1 << 15, shape).astype(dtype)
        fmt = "hdf5" if rng.random() < 0.2 else "npy"
        attrs = {"crc": checksum(array), "n": int(array.size), "i": i}
        if rng.random() < 0.5:
            item = ch.put(array, attrs=attrs, format=fmt)
        else:
            with ch.create(shape, dtype, attrs=attrs, format=fmt) as target:
                target[...] = array
            item = ch.latest()
            assert item is not None
        try:
            inode = os.stat(item.path).st_ino
        except FileNotFoundError:
            continue  # deleted already
        reused += inode in inodes
        inodes.add(inode)
    return reused


def test_held_arrays_never_change_while_files_are_recycled(
    root: Path, profile: Profile, figures: Figures
) -> None:
    count = ITEMS[profile.name]
    ch = Channel("recycling", keep_last=1)  # every item deleted as the next one lands
    assert ch.config.recycle > 0, "recycling is on by default"
    ready, stop, out = SPAWN.Semaphore(0), SPAWN.Event(), SPAWN.Queue()
    readers = [
        SPAWN.Process(target=_hold, args=(str(root), how, ready, stop, out))
        for how in ("subscription", "get")
    ]
    for reader in readers:
        reader.start()
    for _ in readers:  # on a loaded machine the items were all out before a reader started
        assert ready.acquire(timeout=120), "a reader did not start"
    reused = _publish(ch, np.random.default_rng(13), count)
    stop.set()
    results = [out.get(timeout=120) for _ in readers]
    for reader in readers:
        reader.join(60)
        assert reader.exitcode == 0
    held = sum(n for n, _ in results)
    changed = sum(c for _, c in results)
    figures.runs = f"{count} items, keep_last=1, default recycling; 2 readers held {held} arrays"
    figures.faults = (
        f"each item deleted at the next publish while readers hold its arrays; "
        f"{reused} items written into a recycled file"
    )
    figures.partial = changed
    assert changed == 0, f"{changed} of {held} held arrays changed under their reader"
    assert held > 0, "the readers held nothing: the test proves nothing"
    assert reused > count // 10, "files were hardly recycled: the test proves little"
