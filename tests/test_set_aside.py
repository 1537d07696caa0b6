"""Dead letters and quarantined files through the public API: listed, requeued, deleted;
and `Channel.drop`."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import (
    Channel,
    ChannelNotFound,
    CorruptItem,
    InvalidName,
    ItemExists,
    ItemNotFound,
    Subscription,
    UnsafeRoot,
)


def _dead_letter(channel: Channel, sub: Subscription, reason: str = "exit status 3") -> None:
    item = sub.get(timeout=10)
    item.close()
    assert sub.dead_letter(item, reason, command="analyse {path}", exit_status=3, attempts=3)


def _quarantined(channel: Channel, filename: str, data: bytes) -> Path:
    """Drop ``data`` in as a legacy file and wait until a subscription quarantines it."""
    with channel.subscribe(settle=0.05, quarantine_after=0.2) as sub:
        (channel.path / filename).write_bytes(data)
        deadline = time.monotonic() + 10
        while not channel.quarantine.files():
            with pytest.raises(TimeoutError):
                sub.get(timeout=0.05)
            assert time.monotonic() < deadline, f"{filename} was not quarantined"
    return channel.path / ".ramxchg" / "quarantine" / filename


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_dead_letters_are_listed_with_their_reason(root: Path) -> None:
    channel = Channel("cam")
    assert channel.dead_letters.files() == []  # no dead/ folder yet
    with channel.subscribe("analysis") as sub:
        channel.put(np.arange(4.0), "frame", attrs={"run": 3})
        _dead_letter(channel, sub)
    [dead] = channel.dead_letters.files()
    assert (dead.file, dead.name, dead.seq, dead.format) == ("frame.npy", "frame", 1, "npy")
    assert dead.reason == "exit status 3"
    assert dead.size == (channel.path / ".ramxchg" / "dead" / "frame.npy").stat().st_size
    assert dead.details["command"] == "analyse {path}"
    assert dead.details["attrs"] == {"run": 3}
    assert len(channel.dead_letters) == 1
    assert channel.names() == []


def test_requeue_publishes_it_again_for_every_group_then_takes_it_out(root: Path) -> None:
    channel = Channel("cam")
    with channel.subscribe("analysis") as sub:
        channel.put(np.arange(4.0), "frame", attrs={"run": 3})
        _dead_letter(channel, sub)
        item = channel.dead_letters.requeue("frame.npy")
        assert (item.name, item.seq, item.attrs) == ("frame", 2, {"run": 3})
        again = sub.get(timeout=10)
        assert (again.name, again.seq) == ("frame", 2)
        np.testing.assert_array_equal(again.array, np.arange(4.0))
    assert channel.dead_letters.files() == []
    assert os.listdir(channel.path / ".ramxchg" / "dead") == []  # the reason file too
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []


def test_requeue_leaves_it_where_it_is_when_its_name_is_taken(root: Path) -> None:
    channel = Channel("cam")
    with channel.subscribe("analysis") as sub:
        channel.put(np.arange(4.0), "frame")
        _dead_letter(channel, sub)
    channel.put(np.zeros(2), "frame")  # a new item of that name
    with pytest.raises(ItemExists):
        channel.dead_letters.requeue("frame.npy")
    assert [f.file for f in channel.dead_letters] == ["frame.npy"]
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []
    assert channel.get("frame").array.tolist() == [0.0, 0.0]


def test_two_dead_letters_of_one_name_are_both_kept_and_requeued_by_file(root: Path) -> None:
    channel = Channel("cam")
    with channel.subscribe("analysis") as sub:
        for value in (1.0, 2.0):
            channel.put(np.full(3, value), "frame")
            _dead_letter(channel, sub)
    first, second = channel.dead_letters.files()
    assert first.file == "frame.npy"
    assert second.file != "frame.npy"
    assert (first.name, second.name) == ("frame", "frame")
    assert channel.dead_letters.requeue(second.file).array.tolist() == [2.0, 2.0, 2.0]
    assert [f.file for f in channel.dead_letters] == ["frame.npy"]


def test_a_quarantined_file_that_is_still_malformed_stays_and_can_be_deleted(root: Path) -> None:
    channel = Channel("cam")
    moved = _quarantined(channel, "junk.npy", b"not numpy at all")
    [junk] = channel.quarantine.files()
    assert (junk.file, junk.name, junk.seq, junk.size) == ("junk.npy", "junk", None, 16)
    assert "no numpy magic" in junk.reason
    with pytest.raises(CorruptItem):
        channel.quarantine.requeue("junk.npy")
    assert moved.read_bytes() == b"not numpy at all"
    assert channel.names() == []
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []
    channel.quarantine.delete("junk.npy")
    assert os.listdir(moved.parent) == []
    with pytest.raises(ItemNotFound):
        channel.quarantine.delete("junk.npy")


def test_a_quarantined_file_repaired_in_place_is_published(root: Path) -> None:
    channel = Channel("cam")
    moved = _quarantined(channel, "late.npy", b"\x93NUMPY")  # a writer that was too slow
    moved.write_bytes(_npy_bytes(np.arange(5)))  # ... finished it after all
    item = channel.quarantine.requeue("late.npy")
    assert (item.name, item.seq) == ("late", 1)
    assert item.array.tolist() == [0, 1, 2, 3, 4]
    assert channel.quarantine.files() == []


def test_a_quarantined_hard_link_is_never_published(root: Path) -> None:
    channel = Channel("cam")
    outside = root / "outside.npy"  # same filesystem as the channel, not in it
    np.save(outside, np.arange(3))
    os.link(outside, channel.path / "linked.npy")
    channel.subscribe().close()  # a sidecar-less hard link is quarantined at once
    [linked] = channel.quarantine.files()
    with pytest.raises(CorruptItem, match="names"):
        channel.quarantine.requeue(linked.file)
    assert channel.names() == []
    assert outside.stat().st_nlink == 2  # still in the quarantine, untouched


def test_a_quarantined_symlink_is_listed_never_followed(root: Path) -> None:
    channel = Channel("cam")
    target = root / "target.npy"
    np.save(target, np.arange(3))
    os.symlink(target, channel.path / "sym.npy")
    channel.subscribe().close()  # the first listing quarantines it
    [sym] = channel.quarantine.files()
    assert sym.file == "sym.npy"
    with pytest.raises(CorruptItem, match="not a regular file"):
        channel.quarantine.requeue("sym.npy")
    assert channel.names() == []
    assert np.load(target).tolist() == [0, 1, 2]


@pytest.mark.parametrize("file", ["../cam.npy", ".hidden", "", "a/b.npy"])
def test_only_a_file_of_the_folder_is_named(root: Path, file: str) -> None:
    channel = Channel("cam")
    with pytest.raises(InvalidName):
        channel.dead_letters.requeue(file)
    with pytest.raises(InvalidName):
        channel.dead_letters.delete(file)


def test_drop_removes_the_channel_at_once_and_mapped_arrays_survive(root: Path) -> None:
    channel = Channel("cam")
    channel.put(np.arange(1000.0), "frame")
    channel.subscribe("viewers").close()
    held = channel.get("frame").array
    channel.drop()
    assert os.listdir(root) == []  # no hidden leftovers either
    assert held.sum() == np.arange(1000.0).sum()
    with pytest.raises(ChannelNotFound):
        Channel("cam", create=False)
    with pytest.raises(ChannelNotFound):
        channel.drop()
    assert Channel("cam").names() == []  # a new channel of that name


def test_drop_refuses_a_folder_that_is_no_channel_or_a_link(root: Path) -> None:
    plain = root / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    with pytest.raises(ChannelNotFound, match="no channel"):
        Channel(plain, create=False).drop()
    assert (plain / "keep.txt").read_text() == "mine"
    real = Channel("real")
    real.put(np.ones(2), "a")
    swapped = Channel("cam")
    os.rename(swapped.path, root / "old-cam")
    os.symlink(real.path, swapped.path)  # swapped for a link after it was opened
    with pytest.raises(UnsafeRoot):
        swapped.drop()
    assert real.names() == ["a"]
