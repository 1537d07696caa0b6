"""Publishing an item: write it hidden, then make it visible in one atomic step.

1. The data goes into a temporary file in ``.ramxchg/tmp/`` (same filesystem).
2. Under the channel's publish lock: take the next sequence number, write the sidecar
   (complete, beside the data in ``tmp/``, then renamed into ``meta/``), store the
   number, and hard-link the temporary file to ``<name><suffix>``. ``link`` fails if
   the name exists, so a published item is never replaced; and the link appears in
   the channel folder as one "created" event, never as a half-written file.
3. The temporary name is unlinked.

A crash before step 2 leaves only temporary files (``gc`` removes them); a crash in
step 2 leaves at most an orphan sidecar with no item (``gc`` removes it too) and a
gap in the sequence numbers. A full disk in step 2 raises `RamDiskFull` and leaves
nothing (and no gap when the sidecar is what did not fit).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import ItemExists, RamDiskFull
from ._layout import ChannelLayout
from ._pool import Pool
from ._sequence import SequenceCounter
from ._sidecar import Sidecar, write_sidecar
from .disks import format_size
from .formats import Format, suffixes

log = logging.getLogger(__name__)

#: Items at least this large are checked against the free space before writing.
EARLY_CHECK_BYTES = 16 << 20


@dataclass(frozen=True)
class Published:
    """Where and as what an item was published."""

    name: str
    path: str
    #: what the item's sidecar says, as written (so nobody reads it back)
    sidecar: Sidecar


def check_room(layout: ChannelLayout, needed: int) -> None:
    """Raise `RamDiskFull` now if ``needed`` bytes cannot fit on the channel's filesystem.

    Only an early answer for large items (a write that runs out of space is caught
    as well); small ones skip the ``statvfs`` call.
    """
    if needed < EARLY_CHECK_BYTES:
        return
    free = shutil.disk_usage(layout.path).free
    if needed > free:
        item, room = _sizes(needed, free)
        raise RamDiskFull(
            f"{layout.path}: an item of {item} does not fit; {room} are free",
            path=layout.path,
            needed_bytes=needed,
            free_bytes=free,
        )


def write_hidden(
    layout: ChannelLayout,
    fmt: Format,
    stem: str,
    needed: int,
    write: Callable[[str], Any],
    *,
    pool: Pool | None = None,
) -> str:
    """Run ``write(tmp_path)`` on a fresh temporary path; clean up if it fails.

    With a ``pool``, a recycled file of exactly ``needed`` bytes is put at the
    temporary path first (formats that can overwrite in place reuse its pages).
    ENOSPC (the RAM disk filled up meanwhile) becomes `RamDiskFull`.
    """
    tmp = layout.temp_name(stem, fmt.suffix)
    if pool is not None and fmt.recyclable:
        pool.take(needed, tmp)
    try:
        write(tmp)
    except BaseException as exc:
        discard(tmp)
        if _is_full(exc):
            raise _full(layout, "an item of {size}", needed) from exc
        raise
    return tmp


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _full(layout: ChannelLayout, what: str, needed: int) -> RamDiskFull:
    """The `RamDiskFull` for a write of ``needed`` bytes that ran out of space; ``what``
    names it, with ``{size}`` where its size goes."""
    free = shutil.disk_usage(layout.path).free
    size, room = _sizes(needed, free)
    return RamDiskFull(
        f"{layout.path} filled up while writing {what.format(size=size)}; {room} are free",
        path=layout.path,
        needed_bytes=needed,
        free_bytes=free,
    )


def _sizes(needed: int, free: int) -> tuple[str, str]:
    """``needed`` and ``free`` for people, in bytes when three digits would hide which
    is larger (``4 MB`` and ``4 MB``)."""
    shown = format_size(needed), format_size(free)
    return shown if shown[0] != shown[1] else (f"{needed} bytes", f"{free} bytes")


def make_visible(
    layout: ChannelLayout,
    counter: SequenceCounter,
    tmp: str,
    fmt: Format,
    *,
    name: str | None,
    attrs: dict[str, Any],
    origin: dict[str, Any] | None = None,
    replace: Callable[[str], None] | None = None,
) -> Published:
    """Steps 2 and 3: give ``tmp`` its sequence number and name, atomically.

    Raises `ItemExists` if the name is taken and `RamDiskFull` if the sidecar (or the
    counter, or the link) finds no room; either way ``tmp`` and the sidecar are removed.

    With ``replace``, an item of that name and format is replaced instead: once the new
    sidecar is in place, ``replace(name)`` forgets the old item (under the lock), and one
    ``rename`` puts ``tmp`` over the old file, so readers find the old file or the new
    one, never neither (docs/protocol.md section 4, "Replacing").
    """
    try:
        # The link keeps the inode: the sidecar records it, and the size, so that it is
        # for this file only (an orphan of ours must not describe a later file).
        info = os.stat(tmp)
        with counter.claim() as claim:
            final_name = name if name is not None else f"{claim.next:012d}"
            target = layout.item(final_name, fmt.suffix)
            check_free(layout, final_name, but=target if replace is not None else None)
            sidecar = layout.sidecar(final_name)
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
                write_sidecar(sidecar, written, os.path.splitext(tmp)[0] + ".json")
                # Use the number up before the item appears: a producer killed between the
                # two leaves a gap (harmless), never a visible item whose number is handed
                # out again (the next auto-named put would find its name taken, for good).
                claim.commit()
                if replace is None:
                    os.link(tmp, target)
                else:
                    replace(final_name)
                    os.replace(tmp, target)
            except OSError as exc:  # the item did not appear: its sidecar must not stay
                discard(sidecar)
                if isinstance(exc, FileExistsError):  # from link (the temporary name is new)
                    raise ItemExists(
                        f"{target} appeared while publishing; items are immutable",
                        path=target,
                        name=final_name,
                    ) from exc
                if _is_full(exc):
                    size = len(written.to_json())
                    what = f"the {{size}} sidecar of {final_name!r}"
                    raise _full(layout, what, size) from exc
                raise
            return Published(final_name, target, written)
    finally:
        discard(tmp)


def check_free(layout: ChannelLayout, name: str, *, but: str | None = None) -> None:
    """Raise `ItemExists` if an item called ``name`` is published, in any format (but
    the file ``but``, which is being replaced)."""
    existing = find_existing(layout, name)
    if existing is not None and but is not None and existing != but:
        raise ItemExists(
            f"{existing} is published in another format; replace=True replaces an item of "
            "the same format only: delete it first (Channel.delete)",
            path=existing,
            name=name,
        )
    if existing is not None and existing != but:
        raise ItemExists(
            f"{existing} is already published; items are immutable: use another name (or "
            "none, for a numbered item) or delete it first (Channel.delete). An item stays "
            "until every group that existed when it was published has acked it (with no "
            "group then, until it is deleted)",
            path=existing,
            name=name,
        )


def find_existing(layout: ChannelLayout, name: str) -> str | None:
    """The published file called ``name`` in any format, if there is one."""
    for suffix in suffixes():
        candidate = layout.item(name, suffix)
        if _exists(candidate):
            return candidate
    return None


if os.access in os.supports_follow_symlinks:

    def _exists(path: str) -> bool:
        # faccessat: no exception for the common "not there" answer, unlike lstat.
        return os.access(path, os.F_OK, follow_symlinks=False)

else:  # pragma: no cover - platforms without faccessat(AT_SYMLINK_NOFOLLOW)
    _exists = os.path.lexists


def discard(path: str | Path) -> None:
    """Remove a file we own, if it is still there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. still mapped on Windows: gc retries later
        if _exists(os.fspath(path)):  # a read-only disk says EROFS for a missing file too
            log.warning("could not remove %s: %s", path, exc)
