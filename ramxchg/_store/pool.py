"""Recycled item files: reuse the pages of consumed items instead of freeing them.

On tmpfs with 4 KiB pages, a new file pays for every page twice: the kernel allocates
and zeroes it when the producer writes, and frees it when the item is deleted. A deleted
``.npy`` item file is moved into ``.ramxchg/pool/`` and a later item of exactly the same
size is written into it, so neither side allocates or frees anything.

How many files the pool holds adapts to the items in flight, with no counter to keep: a
producer makes a new file only when every file of that size is in use (an item, or being
written), so the files of a size that exist are the most items of that size that were
alive at once. The pool keeps every file given back (a burst of 12 items leaves 12 for
the next burst), within three bounds: ``recycle`` files (64 by default) and the channel's
own limits (``max_items`` files, ``max_bytes`` bytes: no more can be in flight), and
`POOL_SHARE` of the disk's free space (an ack decides before it takes the publish lock:
acks waiting for it at the same time may pass them by one file each, `make_room`). It
gives the RAM back once the burst is over: producers take the most recently pooled file
first, so the files a quieter stream does not need stay untouched, and a file no one
took for `POOL_IDLE_SECONDS` is removed by the next sweep (producers and subscriptions
run one at most every second) or ``gc``.

An array a reader holds never changes (protocol 1.1, section 11, rule 3): every reader
holds a shared lock on the file it maps for as long as the mapping lives, and a producer
takes a pooled file only when it can lock it exclusively, holding that lock as its
writer lock until the new item is published. Pooled files hold RAM: a producer that
finds the disk full empties the pool first (`Pool.drain`), and ``recycle=0`` turns
recycling off.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .._errors import UnsafeRoot
from ..formats.base import Format, lstat_or_none, same_file
from ..formats.locks import try_lock
from .config import ChannelConfig
from .held import HeldState
from .layout import ChannelLayout, list_channels
from .safedir import SafeDir, StateTree
from .slots import WriterSlots

log = logging.getLogger(__name__)

#: Pooled files never take more than this share of the free space left beside them.
POOL_SHARE = 0.5
#: A pooled file that no producer took for this long is more than the channel needs now.
POOL_IDLE_SECONDS = 10.0
_TAKE_FLAGS = os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class PoolRoom:
    """Room `Pool.make_room` found for an item file: its size, and whether a pooled file
    of another size is to make way for it (the pool holds `Pool.capacity` files)."""

    size: int
    evict: bool


class Pool:
    """The recycled files of one channel, named ``<size>.<pid>.<random>``.

    The pool folder is reached through folder descriptors (`ramxchg._store.safedir`): a pool
    swapped for a link is not used (logged), so nothing is moved out of the channel, and
    a file taken from it is only written if it is a plain file of ours with one name.
    """

    def __init__(self, layout: ChannelLayout, config: ChannelConfig, state: HeldState) -> None:
        self.layout = layout
        #: the channel handle's state folders, held open between items
        self.state = state
        # Windows cannot rename a file while it is open, which taking a pooled file under
        # its lock needs (and a mapped item file could not be pooled either).
        #: the most files the pool holds
        self.capacity = 0 if sys.platform == "win32" else pool_capacity(config)
        #: the most bytes the pool holds, besides `POOL_SHARE` of the free space
        self.max_bytes = config.max_bytes
        #: this producer's mappings of the files it recycles (slots.py)
        self.slots = WriterSlots(self.capacity)

    def make_room(self, path: str | Path) -> PoolRoom | None:
        """Room in the pool for the item file at ``path``, to be moved in when it is
        deleted (`put_in`); None when the pool has no place for it. Changes nothing, so
        it may be decided before the publish lock is taken for the deletion, which is
        then held for less.

        Full: `capacity` files (a file of another size is to make way), or more bytes
        than `POOL_SHARE` of the free space or the channel's ``max_bytes``. Decided
        outside the lock, the bounds may be passed by one file per deletion (any thread
        or process) waiting for it meanwhile.
        """
        if self.capacity <= 0:
            return None
        with self.state.use() as state:
            pool = _folder(state, "pool")
            if pool is None:
                return None
            pooled = pool.names()
            size = _size(state.channel, os.path.basename(path))
            if size is None:
                return None
            evict = len(pooled) >= self.capacity
            if evict:
                others = _of_other_sizes(pooled, size)
                if not others:
                    return None
                pooled.remove(others[0])
            # By name, not one lstat per pooled file on every delete (a pool may hold 64).
            held = sum(_named_size(pool, other) for other in pooled)
            most = POOL_SHARE * shutil.disk_usage(self.layout.path).free
            if self.max_bytes is not None:
                most = min(most, self.max_bytes)
            return None if held + size > most else PoolRoom(size, evict)

    def put_in(self, path: str | Path, room: PoolRoom) -> bool:
        """Move the deleted item file at ``path`` into the pool, where `make_room` found
        ``room``; False (nothing done) if a reader maps it, no file of another size can
        make way, or the pool or the file is gone. Call under the publish lock.

        A file a reader maps has no place: it could not be reused before the reader lets
        go, and would hold a place till then. Looking takes the file's exclusive lock for
        an instant: outside the publish lock, a deletion running meanwhile could take
        that for a reader's lock, and unlink the file without emptying it.
        """
        with self.state.use() as state:
            name = os.path.basename(path)
            pool = _folder(state, "pool")
            if pool is None or _mapped(state.channel, name):
                return False
            if room.evict and _evict_other_size(pool, pool.names(), room.size) is None:
                return False
            # <random> starts with the time, fixed width: names sort in the order pooled.
            place = f"{room.size}.{os.getpid()}.{time.time_ns():016x}{os.urandom(4).hex()}"
            if not state.channel.rename(name, pool, place):
                return False
        self.slots.gave(place)
        return True

    def take(self, size: int, name: str) -> tuple[int, os.stat_result] | None:
        """A pooled file of exactly ``size`` bytes that no reader maps, moved to ``name``
        in the held ``tmp/`` with its exclusive lock held: its descriptor, open for
        writing (the caller closes it), and its ``fstat``. None if there is no such file.

        Taken only when ``flock(LOCK_EX|LOCK_NB)`` succeeds, so never while a reader's
        array maps it; the lock then keeps other producers and collectors off it.
        """
        if self.capacity <= 0:
            return None
        prefix = f"{size}."
        with self.state.use() as state:
            pool, tmp = _folder(state, "pool"), _folder(state, "tmp")
            if pool is None or tmp is None:
                self.slots.let_go_of_gone()  # the pool went (a dropped channel?)
                return None
            listing = pool.names()
            self.slots.look_at_pool(listing)  # before a new file may need their room
            for pooled in _newest_first([n for n in listing if n.startswith(prefix)]):
                locked = _lock_free(pool, pooled)
                if locked is None:
                    continue
                fd, info = locked
                if not pool.rename(pooled, tmp, name):
                    os.close(fd)
                    continue
                self.slots.took(pooled)
                # Still the file we locked: the pooled name may have been given to
                # another file between the lock and the rename.
                if same_file(info, tmp.lstat(name)):
                    return fd, info
                os.close(fd)
                return None
        return None

    def held_bytes(self) -> int:
        """Bytes the pooled files take: RAM that recycling holds for later items."""
        with self.state.use() as state:
            pool = _folder(state, "pool")
            return 0 if pool is None else sum(_size(pool, name) or 0 for name in pool.names())

    def trim(self) -> int:
        """Remove the pooled files no producer took for `POOL_IDLE_SECONDS` (the burst
        that needed them is over: their RAM goes back); how many went."""
        cutoff = time.time_ns() - int(POOL_IDLE_SECONDS * 1e9)
        with self.state.use() as state:
            pool = _folder(state, "pool")
            if pool is None:
                return 0
            try:
                idle = [name for name in pool.names() if _idle(pool, name, cutoff)]
            except PermissionError as exc:  # another user's private pool
                log.info("%s: pool not readable: %s", self.layout.path, exc)
                return 0
            gone = sum(_drop(pool, name) for name in idle)
        if gone:
            log.debug("%s: %d idle pooled files removed", self.layout.path, gone)
            self.slots.let_go_of_gone()
        return gone

    def drain(self) -> int:
        """Remove every pooled file (the disk is full: their RAM is needed), and those of
        our other channels beside this one on the same disk (`drain_beside`); how many went.

        Mapped ones stay readable: a removed file lives on while it is mapped. This
        producer's own mappings of recycled files go too, or they would keep the RAM.
        """
        self.slots.clear()
        with self.state.use() as state:
            pool = _folder(state, "pool")
            gone = 0 if pool is None else _drop_all(pool)
        return gone + drain_beside(self.layout.path)

    def discard(self, path: str | Path, fmt: Format | None) -> None:
        """Unlink a deleted item file of format ``fmt`` that is not pooled, emptied first
        if no reader maps it (`remove_emptied`): no mapping kept of it holds its RAM.
        Raises PermissionError when it is not ours to remove, FileNotFoundError when gone.

        Only recyclable files are kept mapped; and with recycling off (as on Windows, where
        an open file cannot be unlinked) none is: then only the name goes. Either way
        through the channel folder this handle holds open, never by path: a channel
        folder swapped for a link to another one must not lose that one's file.
        """
        name, refused = os.path.basename(path), None
        with self.state.use() as state:
            try:
                if self.capacity <= 0 or fmt is None or not fmt.recyclable:
                    removed = state.channel.unlink(name)
                else:
                    removed = remove_emptied(state.channel, name)
            except PermissionError as exc:  # about the file, not the held folders
                refused = exc
        if refused is not None:
            raise refused
        if not removed:
            raise FileNotFoundError(errno.ENOENT, "item file gone", str(path))


def drain_beside(channel: Path) -> int:
    """Remove the pooled files of our other channels in ``channel``'s parent folder (its
    root) on the same disk; how many went.

    A channel no one uses keeps its pool until its next sweep or ``gc`` (`Pool.trim`),
    which may be never: a full disk would not get that RAM back. Other users' channels
    are theirs to empty.
    """
    me = os.geteuid() if hasattr(os, "geteuid") else None
    try:
        here, others = os.stat(channel), list_channels(channel.parent)
    except OSError as exc:  # a parent folder we may not list
        log.info("%s: no other pool emptied: %s", channel, exc)
        return 0
    gone = 0
    for other in others:
        info = lstat_or_none(other)
        if info is None or info.st_dev != here.st_dev or info.st_uid != me:
            continue
        if same_file(here, info):
            continue
        with ChannelLayout(other).open_state(check_owner=True) as state:
            pool = _folder(state, "pool")
            gone += 0 if pool is None else _drop_all(pool)
    return gone


def _drop_all(pool: SafeDir) -> int:
    try:
        return sum(_drop(pool, name) for name in pool.names())
    except (PermissionError, FileNotFoundError) as exc:  # not ours to list, or gone
        log.info("%s: pool left alone: %s", pool.path, exc)
        return 0


def pool_capacity(config: ChannelConfig) -> int:
    """The most files a channel's pool holds: ``recycle``, and no more than the channel
    can hold items at once (``max_items``)."""
    if config.max_items is None:
        return config.recycle
    return min(config.recycle, config.max_items)


def _folder(state: StateTree, name: str) -> SafeDir | None:
    try:
        return state.folder(name)
    except UnsafeRoot as exc:
        log.warning("not recycling: %s", exc)
        return None


def _size(folder: SafeDir, name: str) -> int | None:
    info = folder.lstat(name)
    return None if info is None else info.st_size


def _named_size(pool: SafeDir, name: str) -> int:
    """The size a pooled file's name gives (``<size>.<pid>.<random>``); its lstat for a
    name that does not start with one (0 if gone)."""
    head = name.partition(".")[0]
    if head.isascii() and head.isdigit():  # "²".isdigit(), but int("²") fails
        return int(head)
    return _size(pool, name) or 0


def _idle(pool: SafeDir, name: str, cutoff: int) -> bool:
    """Was ``name`` pooled before ``cutoff`` (the rename set its ctime: no one writes a
    pooled file), and is it ours to trim (a co-producer's is theirs)? A name gone
    meanwhile (taken) is not."""
    info = pool.lstat(name)
    return info is not None and info.st_ctime_ns < cutoff and not _theirs(info)


def _newest_first(names: list[str]) -> list[str]:
    """``names``, the most recently pooled first: a stream that needs fewer files than the
    burst before it reuses the same few, and the rest go idle (`Pool.trim`).

    By the time their names start ``<random>`` with (`Pool.put_in`), not by an lstat each
    on every put; a name from elsewhere only takes its turn in another order.
    """
    return sorted(names, key=lambda name: name.rpartition(".")[2], reverse=True)


def _evict_other_size(pool: SafeDir, pooled: list[str], size: int) -> str | None:
    """Free a place held by a file of another size (items changed shape): the name of
    the file removed, None if there is none.

    Without this, a pool filled by small items would never take big ones.
    """
    return next((name for name in _of_other_sizes(pooled, size) if _drop(pool, name)), None)


def _of_other_sizes(pooled: list[str], size: int) -> list[str]:
    """The pooled names not of files of ``size`` bytes (by the size their names give)."""
    prefix = f"{size}."
    return [name for name in pooled if not name.startswith(prefix)]


def _mapped(folder: SafeDir, name: str) -> bool:
    """Does a reader hold its lock on the file ``name`` (so it maps it)?"""
    try:
        fd = folder.open_file(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False  # not ours to look at: taking it from the pool looks again
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)


def _lock_free(pool: SafeDir, name: str) -> tuple[int, os.stat_result] | None:
    """The pooled file ``name``, opened and locked exclusively, if no one holds a lock on
    it and it is a file of ours alone: its descriptor and ``fstat`` (taken before the
    lock: for its inode, which an open descriptor keeps); else None.

    A plain file of another user is a co-producer's (a shared channel): theirs to take,
    left alone. A hard link planted in the pool would be someone else's data, and
    anything else is no pooled file: such names are removed from the pool (logged).
    """
    try:
        fd = pool.open_file(name, _TAKE_FLAGS)
    except FileNotFoundError:
        return None  # another producer took it
    except OSError as exc:
        if not _theirs(pool.lstat(name)):
            log.warning("not recycling %s: %s", pool.path / name, exc)
            _drop(pool, name)
        return None
    info = os.fstat(fd)
    if not _ours_alone(info):
        os.close(fd)
        if not _theirs(info):
            log.warning("not recycling %s: not a file of ours alone", pool.path / name)
            _drop(pool, name)
        return None
    if try_lock(fd) and same_file(info, pool.lstat(name)):
        return fd, info
    os.close(fd)  # a reader maps it, or another producer is taking it
    return None


def _theirs(info: os.stat_result | None) -> bool:
    """A plain file with one name of another user: a co-producer's pooled file."""
    return info is not None and _plain(info) and not _mine(info)


def _ours_alone(info: os.stat_result) -> bool:
    """A plain file of ours with one name: ours to write, or to empty."""
    return _plain(info) and _mine(info)


def _plain(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1


def _mine(info: os.stat_result) -> bool:
    return info.st_uid == (os.geteuid() if hasattr(os, "geteuid") else info.st_uid)


def _drop(pool: SafeDir, name: str) -> bool:
    """Remove ``name`` from the pool if we may (a shared pool may hold others' files)."""
    try:
        return remove_emptied(pool, name)
    except PermissionError as exc:
        log.info("leaving %s in the pool: %s", pool.path / name, exc)
        return False


def remove_emptied(folder: SafeDir, name: str) -> bool:
    """Unlink ``name`` in ``folder``; False if it was gone. Raises PermissionError when
    it is not ours to remove.

    A file of ours that no reader maps is emptied first, under its exclusive lock: the
    mappings that hold no lock, producers' (slots.py) and consumers' (formats/kept.py),
    would otherwise keep its RAM for as long as they live, out of reach of the full
    disk that needs it. Unlinked before the lock goes, so no producer takes the emptied
    file, and no reader opens it (one that opened it and waits for its lock finds the
    name gone), meanwhile.
    """
    try:
        fd = folder.open_file(name, _TAKE_FLAGS)
    except OSError:
        fd = None  # gone, or not ours to open: only the name goes
    try:
        if fd is not None:
            info = os.fstat(fd)
            if _ours_alone(info) and try_lock(fd) and same_file(info, folder.lstat(name)):
                os.ftruncate(fd, 0)
        return folder.unlink(name)
    finally:
        if fd is not None:
            os.close(fd)
