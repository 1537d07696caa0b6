"""Listing the published items of a channel folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import CorruptItem
from ._layout import ChannelLayout
from ._names import check_name
from ._sidecar import Sidecar, read_sidecar
from .formats import format_for


@dataclass(frozen=True)
class Entry:
    """A published item file as seen by a scan."""

    name: str
    path: Path
    seq: int | None
    published_ns: int
    size: int
    #: the sidecar as read by the scan (None for files dropped in by other programs)
    sidecar: Sidecar | None = field(default=None, compare=False)

    @classmethod
    def of(cls, name: str, path: Path, info: os.stat_result, sidecar: Sidecar | None) -> Entry:
        """The entry for a file with stat ``info`` and the given sidecar."""
        if sidecar is None:
            return cls(name, path, None, info.st_mtime_ns, info.st_size)
        return cls(name, path, sidecar.seq, sidecar.published_ns, info.st_size, sidecar)


def scan(layout: ChannelLayout) -> Iterator[Entry]:
    """Every published item in the channel folder (unordered); skips hidden and foreign files."""
    with os.scandir(layout.path) as entries:
        for entry in entries:
            name, dot, _ = entry.name.rpartition(".")
            if not dot or entry.name.startswith(".") or format_for(entry.name) is None:
                continue
            try:
                check_name(name)
                info = entry.stat(follow_symlinks=False)
            except (ValueError, FileNotFoundError):
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                sidecar = read_sidecar(layout.sidecar(name))
            except CorruptItem:  # a hostile sidecar: treat the file as dropped in
                sidecar = None
            yield Entry.of(name, Path(entry.path), info, sidecar)


def publish_order(entry: Entry) -> tuple[int, int, str]:
    """Sort key: our items by sequence number, then dropped-in files by age."""
    if entry.seq is not None:
        return (0, entry.seq, entry.name)
    return (1, entry.published_ns, entry.name)
