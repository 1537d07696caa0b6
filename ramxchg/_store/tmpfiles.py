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

A producer makes, writes, publishes and removes its file through the ``tmp/`` folder
its channel handle holds open (`HeldState`), never by the file's path: a ``tmp/``
swapped for a link by whoever shares the channel is never followed.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .._errors import RamxchgError
from ..formats.base import WriteTarget, same_file
from ..formats.locks import try_lock, unlock
from .held import HeldState
from .layout import ChannelLayout
from .safedir import SafeDir, StateTree

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
    """A producer's temporary file, open and locked until `close`, in the ``tmp/`` folder
    its channel handle holds open: published (`home`) and removed (`discard`) through
    that folder's descriptor."""

    #: its name in ``tmp/`` (`path` is its full path, for messages)
    name: str = field(kw_only=True)
    #: its ``fstat`` when it was made or taken: which file it is
    made: os.stat_result = field(kw_only=True)
    #: the channel handle's state folders, held open
    state: HeldState = field(kw_only=True)
    #: the inode of the ``tmp/`` folder it is in (None where folders are reached by path)
    folder_ino: int | None = field(kw_only=True)

    def home(self, tree: StateTree) -> SafeDir:
        """The ``tmp/`` folder the file is in, as ``tree`` (the held folders) has it.

        Raises `UnsafeRoot` when ``tmp/`` is a link now, `ChannelNotFound` when it is
        gone, and `RamxchgError` when it is another folder (``tree`` was opened again
        after the folder the file is in was moved away).
        """
        tmp = tree.existing("tmp")
        if tmp.ino != self.folder_ino:
            raise RamxchgError(
                f"{self.path} is not in {tmp.path} any more: that folder was moved away "
                "or replaced while the item was written; not published",
                path=self.path,
            )
        return tmp

    def discard(self, stale: bool = False) -> None:
        """Remove the temporary name (the item is published, or not to be) through the
        folder the file is in, and `close` it. ``stale``: the held folders are no
        longer the channel's; they are opened afresh after this.

        A file that cannot be reached through them is left to the sweeps (logged).
        """
        try:
            with self.state.use() as tree:
                if stale:
                    self.state.invalidate()
                try:
                    tmp = self.home(tree)
                except RamxchgError as exc:
                    log.info("leaving %s to the sweeps: %s", self.path, exc)
                    return
                tmp.discard(self.name)
        finally:
            self.close()

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
    state: HeldState,
    layout: ChannelLayout,
    stem: str,
    suffix: str,
    *,
    pool: Pool | None = None,
    size: int = 0,
) -> HiddenFile:
    """A new temporary file for an item, locked, in the held ``tmp/`` folder (``state``):
    from ``pool`` a recycled file of exactly ``size`` bytes that no reader maps, if there
    is one, else a new empty file."""
    new = _Maker(state, layout, stem, suffix)

    def make(tmp: SafeDir) -> HiddenFile:
        if pool is not None:
            name = new.name()
            taken = pool.take(size, name)  # moved from the pool already locked
            if taken is not None:
                hidden = new.hidden(tmp, name, *taken, size=size)
                try:
                    pool.slots.lend(hidden, size)
                except BaseException:
                    hidden.discard()
                    raise
                return hidden
        return new.locked(tmp, lambda name: tmp.open_file(name, _CREATE_FLAGS, 0o666))

    return state.in_folder(("tmp",), make)


def link_hidden(
    state: HeldState,
    layout: ChannelLayout,
    source: str | Path,
    stem: str,
    suffix: str,
    *,
    source_folder: SafeDir | None = None,
) -> HiddenFile:
    """``source`` (a name in ``source_folder``, if given) hard-linked under a new
    temporary name in the held ``tmp/`` folder (``state``), locked (``ramxchg put
    --move``, re-queuing). A symlink is linked as itself, never followed, and then
    refused: nothing stays in ``tmp/``."""
    new = _Maker(state, layout, stem, suffix)

    def make(tmp: SafeDir) -> HiddenFile:
        def link(name: str) -> int:
            if source_folder is not None:
                source_folder.link(os.fspath(source), tmp, name)
            else:
                tmp.link_from(source, name)
            try:
                return tmp.open_file(name, _LOCK_FLAGS)
            except BaseException:
                tmp.unlink(name)
                raise

        return new.locked(tmp, link)

    return state.in_folder(("tmp",), make)


class _Maker:
    """Makes the `HiddenFile` objects of one item: new names in ``tmp/``, and the file
    made under one of them, locked."""

    def __init__(self, state: HeldState, layout: ChannelLayout, stem: str, suffix: str) -> None:
        self._state = state
        self._layout = layout
        self._stem = stem
        self._suffix = MARKER + suffix

    def name(self) -> str:
        return self._layout.temp_name(self._stem, self._suffix)

    def hidden(
        self, tmp: SafeDir, name: str, fd: int, made: os.stat_result, size: int = 0
    ) -> HiddenFile:
        """The open, locked file ``fd`` of ``size`` bytes (``made``: its fstat) named
        ``name`` in ``tmp``."""
        path = self._layout.in_tmp(name)
        state, ino = self._state, tmp.ino
        return HiddenFile(fd, path, size, name=name, made=made, state=state, folder_ino=ino)

    def locked(self, tmp: SafeDir, make: Callable[[str], int]) -> HiddenFile:
        """``make(name)`` a file under a new name in ``tmp`` and lock it; start over with
        another name when a collector took the file between the two (it found the lock
        free)."""
        for _ in range(_ATTEMPTS):
            name = self.name()
            fd = make(name)
            try:
                if try_lock(fd):
                    made = os.fstat(fd)
                    if same_file(made, tmp.lstat(name)):
                        return self.hidden(tmp, name, fd, made)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a collector holds it, or has removed it: it goes, or has gone
        raise RamxchgError(
            f"{tmp.path}: no temporary file for an item could be locked in {_ATTEMPTS} "
            "tries: another process holds a lock on each, or removes each at once",
            path=tmp.path,
        )


def is_locking_name(name: str) -> bool:
    """Does the temporary name carry the marker of a writer that locks?"""
    return name.rsplit(".", 2)[1:2] == [MARKER[1:]]


def collect_dead(tmp: SafeDir, publish_lock: AbstractContextManager[Any]) -> int:
    """Remove the dead producers' files from the open ``tmp`` folder; how many went.

    ``publish_lock`` is the channel's publish lock, taken only if there are sidecars
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
        with publish_lock:  # no producer is between writing its sidecar and renaming it
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
