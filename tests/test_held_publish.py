"""Publishing goes through the folders a channel handle holds open, never by path.

A channel may belong to another user (a shared root, mode 1777), who can swap its
``tmp/`` or ``meta/`` for a symlink to a folder of yours after your handle opened them.
Every way of publishing (`put` into a recycled or a new file, HDF5, `create`,
`put_file` copied or moved, `put_file_bytes`, `requeue`) makes its temporary file,
writes its sidecar and links its item through the descriptors the handle holds: the
linked folder is never written. The operation either publishes inside the channel (the
held folders are still the channel's real ones) or fails with our own exception naming
the full path. `tests/reliability/test_co_users.py` does the same across two users, as
root; here one user plays both parts.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from ramxchg import (
    Channel,
    ChannelNotFound,
    CorruptItem,
    GroupNotFound,
    Item,
    RamxchgError,
    Subscription,
    UnsafeRoot,
)
from ramxchg._store.safedir import SafeDir
from ramxchg.formats import locks
from tests.conftest import SHM, snapshot

pytestmark = pytest.mark.usefixtures("no_leaks")

ITEM = np.arange(1000, dtype=np.int64)
#: Files a publish that followed the link would create, replace or remove in it.
PRECIOUS = {"notes.json": "{}", "half.npy": "old", "new.npy": "mine", "seq": f"{7:020d}\n"}


def _put_recycled(ch: Channel, sources: Path) -> str:
    return ch.put(ITEM, "new").path.name  # the size of the file pooled by the warm-up


def _put_new_file(ch: Channel, sources: Path) -> str:
    return ch.put(np.ones(7), "new").path.name  # a size the pool does not hold


def _put_numbered(ch: Channel, sources: Path) -> str:
    return ch.put(ITEM).path.name


def _put_replacing(ch: Channel, sources: Path) -> str:
    return ch.put(ITEM * 2, "kept", replace=True).path.name


def _put_hdf5(ch: Channel, sources: Path) -> str:
    return ch.put({"a": ITEM, "b/c": np.eye(3)}, "new", format="hdf5").path.name


def _create(ch: Channel, sources: Path) -> str:
    with ch.create(ITEM.shape, ITEM.dtype, "new") as array:
        array[:] = ITEM
    return "new.npy"


def _create_hdf5(ch: Channel, sources: Path) -> str:
    with ch.create({"a": ((4,), np.float32)}, name="new", format="hdf5") as arrays:
        arrays["a"][:] = 1.5
    return "new.h5"


def _put_file_copied(ch: Channel, sources: Path) -> str:
    return ch.put_file(sources / "new.npy").path.name


def _put_file_hdf5(ch: Channel, sources: Path) -> str:
    return ch.put_file(sources / "new.h5").path.name


def _put_file_moved(ch: Channel, sources: Path) -> str:
    return ch.put_file(sources / "new.npy", move=True).path.name


def _put_file_bytes(ch: Channel, sources: Path) -> str:
    data = (sources / "new.npy").read_bytes()
    return ch.put_file_bytes(data, "new", format="npy").path.name


def _requeue(ch: Channel, sources: Path) -> str:
    return ch.dead_letters.requeue("new.npy").path.name


Publish = Callable[[Channel, Path], str]
PUBLISHING: list[Publish] = [
    _put_recycled,
    _put_new_file,
    _put_numbered,
    _put_replacing,
    _put_hdf5,
    _create,
    _create_hdf5,
    _put_file_copied,
    _put_file_hdf5,
    _put_file_moved,
    _put_file_bytes,
    _requeue,
]


@pytest.fixture
def precious() -> Iterator[Path]:
    """Your own folder, on the channel's filesystem (where a followed link would write)."""
    folder = Path(tempfile.mkdtemp(prefix="ramxchg-precious-", dir=SHM if SHM.is_dir() else None))
    for name, text in PRECIOUS.items():
        (folder / name).write_text(text)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def channel(root: Path) -> Channel:
    """A channel in use: its state folders are held open (for an hour, not a second:
    what this handle does next goes through these very descriptors), its pool holds a
    file of `ITEM`'s size; with an item ``kept``, a dead letter ``new.npy`` and source
    files ``new.npy`` and ``new.h5`` beside it on the same filesystem."""
    ch = Channel("shared", root=root)
    ch._retention.state.max_age = 3600
    ch.put(ITEM, "kept")
    ch.put(ITEM, "warm")
    ch.delete("warm")  # into the pool: tmp/, meta/ and pool/ are held open now
    np.save(root / "new.npy", ITEM)
    with h5py.File(root / "new.h5", "w") as h5:
        h5["a"] = ITEM
    dead = ch.path / ".ramxchg" / "dead"
    dead.mkdir(mode=0o700)
    np.save(dead / "new.npy", ITEM)
    return ch


def _swap(ch: Channel, kind: str, target: Path) -> Path:
    """Swap the state folder ``kind`` for a link to ``target``, as its owner may at any
    moment; returns where the real folder went."""
    folder = ch.path / ".ramxchg" if kind == ".ramxchg" else ch.path / ".ramxchg" / kind
    away = folder.with_name(f"{folder.name}-away")
    os.rename(folder, away)
    folder.symlink_to(target)
    return away


def _publish(ch: Channel, publish: Publish, sources: Path) -> str | RamxchgError:
    try:
        return publish(ch, sources)
    except RamxchgError as exc:
        return exc


@pytest.mark.parametrize("kind", ["tmp", "meta"])
@pytest.mark.parametrize("publish", PUBLISHING)
def test_a_folder_swapped_while_held_is_never_followed(
    channel: Channel, precious: Path, root: Path, kind: str, publish: Publish
) -> None:
    """Fails on d7cd730: the temporary file was made in the linked folder (tmp/), or the
    sidecar renamed into it (meta/)."""
    before = snapshot(precious)
    away = _swap(channel, kind, precious)
    done = _publish(channel, publish, root)
    assert snapshot(precious) == before
    tmp = away if kind == "tmp" else away.parent / "tmp"
    assert os.listdir(tmp) == []  # the temporary file went, through the held folder
    if kind == "tmp":
        # Its path no longer leads to the held tmp/: nothing is published.
        assert isinstance(done, UnsafeRoot), done
        assert str(channel.path / ".ramxchg" / "tmp") in str(done)
        return
    # The held meta/ is the channel's real one: published there.
    assert isinstance(done, str), done
    assert (channel.path / done).is_file()
    assert (away / f"{Path(done).stem}.json").is_file()


@pytest.mark.parametrize("kind", ["tmp", "meta"])
@pytest.mark.parametrize("publish", PUBLISHING)
def test_a_folder_swapped_is_refused_once_opened_again(
    channel: Channel, precious: Path, root: Path, kind: str, publish: Publish
) -> None:
    before = snapshot(precious)
    away = _swap(channel, kind, precious)
    channel._retention.state.close()  # as once a second: the next use opens them again
    done = _publish(channel, publish, root)
    assert snapshot(precious) == before
    assert isinstance(done, UnsafeRoot), done
    assert done.path == str(channel.path / ".ramxchg" / kind)
    assert str(channel.path / ".ramxchg" / kind) in str(done)
    tmp = away if kind == "tmp" else away.parent / "tmp"
    assert os.listdir(tmp) == []
    assert sorted(channel.names()) == ["kept"]


def test_a_tmp_folder_replaced_by_another_publishes_nothing(channel: Channel) -> None:
    """A real folder in its place (not a link), with a file planted under a temporary
    name: the file this handle wrote is not found there, so nothing is published."""
    away = _swap(channel, "tmp", channel.path / "unused")
    (channel.path / ".ramxchg" / "tmp").unlink()
    (channel.path / ".ramxchg" / "tmp").mkdir()
    done = _publish(channel, _put_new_file, channel.path)
    assert isinstance(done, RamxchgError), done
    assert str(channel.path / ".ramxchg" / "tmp") in str(done)  # the file's full path
    assert "not published" in str(done)
    assert os.listdir(away) == []
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []
    assert sorted(channel.names()) == ["kept"]
    assert channel.put(ITEM, "after").name == "after"  # through the new tmp/, opened anew


def test_a_tmp_folder_removed_and_made_again_is_used(channel: Channel) -> None:
    """The held tmp/ is gone (its descriptor finds nothing): the folder of that name is
    opened afresh, as a path would have found it."""
    state = channel.path / ".ramxchg"
    shutil.rmtree(state / "tmp")
    (state / "tmp").mkdir()
    assert channel.put(np.ones(7), "new").name == "new"
    assert os.listdir(state / "tmp") == []


def test_a_dropped_channel_is_not_published_into(channel: Channel, root: Path) -> None:
    """Another process drops the channel while this handle holds its folders open: a
    put fails (it did by path too), and nothing is made anywhere."""
    Channel("shared", root=root).drop()
    left = sorted(os.listdir(root))
    with pytest.raises(ChannelNotFound, match=re.escape(str(channel.path))):
        channel.put(np.ones(7), "late")
    assert sorted(os.listdir(root)) == left


@pytest.mark.parametrize("seq", [True, False])
def test_a_state_folder_swapped_while_held_is_never_written(
    channel: Channel, precious: Path, seq: bool
) -> None:
    """The publish lock and counter are opened through the held ``.ramxchg``. Fails on
    d9ee6b8 with no ``seq`` in the linked folder: one was created (and locked) there, by
    path; never written, as the check by path refused to publish."""
    if not seq:
        (precious / "seq").unlink()
    before = snapshot(precious)
    _swap(channel, ".ramxchg", precious)
    done = _publish(channel, _put_recycled, precious)
    assert snapshot(precious) == before
    assert isinstance(done, UnsafeRoot), done
    assert str(channel.path / ".ramxchg") in str(done)


def test_a_channel_made_again_is_deleted_from_as_a_path_would_find_it(
    channel: Channel, root: Path
) -> None:
    """Another process drops the channel and makes it again while this handle holds its
    folders: the held ``.ramxchg`` is removed, so the publish lock's ``seq`` cannot be
    made in it (ENOENT); the folders are opened afresh, and the delete takes the lock,
    and removes the item, in the channel of that name now. Fails on d9ee6b8: the lock
    was taken by path, but the item looked for in the held (removed) channel folder, and
    the new channel's item stayed."""
    Channel("shared", root=root).drop()
    again = Channel("shared", root=root)
    again.put(ITEM, "x")
    channel.delete("x")
    assert again.names() == []
    assert os.listdir(again.path / ".ramxchg" / "meta") == []


def _delete(ch: Channel, sub: Subscription, item: Item) -> None:
    ch.delete("kept")  # through the held folders: the channel's own item goes


def _ack(ch: Channel, sub: Subscription, item: Item) -> None:
    # The group is looked up by path: not registered in the linked folder.
    with pytest.raises(GroupNotFound):
        item.ack()


def _release(ch: Channel, sub: Subscription, item: Item) -> None:
    sub.close()  # gives its claim back


@pytest.mark.parametrize("locking", [_delete, _ack, _release])
def test_the_publish_lock_is_never_taken_in_a_state_folder_swapped_while_held(
    channel: Channel, precious: Path, locking: Callable[[Channel, Subscription, Item], None]
) -> None:
    """A delete, an ack and a claim given back take the publish lock through the held
    ``.ramxchg``. Fails on d9ee6b8: each created ``seq`` in the linked folder, by path."""
    (precious / "seq").unlink()
    with channel.subscribe("g") as sub:  # registered, and "kept" claimed, before the swap
        item = sub.get(timeout=10)
        assert item.name == "kept"
        before = snapshot(precious)
        away = _swap(channel, ".ramxchg", precious)
        locking(channel, sub, item)
    assert snapshot(precious) == before
    if locking is _delete:
        assert channel.names() == []
        assert not (away / "meta" / "kept.json").exists()


def test_a_delete_waiting_for_the_publish_lock_leaves_the_held_folders_to_the_put_holding_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads of one handle: a put holds the publish lock, a delete waits for it.
    The delete opens the lock's file through the held folders but waits outside its
    ``use()`` block, so the put, which needs the folders to finish, does (waiting
    inside the block, the delete would keep them from it: neither would ever go on)."""
    ch = Channel("threads", root=root)
    ch.put(ITEM, "x")
    real, waiting = locks.lock_file, threading.Event()
    threads: dict[str, threading.Thread] = {}

    def lock_file(fd: int) -> None:
        if threading.current_thread() is threads.get("delete"):
            waiting.set()  # about to wait for the lock the put holds
        real(fd)
        if threading.current_thread() is threads["put"] and "delete" not in threads:
            threads["delete"] = threading.Thread(target=ch.delete, args=("x",), daemon=True)
            threads["delete"].start()
            assert waiting.wait(30)

    monkeypatch.setattr(locks, "lock_file", lock_file)
    threads["put"] = threading.Thread(target=ch.put, args=(ITEM, "y"), daemon=True)
    threads["put"].start()
    threads["put"].join(30)
    assert not threads["put"].is_alive(), "the put never finished: the waiting delete holds"
    threads["delete"].join(30)
    assert not threads["delete"].is_alive()
    assert ch.names() == ["y"]


@pytest.mark.parametrize("recycle", [True, False])
def test_deleting_through_a_channel_folder_swapped_removes_nothing_elsewhere(
    root: Path, recycle: bool
) -> None:
    """The channel folder is swapped for a link to another channel of yours while your
    handle holds it open: deleting an item that is not recycled (HDF5; every item with
    ``recycle=0``) removes the channel's own file, through the held folder, never the
    file of that name in the linked channel. Fails on 7a4314c: unlinked by path there."""
    ch = Channel("shared", root=root, recycle=None if recycle else 0)
    ch._retention.state.max_age = 3600
    ch.put(ITEM, "warm")
    ch.delete("warm")  # the state folders are held open now
    ch.put(ITEM, "x", format="hdf5")
    ch.put(ITEM, "y")
    mine = Channel("mine", root=root)
    mine.put(ITEM * 3, "x", format="hdf5")
    mine.put(ITEM * 3, "y")
    before = snapshot(mine.path)
    away = ch.path.with_name("shared-away")
    os.rename(ch.path, away)
    ch.path.symlink_to(mine.path)
    ch.delete("x")
    ch.delete("y")
    assert snapshot(mine.path) == before
    assert sorted(os.listdir(away)) == [".ramxchg"]  # its own files went


def test_a_delete_refused_for_its_file_keeps_the_folders_held(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that is not ours to remove (or, on Windows, still mapped) says nothing
    about the folders it is in: the item stays whole for ``gc``, and the handle keeps
    working through the folders it holds (on b5d7305, the PermissionError
    closed every one of them, to be opened again by the next operation)."""
    ch = Channel("refused", root=root, recycle=0)
    ch._retention.state.max_age = 3600
    ch.put(ITEM, "x", format="hdf5")
    held = ch._retention.state
    with held.use() as tree:
        pass
    unlink = SafeDir.unlink

    def not_ours(self: SafeDir, name: str) -> bool:
        if name == "x.h5":
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), name)
        return unlink(self, name)

    monkeypatch.setattr(SafeDir, "unlink", not_ours)
    ch.delete("x")
    monkeypatch.undo()
    assert ch.names() == ["x"]  # left whole, with its sidecar, for gc
    with held.use() as still:
        assert still is tree
    assert ch.get("x").path.name == "x.h5"


@pytest.mark.parametrize("planted", ["symlink", "hard link", "fifo"])
def test_a_counter_replaced_by_something_else_is_refused_with_our_error(
    root: Path, planted: str
) -> None:
    """Whoever shares the channel replaces ``.ramxchg/seq`` by a link to a file of yours,
    a second name of one, or a FIFO: publishing is refused with `CorruptItem` naming the
    counter (a symlink was a bare ELOOP OSError), and the file elsewhere is untouched."""
    ch = Channel("planted", root=root)
    ch.put(ITEM, "first")
    seq = ch.path / ".ramxchg" / "seq"
    yours = root / "yours"  # beside the channel: a hard link needs the same filesystem
    yours.write_bytes(b"precious\n")
    seq.unlink()
    if planted == "symlink":
        seq.symlink_to(yours)
    elif planted == "hard link":
        os.link(yours, seq)
    else:
        os.mkfifo(seq)
    with pytest.raises(CorruptItem, match="seq"):
        ch.put(ITEM, "second")
    with pytest.raises(CorruptItem, match="seq"):
        ch.subscribe(start="latest")  # reads the counter
    assert yours.read_bytes() == b"precious\n"
    assert not (ch.path / "second.npy").exists()
