"""How much more memory this process may take: its memory cgroup's limit, on Linux.

Pages of a file on a RAM disk (tmpfs, ramfs) are charged to the memory cgroup of the
process that first writes them, and stay charged after it exits, until the file is
deleted. A write that would take a cgroup past its limit, with nothing left to reclaim,
gets no error: the kernel's OOM killer kills a process of the cgroup (seen on Linux
6.18, cgroup v1, alike for ``write``, ``fallocate``, ``MADV_POPULATE_WRITE`` and stores
into a mapping). In a container whose memory limit is below the size of its
``/dev/shm``, a producer would die where it should get `RamDiskFull`: `headroom` lets
it ask first.

The figures come from ``/proc/self/cgroup`` and the cgroup filesystem (v2, or v1's
``memory`` hierarchy), read through `CgroupFiles`, the one seam tests replace; each
level from this process's cgroup up to the top of the mount counts, and the tightest
wins. Page cache of files on real disks counts as free (the kernel drops it first).
Where pages can be swapped out instead (swap on the machine, and no level forbids it),
the kernel does not kill for them: no answer is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "UNLIMITED",
    "CgroupFiles",
    "MemoryLimit",
    "headroom",
    "parse_cgroups",
    "parse_stat",
    "swap_total",
]

log = logging.getLogger(__name__)

#: A v1 limit at or above this is none (the kernel reports "unlimited" as ~2**63).
UNLIMITED = 1 << 60


@dataclass(frozen=True)
class MemoryLimit:
    """The tightest memory limit over this process's cgroup and its ancestors."""

    #: the cgroup the limit is set on, as ``/proc/self/cgroup`` names it
    cgroup: str
    limit_bytes: int
    used_bytes: int
    #: page cache of files on real disks, which the kernel drops before it kills
    reclaimable_bytes: int

    @property
    def free_bytes(self) -> int:
        """Bytes the cgroup may still take without a process of it being killed."""
        return max(self.limit_bytes - self.used_bytes + self.reclaimable_bytes, 0)


class CgroupFiles:
    """Where the figures come from: ``/proc`` and the cgroup filesystem under ``mount``."""

    def __init__(self, proc: str = "/proc", mount: str = "/sys/fs/cgroup") -> None:
        self.proc = Path(proc)
        self.mount = Path(mount)

    def is_dir(self, path: Path) -> bool:
        """Is there a folder at ``path``?"""
        return path.is_dir()

    def read(self, path: Path) -> str | None:
        """The text of a small kernel file; None when it is not there (or not readable)."""
        try:
            return path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return None


@dataclass(frozen=True)
class _Version:
    """The file names of one cgroup version."""

    limit: str
    usage: str
    #: ``memory.stat`` keys of page cache the kernel can drop
    reclaimable: tuple[str, ...]
    #: the limit on what may go to swap: v2 swap alone, v1 memory and swap together
    swap_limit: str
    #: v1: the swap limit counts memory too (equal to the memory limit: no swap)
    swap_includes_memory: bool

    def forbids_swap(self, files: CgroupFiles, folder: Path) -> bool:
        """Does the level ``folder`` keep its pages out of swap (v2: ``memory.swap.max``
        0; v1: a memory+swap limit equal to its memory limit)?"""
        swap = (files.read(folder / self.swap_limit) or "").strip()
        if not self.swap_includes_memory:
            return swap == "0"
        memory = (files.read(folder / self.limit) or "").strip()
        return swap == memory and swap.isdigit() and int(swap) < UNLIMITED


#: cgroup v1's ``memory`` hierarchy
_V1 = _Version(
    "memory.limit_in_bytes",
    "memory.usage_in_bytes",
    ("total_active_file", "total_inactive_file"),
    "memory.memsw.limit_in_bytes",
    swap_includes_memory=True,
)
#: cgroup v2
_V2 = _Version(
    "memory.max",
    "memory.current",
    ("active_file", "inactive_file"),
    "memory.swap.max",
    swap_includes_memory=False,
)


def parse_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> cgroup path; v2's line as ``""``. Lines
    that are not ``id:controllers:path`` are skipped."""
    found = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            found[controller] = parts[2]
    return found


def parse_stat(text: str) -> dict[str, int]:
    """A ``memory.stat`` file (``key value`` lines) as a dict; other lines are skipped."""
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            stats[key] = int(value)
        except ValueError:
            continue
    return stats


def swap_total(meminfo: str) -> int:
    """``SwapTotal`` of ``/proc/meminfo``, in bytes (0 when it says none, or nothing)."""
    for line in meminfo.splitlines():
        fields = line.split()
        if fields[:1] == ["SwapTotal:"]:
            number = fields[1] if len(fields) > 1 else ""
            return int(number) * 1024 if number.isascii() and number.isdigit() else 0
    return 0


def headroom(files: CgroupFiles | None = None) -> MemoryLimit | None:
    """This process's tightest memory limit, or None: no limit, no memory cgroup found,
    pages that may be swapped out, files that cannot be read, or not Linux."""
    files = files or CgroupFiles()
    cgroups = parse_cgroups(files.read(files.proc / "self" / "cgroup") or "")
    if "memory" in cgroups:
        version, mount, cgroup = _V1, files.mount / "memory", cgroups["memory"]
    elif "" in cgroups:
        # Mounted alone at the top, or beside v1's hierarchies as "unified" (hybrid).
        alone = files.read(files.mount / "cgroup.controllers") is not None
        version, cgroup = _V2, cgroups[""]
        mount = files.mount if alone else files.mount / "unified"
    else:
        return None
    if ".." in Path(cgroup).parts:
        return None  # outside this cgroup namespace's root: its ancestors are not here
    swap = swap_total(files.read(files.proc / "meminfo") or "") > 0
    return _tightest(files, version, mount, cgroup, swap)


def _tightest(
    files: CgroupFiles, version: _Version, mount: Path, cgroup: str, swap: bool
) -> MemoryLimit | None:
    """The level with the least free, from ``cgroup`` up to ``mount`` (a container that
    mounts its own cgroup as the top has only that)."""
    folder = mount / cgroup.strip("/")
    if not files.is_dir(folder):
        folder = mount
    levels = [folder]
    while levels[-1] != mount:
        levels.append(levels[-1].parent)
    found = [limit for limit in (_level(files, version, level, mount) for level in levels) if limit]
    if not found or (swap and not any(version.forbids_swap(files, level) for level in levels)):
        return None
    return min(found, key=lambda limit: limit.free_bytes)


def _level(files: CgroupFiles, version: _Version, folder: Path, mount: Path) -> MemoryLimit | None:
    """The limit set on one level; None where it sets none (or it cannot be read)."""
    limit, used = files.read(folder / version.limit), files.read(folder / version.usage)
    if limit is None or used is None or limit.strip() == "max":
        return None
    try:
        limit_bytes, used_bytes = int(limit), int(used)
    except ValueError:
        log.debug("%s: unreadable memory limit %r or use %r", folder, limit, used)
        return None
    if limit_bytes >= UNLIMITED:
        return None
    stats = parse_stat(files.read(folder / "memory.stat") or "")
    reclaimable = sum(stats.get(key, 0) for key in version.reclaimable)
    relative = folder.relative_to(mount).as_posix()
    return MemoryLimit(
        "/" if relative == "." else f"/{relative}", limit_bytes, used_bytes, reclaimable
    )
