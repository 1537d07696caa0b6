"""Will an item fit? The RAM disk's free space, and this process's memory limit.

A producer asks before it writes a large item (`check_room`, `check_memory`), and a
write that runs out of space all the same is turned into the same `RamDiskFull`
(`is_full`, `filled_up`).
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

from .._errors import RamDiskFull
from ..disks import format_size
from ..disks.base import in_ram
from ..disks.memcg import CgroupFiles, headroom
from .layout import ChannelLayout

#: Items at least this large are checked against the free space before writing.
EARLY_CHECK_BYTES = 16 << 20
#: What a new item must leave of a memory cgroup's limit, for whatever else it holds.
MEMORY_MARGIN_BYTES = 16 << 20


def check_room(
    layout: ChannelLayout, needed: int, reclaim: Callable[[], int] | None = None
) -> None:
    """Raise `RamDiskFull` now if ``needed`` bytes cannot fit on the channel's filesystem,
    after ``reclaim()`` (which frees what it can) if they do not fit at first.

    Only an early answer for large items (a write that runs out of space is caught
    as well); small ones skip the ``statvfs`` call, and so does a filesystem with no
    size to go by (ramfs: 0 bytes free of 0, it grows until the RAM runs out).
    """
    if needed < EARLY_CHECK_BYTES:
        return
    free = _free_bytes(layout.path)
    if free is None or needed <= free:
        return
    if reclaim is not None and reclaim():
        free = shutil.disk_usage(layout.path).free
    if needed > free:
        raise _no_room(layout, "an item of {size} does not fit", needed, free)


def _free_bytes(path: Path) -> int | None:
    """Bytes free for us on the filesystem of ``path``; None when it has no size (ramfs)."""
    usage = shutil.disk_usage(path)
    return usage.free if usage.total else None


def check_memory(
    layout: ChannelLayout, fd: int, needed: int, files: CgroupFiles | None = None
) -> None:
    """Raise `RamDiskFull` if writing ``needed`` bytes of new pages into the open file
    ``fd`` would take this process within `MEMORY_MARGIN_BYTES` of its memory cgroup's
    limit (`ramxchg.disks.memcg`, read through ``files``): on a RAM disk the kernel
    would kill it there rather than fail the write. A real disk's page cache is written
    back and dropped instead: not checked.

    Only for items of `EARLY_CHECK_BYTES` or more, as `check_room`.
    """
    if needed < EARLY_CHECK_BYTES or not in_ram(fd):
        return
    limit = headroom(files)
    if limit is None or needed + MEMORY_MARGIN_BYTES <= limit.free_bytes:
        return
    raise RamDiskFull(
        f"{layout.path}: an item of {format_size(needed)} does not fit in this process's "
        f"memory limit ({format_size(limit.limit_bytes)} for cgroup {limit.cgroup}, "
        f"{format_size(limit.free_bytes)} free), and the kernel would kill the process "
        "rather than fail the write; raise the limit (docker run --memory, a pod's "
        "resources.limits.memory) or free memory (consume or delete items, `ramxchg gc`)",
        path=layout.path,
        needed_bytes=needed,
        free_bytes=limit.free_bytes,
    )


def is_full(exc: BaseException) -> bool:
    """Did a write fail for want of space (ENOSPC, EDQUOT; `RamDiskFull` included)?"""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def filled_up(layout: ChannelLayout, what: str, needed: int) -> RamDiskFull:
    """The `RamDiskFull` for a write of ``needed`` bytes that ran out of space; ``what``
    names it, with ``{size}`` where its size goes."""
    free = shutil.disk_usage(layout.path).free
    return _no_room(layout, "filled up while writing " + what, needed, free)


def _no_room(layout: ChannelLayout, problem: str, needed: int, free: int) -> RamDiskFull:
    """The one `RamDiskFull` of a publish: ``problem`` with ``{size}`` where the size of
    what did not fit goes, and the free space. Sizes are shown in bytes when three
    digits would hide which is larger (``4 MB`` and ``4 MB``)."""
    size, room = format_size(needed), format_size(free)
    if size == room:
        size, room = f"{needed} bytes", f"{free} bytes"
    return RamDiskFull(
        f"{layout.path}: {problem.format(size=size)}; {room} are free",
        path=layout.path,
        needed_bytes=needed,
        free_bytes=free,
    )
