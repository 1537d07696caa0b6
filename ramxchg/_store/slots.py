"""A producer's mappings of recycled item files: the memory a recycled item is written to.

A recycled file (see pool.py) keeps its inode and pages through every rename, from
``tmp/`` to the channel folder to ``pool/`` and back. So a producer keeps the files it
has written mapped, writable and pre-faulted: when the pool hands it one of them again,
``put`` is one memcpy into pages that are already there and already in its page tables,
and ``create`` lends that memory out to be filled in place (a loan, as in iceoryx2). A
new mapping, and a page fault per 4 KiB, is paid only the first time a file is reused.

Safety is unchanged: the producer writes into a mapping only while it holds the file's
exclusive lock, which the pool grants only when no reader maps the file (protocol 1.1,
section 11, rule 3). The mappings hold no lock (it belongs to the descriptor the file was
taken with, and `HiddenFile.close` drops it for every duplicate). A kept mapping holds
its file's RAM, so one whose file is gone (removed from the pool, or deleted without
recycling) is let go at a later write of the producer: the next one if its pool lost a
file it had seen or put there and did not take itself, else the first one
`CHECK_SECONDS` after the last check (one ``fstat`` per mapping on every write was a
tenth of a 1 MB ``put``); all of them when the pool is drained (a full disk), and at
most ``capacity`` are kept. A file removed (from the pool, or deleted without
recycling) while another producer keeps it mapped is emptied first unless a reader maps
it (pool.py), so its RAM comes back at once; a forked child keeps none of these
mappings (it holds no lock to write under).
"""

from __future__ import annotations

import mmap
import os
import time

from ..formats.base import WriteTarget, map_reserved, same_incarnation
from ..formats.kept import KeptFiles, close_gone_kept, close_kept

#: Smaller items are written with one ``writev``: cheaper than keeping a mapping for them.
MIN_MAPPED_BYTES = 64 << 10
#: Seconds a producer writes at most without checking its mappings for gone files, when
#: its pool gave no sign of one (`WriterSlots.look_at_pool`).
CHECK_SECONDS = 1.0


class WriterSlots(KeptFiles):
    """Up to ``capacity`` writable mappings of recycled files, by inode, newest last.

    Threads putting on one channel share them: one evicting or clearing while another
    looks a mapping up must not close it under the other's feet (`KeptFiles`' lock).
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        #: the pool's names at the last look, less those this producer took since
        self._pooled: set[str] = set()
        self._next_check = 0.0  # time.monotonic() when the mappings are checked again

    def look_at_pool(self, pooled: list[str]) -> None:
        """Given the pool's names now, `let_go_of_gone` if it lost a file seen at the last
        look (or pooled by this handle since) that this producer did not take (removed, or
        taken by another producer), or if the last check is `CHECK_SECONDS` old.

        Files leave the pool so, and are emptied when removed from it, but a reader's
        array may keep a deleted item from being emptied: then only a check sees it go.
        """
        if not self._kept:
            return  # nothing to let go of (items too small to map): no bookkeeping either
        names = set(pooled)
        with self._lock:
            now = time.monotonic()
            if now >= self._next_check or not self._pooled <= names:
                close_gone_kept(self._kept)
                self._next_check = now + CHECK_SECONDS
            self._pooled = names

    def took(self, name: str) -> None:
        """This producer took the pooled file ``name``: not a sign of a gone file."""
        if self._pooled:
            with self._lock:
                self._pooled.discard(name)

    def gave(self, name: str) -> None:
        """This channel handle pooled a file as ``name``: seen in the pool from now on."""
        if self._kept:
            with self._lock:
                self._pooled.add(name)

    def lend(self, target: WriteTarget, size: int) -> None:
        """Set ``target.mapping`` to the recycled file ``target`` (locked by the caller,
        pooled as ``size`` bytes) mapped writable with every page in place, unless it is
        too small to be worth a mapping, or no longer ``size`` bytes long (then
        ``target.size`` says how long: a write into a mapping past the end of the file
        would kill the process with SIGBUS).

        Raises OSError (ENOSPC) when its pages cannot be had.
        """
        info = os.fstat(target.fd)
        target.size = info.st_size
        if self.capacity > 0 and size >= MIN_MAPPED_BYTES and info.st_size == size:
            with self._lock:
                # An export made under the lock: a mapping evicted or cleared by another
                # thread meanwhile stays mapped until this writer lets go of it.
                target.mapping = memoryview(self._mapping(target.fd, info))

    def _mapping(self, fd: int, info: os.stat_result) -> mmap.mmap:
        key = (info.st_dev, info.st_ino)
        kept = self._kept.pop(key, None)
        if kept is not None:
            if len(kept[1]) == info.st_size and same_incarnation(os.fstat(kept[0]), info):
                self._kept[key] = kept  # the most recently used goes last
                return kept[1]
            close_kept(kept)  # resized meanwhile, or another file with a reused inode number
        made = map_reserved(fd, info.st_size)
        self._kept[key] = (os.dup(fd), made)
        while len(self._kept) > self.capacity:
            close_kept(self._kept.pop(next(iter(self._kept))))
        return made
