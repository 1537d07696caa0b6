"""Durable consumer groups: registration, claims and acks, all as small files.

A group ``G`` of a channel is the folder ``.ramxchg/groups/G/``::

    group.json        {"version": 1, "name": G, "start_seq": N, "created_seq": N,
                       "created_ns": T}
    claims/<item>     {"pid": P, "started": S, "host": H, "claim": N, "seq": Q, "ino": I,
                       "lock": true}: a member is working on the item <item> of seq Q
                      (inode I); N tells apart the claims of one process
    acks/<item>       that item is done for the group (the claim renamed here, or
                      {"seq": Q, "ino": I}); the ack that deletes the item writes none

A name is not an item: once an item is deleted its name may be published again. So
claims and acks say which item they are for, and count for that item only:

- A claim is written complete without a name (O_TMPFILE, on Linux) or under a hidden
  one in ``claims/`` and ``link``ed to ``claims/<item>``: the link lets exactly one
  member win, and no member ever sees an empty claim. The winner then checks that the
  item is still the one it saw (same inode, same seq); if it was deleted meanwhile
  (perhaps published again), it takes its claim back and skips it.
- An ack is made under the publish lock after the same check (`Retention.ack`): a late
  ack of an item that is gone changes nothing.

A member keeps its claim locked while it works (see `ramxchg._store.claims`); a claim whose
member died (its lock free; for claims that do not lock, no process with its pid *and*
start time) is removed under the group's lock, and the item is handed out again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .._errors import CorruptItem, GroupNotFound, UnsafeRoot
from ..formats.locks import FileLock, lock_file
from .claims import (
    LOCKS_CLAIMS,
    Held,
    HeldClaims,
    claim_record,
    records_item,
    remove_if_dead,
)
from .held import HeldState
from .layout import ChannelLayout
from .names import check_name
from .safedir import SafeDir, StateTree, lexists
from .scan import is_current
from .sequence import PublishLock, SequenceCounter
from .sidecar import Sidecar
from .statefile import create_held, create_once, read_state
from .steps import try_each

log = logging.getLogger(__name__)

_MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class GroupInfo:
    """A durable group as stored on disk."""

    name: str
    start_seq: int
    created_seq: int
    created_ns: int


def must_ack(info: GroupInfo, seq: int | None, published_ns: int) -> bool:
    """Does the group have to ack an item before it may be deleted?

    Those published after the group was created: by seq, or for a legacy item (no seq)
    when it arrived (``published_ns`` is its `arrival_ns`, not its mtime).
    """
    if seq is not None:
        return info.created_seq < seq
    return info.created_ns <= published_ns


class Group:
    """One durable consumer group of a channel."""

    def __init__(self, layout: ChannelLayout, name: str, state: HeldState | None = None) -> None:
        """``state``: the channel handle's state folders, held open between items (else
        they are opened for each claim)."""
        self.name = check_name(name, "group")
        self.layout = layout
        self._state = state
        self.folder = layout.groups / name
        self.claims = self.folder / "claims"
        self.acks = self.folder / "acks"
        self.info_file = self.folder / "group.json"
        self._layout = layout
        # Plain string prefixes: these paths are built several times per item.
        self._claim_prefix = f"{self.claims}{os.sep}"
        self._ack_prefix = f"{self.acks}{os.sep}"
        #: claims this handle made and holds
        self._held = HeldClaims()

    # -- registration -----------------------------------------------------------------------

    def register(self, counter: SequenceCounter, start: str) -> GroupInfo:
        """Create the group if new (durably, at once); return its stored info.

        A new group with ``start="latest"`` skips items published before it.
        """
        existing = self.info()
        if existing is not None:
            return existing
        self._in_state(self._make_folders)  # through descriptors, never through a link
        # Under the publish lock: no item can be half-way published while we read seq.
        with counter.claim() as claim:
            now = claim.next - 1
            info = GroupInfo(self.name, now if start == "latest" else 0, now, time.time_ns())
            record = json.dumps({"version": 1, **info.__dict__}).encode()
            self._in_state(partial(self._make_folders, record=record))  # the first counts
        if self._state is not None:  # a groups/ made anew is not the one the handle holds
            self._state.close()
        stored = self.info()
        if stored is None:  # dropped at once by another process
            raise self._not_found()
        return stored

    def info(self) -> GroupInfo | None:
        """The stored registration, or None if the group does not exist."""
        with self._folders() as state:
            folder = state.folder("groups", self.name)
            raw = None if folder is None else read_small(self.info_file, dir_fd=folder.fd)
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
        """Is there an ack for the name ``item`` (for whichever item had it)?"""
        return lexists(self._ack_prefix + item)

    def acked(self, item: str, seq: int | None, ino: int | None = None) -> bool:
        """Is the item ``item`` of ``seq`` (and inode ``ino``) done for the group?"""
        path = self._ack_prefix + item
        if not lexists(path):  # mostly none: no failed open (and its exception) per item
            return False
        raw = read_small(path)
        return raw is not None and records_item(raw, seq, ino)

    def is_claimed(self, item: str) -> bool:
        return lexists(self._claim_prefix + item)

    def try_claim(
        self,
        item: str,
        path: str | Path,
        seq: int | None,
        ino: int,
        sidecar: Sidecar | None = None,
    ) -> bool:
        """Claim the item ``item`` of ``seq`` at ``path`` (inode ``ino``) for this process.

        False if another member has it, it is done, or it is no longer that item (deleted,
        perhaps published again). ``sidecar``: the item's, as the listing read it. Raises
        `RamDiskFull` when there is no room for the claim, `GroupNotFound` when the group
        was dropped; nothing is left behind.
        """
        if self.acked(item, seq, ino):
            return False
        record = claim_record(seq, ino)
        fd = self._create_claim(item, record)
        if fd is None:
            return False  # another member's claim
        self._held.hold(item, Held(record, fd, seq, ino))
        try:
            # Done, or deleted, between our first look and our claim: take it back.
            taken = not self.acked(item, seq, ino) and is_current(
                self._layout, item, path, seq, ino, known=sidecar
            )
        except BaseException:  # not left claimed by us, for no one to get while we live
            self.release_after_failure(item, seq, ino, wait=False)
            raise
        if not taken:
            self.release(item, seq, ino)
        return taken

    def _create_claim(self, item: str, record: bytes) -> int | None:
        """Create ``claims/<item>`` holding ``record``, complete and locked by us.

        Returns the descriptor holding the lock (-1 where claims are not locked), or
        None if the claim exists: another member's.
        """
        try:
            return self._link_claim(item, record)
        except FileNotFoundError:
            # `gc` removes hidden files from claims/ (what dead members left) and may have
            # taken ours half-way: try once more. Or the group was dropped.
            self.check_registered()
        try:
            return self._link_claim(item, record)
        except FileNotFoundError:
            self.check_registered()
            raise

    def _link_claim(self, item: str, record: bytes) -> int | None:
        with self._folders() as state:
            path, dir_fd = self._claim_prefix + item, self._existing(state, "claims").fd
            if LOCKS_CLAIMS:
                # Locked before it is linked: a live member's claim is never seen unlocked.
                return create_held(path, record, lock_file, dir_fd=dir_fd)
            return -1 if create_once(path, record, dir_fd=dir_fd) else None

    def release(
        self, item: str, seq: int | None, ino: int | None = None, *, wait: bool = True
    ) -> None:
        """Give our claim on the item ``item`` of ``seq`` (inode ``ino``) back unacked.

        Only our claim on that item, if still there (`_is_ours`): a deleted item's name
        may be claimed again, by anyone. Under the publish lock, which every deletion
        holds. A claim left in place (its folder a link now) is dead once unlocked: the
        sweeps give it back. ``wait=False`` (a finalizer, maybe in a thread that holds
        the publish lock or the held folders): the lock is not waited for (taken: the
        claim is left, dead), and folders are opened for it, not the held ones.
        """
        held = self._held.pop(item, seq, ino)
        if held is not None:
            self._give_back(item, held, wait)

    def release_all(self, *, wait: bool = True) -> None:
        """Give back every claim we hold (`release`), one at a time, each even if another
        fails (raised after them); after an interrupt (Ctrl-C) without waiting for the
        publish lock (where it is taken, a claim is left unlocked, for the sweeps)."""
        failure: BaseException | None = None
        while (taken := self._held.pop_any()) is not None:
            try:
                self._give_back(*taken, wait)
            except Exception as exc:  # a claim left is a dead one for the sweeps
                failure = failure or exc
            except BaseException as exc:
                failure, wait = exc, False
        if failure is not None:
            raise failure

    def release_after_failure(
        self, item: str, seq: int | None, ino: int | None = None, *, wait: bool | None = True
    ) -> None:
        """`release` for a caller handling a failure (``wait=None``: holding the publish
        lock), which is the one to raise: this one's is logged (an unlocked claim is a
        dead member's, for the sweeps)."""
        held = self._held.pop(item, seq, ino)
        if held is not None:
            try:
                self._give_back(item, held, wait)
            except Exception:
                log.warning("claim on %s of %s left to the sweeps", item, self.name, exc_info=True)

    def _give_back(self, item: str, held: Held, wait: bool | None) -> None:
        """Remove our claim ``held`` on ``item`` if it is still there, under the publish
        lock (``wait`` as for `release`; None: the caller holds it), and unlock it."""
        lock = (
            contextlib.nullcontext()
            if wait is None
            else PublishLock(self._layout, self._state if wait else None, wait=wait)
        )
        try:
            with lock, self._folders(held=wait is not False) as state:
                claims = self._claims(state)
                if claims is not None and self._is_ours(claims, item, held):
                    claims.unlink(item)
        except FileNotFoundError:
            pass  # the channel or the group is gone, and our claim with it
        except (UnsafeRoot, BlockingIOError) as exc:  # a link now; the lock taken (wait=False)
            log.warning("claim on %s of group %s left to the sweeps: %s", item, self.name, exc)
        finally:
            held.unlock()

    @staticmethod
    def _is_ours(claims: SafeDir, item: str, held: Held) -> bool:
        """Is the claim on ``item`` in ``claims`` our claim ``held``: the file we hold open
        (its inode, which no other file can have meanwhile), or, holding none, the bytes
        we wrote? False when there is none."""
        if held.fd < 0:
            return read_small(claims.entry(item), dir_fd=claims.fd) == held.record
        there = claims.lstat(item)
        ours = os.fstat(held.fd)
        return there is not None and (there.st_ino, there.st_dev) == (ours.st_ino, ours.st_dev)

    def ack(self, item: str, seq: int | None, ino: int | None = None) -> None:
        """Mark the item ``item`` of ``seq`` (inode ``ino``) done for the group.

        Call under the publish lock, having checked that the item is still published
        (`is_current`). Our claim becomes the ack; without one (never delivered to us)
        an ack naming the item is written, replacing any ack left for an older item.
        Raises `GroupNotFound` when the group was dropped.
        """
        held = self._held.find(item, seq, ino)
        try:
            with self._folders() as state:
                if held is not None:
                    # A group dropped and registered again meanwhile may hold another
                    # member's claim on the item there now, not ours to rename (not there:
                    # reclaimed, or the group dropped; the ack is written afresh). Any
                    # other failure (the rename refused, a folder a link now) leaves our
                    # claim held and locked: the item is still ours.
                    claims, ours = self._claims(state), False
                    if claims is not None and self._is_ours(claims, item, held):
                        claims.replace(item, self._existing(state, "acks"), item)
                        ours = True
                    self._held.pop(item, seq, ino)
                    held.unlock()
                    if ours:
                        return
                record = json.dumps({"seq": seq, "ino": ino}).encode()
                self._existing(state, "acks").write_whole(item, record)
        except FileNotFoundError:
            self.check_registered()
            raise

    def holds(self, item: str, seq: int | None, ino: int | None = None) -> bool:
        """Do we hold a claim on the item ``item`` of ``seq`` (inode ``ino``)?"""
        return self._held.find(item, seq, ino) is not None

    def let_go(self, item: str, seq: int | None, ino: int | None = None) -> None:
        """Let go of our claim on the item ``item`` of ``seq`` (inode ``ino``), which its
        deletion removed (`forget`), under the publish lock: the last ack of an item
        needs no ack file of its own."""
        held = self._held.pop(item, seq, ino)
        if held is not None:
            held.unlock()

    def check_registered(self) -> None:
        """Raise `GroupNotFound` if the group is not (or no longer) registered."""
        if not os.path.lexists(self.info_file):
            raise self._not_found()

    def _not_found(self) -> GroupNotFound:
        return GroupNotFound(
            f"no group {self.name!r} in channel {self._layout.path}: it was dropped "
            "(Channel.drop_group) or never registered; subscribe again to register it",
            path=self._layout.path,
            group=self.name,
            name=self.name,
        )

    def forget(self, item: str, state: StateTree) -> None:
        """Drop every trace of ``item`` (it was deleted, its name may be reused).

        ``state``: the channel's state folders (`ChannelLayout.open_state`), open already
        when many items are deleted at once.
        """
        try_each(partial(self._forget_in, kind, item, state) for kind in ("acks", "claims"))

    def _forget_in(self, kind: str, item: str, state: StateTree) -> None:
        folder = state.folder("groups", self.name, kind)
        if folder is not None:
            folder.unlink(item)

    def reclaim_dead(self) -> list[str]:
        """Remove claims whose member died; return the items now free again."""
        with self.layout.open_state() as state:
            folder, claims = state.folder("groups", self.name), self._claims(state)
            if folder is None or claims is None:
                return []
            alive: dict[str, bool] = {}  # one pid check per owner, not per claim
            freed = [
                item
                for item in claims.names()
                if not item.startswith(".") and self._reclaim(folder, claims, item, alive)
            ]
        return freed

    def _reclaim(self, folder: SafeDir, claims: SafeDir, item: str, alive: dict[str, bool]) -> bool:
        """Remove the claim on ``item`` if its member died (`remove_if_dead`), under the
        group's lock; True if it was removed."""
        owner = remove_if_dead(
            claims, item, FileLock(self.folder / "lock", dir_fd=folder.fd), alive
        )
        if owner is None:
            return False
        log.info(
            "item %s of group %s: its consumer (pid %s) died before acking; delivering it again",
            item,
            self.name,
            owner.get("pid"),
        )
        return True

    def claimed(self) -> list[str]:
        """The items members are working on now."""
        with self.layout.open_state() as state:
            claims = self._claims(state)
            return [] if claims is None else [n for n in claims.names() if not n.startswith(".")]

    def _claims(self, state: StateTree) -> SafeDir | None:
        return state.folder("groups", self.name, "claims")

    def _existing(self, state: StateTree, kind: str) -> SafeDir:
        """The group's folder ``kind`` (claims, acks; FileNotFoundError if missing), whose
        descriptor every change goes through: one swapped for a link is refused."""
        found = state.folder("groups", self.name, kind)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.folder / kind))
        return found

    def _make_folders(self, state: SafeDir, record: bytes | None = None) -> None:
        """Make ``groups/`` (a foreign producer may have made none), the group's folder,
        its ``claims/`` and ``acks/`` in the state folder ``state``, where missing; and
        with ``record``, ``group.json`` holding it unless there is one."""
        with state.make_sub("groups") as groups, groups.make_sub(self.name) as folder:
            for kind in ("claims", "acks"):
                folder.make_sub(kind).close()
            if record is not None:
                create_once(self.info_file, record, dir_fd=folder.fd)

    def _in_state(self, make: Callable[[SafeDir], object]) -> None:
        """``make(.ramxchg/)``, in the held folder (`HeldState.in_folder`: again in one
        opened afresh if the held one was removed), or in one opened for it."""
        if self._state is not None:
            self._state.in_folder((), make)
            return
        with self.layout.open_state() as state:
            make(state.existing())

    def _folders(self, *, held: bool = True) -> HeldState | StateTree:
        """The channel's state folders for one operation: those the handle holds, or
        (``held`` False, or no handle) opened for it."""
        return self._state.use() if held and self._state is not None else self.layout.open_state()


def read_small(path: str | Path, *, dir_fd: int | None = None) -> bytes | None:
    """A group state file's bytes (None if missing); see `read_state`."""
    return read_state(path, _MAX_STATE_BYTES, "group state file", dir_fd=dir_fd)
