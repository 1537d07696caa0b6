"""Producers' temporary files: created locked, collected when their lock is free.

Protocol 1.1, section 11, rule 1 (docs/protocol.md). A producer writes an item into
``.ramxchg/tmp/<stem>.<pid>.<random>.lk<suffix>`` and holds an exclusive ``flock`` on it
from its creation until just after it is published. So a temporary file is a dead
producer's leftover exactly when that lock can be taken: no grace period and no pid,
which another process may have by now, or which means nothing in another pid namespace.

Files without the ``.lk`` marker belong to producers that do not lock (protocol 1.0,
other programs): they keep the old rule, older than `TMP_GRACE_SECONDS` and their pid
not running. An item's sidecar being written (``...lk.json``) is not locked: it exists
only while its producer holds the publish lock, so it is removed only under that lock.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .._errors import RamxchgError
from ..formats.base import WriteTarget, same_file, still_named
from ..formats.locks import try_lock, unlock
from .layout import ChannelLayout
from .safedir import SafeDir

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger(__name__)

#: In a temporary name, before the suffix: "this file's writer holds a lock on it".
MARKER = ".lk"
#: Unmarked temporary files younger than this are never collected, whatever their pid.
TMP_GRACE_SECONDS = 5.0
#: New names tried when collectors keep removing the file between its create and lock.
_ATTEMPTS = 10
_BINARY = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | _BINARY
_LOCK_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | _BINARY


@dataclass
class HiddenFile(WriteTarget):
    """A producer's temporary file, open and locked until `close`."""

    def close(self) -> None:
        """Drop the lock and close: after publishing, or when the file is discarded.

        Unlocked first: a writable mapping of it that outlives the item's ``create``
        block must not keep readers of the published item waiting for the lock.
        """
        fd, self.fd = self.fd, -1
        self.mapping = None  # the producer keeps the mapping; this writer is done with it
        if fd >= 0:
            try:
                unlock(fd)
            finally:
                os.close(fd)


def create_hidden(
    layout: ChannelLayout, stem: str, suffix: str, *, pool: Pool | None = None, size: int = 0
) -> HiddenFile:
    """A new temporary file for an item, locked: from ``pool`` a recycled file of exactly
    ``size`` bytes that no reader maps, if there is one, else a new empty file."""
    if pool is not None:
        path = _temp_path(layout, stem, suffix)
        fd = pool.take(size, path)  # moved from the pool already locked
        if fd is not None:
            hidden = HiddenFile(fd, path, size)
            try:
                pool.slots.lend(hidden, size)
            except BaseException:
                os.unlink(path)
                hidden.close()
                raise
            return hidden
    return _locked_new(layout, stem, suffix, lambda path: os.open(path, _CREATE_FLAGS, 0o666))


def link_hidden(
    layout: ChannelLayout,
    source: str | Path,
    stem: str,
    suffix: str,
    *,
    src_dir_fd: int | None = None,
) -> HiddenFile:
    """``source`` (a name in the folder ``src_dir_fd``, if given) hard-linked under a new
    temporary name, locked (``ramxchg put --move``, re-queuing). A symlink is linked as
    itself, never followed, and then refused: nothing stays in ``tmp/``."""

    def link(path: str) -> int:
        os.link(source, path, src_dir_fd=src_dir_fd, follow_symlinks=False)
        try:
            return os.open(path, _LOCK_FLAGS)
        except BaseException:
            os.unlink(path)
            raise

    return _locked_new(layout, stem, suffix, link)


def _temp_path(layout: ChannelLayout, stem: str, suffix: str) -> str:
    return layout.temp_name(stem, MARKER + suffix)


def _locked_new(
    layout: ChannelLayout, stem: str, suffix: str, make: Callable[[str], int]
) -> HiddenFile:
    """``make(path)`` a file at a new temporary path and lock it; start over with another
    name when a collector took the file between the two (it found the lock free)."""
    for _ in range(_ATTEMPTS):
        path = _temp_path(layout, stem, suffix)
        fd = make(path)
        try:
            if try_lock(fd) and still_named(path, os.fstat(fd)):
                return HiddenFile(fd, path, 0)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a collector holds it, or has removed it: it goes, or has gone
    raise RamxchgError(
        f"{layout.tmp}: no temporary file for an item could be locked in {_ATTEMPTS} tries: "
        "another process holds a lock on each, or removes each at once",
        path=layout.tmp,
    )


def is_locking_name(name: str) -> bool:
    """Does the temporary name carry the marker of a writer that locks?"""
    return name.rsplit(".", 2)[1:2] == [MARKER[1:]]


def collect_dead(tmp: SafeDir, publish_lock: Callable[[], AbstractContextManager[Any]]) -> int:
    """Remove the dead producers' files from the open ``tmp`` folder; how many went.

    ``publish_lock()`` is the channel's publish lock, taken only if there are sidecars
    being written (of producers that died publishing, or are publishing right now).
    """
    removed = 0
    sidecars = []
    now = time.time()
    for name in tmp.names():
        if not is_locking_name(name):
            removed += _unmarked_dead(tmp, name, now) and tmp.unlink(name)
        elif name.endswith(".json"):
            sidecars.append(name)
        else:
            removed += _remove_unlocked(tmp, name)
    if sidecars:
        with publish_lock():  # no producer is between writing its sidecar and renaming it
            removed += sum(tmp.unlink(name) for name in sidecars)
    return removed


def _remove_unlocked(tmp: SafeDir, name: str) -> bool:
    """Remove the marked file ``name`` if no one holds its lock (its writer is gone)."""
    try:
        fd = tmp.open_file(name, _LOCK_FLAGS)
    except FileNotFoundError:
        return False  # published (or collected) meanwhile
    except OSError as exc:  # a symlink (ELOOP), or not ours to open
        info = tmp.lstat(name)
        if info is not None and stat.S_ISLNK(info.st_mode):
            return tmp.unlink(name)  # no writer's file: the link itself goes
        log.info("not collecting %s: %s", tmp.path / name, exc)
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not try_lock(fd):
            return False  # a live writer's (or no file a writer makes: left alone)
        # Still the file we locked: the name may have been removed and made again.
        return same_file(info, tmp.lstat(name)) and tmp.unlink(name)
    finally:
        os.close(fd)


def _unmarked_dead(tmp: SafeDir, name: str, now: float) -> bool:
    """The 1.0 rule: older than the grace period, and its producer's pid is not running
    (or the name does not follow ``<stem>.<pid>.<random><suffix>``)."""
    fields = os.path.splitext(name)[0].rsplit(".", 2)
    pid = _pid(fields[1]) if len(fields) == 3 else None
    info = tmp.lstat(name)
    if info is None or now - info.st_mtime <= TMP_GRACE_SECONDS:
        return False
    return pid is None or not psutil.pid_exists(pid)


def _pid(text: str) -> int | None:
    """The pid a name gives, None if it gives none a process can have: whoever shares
    the folder may write ``²`` (a digit to `str.isdigit`, not to `int`) or 11 digits."""
    if not (text.isascii() and text.isdigit()) or int(text) >= _NO_PID:
        return None
    return int(text)


#: no pid is this large (pid_t is a signed 32-bit integer; psutil refuses larger ones)
_NO_PID = 2**31
