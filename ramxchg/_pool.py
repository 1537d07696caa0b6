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

import contextlib
import os
from pathlib import Path


class Pool:
    """The recycled files of one channel, named ``<size>.<pid>.<random>``."""

    def __init__(self, folder: Path, capacity: int) -> None:
        self.folder = folder
        self.capacity = capacity

    def give(self, path: str | Path) -> bool:
        """Move a deleted item file into the pool; False (nothing done) when full or off."""
        if self.capacity <= 0:
            return False
        try:
            pooled = os.listdir(self.folder)
        except FileNotFoundError:
            return False
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            return False
        if len(pooled) >= self.capacity and not self._evict_other_size(pooled, size):
            return False
        try:
            os.rename(path, self.folder / f"{size}.{os.getpid()}.{os.urandom(4).hex()}")
        except FileNotFoundError:
            return False
        return True

    def _evict_other_size(self, pooled: list[str], size: int) -> bool:
        """Free a place held by a file of another size (items changed shape): True if done.

        Without this, a pool filled by small items would never take big ones.
        """
        prefix = f"{size}."
        for name in pooled:
            if not name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / name)
                    return True
        return False

    def take(self, size: int, target: str) -> bool:
        """Move a pooled file of exactly ``size`` bytes to ``target``; False if none.

        ``rename`` is atomic: when two producers race for one file, one of them wins.
        """
        if self.capacity <= 0:
            return False
        prefix = f"{size}."
        try:
            pooled = os.listdir(self.folder)
        except FileNotFoundError:
            return False
        for name in pooled:
            if name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.folder / name, target)
                    return True
        return False
