"""A producer keeps its recycled files mapped: ``put`` is a memcpy, ``create`` a loan."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ramxchg import Channel
from tests.conftest import mapped_from

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
