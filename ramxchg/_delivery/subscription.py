"""Subscription: items delivered as they are published, with catch-up and groups."""

from __future__ import annotations

import heapq
import os
import time
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .._item import Item, entry_item
from .._store.aside import set_aside
from .._store.groups import Group
from .._store.scan import Entry, Intruder, is_current, look, publish_order, scan
from ..formats.kept import KeptMappings
from .foreign import LegacyGate
from .notifiers import Notifier, make_notifier

if TYPE_CHECKING:
    from .._channel import Channel
    from .._store.retention import AckOutcome
    from .._store.store import ChannelStore


#: Rescan the folder this often even when events flow (events can be lost).
RESCAN_SECONDS = 1.0
#: Rescan this often when the filesystem gives no events.
POLL_SECONDS = 0.02
#: At most one gap-triggered rescan per this interval.
GAP_RESCAN_SECONDS = 0.05
#: A rescan that took t seconds is not repeated for RESCAN_COST_FACTOR x t seconds.
RESCAN_COST_FACTOR = 4


@dataclass(frozen=True)
class SubscribeOptions:
    """How a subscription starts and notices items: `Channel.subscribe`'s keywords, which
    say what each one means, checked once here."""

    start: Literal["earliest", "latest"]
    latest_only: bool
    watch: Literal["auto", "events", "polling"]
    settle: float | None
    quarantine_after: float | None

    def __post_init__(self) -> None:
        if self.start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {self.start!r}")


class Subscription:
    """Items of a channel, delivered as they are published.

    Use `Channel.subscribe` to make one. Iterate it (blocking) or call `get`; close it
    when done (or use ``with``). In a group, call ``item.ack()`` when an item is done.

    Files without a sidecar (written in place by other programs) are delivered once
    complete: ``settle`` and ``quarantine_after`` override `ramxchg._delivery.foreign`'s
    ``SETTLE_SECONDS`` and ``QUARANTINE_SECONDS``.
    """

    def __init__(
        self,
        channel: Channel,
        store: ChannelStore,
        group: str | None,
        options: SubscribeOptions,
    ) -> None:
        self.channel = channel
        self.latest_only = options.latest_only
        self._layout = store.layout
        self._retention = store.retention
        self._group = (
            Group(self._layout, group, self._retention.state) if group is not None else None
        )
        if self._group is not None:
            self._floor = self._group.register(store.counter, options.start).start_seq
        else:
            self._floor = store.counter.read() if options.start == "latest" else 0
        self._pending: list[tuple[tuple[int, int, str], Entry]] = []
        self._queued: set[tuple[str, int | None]] = set()
        self._seen: set[tuple[str, int | None]] = set()
        self._high_seq = self._floor  # highest sequence number queued or seen
        # Seen while another member held them: taken up again if it gives them back.
        self._elsewhere: set[tuple[str, int | None]] = set()
        # Sidecar-less files written in place wait here until complete (see _legacy).
        self._legacy = LegacyGate(
            self._layout, settle=options.settle, quarantine_after=options.quarantine_after
        )
        self._next_rescan = 0.0
        self._last_gap_rescan = 0.0
        self._gap_rescan_pause = GAP_RESCAN_SECONDS
        self._closed = False
        # Recycled files come back as new items: read them through the same mappings.
        self._kept = KeptMappings.for_disk(store.path, recycled=store.config.recycle > 0)
        # Watch first, then list: whatever lands in between is seen by both (deduplicated).
        self._notifier = make_notifier(store.path, options.watch)
        # Dropped without close() (a notebook cell run again, a `return` out of a `for`
        # loop), it is closed when collected, with a ResourceWarning as files are. The
        # finalizer holds what close() releases, never the subscription itself.
        # what close() releases: the notifier, and the claims made by this process
        self._held = (self._notifier, self._group, os.getpid())
        self._finalizer = weakref.finalize(self, _close_unclosed, repr(self), *self._held)
        self._finalizer.atexit = False  # at exit the OS closes them; our claims die with us
        try:
            # start="latest" without a group: what the first listing finds counts as seen
            # (dropped-in files have no sequence number for the floor to skip them).
            self._rescan(skip_present=options.start == "latest" and self._group is None)
        except BaseException:
            self.close()
            raise

    @property
    def group(self) -> str | None:
        """The durable group's name, or None for an anonymous subscription."""
        return self._group.name if self._group is not None else None

    @property
    def watching(self) -> str:
        """``"events"`` while filesystem events arrive, else ``"polling"``."""
        return "events" if self._notifier.has_events else "polling"

    # -- delivery ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Item:
        """The next item, waiting up to ``timeout`` seconds (forever if None).

        Raises TimeoutError when nothing arrives in time, and EOFError once the
        subscription is closed (also when closed from another thread while waiting).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        names = self._notifier.take()
        while True:
            if self._closed:
                raise EOFError("subscription is closed")
            self._absorb(names)
            now = time.monotonic()
            if now >= self._next_rescan or self._notifier.take_overflow():
                self._rescan()
            if now >= self._legacy.due():
                for entry in self._legacy.ready():
                    self._push(entry)
            item = self._next_item()
            if item is not None:
                return item
            wait = min(self._next_rescan, self._legacy.due()) - now
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    raise TimeoutError(f"no item arrived in {self.channel.path} within {timeout} s")
                wait = min(wait, left)
            names = self._notifier.wait(max(wait, 0.0))

    def __iter__(self) -> Iterator[Item]:
        while not self._closed:
            try:
                yield self.get()
            except EOFError:
                return

    def _next_item(self) -> Item | None:
        while self._pending:
            if self.latest_only and len(self._pending) > 1:
                _, entry = max(self._pending)
                skipped = [e for _, e in self._pending if e is not entry]
                self._pending = []
                for index, old in enumerate(skipped):
                    try:
                        self._skip(old)
                    except BaseException:  # the ones not passed over yet stay queued
                        for rest in [*skipped[index + 1 :], entry]:
                            heapq.heappush(self._pending, (publish_order(rest), rest))
                        raise
            else:
                _, entry = heapq.heappop(self._pending)
            self._mark_seen(entry)
            try:
                ino = os.lstat(entry.path).st_ino  # the item's identity, with its seq
            except FileNotFoundError:
                continue  # deleted meanwhile (retention, keep_last)
            if self._group is not None and not self._claim(self._group, entry, ino):
                # Another member has it, it is done, or it is gone: see `_take_up_again`.
                self._elsewhere.add((entry.name, entry.seq))
                continue
            return self._deliver(entry, ino)
        return None

    def _claim(self, group: Group, entry: Entry, ino: int) -> bool:
        """Claim the item for us; when that fails (a full disk) it is queued again."""
        try:
            return group.try_claim(entry.name, entry.path, entry.seq, ino, entry.sidecar)
        except BaseException:
            self._seen.discard((entry.name, entry.seq))
            self._push(entry)
            raise

    def _deliver(self, entry: Entry, ino: int) -> Item:
        # Mappings of files deleted meanwhile are let go at the rescan (once a second), not
        # here: one fstat per kept mapping on every delivery cost 1 MB items ~10% of their rate.
        kept = self._kept
        item = entry_item(self._layout, entry)
        item._ino = ino
        if entry.seq is not None:  # not a legacy file: that one is not recycled
            item._kept = kept
        if self._group is not None:
            group = self._group

            tried = False

            def ack(done: Item) -> bool:
                nonlocal tried
                if tried and not group.holds(entry.name, entry.seq, ino):
                    return False  # a retry, our claim lost with the failure: not ours now
                tried = True
                outcome = self._ack(group, entry, ino)
                kept.let_go_if_gone(ino)  # the item's file, if deleted and not pooled
                return outcome != "gone"

            item._on_ack = ack
        return item

    def dead_letter(self, item: Item, reason: str, **details: Any) -> Path | None:
        """Move a delivered item to ``.ramxchg/dead/`` with a reason file, instead of an ack.

        It leaves the channel and every group, as a delete would; ``details`` (JSON
        values) go into the reason file. Returns where the file went (None if it was
        gone already: deleted, perhaps published again under its name).
        """
        sidecar = item.sidecar
        try:
            moved = self._retention.retire_aside(
                item.name,
                item.path,
                self._layout.dead,
                reason,
                seq=item.seq,
                ino=item._ino,
                format=item.format,
                attrs=sidecar.attrs if sidecar else {},
                **details,
            )
        except BaseException:
            # Moved, then failed (no room for the reason file): our claim went with the
            # item. Not moved: the item and our claim stay, to ack or set aside again.
            if self._group is not None and not is_current(
                self._layout, item.name, item.path, item.seq, item._ino
            ):
                self._group.release_after_failure(item.name, item.seq, item._ino)
            raise
        item._on_ack = None  # nothing left to ack
        if self._group is not None:  # gone with the item; a newer one's claim stays
            self._group.release(item.name, item.seq, item._ino)
        return moved

    def _skip(self, entry: Entry) -> None:
        """latest_only: an older item passed over counts as done for the group."""
        self._mark_seen(entry)
        if self._group is None:
            return
        try:
            ino = os.lstat(entry.path).st_ino
        except FileNotFoundError:
            return
        if not self._claim(self._group, entry, ino):
            return  # another member's: if given back, not ours to pass over again
        try:
            self._ack(self._group, entry, ino)
        except BaseException:  # no Item to ack it again: queued again, given back
            self._seen.discard((entry.name, entry.seq))
            self._push(entry)
            self._group.release_after_failure(entry.name, entry.seq, ino)
            raise

    def _ack(self, group: Group, entry: Entry, ino: int) -> AckOutcome:
        """Ack the item of ``entry`` (inode ``ino``) for ``group`` (`Retention.ack`)."""
        return self._retention.ack(
            group,
            entry.name,
            entry.path,
            entry.seq,
            entry.published_ns,
            ino=ino,
            sidecar=entry.sidecar,
        )

    def _mark_seen(self, entry: Entry) -> None:
        key = (entry.name, entry.seq)
        self._queued.discard(key)
        self._seen.add(key)

    # -- discovery --------------------------------------------------------------------------

    def _absorb(self, names: list[str]) -> None:
        """Queue the items named by filesystem events."""
        self._legacy.closed(self._notifier.take_closed())
        gap = False
        for filename in names:
            entry = self._entry(filename)
            if entry is None:
                continue
            # Publish order is sequence order, so a jump means events were lost.
            gap = gap or (entry.seq is not None and entry.seq > self._high_seq + 1)
            self._queue(entry)
        now = time.monotonic()
        if gap and now - self._last_gap_rescan > self._gap_rescan_pause:
            self._last_gap_rescan = now
            self._rescan()

    def _entry(self, filename: str) -> Entry | None:
        found = look(self._layout, filename)
        if isinstance(found, Intruder):
            self._quarantine(found)
            return None
        return found

    def _quarantine(self, intruder: Intruder) -> None:
        """Move a file that must not be taken for an item into the quarantine folder."""
        set_aside(self.channel.path / intruder.filename, self._layout.quarantine, intruder.reason)

    def _queue(self, entry: Entry) -> None:
        key = (entry.name, entry.seq)
        if key in self._seen or key in self._queued:
            return
        if entry.seq is not None and entry.seq <= self._floor:
            return
        if entry.seq is None:
            self._legacy.offer(entry)  # written in place by another program: wait for it
            return
        self._push(entry)

    def _push(self, entry: Entry) -> None:
        key = (entry.name, entry.seq)
        self._queued.add(key)
        if entry.seq is not None:
            self._high_seq = max(self._high_seq, entry.seq)
        heapq.heappush(self._pending, (publish_order(entry), entry))

    def _rescan(self, *, skip_present: bool = False) -> None:
        """List the folder: catch up on anything events missed, and take up again items
        whose members died (swept here, or by any other process) or gave them back."""
        started = time.monotonic()
        self._retention.sweep()
        # Files deleted while a reader mapped them were not emptied: let go of them here
        # (every RESCAN_SECONDS while in `get`, items coming or not).
        self._kept.let_go_of_gone()
        intruders: list[Intruder] = []
        present = list(scan(self._layout, intruders))
        for intruder in intruders:
            self._quarantine(intruder)
        keys = {(e.name, e.seq) for e in present}
        self._seen = keys if skip_present else self._seen & keys  # bounded by the folder
        self._legacy.forget_absent({os.path.basename(e.path) for e in present})
        if self._group is not None:
            self._take_up_again(self._group, keys)
        for entry in present:
            self._queue(entry)
        # Paced by its own cost: listing 100,000 items takes seconds, and rescanning
        # back to back would leave no time for delivering them.
        took = time.monotonic() - started
        interval = RESCAN_SECONDS if self._notifier.has_events else POLL_SECONDS
        self._next_rescan = time.monotonic() + max(interval, RESCAN_COST_FACTOR * took)
        self._gap_rescan_pause = max(GAP_RESCAN_SECONDS, RESCAN_COST_FACTOR * took)

    def _take_up_again(self, group: Group, present: set[tuple[str, int | None]]) -> None:
        """Unsee the items we passed over while another member held them, if no one holds
        them now and they are not done: their member died or gave them back."""
        for key in list(self._elsewhere):
            name, seq = key
            if key not in present or group.acked(name, seq):
                self._elsewhere.discard(key)
            elif not group.is_claimed(name):
                self._elsewhere.discard(key)
                self._seen.discard(key)  # queued again by the listing

    def sweep(self) -> dict[str, int]:
        """Collect what dead processes left in the channel: temporary files and claims.

        `get` does this as it rescans, at most once per `SWEEP_SECONDS`; call it while not
        calling `get` for long. Returns counts (see `Retention.sweep`).
        """
        return self._retention.sweep()

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop watching; claimed but unacked items go back to the group.

        A subscription collected without ``close()`` is closed then, with a
        ResourceWarning; its claims go back at once, or, when the publish lock is taken
        just then, by the next sweep.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._kept.close()
        _release(*self._held, wait=True)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.channel.path} group={self.group!r} {self.watching}>"


def _release(notifier: Notifier, group: Group | None, pid: int, *, wait: bool) -> None:
    """What `Subscription.close` releases: the notifier, and the claims of unacked items
    with their locks (only in the process that made them: a forked child's copy must not
    give back its parent's items, which would then be delivered twice). ``wait``: see
    `Group.release`."""
    notifier.close()
    if group is not None and os.getpid() == pid:
        group.release_all(wait=wait)


def _close_unclosed(what: str, notifier: Notifier, group: Group | None, pid: int) -> None:
    """Finalizer of a subscription collected without `Subscription.close`.

    A collection runs wherever an allocation triggers it, also in a thread that holds the
    publish lock (publishing, deleting, acking): the claims are given back without
    waiting for that lock, or left, dead, for the sweeps.
    """
    try:
        _release(notifier, group, pid, wait=False)
    finally:
        warnings.warn(f"unclosed {what}", ResourceWarning, stacklevel=1)
