"""Retention and garbage collection: what keeps a RAM disk from filling up.

No daemon: each rule runs inside ``put``/``ack``/``gc`` of whichever process is there.

- An item is deleted once every durable group that existed when it was published has
  acked it (with no groups, items stay like files in a plain folder).
- ``keep_last`` and ``ttl`` delete the oldest items regardless of acks (live views).
- ``max_items``/``max_bytes``/``reserve_bytes`` make producers wait for consumers
  (backpressure.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from .._errors import UnsafeRoot
from ..formats import format_for
from .aside import set_aside
from .backpressure import wait_for_room
from .config import ChannelConfig
from .groups import Group, GroupInfo, must_ack
from .held import HeldState
from .layout import ChannelLayout
from .pool import Pool, PoolRoom
from .registry import forget_everywhere, remove_dropped
from .safedir import SafeDir, StateTree
from .scan import is_current, publish_order, scan
from .sequence import SequenceCounter
from .sidecar import Sidecar
from .steps import try_each
from .tmpfiles import collect_dead

log = logging.getLogger(__name__)

#: `Retention.sweep` runs at most this often per channel handle.
SWEEP_SECONDS = 1.0
#: The state folders a channel handle trusts for `SWEEP_SECONDS` (`HeldState`): those no
#: group owns (a group's folders are checked before each use).
HELD_FOLDERS = frozenset({(), ("meta",), ("tmp",), ("pool",), ("groups",)})
#: Group folders a channel handle holds besides (3 per group: its own, claims/, acks/):
#: bounded, as a channel may have many groups, each a few descriptors.
HELD_GROUP_FOLDERS = 6

#: What an ack did: nothing (the item was gone already), marked it, or deleted it too.
AckOutcome = Literal["gone", "acked", "deleted"]


class Retention:
    """The retention rules of one channel."""

    def __init__(self, layout: ChannelLayout, config: ChannelConfig) -> None:
        self.layout = layout
        self.config = config
        #: the state folders, opened once per sweep interval rather than per item
        self.state = HeldState(layout.open_state, SWEEP_SECONDS, HELD_FOLDERS, HELD_GROUP_FOLDERS)
        #: the publish counter and lock, opened through the held state folder
        self.counter = SequenceCounter(layout, self.state)
        self.pool = Pool(layout, config, self.state)
        self._group_cache: dict[tuple[str, int], tuple[Group, GroupInfo]] = {}
        self._next_sweep = 0.0  # time.monotonic() when `sweep` may run again

    # -- deleting ---------------------------------------------------------------------------

    def delete(self, name: str, path: str | Path) -> None:
        """Delete an item and everything that refers to it, under the publish lock."""
        self.delete_many([(name, path)])

    def delete_many(
        self,
        items: list[tuple[str, str | Path]],
        *,
        remove: Callable[[str | Path], bool] | None = None,
    ) -> None:
        """Delete items and everything that refers to them, under one publish lock.

        The lock keeps a producer from re-publishing the same name half-way through.
        ``remove(path)`` takes the file away (default: recycle or unlink); where it
        returns False (a mapped file on Windows), the item is left whole, with its
        sidecar and acks, and ``gc`` tries again later.
        """
        with self.counter.lock():
            self._delete_locked(items, remove)

    def _delete_locked(
        self,
        items: list[tuple[str, str | Path]],
        remove: Callable[[str | Path], bool] | None = None,
        groups: list[Group] | None = None,
    ) -> int:
        """`delete_many`, for a caller that holds the publish lock; returns how many of
        the items went (the others were left whole). ``groups``: every registered group,
        listed under that lock (default: listed now). A group registered while the
        caller waited for the lock may have claimed an item: its claim must go with the
        item, or a later item of that name would wait for it."""
        if not items:
            return 0
        remove = remove or self._remove_file
        if groups is None:
            groups = [group for group, _ in self.registered()]
        removed = 0
        # The state folders through descriptors: a meta/ or acks/ swapped for a link by
        # whoever shares the channel must not make us delete files elsewhere.
        with self.state.use() as state:
            for name, path in items:
                try:
                    went = remove(path)
                except BaseException:
                    if self._file_gone(path):  # it went, then a step failed: no trace stays
                        _forget_after_failure(name, state, groups)
                    raise
                if went:
                    removed += 1
                    forget_everywhere(name, state, groups)
        return removed

    def _file_gone(self, path: str | Path) -> bool:
        """Is the item file ``path`` gone (by the channel folder's descriptor; error: no)?"""
        try:
            with self.state.use() as state:
                return state.channel.lstat(os.path.basename(path)) is None
        except Exception:
            log.warning("cannot tell whether %s is still there", path, exc_info=True)
            return False

    def forget(self, name: str) -> None:
        """Drop every group's claims and acks of the item ``name``, under the publish lock:
        it is being replaced, so it counts as deleted (a late ack of it changes nothing)."""
        with self.state.use() as state:
            try_each(partial(group.forget, name, state) for group, _ in self.registered())

    def retire_aside(
        self,
        name: str,
        path: str | Path,
        folder: Path,
        reason: str,
        *,
        seq: int | None,
        ino: int | None = None,
        **details: Any,
    ) -> Path | None:
        """Move the item ``name`` of ``seq`` (inode ``ino``) into ``folder`` with a reason
        file, and drop it like a delete.

        The reason file records ``name``, ``seq`` and ``details``. Returns where the file
        went; None if that item was gone already (deleted, perhaps published again).
        """
        moved: list[Path | None] = []

        def move(source: str | Path) -> bool:
            if not is_current(self.layout, name, source, seq, ino):
                return False  # another item of that name now: not ours to move
            moved.append(set_aside(source, folder, reason, name=name, seq=seq, **details))
            return moved[-1] is not None  # left in place (not ours to move): keep its state

        self.delete_many([(name, path)], remove=move)
        return moved[0] if moved else None

    def _remove_file(self, path: str | Path) -> bool:
        """Recycle or unlink an item file; False when it must stay for now."""
        return self._pool_or_unlink(path, self._pool_room(path))

    def _pool_or_unlink(self, path: str | Path, room: PoolRoom | None) -> bool:
        """Move an item file into the pool, where `_pool_room` found ``room`` for it, or
        unlink it (``room`` None, or the move failed); False when it must stay for now."""
        if room is not None and self.pool.put_in(path, room):
            return True
        fmt = format_for(path)
        try:
            self.pool.discard(path, fmt)
        except FileNotFoundError:
            pass
        except PermissionError as exc:
            log.info("cannot delete %s yet (%s); gc will try again", path, exc)
            return False
        return True

    def ack(
        self,
        group: Group,
        name: str,
        path: str | Path,
        seq: int | None,
        published_ns: int,
        *,
        ino: int | None = None,
        sidecar: Sidecar | None = None,
    ) -> AckOutcome:
        """Mark the item ``name`` of ``seq`` (inode ``ino``) done for ``group``; delete it
        if every group is done.

        Only while the file at ``path`` is still that item, checked under the publish
        lock: once deleted, its name may hold a new item, which a late ack must not
        touch. ``sidecar``: the item's, as read when it was delivered. Returns
        ``"gone"`` (nothing changed), ``"acked"`` or ``"deleted"``. Raises
        `GroupNotFound` when the group was dropped.
        """
        deleted = False
        # Room for the file in the pool (a pool listing, the bounds) is found before the
        # lock, held for less then (the producer waits for it), if this ack looks like the
        # item's last by the groups listed last time: a hint, the listing under the lock
        # decides. Whether a reader maps the file, and eviction, wait for it (`put_in`).
        known = list(self._group_cache.values())
        last = self._is_done(known, name, seq, published_ns, group.name)
        room = self._pool_room(path) if last else None
        with self.counter.lock():
            group.check_registered()
            current = is_current(self.layout, name, path, seq, ino, known=sidecar)
            if current:
                # Listed again under the lock: a group registered meanwhile (which need not
                # ack this item) may have claimed it, and the deletion clears every group.
                groups = self.registered()
                if self._is_done(groups, name, seq, published_ns, group.name):
                    # No room found before (another group had not acked yet): found now.
                    remove = partial(self._pool_or_unlink, room=room) if last else None
                    listed = [g for g, _ in groups]
                    try:
                        deleted = self._delete_locked([(name, path)], remove, listed) == 1
                    except BaseException:
                        if self._file_gone(path):  # our claim must not outlive the item
                            group.release_after_failure(name, seq, ino, wait=None)
                        raise  # else the item and our claim stay: to be acked again
                if deleted:
                    group.let_go(name, seq, ino)  # the last ack: the deletion removed our claim
                else:
                    group.ack(name, seq, ino)  # not done for all, or left whole for now
        if not current:
            group.release(name, seq, ino)  # our claim went with the item: forget we held it
            log.info(
                "ack of %s (seq %s) for group %s changed nothing: that item is gone already "
                "(deleted, perhaps published again under its name)",
                name,
                seq,
                group.name,
            )
            return "gone"
        return "deleted" if deleted else "acked"

    def release_done(self, items: list[tuple[str, str | Path, int | None, int]]) -> int:
        """Delete those of the (name, path, seq, published_ns) items every group is done
        with; return how many were deleted.

        With no group at all items stay (a plain folder keeps its files).
        """
        groups = self.registered()
        # Decided without the lock (acks of an item only accumulate while it exists) ...
        done = [(n, p, s) for n, p, s, ns in items if self._is_done(groups, n, s, ns)]
        if not done:
            return 0
        with self.counter.lock():
            # ... but deleted only if still the item we looked at: meanwhile it may have
            # been deleted and its name published again.
            current = [(n, p) for n, p, s in done if is_current(self.layout, n, p, s, None)]
            self._delete_locked(current)
        return len(current)

    def _pool_room(self, path: str | Path) -> PoolRoom | None:
        """Room in the pool for the item file when it is deleted (`Pool.make_room`); None
        when it is not recyclable or the pool has none."""
        fmt = format_for(path)
        return self.pool.make_room(path) if fmt is not None and fmt.recyclable else None

    @staticmethod
    def _is_done(
        groups: list[tuple[Group, GroupInfo]], name: str, seq: int | None, ns: int, acked: str = ""
    ) -> bool:
        """Has every group that must ack the item (published at ``ns``) acked it, and is
        there one? ``acked`` names a group that counts as done without its ack read back:
        one that just acked under the publish lock, or (`ack`'s guess before the lock)
        is about to."""
        required = [group for group, info in groups if must_ack(info, seq, ns)]
        return bool(required) and all(g.name == acked or g.acked(name, seq) for g in required)

    def registered(self) -> list[tuple[Group, GroupInfo]]:
        """The registered groups, from a fresh listing of the groups folder.

        Never from a cached listing: a folder's timestamp need not change when a group
        is registered within one clock tick of the last look (ramfs, tmpfs before Linux
        6.13), and a group missed here loses the items it must ack. Registrations never
        change in place, so each is read once, keyed by its folder's inode (a group
        dropped and registered again is read afresh).
        """
        try:
            listing = os.scandir(self.layout.groups)
        except FileNotFoundError:
            return []
        cache: dict[tuple[str, int], tuple[Group, GroupInfo]] = {}
        with listing:
            for entry in listing:  # a hidden name, or no folder (a link), is no group
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                key = (entry.name, entry.inode())
                known = self._group_cache.get(key)
                if known is None:
                    group = Group(self.layout, entry.name, self.state)
                    info = group.info()
                    if info is None:
                        continue  # being registered or dropped right now
                    known = (group, info)
                cache[key] = known
        self._group_cache = cache  # dropped groups are forgotten
        return list(cache.values())

    def enforce_age_and_count(self, keep: str | None = None) -> int:
        """Apply ``keep_last`` and ``ttl``; return how many items were deleted.

        Both go by arrival (`publish_order`), dropped-in files included. ``keep`` names
        the item a ``put`` has just published, which its own retention never deletes
        (a file that arrived meanwhile, a clock set back or a tiny ttl could make it
        look old); the next ``put`` or ``gc`` weighs it like any other.
        """
        keep_last, ttl = self.config.keep_last, self.config.ttl
        if keep_last is None and ttl is None:
            return 0
        entries = sorted(scan(self.layout), key=publish_order)
        doomed = entries[:-keep_last] if keep_last is not None else []
        if ttl is not None:
            cutoff = time.time_ns() - int(ttl * 1e9)
            doomed += [e for e in entries[len(doomed) :] if e.published_ns < cutoff]
        doomed = [entry for entry in doomed if entry.name != keep]
        if doomed:
            self.delete_many([(entry.name, entry.path) for entry in doomed])
        return len(doomed)

    # -- backpressure -----------------------------------------------------------------------

    def wait_for_room(self, needed: int, timeout: float | None) -> None:
        """Block until an item of ``needed`` bytes fits the limits, or raise (see
        `ramxchg._store.backpressure.wait_for_room`); full pools are drained first."""
        wait_for_room(self.layout, self.config, self.pool.drain, needed, timeout)

    # -- garbage collection -----------------------------------------------------------------

    def gc(self) -> dict[str, int]:
        """Remove leftovers of dead processes and apply every retention rule.

        Returns counts: ``tmp_files``, ``orphan_sidecars``, ``stale_state``, ``released``
        (items every group had acked), ``expired`` (keep_last/ttl), ``pooled_files``
        (recycled files idle too long, `Pool.trim`), ``dropped_groups`` (folders of
        dropped groups left, `remove_dropped`), ``unsafe_folders`` (state folders left
        alone: a link, or neither the channel owner's nor ours).
        A folder with no state folder is no channel (yet): nothing is done, nor written.
        """
        kinds = ("tmp_files", "expired", "released", "orphan_sidecars", "stale_state")
        report = dict.fromkeys((*kinds, "pooled_files", "dropped_groups", "unsafe_folders"), 0)
        with self.layout.open_state(check_owner=True) as state:
            top = state.folder()  # UnsafeRoot if it is a link: the whole channel refused
            if top is None:
                return report
            tmp, lock = _walkable(state, report, "tmp"), self.counter.lock(top)
            report["tmp_files"] = 0 if tmp is None else collect_dead(tmp, lock)
            report["expired"] = self.enforce_age_and_count()
            report["released"] = self.release_done(
                [(e.name, e.path, e.seq, e.published_ns) for e in scan(self.layout)]
            )
            with lock:  # no publish half-way: a sidecar without item is orphan
                live = {e.name for e in scan(self.layout)}
                meta = _walkable(state, report, "meta")
                for sidecar in meta.names() if meta is not None else []:
                    if sidecar.endswith(".json") and sidecar[:-5] not in live:
                        report["orphan_sidecars"] += meta.unlink(sidecar)
                groups = _walkable(state, report, "groups")
                report["dropped_groups"] = 0 if groups is None else remove_dropped(groups)
                for group in groups.names() if groups is not None else []:
                    if _walkable(state, report, "groups", group) is None:
                        continue
                    for kind in ("acks", "claims"):
                        folder = _walkable(state, report, "groups", group, kind)
                        for name in folder.names() if folder is not None else []:
                            if name not in live:
                                report["stale_state"] += folder.unlink(name)
        report["pooled_files"] = self.pool.trim()
        return report

    def _collect_tmp(self) -> int:
        """Remove dead producers' temporary files (see _store/tmpfiles.py); how many went.

        A tmp folder that is a link, or belongs to neither the channel's owner nor us,
        is left alone (logged).
        """
        with self.layout.open_state(check_owner=True) as state:
            try:
                tmp = state.folder("tmp")
            except UnsafeRoot as exc:
                log.warning("not collecting temporary files: %s", exc)
                return 0
            return 0 if tmp is None else collect_dead(tmp, self.counter.lock(state.existing()))

    def reclaim_space(self) -> int:
        """Free what a full disk can spare: dead producers' temporary files and the pooled
        files. Returns how many files went."""
        return self._collect_tmp() + self.pool.drain()

    def sweep(self) -> dict[str, int]:
        """Collect dead temporary files and dead claims, and remove idle pooled files
        (`Pool.trim`), at most once per `SWEEP_SECONDS`.

        What producers, subscriptions and ``ramxchg watch`` run as they go, so that a
        dead process's leftovers, and the RAM a burst left pooled, go without a daemon
        (a lock attempt per file). Returns counts: ``tmp_files`` removed and ``claims``
        reclaimed (both 0 when it ran less than `SWEEP_SECONDS` ago). A folder we may
        not touch (another user's group) is skipped.
        """
        now = time.monotonic()
        if now < self._next_sweep:
            return {"tmp_files": 0, "claims": 0}
        self._next_sweep = now + SWEEP_SECONDS
        report = {"tmp_files": 0, "claims": 0}
        try:
            report["tmp_files"] = self._collect_tmp()
        except PermissionError as exc:  # a folder we may not touch
            log.debug("sweep of %s: temporary files skipped: %s", self.layout.path, exc)
        self.pool.trim()
        for group, _ in self.registered():
            try:
                report["claims"] += len(group.reclaim_dead())
            except PermissionError as exc:
                log.debug("sweep of %s: group %s skipped: %s", self.layout.path, group.name, exc)
        return report


def _walkable(state: StateTree, report: dict[str, int], *parts: str) -> SafeDir | None:
    """The state folder ``parts`` for gc to walk; None (logged, counted) when unsafe."""
    try:
        return state.folder(*parts)
    except UnsafeRoot as exc:
        log.warning("gc leaves alone: %s", exc)
        report["unsafe_folders"] += 1
        return None


def _forget_after_failure(name: str, state: StateTree, groups: list[Group]) -> None:
    """`forget_everywhere` for a deletion that failed: its own failure is logged, the
    deletion's error is the one raised."""
    try:
        forget_everywhere(name, state, groups)
    except Exception:
        log.warning("traces of %s left for gc", name, exc_info=True)
