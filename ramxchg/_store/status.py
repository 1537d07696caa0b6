"""What `Channel.status` and `Channel.groups` report: items, bytes, each group's backlog."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._errors import UnsafeRoot
from .groups import must_ack
from .retention import Retention
from .scan import Entry, scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupStatus:
    """A durable group of a channel, as `Channel.groups` reports it."""

    name: str
    #: items the group has not acked yet
    backlog: int
    #: items delivered to a member and not acked yet
    in_flight: int
    #: items kept on disk only until this group acks them
    holding: int


@dataclass(frozen=True)
class ChannelStatus:
    """What `Channel.status` reports: one listing of the folder."""

    #: published items (dropped-in files included)
    items: int
    #: bytes their files take
    bytes: int
    groups: list[GroupStatus]
    #: RAM held by deleted item files kept for recycling (None: the pool is not readable,
    #: e.g. another user's)
    pooled_bytes: int | None = None
    #: RAM taken by items being written (temporary files)
    writing_bytes: int = 0


def channel_status(retention: Retention) -> ChannelStatus:
    """Items, bytes and every group's backlog, from one listing of the channel folder."""
    entries = list(scan(retention.layout))
    try:
        pooled: int | None = retention.pool.held_bytes()
    except (UnsafeRoot, OSError) as exc:  # another user's private pool
        log.info("%s: pool not readable: %s", retention.layout.path, exc)
        pooled = None
    return ChannelStatus(
        len(entries),
        sum(entry.size for entry in entries),
        group_status(retention, entries),
        pooled_bytes=pooled,
        writing_bytes=_writing_bytes(retention),
    )


def _writing_bytes(retention: Retention) -> int:
    """RAM the channel's temporary files take (allocated blocks, not their length)."""
    with retention.layout.open_state() as state:
        tmp = state.folder("tmp")
        infos = [tmp.lstat(name) for name in tmp.names()] if tmp is not None else []
    return sum(info.st_blocks * 512 for info in infos if info is not None)


def group_status(retention: Retention, entries: list[Entry] | None = None) -> list[GroupStatus]:
    """Every registered group's backlog, in-flight and holding counts over ``entries``
    (a fresh listing of the channel folder when None)."""
    if entries is None:
        entries = list(scan(retention.layout))
    result = []
    for group, info in retention.registered():
        unacked = [e for e in entries if not group.is_acked(e.name)]
        backlog = sum(1 for e in unacked if e.seq is None or e.seq > info.start_seq)
        holding = sum(1 for e in unacked if must_ack(info, e.seq, e.published_ns))
        result.append(GroupStatus(group.name, backlog, len(group.claimed()), holding))
    return result
