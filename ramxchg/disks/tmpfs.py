"""Linux: a tmpfs mount, with transparent huge pages (``huge=within_size``) by default.

Huge pages cut the page-fault cost of writing and mapping large arrays several-fold
(see docs/platforms.md). ``noswap`` (kernel 6.4+) keeps the pages out of swap.
Mounting needs root or CAP_SYS_ADMIN; ``/dev/shm`` is a tmpfs that needs neither.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .._errors import RamDiskError
from .base import (
    RAM_FS_MAGIC,
    RAM_FS_TYPES,
    DiskSpec,
    MountedDisk,
    RamDiskAdapter,
    RamDiskInfo,
)
from .persist import (
    fstab_line,
    fstab_mounts_at,
    is_ramxchg_fstab_line,
    mount_unit_name,
    systemd_mount_unit,
)
from .units import format_size

MOUNTINFO = "/proc/self/mountinfo"
UNIT_DIR = "/etc/systemd/system"
FSTAB = "/etc/fstab"
SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
NOSWAP_SINCE = (6, 4)

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``."""

    mount_id: int
    parent_id: int
    mount_point: str
    fs_type: str
    source: str
    mount_options: tuple[str, ...]
    super_options: tuple[str, ...]

    @property
    def options(self) -> tuple[str, ...]:
        """Per-mount then filesystem options (``size=``, ``huge=`` are in the latter)."""
        return self.mount_options + tuple(
            o for o in self.super_options if o not in self.mount_options
        )

    def option(self, key: str) -> str | None:
        """The value of ``key=value`` among the options, or None."""
        for opt in self.options:
            name, eq, value = opt.partition("=")
            if name == key and eq:
                return value
        return None


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040-style octal.
    raw = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
    return os.fsdecode(raw.encode("latin-1", errors="surrogateescape"))


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse ``/proc/self/mountinfo`` text (see proc(5)) into entries, in file order."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            raise ValueError(f"malformed mountinfo line: {line!r}")
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                mount_point=_unescape(fields[4]),
                fs_type=tail[0],
                source=_unescape(tail[1]),
                mount_options=tuple(fields[5].split(",")),
                super_options=tuple(tail[2].split(",")) if len(tail) > 2 else (),
            )
        )
    return entries


def find_mount(entries: Sequence[MountEntry], path: str) -> MountEntry:
    """The mount that holds ``path``: the longest mount point, the last one stacked on it."""
    best: MountEntry | None = None
    best_len = -1
    for entry in entries:
        bare = entry.mount_point.rstrip("/")  # "" for the root
        inside = path == (bare or "/") or path.startswith(bare + "/")
        if inside and len(bare) >= best_len:
            best, best_len = entry, len(bare)
    if best is None:
        raise RamDiskError(f"no mount in {MOUNTINFO} holds {path}", path=path)
    return best


def parse_shmem_enabled(text: str | None) -> str | None:
    """The selected value (in brackets) of ``shmem_enabled``, e.g. ``"never"``."""
    if not text:
        return None
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else None


def huge_policy(entry: MountEntry, shmem_enabled: str | None) -> str | None:
    """The huge-page policy of a tmpfs mount; ``deny``/``force`` in sysfs override it."""
    if entry.fs_type != "tmpfs":
        return None
    if shmem_enabled in ("deny", "force"):
        return shmem_enabled
    return entry.option("huge") or "never"


def kernel_at_least(release: str, wanted: tuple[int, int]) -> bool:
    """Whether a ``uname -r`` string such as ``6.1.0-18-amd64`` is ``wanted`` or newer."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= wanted


class TmpfsAdapter(RamDiskAdapter):
    """RAM disks as tmpfs mounts (Linux)."""

    name = "tmpfs"
    default_path = "/mnt/ramxchg"

    def options(self, spec: DiskSpec) -> str:
        """The ``-o`` option string ``mount`` gets for ``spec``."""
        uid, gid = self.host.ids()
        opts = [
            f"size={format_size(spec.size_bytes, exact=True)}",
            f"mode={spec.mode:o}",
            f"uid={spec.uid if spec.uid is not None else uid}",
            f"gid={spec.gid if spec.gid is not None else gid}",
        ]
        if spec.huge and self.host.read_text(SHMEM_ENABLED) is not None:
            opts.append("huge=within_size")
        noswap = spec.noswap
        if noswap is None:
            noswap = kernel_at_least(self.host.kernel_release(), NOSWAP_SINCE)
        if noswap:
            opts.append("noswap")
        return ",".join(opts)

    def mount_command(self, spec: DiskSpec) -> list[str]:
        """The ``mount`` command line for ``spec``."""
        return ["mount", "-t", "tmpfs", "-o", self.options(spec), "tmpfs", spec.path]

    def mount(self, spec: DiskSpec) -> MountedDisk:
        """Mount a tmpfs at ``spec.path`` (created if missing)."""
        path = os.path.abspath(spec.path)
        spec = replace(spec, path=path)
        command = self.mount_command(spec)
        if not self.host.is_admin():
            size = format_size(spec.size_bytes, exact=True)
            raise RamDiskError(
                f"mounting a tmpfs at {path} needs root or CAP_SYS_ADMIN. Run:\n"
                f"  sudo mkdir -p {shlex.quote(path)} && sudo {shlex.join(command)}\n"
                "or, with ramxchg installed for root: "
                f"sudo ramxchg setup {shlex.quote(path)} --size {size}\n"
                "/dev/shm is a tmpfs that works without root: "
                "export RAMXCHG_ROOT=/dev/shm/ramxchg-$(id -u)",
                path=path,
                command=command,
            )
        current = self._mount_at(path)
        if current is not None:
            raise RamDiskError(
                f"{path} is already a mount point ({current.fs_type}); unmount it first "
                f"with `ramxchg teardown {shlex.quote(path)}`",
                path=path,
                command=command,
            )
        self.host.make_dir(path)
        self._run(command, f"mounting a tmpfs at {path}")
        return MountedDisk(path, "tmpfs", self.name, (tuple(command),))

    def unmount(self, path: str, *, force: bool = False, missing_ok: bool = False) -> bool:
        """Unmount the tmpfs at ``path`` (``force``: detach lazily even while busy)."""
        path = os.path.abspath(path)
        entry = self._mount_at(path)
        if entry is None and missing_ok:
            return False
        if entry is None or entry.fs_type not in RAM_FS_TYPES:
            what = "not a mount point" if entry is None else f"a {entry.fs_type} mount"
            raise RamDiskError(
                f"{path} is {what}, not a tmpfs/ramfs RAM disk; refusing to unmount it",
                path=path,
            )
        command = ["umount", "--lazy", path] if force else ["umount", path]
        if not self.host.is_admin():
            raise RamDiskError(
                f"unmounting {path} needs root. Run:\n  sudo {shlex.join(command)}",
                path=path,
                command=command,
            )
        self._run(command, f"unmounting {path}")
        return True

    def describe(self, path: str) -> RamDiskInfo:
        """Filesystem, size, RAM backing and huge-page policy of ``path``."""
        path = os.path.realpath(path)
        entry = find_mount(self._mounts(), path)
        total, free = self.host.disk_usage(path)
        magic = self.host.statfs_magic(path)
        ram = magic in RAM_FS_MAGIC if magic is not None else entry.fs_type in RAM_FS_TYPES
        shmem = parse_shmem_enabled(self.host.read_text(SHMEM_ENABLED))
        return RamDiskInfo(
            path=path,
            mount_point=entry.mount_point,
            fs_type=RAM_FS_MAGIC.get(magic or 0, entry.fs_type),
            total_bytes=total,
            free_bytes=free,
            ram_backed=ram,
            huge_pages=huge_policy(entry, shmem),
            mount_options=entry.options,
            device=entry.source,
            adapter=self.name,
        )

    def persist(self, spec: DiskSpec, target_dir: str | None = None) -> list[str]:
        """A systemd mount unit (enabled) where systemd runs, else a line in /etc/fstab."""
        path = os.path.abspath(spec.path)
        options = self.options(spec)
        unit = mount_unit_name(path)
        if target_dir is not None:
            unit_file = os.path.join(target_dir, unit)
            fstab_file = os.path.join(target_dir, "fstab.ramxchg")
            self.host.write_text(unit_file, systemd_mount_unit(path, options))
            self.host.write_text(fstab_file, fstab_line(path, options))
            return [f"wrote {unit_file}", f"wrote {fstab_file}"]
        if not self.host.is_admin():
            raise RamDiskError(
                f"installing {unit} needs root. Run:\n  sudo ramxchg setup "
                f"{shlex.quote(path)} --size {format_size(spec.size_bytes, exact=True)} --persist",
                path=path,
            )
        if self.host.exists("/run/systemd/system"):
            unit_file = os.path.join(UNIT_DIR, unit)
            self.host.write_text(unit_file, systemd_mount_unit(path, options))
            done = [f"wrote {unit_file}"]
            for command in (["systemctl", "daemon-reload"], ["systemctl", "enable", unit]):
                self._run(command, f"enabling {unit}")
                done.append(f"ran {shlex.join(command)}")
            return done
        current = self.host.read_text(FSTAB) or ""
        line = fstab_line(path, options)
        if any(fstab_mounts_at(row, path) for row in current.splitlines()):
            return [f"{FSTAB} already mounts {path}; left unchanged"]
        sep = "" if not current or current.endswith("\n") else "\n"
        self.host.write_text(FSTAB, current + sep + line)
        return [f"added to {FSTAB}: {line.strip()}"]

    def unpersist(self, path: str) -> list[str]:
        """Disable and remove the mount unit, and drop the fstab line, `persist` added."""
        path = os.path.abspath(path)
        unit = mount_unit_name(path)
        unit_file = os.path.join(UNIT_DIR, unit)
        has_unit = self.host.exists(unit_file)
        rows = (self.host.read_text(FSTAB) or "").splitlines(keepends=True)
        kept = [row for row in rows if not is_ramxchg_fstab_line(row, path)]
        if not has_unit and len(kept) == len(rows):
            return []
        if not self.host.is_admin():
            raise RamDiskError(
                f"removing what mounts {path} at boot needs root. Run:\n  sudo ramxchg "
                f"teardown {shlex.quote(path)} --persist",
                path=path,
            )
        done = []
        if has_unit:
            systemd = self.host.exists("/run/systemd/system")
            if systemd:
                self._run(["systemctl", "disable", unit], f"disabling {unit}")
                done.append(f"ran systemctl disable {unit}")
            self.host.remove(unit_file)
            done.append(f"removed {unit_file}")
            if systemd:
                self._run(["systemctl", "daemon-reload"], f"forgetting {unit}")
                done.append("ran systemctl daemon-reload")
        if len(kept) != len(rows):
            self.host.write_text(FSTAB, "".join(kept))
            done.append(f"removed the tmpfs line for {path} from {FSTAB}")
        return done

    def _mounts(self) -> list[MountEntry]:
        text = self.host.read_text(MOUNTINFO)
        if text is None:
            raise RamDiskError(f"{MOUNTINFO} is missing; is /proc mounted?", path=MOUNTINFO)
        return parse_mountinfo(text)

    def _mount_at(self, path: str) -> MountEntry | None:
        """The topmost mount whose mount point is exactly ``path``."""
        found = [e for e in self._mounts() if e.mount_point == path]
        return found[-1] if found else None
