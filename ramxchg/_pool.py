"""Recycled item files: reuse the pages of consumed items instead of freeing them.

On tmpfs with 4 KiB pages, a new file pays for every page twice: the kernel allocates
and zeroes it when the producer writes, and frees it when the item is deleted. With
``Channel(..., recycle=N)`` a deleted ``.npy`` item file is moved into
``.ramxchg/pool/`` (up to N files) and a later item of exactly the same size is
written into it, so neither side allocates or frees anything.

The contract: an item's arrays must not be used after the item is deleted (acked by
every group, or expired), because its pages may by then hold a newer item.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ._errors import UnsafeRoot
from ._layout import ChannelLayout
from ._safedir import SafeDir, StateTree

log = logging.getLogger(__name__)


class Pool:
    """The recycled files of one channel, named ``<size>.<pid>.<random>``.

    The pool folder is reached through folder descriptors (`ramxchg._safedir`): a pool
    swapped for a link is not used (logged), so nothing is moved out of the channel, and
    a file taken from it is only written if it is a plain file of ours with one name.
    """

    def __init__(self, layout: ChannelLayout, capacity: int) -> None:
        self.layout = layout
        self.capacity = capacity

    def give(self, path: str | Path) -> bool:
        """Move a deleted item file into the pool; False (nothing done) when full or off."""
        if self.capacity <= 0:
            return False
        with self.layout.open_state() as state:
            pool = _folder(state, "pool")
            if pool is None:
                return False
            pooled = pool.names()
            size = _size(state.channel, os.path.basename(path))
            if size is None:
                return False
            if len(pooled) >= self.capacity and not _evict_other_size(pool, pooled, size):
                return False
            new_name = f"{size}.{os.getpid()}.{os.urandom(4).hex()}"
            return state.channel.rename(os.path.basename(path), pool, new_name)

    def take(self, size: int, target: str) -> bool:
        """Move a pooled file of exactly ``size`` bytes to ``target`` (in tmp); False if none.

        ``rename`` is atomic: when two producers race for one file, one of them wins.
        """
        if self.capacity <= 0:
            return False
        prefix = f"{size}."
        with self.layout.open_state() as state:
            pool, tmp = _folder(state, "pool"), _folder(state, "tmp")
            if pool is None or tmp is None:
                return False
            name = os.path.basename(target)
            for pooled in pool.names():
                if pooled.startswith(prefix) and pool.rename(pooled, tmp, name):
                    return _ours_alone(tmp, name)
        return False


def _folder(state: StateTree, name: str) -> SafeDir | None:
    try:
        return state.folder(name)
    except UnsafeRoot as exc:
        log.warning("not recycling: %s", exc)
        return None


def _size(folder: SafeDir, name: str) -> int | None:
    info = folder.lstat(name)
    return None if info is None else info.st_size


def _evict_other_size(pool: SafeDir, pooled: list[str], size: int) -> bool:
    """Free a place held by a file of another size (items changed shape): True if done.

    Without this, a pool filled by small items would never take big ones.
    """
    prefix = f"{size}."
    return any(not name.startswith(prefix) and pool.unlink(name) for name in pooled)


def _ours_alone(folder: SafeDir, name: str) -> bool:
    """Is the file just taken one we may overwrite in place: a regular file of ours with
    no other name? (A hard link planted in the pool would be someone else's data.)"""
    info = folder.lstat(name)
    if info is None:
        return False
    me = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == me:
        return True
    log.warning("not recycling %s: not a file of ours alone", folder.path / name)
    folder.unlink(name)
    return False
