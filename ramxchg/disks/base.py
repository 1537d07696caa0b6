"""The RAM-disk adapter interface and the two seams every OS side effect goes through.

``CommandRunner`` runs programs (``mount``, ``imdisk``, ``hdiutil``...); ``HostView``
reads the host (``/proc`` files, statfs, free space, elevation). Adapters take both in
their constructor, so tests pass fakes and nothing else is patched. Nothing here
touches the OS at import time: Windows calls import ``ctypes.windll`` only when used.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .._errors import RamDiskError
from .files import replace_whole

log = logging.getLogger(__name__)

#: Filesystems that keep their data in RAM (statfs magic numbers from linux/magic.h).
RAM_FS_MAGIC = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}
RAM_FS_TYPES = frozenset({"tmpfs", "ramfs"})

#: Where to get the Windows tools (named in errors and in the generated logon script).
IMDISK_URL = "https://sourceforge.net/projects/imdisk-toolkit/"
AIM_URL = "https://arsenalrecon.com/downloads"


def format_params(filesystem: str | None = None) -> str:
    """ImDisk/aim_ll ``-p``: format the new drive (NTFS by default), quickly, without asking."""
    return f"/fs:{(filesystem or 'ntfs').lower()} /q /y"


#: Below this a RAM disk is "small": Docker's default /dev/shm is 64 MB.
SMALL_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class CommandResult:
    """What a program returned: exit code and decoded output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


class CommandRunner:
    """The subprocess seam: run a program, find a program on PATH."""

    def run(self, argv: Sequence[str]) -> CommandResult:
        """Run ``argv`` without a shell and return its exit code and output."""
        log.debug("running %s", shlex.join(argv))
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)

    def which(self, program: str) -> str | None:
        """Full path of ``program`` on PATH, or None."""
        return shutil.which(program)


class HostView:
    """The host seam: file reads under /proc and /sys, statfs, free space, privileges."""

    def read_text(self, path: str) -> str | None:
        """Text of ``path``, or None if it does not exist (e.g. /proc on macOS)."""
        try:
            return Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return None

    def disk_usage(self, path: str) -> tuple[int, int]:
        """``(total_bytes, free_bytes)`` of the filesystem holding ``path``."""
        if hasattr(os, "statvfs"):
            st = os.statvfs(path)
            return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        usage = shutil.disk_usage(path)
        return usage.total, usage.free

    def statfs_magic(self, path: str) -> int | None:
        """The statfs ``f_type`` magic number on Linux (None where unavailable)."""
        return statfs_magic(path)

    def is_admin(self) -> bool:
        """Root/CAP_SYS_ADMIN on Linux, root on macOS, an elevated token on Windows."""
        if sys.platform == "win32":
            import ctypes

            return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
        if os.geteuid() == 0:
            return True
        status = self.read_text("/proc/self/status") or ""
        return has_cap_sys_admin(status)

    def kernel_release(self) -> str:
        """``uname -r``."""
        return os.uname().release if hasattr(os, "uname") else ""

    def ids(self) -> tuple[int, int]:
        """``(uid, gid)`` of the user a RAM disk is for (the sudo caller when under sudo)."""
        if not hasattr(os, "getuid"):
            return (0, 0)
        uid = int(os.environ.get("SUDO_UID", os.getuid()))
        gid = int(os.environ.get("SUDO_GID", os.getgid()))
        return uid, gid

    def query_dos_device(self, drive: str) -> str | None:
        """The NT device behind ``drive`` (``"R:"``), e.g. ``\\Device\\ImDisk0``; Windows only."""
        if sys.platform != "win32":
            return None
        import ctypes

        buf = ctypes.create_unicode_buffer(1024)
        if not ctypes.windll.kernel32.QueryDosDeviceW(drive, buf, len(buf)):  # type: ignore[attr-defined]
            return None
        return buf.value

    def volume_fs_type(self, drive_root: str) -> str:
        """Filesystem name of a Windows volume (``"NTFS"``); empty elsewhere."""
        if sys.platform != "win32":
            return ""
        import ctypes

        name = ctypes.create_unicode_buffer(64)
        ok = ctypes.windll.kernel32.GetVolumeInformationW(  # type: ignore[attr-defined]
            drive_root, None, 0, None, None, None, name, len(name)
        )
        return name.value if ok else ""

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (e.g. ``/run/systemd/system``: systemd is running)."""
        return os.path.exists(path)

    def write_text(self, path: str, text: str) -> None:
        """Replace ``path`` atomically with ``text`` (temp file in the same folder)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        replace_whole(path, text.encode("utf-8"))

    def remove(self, path: str) -> bool:
        """Delete a file ramxchg installed; False when it was not there."""
        try:
            os.remove(path)
        except FileNotFoundError:
            return False
        return True

    def make_dir(self, path: str) -> None:
        """Create a mount point folder (and parents)."""
        Path(path).mkdir(parents=True, exist_ok=True)

    def touch(self, path: str) -> None:
        """Create an empty file (e.g. ``.metadata_never_index``)."""
        Path(path).touch()


def has_cap_sys_admin(proc_status: str) -> bool:
    """Whether the ``CapEff`` line of ``/proc/self/status`` text holds CAP_SYS_ADMIN (21)."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split(":", 1)[1].strip(), 16) & (1 << 21))
    return False


@dataclass(frozen=True)
class DiskSpec:
    """What to mount: where, how big, and the mechanism-specific choices.

    ``path`` is a folder on Linux and macOS and a drive letter (``"R:"``) on Windows.
    ``noswap=None`` means "when the kernel has it". ``filesystem`` is the macOS
    (``HFS+``/``APFS``) or Windows (``ntfs``) filesystem to format with.
    """

    path: str
    size_bytes: int
    mode: int = 0o1777
    huge: bool = True
    noswap: bool | None = None
    filesystem: str | None = None
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        # Refused here, for every adapter: tmpfs reads size=0 as "no limit at all".
        size = self.size_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise RamDiskError(
                f"a RAM disk's size must be a positive number of bytes, got {size!r}; "
                "parse_size() reads text such as '8G'",
                path=self.path,
                size_bytes=size,
            )


@dataclass(frozen=True)
class MountedDisk:
    """A RAM disk that was just mounted, and the commands that did it."""

    mount_point: str
    device: str
    adapter: str
    commands: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class RamDiskInfo:
    """What backs a folder: filesystem, size, whether it is RAM, huge-page policy.

    ``huge_pages`` is the tmpfs policy (``never``, ``within_size``, ``always``,
    ``advise``, or ``deny``/``force`` when the kernel overrides it), None off Linux.
    """

    path: str
    mount_point: str
    fs_type: str
    total_bytes: int
    free_bytes: int
    ram_backed: bool
    huge_pages: str | None = None
    mount_options: tuple[str, ...] = ()
    device: str = ""
    adapter: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def used_bytes(self) -> int:
        """Bytes in use (total minus free)."""
        return self.total_bytes - self.free_bytes

    @property
    def small(self) -> bool:
        """Whether the filesystem is under `SMALL_BYTES` (the 64 MB Docker /dev/shm trap).
        One with no size at all (ramfs: 0 bytes of 0, it grows until the RAM runs out)
        is not."""
        return 0 < self.total_bytes < SMALL_BYTES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``used_bytes`` and ``small`` included)."""
        data = asdict(self)
        data["mount_options"] = list(self.mount_options)
        data["notes"] = list(self.notes)
        data["used_bytes"] = self.used_bytes
        data["small"] = self.small
        return data


class RamDiskAdapter(ABC):
    """One RAM-disk mechanism: mount, unmount and describe.

    Parameters
    ----------
    runner
        Runs programs; a fake in tests.
    host
        Reads the host (/proc, statfs, privileges); a fake in tests.
    """

    #: Short name of the mechanism, e.g. ``"tmpfs"``.
    name: str = ""
    #: Where ``ramxchg setup`` mounts when no path is given.
    default_path: str = ""

    def __init__(self, runner: CommandRunner | None = None, host: HostView | None = None) -> None:
        self.runner = runner or CommandRunner()
        self.host = host or HostView()

    @abstractmethod
    def mount(self, spec: DiskSpec) -> MountedDisk:
        """Create and mount a RAM disk as ``spec`` says; `RamDiskError` on failure."""

    @abstractmethod
    def unmount(self, path: str, *, force: bool = False, missing_ok: bool = False) -> bool:
        """Remove the RAM disk at ``path`` and give its memory back; True if one was there.

        ``missing_ok``: nothing mounted at ``path`` returns False instead of raising (what
        is mounted there but is not a RAM disk is still refused).
        """

    @abstractmethod
    def describe(self, path: str) -> RamDiskInfo:
        """What backs ``path``: see `RamDiskInfo`."""

    @abstractmethod
    def persist(self, spec: DiskSpec, target_dir: str | None = None) -> list[str]:
        """Install what recreates the RAM disk at boot/logon; return what was done.

        With ``target_dir`` the files are only written there (for images and tests):
        nothing is registered with the system.
        """

    @abstractmethod
    def unpersist(self, path: str) -> list[str]:
        """Remove what `persist` installed for the disk at ``path``; return what was done.

        An empty list when nothing was installed.
        """

    def export_line(self, root: str) -> str:
        """The shell line that points ramxchg at ``root``."""
        return f"export RAMXCHG_ROOT={shlex.quote(root)}"

    def _run(self, argv: Sequence[str], what: str) -> CommandResult:
        """Run ``argv``; a non-zero exit becomes a `RamDiskError` naming the command."""
        try:
            result = self.runner.run(argv)
        except OSError as exc:
            raise RamDiskError(
                f"{what} failed: could not run {shlex.join(argv)}: {exc}",
                command=list(argv),
                returncode=None,
            ) from exc
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise RamDiskError(
                f"{what} failed: `{shlex.join(argv)}` exited with {result.returncode}"
                + (f": {output}" if output else ""),
                command=list(argv),
                returncode=result.returncode,
                stderr=result.stderr,
            )
        return result


def statfs_magic(target: str | int) -> int | None:
    """The ``f_type`` magic number of the filesystem of a path, or of an open file
    descriptor (``fstatfs``: no path to swap for a link meanwhile), on Linux; None
    elsewhere. Raises OSError when the call fails."""
    found = libc()
    if found is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    done = (
        found.fstatfs(target, buf)
        if isinstance(target, int)
        else found.statfs(os.fsencode(target), buf)
    )
    if done != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), None if isinstance(target, int) else target)
    # f_type is the first member, a native long (__fsword_t) on every common ABI.
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def in_ram(fd: int) -> bool:
    """Is the open file ``fd`` on a RAM disk (tmpfs, ramfs)? False off Linux; OSError
    when ``fstatfs`` fails (a closed descriptor)."""
    return statfs_magic(fd) in RAM_FS_MAGIC


@cache
def libc() -> Any:
    """This program's C library, looked up once (for calls Python does not wrap:
    ``statfs``, ``fallocate``); None off Linux, or where it cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
