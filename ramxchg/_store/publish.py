"""Publishing an item: write it hidden, then make it visible in one atomic step.

1. The data goes into a temporary file in ``.ramxchg/tmp/`` (same filesystem), which
   the producer holds locked until step 3 (see _store/tmpfiles.py): a recycled file from the
   pool when one of the right size is free (see _store/pool.py), else a new one.
2. Under the channel's publish lock: take the next sequence number, write the sidecar
   (complete, beside the data in ``tmp/``, then renamed into ``meta/``), store the
   number, and hard-link the temporary file to ``<name><suffix>``. ``link`` fails if
   the name exists, so a published item is never replaced; and the link appears in
   the channel folder as one "created" event, never as a half-written file.
3. The temporary name is unlinked, and the lock dropped.

Every step goes through the folders the channel handle holds open (``tmp/``, ``meta/``,
the channel folder, and ``.ramxchg/`` for the publish lock and counter: `HeldState`),
never by path, so a state folder that whoever shares the channel swaps for a link is
never followed. Under the publish lock, one
``lstat`` of the temporary file by its path checks that the channel folder, its state
folder and ``tmp/`` still lead to it (not moved away, dropped or swapped since the handle
opened them): if not, nothing is published. ``meta/`` is not checked so: a ``meta/``
moved away and replaced within the second the handle trusts its folders gets the
sidecar in the folder moved away (never in a link's target), and the item is published
without one, as an item of a program that writes none.

A crash before step 2 leaves only temporary files, which the next producer's sweep (or
``gc``) removes once their lock is free; a crash in step 2 leaves at most an orphan
sidecar with no item (``gc`` removes it too) and a gap in the sequence numbers. A full
disk first gets the dead producers' files and the pool removed, then the write is tried
once more; `RamDiskFull` when it still fails, with nothing left behind (and no gap when
the sidecar is what did not fit).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ItemExists, RamDiskFull, RamxchgError
from ..formats import Format, Layout, suffixes
from ..formats.base import Allocation, lstat_or_none, same_file
from .layout import ChannelLayout
from .room import check_memory, check_room, filled_up, is_full
from .safedir import SafeDir, lexists
from .sequence import Claim, SequenceCounter
from .sidecar import Sidecar, write_sidecar
from .tmpfiles import HiddenFile, create_hidden, link_hidden

if TYPE_CHECKING:
    from .retention import Retention


@dataclass(frozen=True)
class Published:
    """Where and as what an item was published."""

    name: str
    path: str
    #: what the item's sidecar says, as written (so nobody reads it back)
    sidecar: Sidecar


def write_item(
    retention: Retention,
    fmt: Format,
    stem: str,
    needed: int,
    write: Callable[[HiddenFile], Any],
    *,
    timeout: float | None,
) -> HiddenFile:
    """What a producer does before publishing: sweep the dead producers' files, wait for
    room, and ``write`` the item of ``needed`` bytes into a hidden file (`write_hidden`).

    Raises what `Retention.wait_for_room` raises, and `RamDiskFull`.
    """
    retention.sweep()
    retention.wait_for_room(needed, timeout)
    check_room(retention.layout, needed, retention.reclaim_space)
    return write_hidden(retention, fmt, stem, needed, write)


def link_item(retention: Retention, source: str | Path, stem: str, suffix: str) -> HiddenFile:
    """`write_item` for a file already on the channel's filesystem (``ramxchg put
    --move``): wait for room, then hard-link ``source`` into a locked hidden file."""
    retention.wait_for_room(os.stat(source).st_size, None)
    return link_hidden(retention.state, retention.layout, source, stem, suffix)


def allocate_item(
    retention: Retention,
    fmt: Format,
    stem: str,
    layout: Layout,
    attrs: dict[str, Any],
    *,
    zero: bool,
    timeout: float | None,
) -> tuple[HiddenFile, Allocation]:
    """`write_item` for ``create``: a hidden file sized for ``layout``, mapped writable.

    The arrays hold an older item's bytes when the file is recycled, unless ``zero``.
    """
    made: list[Allocation] = []

    def allocate(hidden: HiddenFile) -> None:
        allocation = fmt.allocate(hidden, layout, attrs)
        if zero and hidden.size:  # recycled: a new file reads as zeros already
            for array in allocation.arrays.values():
                array.fill(0)
        made.append(allocation)

    hidden = write_item(retention, fmt, stem, fmt.nbytes_for(layout), allocate, timeout=timeout)
    return hidden, made[-1]


def write_hidden(
    retention: Retention,
    fmt: Format,
    stem: str,
    needed: int,
    write: Callable[[HiddenFile], Any],
) -> HiddenFile:
    """Run ``write(hidden)`` on a new locked temporary file in the channel handle's
    held ``tmp/``; clean up if it fails.

    For formats that overwrite in place, the file is a recycled one of exactly
    ``needed`` bytes if the pool has one free; a new one is checked against this
    process's memory cgroup first (`check_memory`). A full disk (ENOSPC) runs
    `Retention.reclaim_space`, which frees what it can and says how many files went; if
    any did, the write is tried once more. Otherwise, or when it fails again:
    `RamDiskFull`.
    """
    layout, pool = retention.layout, retention.pool if fmt.recyclable else None
    reclaimed = False
    while True:
        hidden = None
        try:
            hidden = create_hidden(
                retention.state, layout, stem, fmt.suffix, pool=pool, size=needed
            )
            if hidden.size < needed:  # new pages, charged to our memory cgroup
                check_memory(layout, hidden.fd, needed)
            write(hidden)
            return hidden
        except BaseException as exc:
            if hidden is not None:
                hidden.discard()
            if not is_full(exc):
                raise
            if not reclaimed and retention.reclaim_space():
                reclaimed = True
                continue
            if isinstance(exc, RamDiskFull):
                raise  # the memory limit's, which says what is full (after the reclaim)
            raise filled_up(layout, "an item of {size}", needed) from exc


def make_visible(
    layout: ChannelLayout,
    counter: SequenceCounter,
    hidden: HiddenFile,
    fmt: Format,
    *,
    name: str | None,
    attrs: dict[str, Any],
    origin: dict[str, Any] | None = None,
    replace: Callable[[str], None] | None = None,
    reclaim: Callable[[], int] | None = None,
) -> Published:
    """Steps 2 and 3: give ``hidden`` its sequence number and name, atomically, through
    the held folders (``tmp/``, ``meta/``, the channel folder).

    Raises `ItemExists` if the name is taken and `RamDiskFull` if the sidecar (or the
    counter, or the link) finds no room; either way the temporary file and the sidecar
    are removed. Raises `UnsafeRoot`, `ChannelNotFound` or `RamxchgError` when the held
    folders are no longer the channel's (`_moved`). The temporary file is closed (its
    lock dropped) in every case.

    With ``replace``, an item of that name and format is replaced instead: once the new
    sidecar is in place, ``replace(name)`` forgets the old item (under the lock), and one
    ``rename`` puts the temporary file over the old one, so readers find the old file or
    the new one, never neither (docs/protocol.md section 4, "Replacing").

    A sidecar that finds the disk full is written once more if ``reclaim()`` (called
    under the publish lock) freed something: the pool may hold the page it needs.
    """
    moved = False
    try:
        with counter.claim() as claim:
            # By its path, the one lookup here that is: the channel folder, .ramxchg and
            # tmp/ held are still the channel's, and so is the counter just locked (opened
            # through the held .ramxchg). The link keeps the inode: the sidecar records
            # it, and the size, so that it is for this file only (an orphan of ours must
            # not describe a later file).
            info = lstat_or_none(hidden.path)
            if info is None or not same_file(hidden.made, info):
                moved = True
                raise _moved(layout, hidden)
            with hidden.state.use() as tree:
                tmp, meta, channel = hidden.home(tree), tree.existing("meta"), tree.channel
                return _publish_locked(
                    layout,
                    claim,
                    hidden,
                    fmt,
                    info,
                    folders=(tmp, meta, channel),
                    name=name,
                    attrs=attrs,
                    origin=origin,
                    replace=replace,
                    reclaim=reclaim,
                )
    finally:
        hidden.discard(stale=moved)  # only now: a collector would have taken an unlocked file


def _publish_locked(
    layout: ChannelLayout,
    claim: Claim,
    hidden: HiddenFile,
    fmt: Format,
    info: os.stat_result,
    *,
    folders: tuple[SafeDir, SafeDir, SafeDir],
    name: str | None,
    attrs: dict[str, Any],
    origin: dict[str, Any] | None,
    replace: Callable[[str], None] | None,
    reclaim: Callable[[], int] | None,
) -> Published:
    """`make_visible` under the publish lock, in the held ``tmp``, ``meta`` and channel
    ``folders``: the sidecar, the counter, the link (or the rename over the old item)."""
    tmp, meta, channel = folders
    final_name = name if name is not None else f"{claim.next:012d}"
    target = layout.item(final_name, fmt.suffix)
    check_free(layout, final_name, but=target if replace is not None else None, folder=channel)
    sidecar = f"{final_name}.json"
    written = Sidecar(
        claim.next,
        fmt.name,
        time.time_ns(),
        attrs,
        origin=origin,
        ino=info.st_ino,
        size=info.st_size,
    )
    try:
        # Beside the data, under its temporary name: gc knows whose it is.
        temporary = os.path.splitext(hidden.name)[0] + ".json"
        _write_sidecar(meta, sidecar, written, tmp, temporary, reclaim=reclaim)
        # Use the number up before the item appears: a producer killed between the
        # two leaves a gap (harmless), never a visible item whose number is handed
        # out again (the next auto-named put would find its name taken, for good).
        claim.commit()
        if replace is None:
            tmp.link(hidden.name, channel, final_name + fmt.suffix)
        else:
            replace(final_name)
            tmp.replace(hidden.name, channel, final_name + fmt.suffix)
    except OSError as exc:  # the item did not appear: its sidecar must not stay
        meta.discard(sidecar)
        if isinstance(exc, FileExistsError):  # from link (the temporary name is new)
            raise ItemExists(
                f"{target} appeared while publishing; items are immutable",
                path=target,
                name=final_name,
            ) from exc
        if is_full(exc):
            size = len(written.to_json())
            what = f"the {{size}} sidecar of {final_name!r}"
            raise filled_up(layout, what, size) from exc
        raise
    return Published(final_name, target, written)


def _moved(layout: ChannelLayout, hidden: HiddenFile) -> RamxchgError:
    """Why ``hidden`` is not found by its path: the channel's folders, opened afresh,
    raise `UnsafeRoot` (a link now) or `ChannelNotFound` (dropped); else they were
    moved away or replaced since the handle opened them (`RamxchgError`)."""
    with layout.open_state() as fresh:
        fresh.existing("tmp")
    return RamxchgError(
        f"{hidden.path} is not where this channel handle wrote it: the channel's state "
        "folders were moved away or replaced meanwhile (or the file removed); not published",
        path=hidden.path,
    )


def _write_sidecar(
    meta: SafeDir,
    name: str,
    sidecar: Sidecar,
    tmp: SafeDir,
    temporary: str,
    *,
    reclaim: Callable[[], int] | None,
) -> None:
    """`write_sidecar`, tried once more on a full disk if ``reclaim()`` freed something.

    Room was checked for the item's data only: pooled files may hold the last pages.
    """
    try:
        write_sidecar(meta, name, sidecar, tmp, temporary)
    except OSError as exc:
        if not (is_full(exc) and reclaim is not None and reclaim()):
            raise
        write_sidecar(meta, name, sidecar, tmp, temporary)


def check_free(
    layout: ChannelLayout, name: str, *, but: str | None = None, folder: SafeDir | None = None
) -> None:
    """Raise `ItemExists` if an item called ``name`` is published, in any format (but
    the file ``but``, which is being replaced). ``folder``: the channel folder, held open."""
    existing = find_existing(layout, name, folder)
    if existing is None or existing == but:
        return
    if but is not None:
        raise ItemExists(
            f"{existing} is published in another format; replace=True replaces an item of "
            "the same format only: delete it first (Channel.delete)",
            path=existing,
            name=name,
        )
    raise ItemExists(
        f"{existing} is already published; items are immutable: use another name (or "
        "none, for a numbered item), delete it first (Channel.delete) or publish over it "
        "(put(..., replace=True)). An item stays "
        "until every group that existed when it was published has acked it (with no "
        "group then, until it is deleted)",
        path=existing,
        name=name,
    )


def find_existing(layout: ChannelLayout, name: str, folder: SafeDir | None = None) -> str | None:
    """The published file called ``name`` in any format, if there is one (looked up in
    ``folder``, the channel folder held open, if given; else by path)."""
    for suffix in suffixes():
        if folder.has(name + suffix) if folder is not None else lexists(layout.item(name, suffix)):
            return layout.item(name, suffix)
    return None
