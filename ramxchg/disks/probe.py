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
from .memcg import MemoryLimit

__all__ = [
    "NotRamBackedWarning",
    "RamDiskInfo",
    "advice",
    "info",
    "memory_advice",
    "pages",
    "warn_if_not_ram",
]

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


def memory_advice(disk: RamDiskInfo, limit: MemoryLimit | None) -> list[str]:
    """A sentence when this process's memory limit (`ramxchg.disks.memcg.headroom`) leaves
    less room than ``disk`` has free: larger items are refused there, not written."""
    if limit is None or not disk.ram_backed or limit.free_bytes >= disk.free_bytes:
        return []
    return [
        f"this process may take {format_size(limit.free_bytes)} more memory (the limit of "
        f"{format_size(limit.limit_bytes)} on cgroup {limit.cgroup}), less than the "
        f"{format_size(disk.free_bytes)} free on {disk.path}: RAM-disk pages count against "
        "it, and a larger item is refused (RamDiskFull) where the kernel would kill the "
        "producer; raise the limit (docker run --memory, a pod's resources.limits.memory)"
    ]


#: What items get from each tmpfs ``huge=`` policy (``deny``/``force``: the kernel's override).
_PAGES = {
    "always": "2 MiB huge pages",
    "force": "2 MiB huge pages (forced by the kernel)",
    "within_size": "2 MiB huge pages for items of 2 MiB and more (sized before writing)",
    "advise": "2 MiB huge pages for create() of 2 MiB and more (MADV_HUGEPAGE); 4 KiB for put",
    "never": "4 KiB pages",
    "deny": "4 KiB pages (huge pages denied by the kernel)",
}


def pages(disk: RamDiskInfo) -> str | None:
    """Which memory pages items on ``disk`` get, and what ``ramxchg setup`` would gain.

    From the tmpfs mount's ``huge=`` option (the kernel's ``shmem_enabled`` governs
    only its internal shm mount, except ``deny``/``force``, which `RamDiskInfo`
    already reflects). None off tmpfs.
    """
    if disk.huge_pages is None:
        return None
    got = _PAGES.get(disk.huge_pages, f"huge={disk.huge_pages}")
    if disk.huge_pages in ("never", "advise"):
        got += (
            "; `ramxchg setup` mounts huge=within_size (needs root): huge pages for "
            "large items, fewer page faults and TLB misses (see docs/benchmarks.md)"
        )
    return got


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
