"""Retention by arrival: a dropped-in or moved-in file ages from when it entered the folder.

Files written by other programs have no sidecar; their mtime says when their data was
last written (``mv`` keeps it, ``touch`` sets any), not when they entered the channel.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import file_clock_passes, wait_for

DAY_NS = 86_400 * 10**9


def _move_in(channel: Channel, name: str, mtime_ns: int) -> Path:
    """``mv`` a complete .npy file with the given mtime into the channel (same filesystem)."""
    outside = channel.path.parent / f"outside-{name}.npy"
    np.save(outside, np.arange(4))
    os.utime(outside, ns=(mtime_ns, mtime_ns))
    inside = channel.path / f"{name}.npy"
    os.rename(outside, inside)
    info = os.stat(inside)
    assert info.st_mtime_ns == mtime_ns  # rename keeps the mtime ...
    assert abs(info.st_ctime_ns - time.time_ns()) < DAY_NS // 2  # ... and sets the ctime
    return inside


def test_keep_last_keeps_the_new_put_over_an_older_dropped_in_file(root: Path) -> None:
    ch = Channel("ring", keep_last=1)
    np.save(ch.path / "dropped.npy", np.arange(3))
    first = ch.put(np.zeros(1))
    assert ch.names() == [first.name]  # the dropped-in file is older: it goes
    second = ch.put(np.ones(1))
    assert ch.names() == [second.name]


def test_items_are_in_arrival_order_and_keep_last_keeps_the_newest(root: Path) -> None:
    ch = Channel("mixed", keep_last=3)
    a = ch.put(np.zeros(1), "a")
    file_clock_passes(a.published_ns, root / "probe")
    np.save(ch.path / "legacy.npy", np.arange(3))
    b = ch.put(np.zeros(1), "b")
    assert ch.names() == ["a", "legacy", "b"]
    assert [item.name for item in ch.items()] == ["a", "legacy", "b"]
    latest = ch.latest()
    assert latest is not None
    assert latest.name == "b"
    ch.put(np.zeros(1), "c")
    assert ch.names() == ["legacy", "b", "c"]
    ch.put(np.zeros(1), "d")
    assert ch.names() == ["b", "c", "d"]
    assert [item.seq for item in ch.items()] == [b.seq, b.seq + 1, b.seq + 2]  # type: ignore[operator]


def test_a_put_never_deletes_the_item_it_published(root: Path) -> None:
    ch = Channel("fleeting", ttl=1e-9)  # everything is expired by the time retention runs
    item = ch.put(np.zeros(1), "new")
    assert "new" in ch
    np.testing.assert_array_equal(item.array, np.zeros(1))
    ch.put(np.zeros(1), "newer")
    assert ch.names() == ["newer"]


def test_ttl_counts_a_moved_in_file_from_its_arrival_not_its_old_mtime(root: Path) -> None:
    ch = Channel("aged", ttl=600)
    moved = _move_in(ch, "old", time.time_ns() - DAY_NS)
    ch.put(np.zeros(1), "new")
    assert ch.names() == ["old", "new"]
    assert ch.get("old").published_ns == os.stat(moved).st_ctime_ns
    assert ch.gc()["expired"] == 0


def test_ttl_expires_a_moved_in_file_with_a_future_mtime(root: Path) -> None:
    ttl = 0.2
    ch = Channel("future", ttl=ttl)
    moved = _move_in(ch, "ahead", time.time_ns() + DAY_NS)
    arrived = os.stat(moved).st_ctime_ns
    wait_for(lambda: time.time_ns() > arrived + ttl * 1e9, what="the ttl to pass")
    ch.put(np.zeros(1), "new")
    assert ch.names() == ["new"]


def test_a_moved_in_file_acked_by_its_group_is_deleted(root: Path) -> None:
    ch = Channel("acked")
    ch.subscribe("g").close()  # the group exists before the file arrives
    file_clock_passes(time.time_ns(), root / "probe")
    _move_in(ch, "old", time.time_ns() - DAY_NS)
    [status] = ch.groups()
    assert status.holding == 1  # the group must ack it before it may go
    ch.ack("old", "g")
    ch.gc()
    assert "old" not in ch


def test_a_group_member_acking_a_moved_in_file_deletes_it(root: Path) -> None:
    ch = Channel("member")
    with ch.subscribe("g", watch="polling", settle=0.05) as sub:
        file_clock_passes(time.time_ns(), root / "probe")
        _move_in(ch, "old", time.time_ns() - DAY_NS)
        item = sub.get(timeout=10)
        assert (item.name, item.seq) == ("old", None)
        item.ack()
    assert "old" not in ch


@pytest.mark.parametrize("offset_ns", [-DAY_NS, DAY_NS], ids=["old-mtime", "future-mtime"])
def test_a_file_that_arrived_before_the_group_is_not_held_for_it(
    root: Path, offset_ns: int
) -> None:
    ch = Channel("before")
    _move_in(ch, "early", time.time_ns() + offset_ns)
    ch.subscribe("g").close()
    [status] = ch.groups()
    assert status.holding == 0  # like a file in a plain folder: it stays until deleted
    ch.ack("early", "g")
    ch.gc()
    assert "early" in ch
