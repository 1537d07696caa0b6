"""A consumer's mappings of recycled item files, kept for when the same file comes back.

With recycling on (see _store/pool.py), a few files carry item after item: a consumed
item's file goes into the pool, a producer writes the next item into it and publishes
it under a new name. The producer keeps those files mapped (_store/slots.py); this is
the consumer's side. A subscription reading an item whose file it has read before (the
same inode, the same size) hands out arrays over the mapping it made then: no ``mmap``,
no populating 131,072 page-table entries and no ``munmap`` per 512 MB item, only the copy
(or whatever the consumer does with the pages).

Locks work as before (protocol 1.1, section 11, rules 2 and 3). Each item is still opened
and locked (``LOCK_SH``) on a descriptor of its own, and the arrays over the kept mapping
hold that descriptor (`array_over`'s ``lock_fd``): the lock lasts exactly as long as
the user's arrays, so an array never changes, and once they are gone a producer may
take the file from the pool. The kept mapping is made over a second open of the file
(``/proc/self/fd``), which holds no lock: keeping it blocks no one. The producer then
writes the next item into pages this process maps, which is safe because nothing reads
them except through arrays made under a new lock, after checking the file's size (a
page past the end of a file, read through a mapping, would be SIGBUS).

RAM: a file deleted (not pooled) is emptied first when no reader's lock is on it
(_store/pool.py, `remove_emptied`), so a kept mapping holds no RAM of it. One deleted
while a reader's array mapped it keeps its pages for as long as a mapping of it lives:
mappings of files without a name are let go at each rescan (once a second while in
``get``, less often in huge folders) and when a file that may be kept (`MIN_KEPT_BYTES`
or more, within the bounds below) is mapped anew, the acked item's own at its ack, and
all on `Subscription.close`; a forked child keeps none; at most `KEPT_MAPPINGS` mappings
and `KEPT_DISK_SHARE` of the disk's size are kept (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import array_over, map_fd, open_locked_stat, same_incarnation

log = logging.getLogger(__name__)

#: Smaller files are mapped anew for each item: a mapping of a few pages costs no more than
#: the checks that keep one. From 256 KiB keeping wins (1 MB items: ~80 us less consumer
#: CPU per item, no mmap/munmap and fewer faults, with one check per delivery).
MIN_KEPT_BYTES = 256 << 10
#: Mappings a subscription keeps at most: a consumer behind by N items sees about N + 1
#: files come round again (the producer takes each file it frees for the next item).
KEPT_MAPPINGS = 32
#: Bytes it keeps mapped at most, as a share of its RAM disk's size.
KEPT_DISK_SHARE = 0.25
_PROC_FD = "/proc/self/fd"


class KeptFiles:
    """Mappings of whole files kept by inode, each with a lock-free descriptor of its file
    (to see it go): what a consumer's `KeptMappings` and a producer's slots
    (_store/slots.py) have in common. Threads may share them; a forked child keeps none
    (it holds no lock to read or write under, and would keep deleted files' RAM)."""

    def __init__(self) -> None:
        # (st_dev, st_ino) -> (a lock-free descriptor of the file; its mapping)
        self._kept: dict[tuple[int, int], tuple[int, mmap.mmap]] = {}
        # taken by every change to ``_kept``; finalizers never take it
        self._lock = threading.Lock()
        weakref.finalize(self, close_all_kept, self._kept)
        _ALL.add(self)

    def let_go_of_gone(self) -> None:
        """Drop the mappings of files that no longer have a name: only these mappings hold
        their RAM (one ``fstat`` each)."""
        if self._kept:
            with self._lock:
                close_gone_kept(self._kept)

    def let_go_if_gone(self, ino: int) -> None:
        """`let_go_of_gone` for the file of inode ``ino`` only: an item just acked, which
        may have been deleted without being pooled (one ``fstat``, if it is kept)."""
        if self._kept:
            with self._lock:
                close_gone_kept(self._kept, lambda key: key[1] == ino)

    def clear(self) -> None:
        """Let go of every mapping (arrays handed out keep theirs until they go)."""
        with self._lock:
            close_all_kept(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


class KeptMappings(KeptFiles):
    """Read-only mappings of whole recycled files by inode: up to ``capacity`` of them and
    ``max_bytes`` in all (0: none kept). ``get`` and ``ack`` may run in different threads."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.max_bytes = max_bytes

    @classmethod
    def for_disk(cls, folder: str | Path, *, recycled: bool) -> KeptMappings:
        """Mappings for reading a channel in ``folder``: none unless its files are
        ``recycled`` (else no file comes back) and this system can open a descriptor
        again (``/proc/self/fd``, Linux)."""
        if not recycled or not os.path.isdir(_PROC_FD):
            return cls(0, 0)
        disk = os.statvfs(folder)
        return cls(KEPT_MAPPINGS, int(KEPT_DISK_SHARE * disk.f_blocks * disk.f_frsize))

    def mapping(self, fd: int, info: os.stat_result) -> memoryview | None:
        """All ``info.st_size`` bytes of the file ``fd`` mapped read-only: the mapping
        kept from an earlier item in this file, or a new one, kept from now on. None when
        it is not kept (too small, or no room): the caller maps it itself.

        A view of it, in fact: made under the lock of these mappings, it keeps the
        mapping mapped even if `clear` runs in another thread before the caller has made
        its arrays over it.

        ``fd`` is the caller's, locked (shared), and ``info`` its ``fstat`` under that
        lock: the size no producer changes while the caller holds the lock.
        """
        size = info.st_size
        if size < MIN_KEPT_BYTES or size > self.max_bytes or self.capacity <= 0:
            return None
        key = (info.st_dev, info.st_ino)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                if len(kept[1]) == size and same_incarnation(os.fstat(kept[0]), info):
                    return memoryview(kept[1])
                # Resized since (recycled for items of another size, or emptied by a
                # full disk), or another file with a reused inode number.
                close_kept(self._kept.pop(key))
            close_gone_kept(self._kept)
            held = sum(len(mapping) for _, mapping in self._kept.values())
            if len(self._kept) >= self.capacity or held + size > self.max_bytes:
                # Full: keep what is kept. Files come round in a cycle, which evicting the
                # oldest would turn into a miss every time once the cycle is longer.
                return None
            made = _map_again(fd, size)
            if made is not None:
                self._kept[key] = made
                return memoryview(made[1])
            self.capacity = 0  # no /proc to open the file again: keep nothing from now on
            return None

    def close(self) -> None:
        """Let go of every mapping and keep none from now on (arrays handed out keep
        theirs until they go)."""
        with self._lock:
            self.capacity = 0
            close_all_kept(self._kept)


def whole_file(path: str | Path, kept: KeptMappings | None) -> np.ndarray:
    """Every byte of the file at ``path``, read-only and zero-copy, as a uint8 array
    that holds the reader lock for as long as it (or a view of it) lives: through the
    mapping ``kept`` keeps of the file, when it keeps one, else a new mapping."""
    fd, info = open_locked_stat(path)
    try:
        reused = kept.mapping(fd, info) if kept is not None else None
        if reused is not None:  # the array holds the lock; the mapping stays kept
            return array_over(reused, (info.st_size,), np.dtype(np.uint8), 0, lock_fd=fd)
        mapping = map_fd(fd, info.st_size)  # a duplicate of fd, and so the lock, with it
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return array_over(mapping, (info.st_size,), np.dtype(np.uint8), 0)


def _map_again(fd: int, size: int) -> tuple[int, mmap.mmap] | None:
    """The file ``fd`` opened again (a new open file description: ``fd``'s lock is not
    on it) and mapped read-only, populated; None if it cannot be opened again."""
    try:
        own = os.open(f"{_PROC_FD}/{fd}", os.O_RDONLY)
    except OSError as exc:
        log.info("not keeping mappings of item files: cannot open %s/%d: %s", _PROC_FD, fd, exc)
        return None
    try:
        return own, map_fd(own, size)
    except BaseException:
        os.close(own)
        raise


def _forget_in_child() -> None:
    """A forked child keeps none of its parent's mappings: it holds none of the locks
    they were made under, and would keep the RAM of files deleted meanwhile."""
    for kept in list(_ALL):
        kept._lock = threading.Lock()  # another thread of the parent may have held it
        close_all_kept(kept._kept)


#: every KeptFiles of this process, for `_forget_in_child`
_ALL: weakref.WeakSet[KeptFiles] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def close_kept(kept: tuple[int, mmap.mmap]) -> None:
    """Close a kept (descriptor, mapping): unmapped now, or if arrays handed out still
    use the mapping, with the last of them."""
    fd, mapping = kept
    os.close(fd)
    with contextlib.suppress(BufferError):
        mapping.close()


def close_all_kept(kept: dict[tuple[int, int], tuple[int, mmap.mmap]]) -> None:
    """`close_kept` every entry of ``kept``, emptying it."""
    while kept:
        close_kept(kept.popitem()[1])


def close_gone_kept(
    kept: dict[tuple[int, int], tuple[int, mmap.mmap]],
    which: Callable[[tuple[int, int]], bool] | None = None,
) -> None:
    """`close_kept` the entries of ``kept`` (those whose (st_dev, st_ino) key passes
    ``which``, if given) whose file no longer has a name: only these mappings hold its RAM
    (one ``fstat`` each)."""
    for key, entry in list(kept.items()):
        if (which is None or which(key)) and os.fstat(entry[0]).st_nlink == 0:
            close_kept(kept.pop(key))
