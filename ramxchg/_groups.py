"""Durable consumer groups: registration, claims and acks, all as small files.

A group ``G`` of a channel is the folder ``.ramxchg/groups/G/``::

    group.json        {"version": 1, "name": G, "start_seq": N, "created_seq": N,
                       "created_ns": T}
    claims/<item>     {"pid": P, "started": S, "host": H}: a member is working on <item>
    acks/<item>       <item> is done for the group (the claim renamed here, or created)

Claiming is ``open(O_CREAT | O_EXCL)``: exactly one member of the group wins an
item. Acking is one ``rename`` of the claim into ``acks/``. A claim whose process
has died (same pid *and* start time, so a reused pid is not mistaken for the owner)
is removed under the group's lock, and the item is handed out again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psutil

from ._errors import CorruptItem, InvalidName, ItemNotFound
from ._layout import ChannelLayout
from ._names import check_name
from ._safedir import SafeDir, StateTree
from ._sequence import FileLock, SequenceCounter
from ._statefile import create_once, read_state

log = logging.getLogger(__name__)

_MAX_STATE_BYTES = 64 * 1024
#: An unreadable claim this old was left by a member that died between create and write.
CLAIM_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class GroupInfo:
    """A durable group as stored on disk."""

    name: str
    start_seq: int
    created_seq: int
    created_ns: int


def _identity_json() -> bytes:
    """This process as written into claims: pid, start time, host."""
    return _identity_json_of(os.getpid())


@cache
def _identity_json_of(pid: int) -> bytes:  # keyed by pid: a forked child gets its own
    proc = psutil.Process(pid)
    return json.dumps(
        {"pid": pid, "started": proc.create_time(), "host": socket.gethostname()}
    ).encode()


def owner_is_alive(owner: dict[str, Any]) -> bool:
    """True unless the claim's process is certainly gone (pid reuse is detected)."""
    if not owner:
        return False  # an unreadable claim, old enough: its writer died half-way
    if owner.get("host") != socket.gethostname():
        return True  # another machine sharing the folder: we cannot tell
    try:
        started = psutil.Process(int(owner["pid"])).create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, KeyError, ValueError, TypeError):
        return True
    return abs(started - float(owner.get("started", 0))) < 0.01


class Group:
    """One durable consumer group of a channel."""

    def __init__(self, layout: ChannelLayout, name: str) -> None:
        self.name = check_name(name, "group")
        self.layout = layout
        self.folder = layout.groups / name
        self.claims = self.folder / "claims"
        self.acks = self.folder / "acks"
        self.info_file = self.folder / "group.json"
        # Plain string prefixes: these paths are built several times per item.
        self._claim_prefix = f"{self.claims}{os.sep}"
        self._ack_prefix = f"{self.acks}{os.sep}"

    # -- registration -----------------------------------------------------------------------

    def register(self, counter: SequenceCounter, start: str) -> GroupInfo:
        """Create the group if new (durably, at once); return its stored info.

        A new group with ``start="latest"`` skips items published before it.
        """
        existing = self.info()
        if existing is not None:
            return existing
        for folder in (self.folder, self.claims, self.acks):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
        # Under the publish lock: no item can be half-way published while we read seq.
        with counter.claim() as claim:
            now = claim.next - 1
            info = GroupInfo(self.name, now if start == "latest" else 0, now, time.time_ns())
            # Another process may have registered it first: theirs counts.
            create_once(self.info_file, json.dumps({"version": 1, **info.__dict__}).encode())
        stored = self.info()
        assert stored is not None
        return stored

    def info(self) -> GroupInfo | None:
        """The stored registration, or None if the group does not exist."""
        raw = read_small(self.info_file)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return GroupInfo(
                data["name"],
                int(data["start_seq"]),
                int(data["created_seq"]),
                int(data["created_ns"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptItem(
                f"group file {self.info_file} is not valid: {exc}", path=self.info_file
            ) from exc

    # -- claims and acks --------------------------------------------------------------------

    def is_acked(self, item: str) -> bool:
        return os.path.lexists(self._ack_prefix + item)

    def is_claimed(self, item: str) -> bool:
        return os.path.lexists(self._claim_prefix + item)

    def try_claim(self, item: str) -> bool:
        """Claim ``item`` for this process; False if another member has it or it is done."""
        if self.is_acked(item):
            return False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self._claim_prefix + item, flags, 0o666)
        except FileExistsError:
            return False
        try:
            os.write(fd, _identity_json())
        finally:
            os.close(fd)
        if self.is_acked(item):  # another member acked it between our two checks
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._claim_prefix + item)
            return False
        return True

    def release(self, item: str) -> None:
        """Give a claimed item back to the group without acking it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._claim_prefix + item)

    def ack(self, item: str) -> None:
        """Mark ``item`` done for the group (claimed by us or never delivered)."""
        try:
            os.replace(self._claim_prefix + item, self._ack_prefix + item)
        except FileNotFoundError:
            fd = os.open(
                self._ack_prefix + item,
                os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                0o666,
            )
            os.close(fd)

    def forget(self, item: str, state: StateTree) -> None:
        """Drop every trace of ``item`` (it was deleted, its name may be reused).

        ``state``: the channel's state folders (`ChannelLayout.open_state`), open already
        when many items are deleted at once.
        """
        for kind in ("acks", "claims"):
            folder = state.folder("groups", self.name, kind)
            if folder is not None:
                folder.unlink(item)

    def reclaim_dead(self) -> list[str]:
        """Remove claims whose process died; return the items now free again."""
        with self.layout.open_state() as state:
            folder, claims = state.folder("groups", self.name), self._claims(state)
            if folder is None or claims is None:
                return []
            freed: list[str] = []
            alive: dict[str, bool] = {}  # one liveness check per owner, not per claim
            for item in claims.names():
                if item.startswith("."):
                    continue
                owner = _read_owner(claims, item)
                if owner is None:
                    continue
                who = json.dumps(owner, sort_keys=True)
                if who not in alive:
                    alive[who] = owner_is_alive(owner)
                if alive[who]:
                    continue
                # Under the group lock, so two reclaimers never remove a fresh live claim.
                with FileLock(self.folder / "lock", dir_fd=folder.fd):
                    if _read_owner(claims, item) == owner and claims.unlink(item):
                        freed.append(item)
                        log.info(
                            "item %s of group %s: its consumer (pid %s) died before acking; "
                            "delivering it again",
                            item,
                            self.name,
                            owner.get("pid"),
                        )
        return freed

    def claimed(self) -> list[str]:
        """The items members are working on now."""
        with self.layout.open_state() as state:
            claims = self._claims(state)
            return [] if claims is None else [n for n in claims.names() if not n.startswith(".")]

    def _claims(self, state: StateTree) -> SafeDir | None:
        return state.folder("groups", self.name, "claims")


def _read_owner(claims: SafeDir, item: str) -> dict[str, Any] | None:
    raw = read_small(claims.path / item, dir_fd=claims.fd)
    if raw is None:
        return None
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = None
    if isinstance(owner, dict) and owner:
        return owner
    # Half-written: dead if old enough, else a member may be writing it right now.
    info = claims.lstat(item)
    if info is not None and time.time() - info.st_mtime > CLAIM_GRACE_SECONDS:
        return {}
    return None


def read_small(path: Path, *, dir_fd: int | None = None) -> bytes | None:
    """A group state file's bytes (None if missing); see `read_state`."""
    return read_state(path, _MAX_STATE_BYTES, "group state file", dir_fd=dir_fd)


def list_groups(layout: ChannelLayout) -> list[Group]:
    """Every registered group of the channel (folders are never followed through a link)."""
    with layout.open_state() as state:
        folder = state.folder("groups")
        groups = []
        for name in sorted(folder.names()) if folder is not None else []:
            if name.startswith("."):
                continue
            try:
                group = Group(layout, name)
            except InvalidName:
                log.info("%s is no group's folder; skipped", folder.path / name)
                continue
            group_folder = state.folder("groups", name)
            if group_folder is not None and group_folder.lstat("group.json") is not None:
                groups.append(group)
        return groups


def registered_group(layout: ChannelLayout, name: str) -> Group:
    """The group called ``name``; `ItemNotFound` if no such group is registered."""
    group = Group(layout, name)
    if group.info() is None:
        raise ItemNotFound(
            f"no group {name!r} in channel {layout.path}", path=layout.path, name=name
        )
    return group


def drop(layout: ChannelLayout, name: str) -> None:
    """Remove a group and its state; `ItemNotFound` if there is no such group."""
    registered_group(layout, name)
    with layout.open_state() as state:
        groups, folder = state.folder("groups"), state.folder("groups", name)
        if groups is None or folder is None:
            return  # dropped meanwhile by another process
        # Remove the registration first so retention stops waiting for the group at once.
        folder.unlink("group.json")
        folder.clear()
        try:
            groups.rmdir(name)
        except OSError as exc:  # not empty: a member is registering it again right now
            log.info("group %s of %s was not removed: %s", name, layout.path, exc)
