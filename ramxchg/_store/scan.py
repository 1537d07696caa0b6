"""Listing the published items of a channel folder."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import CorruptItem, InvalidName
from ..formats import format_for
from .layout import ChannelLayout
from .names import check_name
from .sidecar import MAX_SIDECAR_BYTES, Sidecar, parse_sidecar
from .statefile import read_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """A published item file as seen by a scan."""

    name: str
    #: a plain string: entries are made for every item seen, where pathlib costs
    path: str
    seq: int | None
    #: the sidecar's publish time; for a file without one, its `arrival_ns`
    published_ns: int
    size: int
    #: the sidecar as read by the scan (None for files dropped in by other programs)
    sidecar: Sidecar | None = field(default=None, compare=False)

    @classmethod
    def of(cls, name: str, path: str, info: os.stat_result, sidecar: Sidecar | None) -> Entry:
        """The entry for a file with stat ``info`` and the given sidecar."""
        if sidecar is None:
            return cls(name, path, None, arrival_ns(info), info.st_size)
        return cls(name, path, sidecar.seq, sidecar.published_ns, info.st_size, sidecar)


def item_sidecar(
    path: str | Path, info: os.stat_result, known: Sidecar | None = None
) -> Sidecar | None:
    """The sidecar at ``path`` of the item file with ``lstat`` ``info``; None makes the
    item legacy: it has none, a bad one, or one that records another file.

    A sidecar that is not valid JSON, has fields of the wrong type or is too large gives
    its item no place in publish order; one that records another inode or size is an
    orphan left by a producer that died before its link, not this file's (docs/
    protocol.md, section 3). ``known``: the sidecar read before (the listing's), which
    is returned again, unparsed, while the file holds the same bytes.
    """
    try:
        raw = read_state(path, MAX_SIDECAR_BYTES, "sidecar")
        if raw is None:
            return None
        sidecar = known if known is not None and raw == known.raw else parse_sidecar(raw, path)
    except CorruptItem as exc:
        log.debug("%s; its item counts as legacy", exc)
        return None
    if sidecar is not None and not sidecar.belongs_to(info):
        log.debug("sidecar %s records another file (an orphan); its item counts as legacy", path)
        return None
    return sidecar


def is_current(
    layout: ChannelLayout,
    name: str,
    path: str | Path,
    seq: int | None,
    ino: int | None,
    *,
    known: Sidecar | None = None,
) -> bool:
    """Is the file at ``path`` still the item ``name`` of ``seq`` (and inode ``ino``)?

    A deleted item's name may be published again: the new file has another seq, and
    mostly another inode (a recycled file keeps its inode, hence the seq). Sidecars
    are written before their item appears and removed after it went, so a sidecar with
    ``seq`` read after the file was seen proves it was that item. ``known``: the item's
    sidecar as read before, not parsed again while its bytes are the same.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if ino is not None and info.st_ino != ino:
        return False
    sidecar = item_sidecar(layout.sidecar(name), info, known)  # None: legacy, as listed
    return (sidecar.seq if sidecar is not None else None) == seq


@dataclass(frozen=True)
class Intruder:
    """A file with an item's suffix that must not be taken for an item."""

    filename: str
    reason: str


_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def classify(layout: ChannelLayout, filename: str, info: os.stat_result) -> Entry | Intruder:
    """What a file in the channel folder is, from its name and ``lstat``.

    ``filename`` has passed `is_item_filename` (not hidden, an item suffix: other files belong
    to whoever put them there). An `Entry` for an item; an `Intruder` for a file that is
    not one (an invalid name, anything but a regular file, or a hard link without
    sidecar, whose data may belong to a file outside the channel).
    """
    name = filename.rpartition(".")[0]
    try:
        check_name(name)
    except InvalidName as exc:
        return Intruder(filename, str(exc))
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        return Intruder(filename, f"{kind}, not a regular file: never opened or followed")
    sidecar = item_sidecar(layout.sidecar(name), info)
    if sidecar is None and info.st_nlink > 1:
        return Intruder(
            filename,
            f"a hard link ({info.st_nlink} names): its data may belong to a file outside "
            "the channel",
        )
    return Entry.of(name, layout.file(filename), info, sidecar)


def is_item_filename(filename: str) -> bool:
    """Could this file be an item? (not hidden, an item suffix): decided before any stat."""
    return not filename.startswith(".") and format_for(filename) is not None


def look(layout: ChannelLayout, filename: str) -> Entry | Intruder | None:
    """`classify` the file ``filename`` of the channel folder (None also when it is gone)."""
    if not is_item_filename(filename):
        return None
    try:
        info = os.lstat(layout.file(filename))
    except FileNotFoundError:
        return None
    return classify(layout, filename, info)


def scan(layout: ChannelLayout, intruders: list[Intruder] | None = None) -> Iterator[Entry]:
    """Every published item in the channel folder (unordered).

    Hidden files and other suffixes are skipped; files that look like items but must not
    be taken for one are appended to ``intruders`` when a list is given.
    """
    with os.scandir(layout.path) as entries:
        for entry in entries:
            if not is_item_filename(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found = classify(layout, entry.name, info)
            if isinstance(found, Entry):
                yield found
            elif intruders is not None:
                intruders.append(found)


def arrival_ns(info: os.stat_result) -> int:
    """When the file with stat ``info`` arrived in its folder, ns since the epoch.

    The publish time of an item without sidecar. Not its mtime, which travels with
    the data (``mv`` keeps an old one, ``touch -d`` sets any, even a future one), but its
    inode change time: on Linux creating, linking or renaming a file into a folder all
    set it to now (and so does every write). A later ``chmod`` sets it too, which only
    makes the file younger: kept longer, never deleted early. (Windows reports the
    creation time here, which a move within a drive keeps.)
    """
    return info.st_ctime_ns


#: Ranks a legacy item after every sequenced item of the same arrival time (a sequence
#: number has at most 20 digits, see `_sequence.WIDTH`).
_LEGACY_RANK = 10**20


def publish_order(entry: Entry) -> tuple[int, int, str]:
    """Sort key: arrival order (docs/protocol.md section 8).

    By arrival time (a sequenced item's publish time, a legacy item's `arrival_ns`),
    then sequenced items by seq before legacy items, then by name. Sequenced items take
    their number and their publish time under the publish lock, so among themselves
    this is seq order (unless the system clock is set back between two publishes).
    """
    rank = entry.seq if entry.seq is not None else _LEGACY_RANK
    return (entry.published_ns, rank, entry.name)
