"""What the CLI does is public API: publishing a file, group states, channel listings,
attrs as they will read back, the RAM a channel holds (issue #14, one door)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem, ItemExists, RamxchgError, encode_attrs, list_channels


def test_put_file_copies_a_npy_file_byte_for_byte(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "frame.npy"
    np.save(source, np.arange(12, dtype="<u2").reshape(3, 4))
    ch = Channel("files")
    item = ch.put_file(source, attrs={"gain": np.float32(2)})
    assert item.name == "frame"
    assert item.path.read_bytes() == source.read_bytes()
    assert item.attrs == {"gain": 2.0}
    assert source.exists()  # a copy
    with pytest.raises(ItemExists):
        ch.put_file(source)
    again = ch.put_file(source, "frame", replace=True)
    assert again.seq is not None
    assert again.seq > (item.seq or 0)


def test_put_file_move_links_it_in_and_removes_the_source(root: Path) -> None:
    ch = Channel("moves")
    source = root / "scan.npy"  # on the channel's filesystem
    np.save(source, np.ones(5))
    inode = os.stat(source).st_ino
    item = ch.put_file(source, "scan", move=True)
    assert not source.exists()
    assert os.stat(item.path).st_ino == inode  # linked, not copied


def test_put_file_refuses_garbage_and_missing_files_and_keeps_them(
    root: Path, tmp_path: Path
) -> None:
    ch = Channel("bad")
    garbage = tmp_path / "x.npy"
    garbage.write_bytes(b"not an array")
    with pytest.raises(CorruptItem) as caught:
        ch.put_file(garbage, move=True)
    assert str(garbage) in str(caught.value)
    assert garbage.read_bytes() == b"not an array"
    with pytest.raises(CorruptItem, match=r"suffix '\.txt'"):
        ch.put_file(tmp_path / "notes.txt")
    with pytest.raises(RamxchgError, match="no such file"):
        ch.put_file(tmp_path / "gone.npy")
    assert ch.names() == []
    assert os.listdir(ch.path / ".ramxchg" / "tmp") == []


def test_group_states_follow_an_item_through_a_group(root: Path) -> None:
    ch = Channel("states")
    with ch.subscribe("a"), ch.subscribe("b") as b:
        ch.put(np.zeros(3), "x")
        assert ch.group_states("x") == {"a": "pending", "b": "pending"}
        item = b.get(timeout=30)
        assert ch.group_states("x") == {"a": "pending", "b": "claimed"}
        item.ack()
        assert ch.group_states("x") == {"a": "pending", "b": "acked"}


def test_list_channels_lists_channel_folders_only(root: Path) -> None:
    Channel("one")
    Channel("two")
    (root / "plain").mkdir()
    os.symlink(root / "one", root / "link")
    assert [path.name for path in list_channels(root)] == ["one", "two"]
    assert list_channels() == list_channels(root)  # the default root ($RAMXCHG_ROOT)
    assert list_channels(root / "missing") == []


def test_encode_attrs_says_what_attrs_read_back_as() -> None:
    assert encode_attrs({"t": (1, np.int64(2)), "p": Path("/x")}) == {"t": [1, 2], "p": "/x"}


def test_status_counts_the_ram_of_the_pool(root: Path) -> None:
    ch = Channel("ram", recycle=2)
    item = ch.put(np.zeros(1 << 18))
    size = item.path.stat().st_size
    item.close()
    assert ch.status().pooled_bytes == 0
    ch.delete(item.name)
    status = ch.status()
    assert status.pooled_bytes == size
    assert status.writing_bytes == 0


def test_status_counts_the_ram_of_items_being_written(root: Path) -> None:
    ch = Channel("writing", recycle=0)
    with ch.create((1 << 18,), "f8") as array:
        array[:] = 1.0  # touched: the pages exist
        assert ch.status().writing_bytes >= array.nbytes
    assert ch.status().writing_bytes == 0
