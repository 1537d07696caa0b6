"""Is the channel root on a RAM disk? `info` says what backs a folder; a warning says so.

>>> from ramxchg import ramdisk
>>> ramdisk.info("/dev/shm").ram_backed
True
"""

from __future__ import annotations

import logging
import os
import warnings

from .._errors import NotRamBackedWarning, RamDiskError
from . import RamDiskAdapter, RamDiskInfo, format_size, get_adapter

__all__ = ["NotRamBackedWarning", "RamDiskInfo", "advice", "info", "warn_if_not_ram"]

log = logging.getLogger(__name__)

#: Filesystems (st_dev) already looked at, or paths where stat failed.
_warned: set[object] = set()


def info(path: str | os.PathLike[str], *, adapter: RamDiskAdapter | None = None) -> RamDiskInfo:
    """What backs ``path``: filesystem type, total/free bytes, RAM or not, huge pages.

    Parameters
    ----------
    path
        Any existing file or folder.
    adapter
        The RAM-disk adapter to ask; the one for this platform when None.
    """
    return (adapter or get_adapter()).describe(os.fspath(path))


def advice(disk: RamDiskInfo) -> list[str]:
    """Plain sentences about what is wrong with ``disk`` for ramxchg and how to fix it."""
    fixes = (
        "fix: run `ramxchg setup` for a RAM disk (then set RAMXCHG_ROOT); in Docker, "
        "`docker run --shm-size=8g`; in Kubernetes, an emptyDir volume with "
        "`medium: Memory` (it counts against the pod's memory limit)"
    )
    found = []
    if not disk.ram_backed:
        found.append(
            f"{disk.path} is on {disk.fs_type or 'a disk'} ({disk.mount_point}), not in RAM: "
            "ramxchg works but runs at disk speed"
        )
    elif disk.small:
        found.append(
            f"{disk.path} is a RAM disk of only {format_size(disk.total_bytes)} "
            "(Docker's default /dev/shm is 64 MB): large arrays will not fit"
        )
    return [*found, fixes] if found else []


def warn_if_not_ram(
    root: str | os.PathLike[str], *, adapter: RamDiskAdapter | None = None, stacklevel: int = 2
) -> RamDiskInfo | None:
    """Warn (`NotRamBackedWarning`) if ``root`` is not RAM or is small: once per filesystem.

    Every root and every channel folder used by path is checked, so data never goes to a
    disk unannounced (an exported root left behind by a teardown is a plain folder).
    Keyed by filesystem, so ``ramxchg gc`` over fifty channels warns once, not fifty times.
    Returns the `RamDiskInfo` when it was looked up (the first call for a root), else None.
    """
    try:
        key: object = os.stat(root).st_dev
    except OSError:
        key = os.path.realpath(root)
    if key in _warned:
        return None
    _warned.add(key)
    try:
        disk = info(root, adapter=adapter)
    except (RamDiskError, OSError) as exc:
        # Not knowing is not a reason to fail the caller's publish; say so in the log.
        log.info("could not tell whether %s is RAM-backed: %s", root, exc)
        return None
    problems = advice(disk)
    if problems:
        warnings.warn("; ".join(problems), NotRamBackedWarning, stacklevel=stacklevel + 1)
    return disk
