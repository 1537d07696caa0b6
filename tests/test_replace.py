"""``put(..., replace=True)``: a fixed name published again, atomically for readers."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, ItemExists, ItemNotFound

REPLACEMENTS = 300


def test_replace_publishes_the_new_item_and_old_arrays_keep_their_data(root: Path) -> None:
    channel = Channel("cam")
    first = channel.put(np.full(1000, 1.0), "frame", attrs={"run": 1})
    held = channel.get("frame").array
    second = channel.put(np.full(10, 2.0), "frame", attrs={"run": 2}, replace=True)
    assert (first.seq, second.seq) == (1, 2)
    item = channel.get("frame")
    assert (item.seq, item.attrs) == (second.seq, {"run": 2})
    np.testing.assert_array_equal(item.array, np.full(10, 2.0))
    np.testing.assert_array_equal(held, np.full(1000, 1.0))  # the old inode lives on
    assert channel.names() == ["frame"]
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []


def test_replace_of_a_name_not_yet_published_publishes_it(root: Path) -> None:
    channel = Channel("cam")
    channel.put(np.ones(3), "new", replace=True)
    assert channel.names() == ["new"]


def test_replace_needs_a_name_and_the_same_format(root: Path) -> None:
    channel = Channel("cam")
    with pytest.raises(ValueError, match="needs the name"):
        channel.put(np.ones(3), replace=True)
    channel.put({"x": np.ones(3)}, "scan", format="hdf5")
    with pytest.raises(ItemExists, match="another format"):
        channel.put(np.ones(3), "scan", replace=True)
    with pytest.raises(ItemExists):  # without replace a name stays taken
        channel.put({"x": np.ones(3)}, "scan", format="hdf5")
    assert channel.get("scan").format == "hdf5"
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []


def test_groups_forget_the_old_item_and_receive_the_new_one(root: Path) -> None:
    channel = Channel("cam")
    done, busy = channel.subscribe("done"), channel.subscribe("busy")
    groups = channel.path / ".ramxchg" / "groups"
    with done, busy:
        channel.put(np.full(4, 1.0), "frame")
        acked = done.get(timeout=10)
        assert acked.ack()
        claimed = busy.get(timeout=10)  # a member works on the old item ...
        assert (groups / "done" / "acks" / "frame").exists()
        assert (groups / "busy" / "claims" / "frame").exists()
        channel.put(np.full(4, 2.0), "frame", replace=True)
        # ... the replacement forgot both: the old item counts as deleted
        assert not (groups / "done" / "acks" / "frame").exists()
        assert not (groups / "busy" / "claims" / "frame").exists()
        assert not claimed.ack()  # a late ack of the old item changes nothing
        assert channel.get("frame").array[0] == 2.0
        for sub in (done, busy):
            item = sub.get(timeout=10)
            assert (item.name, float(item.array[0])) == ("frame", 2.0)
            item.close()
            item.ack()
    assert channel.names() == []  # every group acked the new item: deleted


def _read_while_replaced(path: str, stop: Any, ready: Any, out: Any) -> None:
    """Read item "frame" until ``stop``: count reads, misses and torn arrays."""
    channel = Channel(Path(path), create=False)
    reads = misses = torn = 0
    ready.set()
    while not stop.is_set():
        try:
            with channel.get("frame") as item:
                array = item.array
                reads += 1
                torn += int(array.min() != array.max())
                del array
        except ItemNotFound:
            misses += 1
    out.send((reads, misses, torn))


def test_a_reader_never_finds_the_name_missing_while_it_is_replaced(root: Path) -> None:
    channel = Channel("cam")
    channel.put(np.zeros(4096), "frame")
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    reader = ctx.Process(target=_read_while_replaced, args=(str(channel.path), stop, ready, send))
    reader.start()
    try:
        assert ready.wait(60)
        for value in range(1, REPLACEMENTS + 1):
            channel.put(np.full(4096, float(value)), "frame", replace=True)
    finally:
        stop.set()
        assert receive.poll(60)
        reads, misses, torn = receive.recv()
        reader.join(30)
    assert reads > 0
    assert (misses, torn) == (0, 0)
    assert channel.get("frame").array[0] == REPLACEMENTS
    assert channel.names() == ["frame"]
