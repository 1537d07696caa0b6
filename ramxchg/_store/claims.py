"""Claims of durable-group members: what a claim (or ack) records, and whether its
member lives.

A member writes its claim complete without a name (O_TMPFILE, on Linux) or under a
hidden one, takes ``flock(LOCK_EX)`` on it and only then links it into place
(`ramxchg._store.groups.Group.try_claim`); it keeps that descriptor open while it works
on the item and closes it after the ack (``rename``, or the deletion of the item by its
last ack) or the release (``unlink``). The kernel drops the lock when its holder dies,
in every pid namespace, so a claim with ``"lock": true`` is dead exactly when its lock
can be taken.

Claims without it (older versions, foreign consumers that do not lock, and Windows,
where a file held open cannot be renamed) keep the fallback: the member's pid and start
time on this host; an unreadable claim counts as dead after `CLAIM_GRACE_SECONDS`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import stat
import sys
import time
import weakref
from functools import cache
from typing import Any, NamedTuple

import psutil

from ..formats.locks import FileLock, try_lock
from .safedir import SafeDir

log = logging.getLogger(__name__)

#: An unreadable claim this old was left by a member that died between create and write
#: (claims are created complete now; older versions and foreign consumers may not).
CLAIM_GRACE_SECONDS = 5.0
#: Members hold their claims locked, where a file held open can still be renamed and
#: unlinked: not on Windows, whose claims keep the pid fallback.
LOCKS_CLAIMS = sys.platform != "win32"
#: Claims are group state files: never larger than this.
MAX_CLAIM_BYTES = 64 * 1024
#: How many claims this process made (a forked child goes on counting: its pid differs).
_CLAIMS_MADE = itertools.count(1)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def claim_record(seq: int | None, ino: int | None) -> bytes:
    """A claim by this process on the item (seq, ino): who works on which item.

    One JSON object, made for every claim: the owner's part is encoded once per process.
    ``"claim"`` counts this process's claims, so that no two of them have the same bytes
    (what tells a claim ours where we hold no descriptor of it: Windows, a forked child).
    """
    return b'%s, "claim": %d, "seq": %s, "ino": %s, "lock": %s}' % (
        _owner(os.getpid()),
        next(_CLAIMS_MADE),
        _json_count(seq),
        _json_count(ino),
        b"true" if LOCKS_CLAIMS else b"false",
    )


def _json_count(value: int | None) -> bytes:
    return b"null" if value is None else b"%d" % value


@cache
def _owner(pid: int) -> bytes:  # keyed by pid: a forked child gets its own
    """The claim record's first fields, ``{"pid": ..., "started": ..., "host": ...``."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:  # our pid is not in this /proc (another pid namespace's)
        started = None
    owner = {"pid": pid, "started": started, "host": socket.gethostname()}
    return json.dumps(owner).encode()[:-1]


def owner_is_alive(owner: dict[str, Any]) -> bool:
    """The fallback for claims that are not locked: True unless the claim's process is
    certainly gone (pid reuse is detected by the start time)."""
    if not owner:
        return False  # an unreadable claim, old enough: its writer died half-way
    if owner.get("host") != socket.gethostname():
        return True  # another machine sharing the folder: we cannot tell
    try:
        started = psutil.Process(int(owner["pid"])).create_time()
        return abs(started - float(owner.get("started", 0))) < 0.01
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, KeyError, ValueError, TypeError):
        return True  # we cannot tell


def read_claim(fd: int) -> dict[str, Any] | None:
    """The record of the claim open as ``fd``; {} for an unreadable one left by a member
    that died half-way; None for an unreadable one that may be being written now."""
    raw = os.read(fd, MAX_CLAIM_BYTES + 1)
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = None
    if isinstance(owner, dict) and owner:
        return owner
    # Half-written (older writers, foreign consumers): dead once old enough.
    return {} if time.time() - os.fstat(fd).st_mtime > CLAIM_GRACE_SECONDS else None


def member_is_dead(fd: int, owner: dict[str, Any], alive: dict[str, bool]) -> bool:
    """Is the member of the claim open as ``fd`` (its record: ``owner``) dead?

    A locking claim: exactly when we can take its lock (we then hold it, so no other
    reclaimer judges it dead meanwhile). Any other by `owner_is_alive`, cached by owner
    in ``alive``.
    """
    if owner.get("lock") is True:
        return try_lock(fd)
    # what `owner_is_alive` judges by: one check per process, not per claim
    who = json.dumps([bool(owner), "started" in owner, *map(owner.get, ("host", "pid", "started"))])
    if who not in alive:
        alive[who] = owner_is_alive(owner)
    return not alive[who]


def remove_if_dead(
    claims: SafeDir, item: str, lock: FileLock, alive: dict[str, bool]
) -> dict[str, Any] | None:
    """Remove the claim on ``item`` in ``claims`` if its member died (`member_is_dead`,
    ``alive`` as there); its record if removed, else None.

    Through the folder's descriptor: a ``claims/`` swapped for a link is never followed.
    Under ``lock`` (the group's), so two reclaimers never remove a fresh live claim; and
    only the file judged (the open descriptor keeps its inode number from reuse).
    """
    try:
        fd = claims.open_file(item, _READ_FLAGS)
    except FileNotFoundError:
        return None  # acked or released meanwhile
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.info("%s is not a claim (not a regular file); left alone", claims.entry(item))
            return None
        owner = read_claim(fd)
        if owner is None or not member_is_dead(fd, owner, alive):
            return None
        with lock:
            now = claims.lstat(item)
            if now is None or now.st_ino != os.fstat(fd).st_ino:
                return None  # acked or released, and claimed anew
            return owner if claims.unlink(item) else None
    finally:
        os.close(fd)


def records_item(raw: bytes, seq: int | None, ino: int | None) -> bool:
    """Is the claim or ack ``raw`` for the item (seq, ino)?

    ``"seq"`` (null for a legacy item) and ``"ino"``, where the record has them, must be
    the item's; an inode that is None, on either side, is not known (`Channel.ack`
    records none). A record naming no item (an empty ack from an older version or a
    foreign consumer) counts for any.
    """
    try:
        record = json.loads(raw)
    except ValueError:
        return True
    if not isinstance(record, dict):
        return True
    if "seq" in record and record["seq"] != seq:
        return False
    recorded = record.get("ino")
    return ino is None or recorded is None or recorded == ino


class Held(NamedTuple):
    """A claim this process made: the bytes it wrote, the descriptor holding its lock
    (-1: none), and the item it is for (seq and inode, as in the bytes)."""

    record: bytes
    fd: int
    seq: int | None
    ino: int | None

    def is_for(self, seq: int | None, ino: int | None) -> bool:
        """Is this the claim on the item (seq, ino)? (`records_item`, without parsing.)"""
        return seq == self.seq and (ino is None or self.ino is None or ino == self.ino)

    def unlock(self) -> None:
        """Close the descriptor: the lock goes with it (call after the rename/unlink, so
        the claim never looks dead while it is still ours)."""
        if self.fd >= 0:
            os.close(self.fd)


class HeldClaims:
    """The claims one group handle holds, by item name: one each, on the item of that
    name that it claimed last.

    One descriptor each, so bounded by the items it has in flight. A forked child closes
    its copies (`_forget_locks_in_child`): sharing them, it would keep its parent's
    claims alive after the parent died, and their items would wait for the child's end.
    """

    def __init__(self) -> None:
        self._by_item: dict[str, Held] = {}

    def hold(self, item: str, held: Held) -> None:
        """Record ``held`` as our claim on ``item``, just made: a claim we held on an
        older item of that name went with that item (or the name was free), so its
        descriptor is closed."""
        earlier = self._by_item.get(item)
        self._by_item[item] = held
        if earlier is not None:
            earlier.unlock()
        if held.fd >= 0:
            _at_fork_forget_locks()
            _HOLDERS.add(self)

    def find(self, item: str, seq: int | None, ino: int | None) -> Held | None:
        """Our claim on the item ``item`` of ``seq`` (inode ``ino``, None: not known); None
        if we hold none on it (perhaps one on a newer item of that name)."""
        held = self._by_item.get(item)
        return held if held is not None and held.is_for(seq, ino) else None

    def pop(self, item: str, seq: int | None, ino: int | None) -> Held | None:
        """`find`, no longer recorded as held (a claim on a newer item stays)."""
        held = self.find(item, seq, ino)
        if held is not None:
            del self._by_item[item]
        return held

    def pop_any(self) -> tuple[str, Held] | None:
        """One claim we hold (the last made) and its item's name, no longer recorded as
        held; None when we hold none."""
        return self._by_item.popitem() if self._by_item else None

    def _forget_locks(self) -> None:
        for item, held in list(self._by_item.items()):
            held.unlock()
            self._by_item[item] = held._replace(fd=-1)


#: Every `HeldClaims` of this process that holds a lock (or did).
_HOLDERS: weakref.WeakSet[HeldClaims] = weakref.WeakSet()


@cache
def _at_fork_forget_locks() -> None:
    """Register `_forget_locks_in_child` for every fork, once."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_locks_in_child)


def _forget_locks_in_child() -> None:
    """In a forked child: close our copies of the claim locks, keep the claims' records.

    The parent's locks stay (a lock lives while any descriptor of it is open); the
    claims remain its own, and die with it.
    """
    for claims in list(_HOLDERS):
        claims._forget_locks()
    _HOLDERS.clear()
