"""Windows: an NTFS RAM drive from ImDisk, or from Arsenal Image Mounter's ``aim_ll``.

``aim_ll`` (ImDisk's successor, preferred on recent Windows) takes the same switches,
so one command line serves both. Creating and removing drives needs an elevated
prompt. An ImDisk drive shows up in QueryDosDevice as ``\\Device\\ImDisk<N>``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from .._errors import RamDiskError
from .base import (
    AIM_URL,
    IMDISK_URL,
    DiskSpec,
    MountedDisk,
    RamDiskAdapter,
    RamDiskInfo,
    format_params,
)
from .persist import TASK_NAME, windows_logon_script, windows_task_command
from .units import format_size

SCRIPT_NAME = "ramxchg-ramdisk.ps1"

#: Tools in order of preference.
TOOLS = ("aim_ll", "imdisk")


def drive_letter(path: str) -> str:
    """``"R:"`` for ``"R"``, ``"r:"``, ``"R:\\"`` or ``"R:\\some\\folder"``."""
    match = re.match(r"^([A-Za-z])(?::|$)", path.strip())
    if not match:
        raise RamDiskError(f"{path!r} is not a drive letter such as R:", path=path)
    return match.group(1).upper() + ":"


@dataclass(frozen=True)
class ImDiskStatus:
    """One drive as ``imdisk -l -m R:`` describes it."""

    mount_point: str
    image_file: str | None
    size_bytes: int
    flags: tuple[str, ...]

    @property
    def ram_backed(self) -> bool:
        """Memory-backed (``Virtual Memory``/``Physical Memory``), not an image file."""
        return bool({"Virtual Memory", "Physical Memory"} & set(self.flags))


def parse_imdisk_status(text: str) -> ImDiskStatus:
    """Parse the output of ``imdisk -l -m <letter>:`` (or ``-u <N>``)."""
    mount_point = ""
    image: str | None = None
    size: int | None = None
    flags: tuple[str, ...] = ()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("Mount point:", "Drive letter:")):
            mount_point = line.split(":", 1)[1].strip()
        elif line.startswith("Image file:"):
            image = line.split(":", 1)[1].strip()
        elif line.startswith("Size:"):
            match = re.match(r"Size:\s*(\d+) bytes \([^)]*\)(.*?)\.?$", line)
            if match:
                size = int(match.group(1))
                flags = tuple(f.strip() for f in match.group(2).split(",") if f.strip())
    if size is None:
        raise RamDiskError(f"unexpected imdisk output (no Size line): {text.strip()!r}")
    return ImDiskStatus(mount_point, image, size, flags)


class ImDiskAdapter(RamDiskAdapter):
    """RAM drives through ``aim_ll`` or ``imdisk`` (Windows)."""

    name = "imdisk"
    default_path = "R:"

    def tool(self) -> str:
        """The tool to use: ``aim_ll`` when installed, else ``imdisk``."""
        for tool in TOOLS:
            if self.runner.which(tool):
                return tool
        raise RamDiskError(
            "neither aim_ll nor imdisk is installed. Install the ImDisk Toolkit from "
            f"{IMDISK_URL} or Arsenal Image Mounter (aim_ll, preferred on recent Windows) "
            f"from {AIM_URL}",
            command=list(TOOLS),
        )

    def mount_command(self, spec: DiskSpec) -> list[str]:
        """``imdisk -a -s <size> -m R: -p "/fs:ntfs /q /y"`` (or the same with aim_ll)."""
        return [
            self.tool(),
            "-a",
            "-s",
            format_size(spec.size_bytes, exact=True),
            "-m",
            drive_letter(spec.path),
            "-p",
            format_params(spec.filesystem),
        ]

    def export_line(self, root: str) -> str:
        """The PowerShell line that points ramxchg at ``root``.

        A single-quoted PowerShell string takes everything literally except ``'``,
        which is doubled.
        """
        quoted = root.replace("'", "''")
        return f"$env:RAMXCHG_ROOT = '{quoted}'"

    def _need_admin(self, command: list[str], what: str) -> None:
        if not self.host.is_admin():
            raise RamDiskError(
                f"{what} needs an elevated prompt. Open PowerShell with 'Run as "
                f"administrator' and run:\n  {subprocess.list2cmdline(command)}",
                command=command,
            )

    def mount(self, spec: DiskSpec) -> MountedDisk:
        """Create the RAM drive and format it (NTFS by default)."""
        command = self.mount_command(spec)
        letter = drive_letter(spec.path)
        in_use = self.host.query_dos_device(letter)
        if in_use is not None:
            raise RamDiskError(
                f"{letter} is already in use ({in_use}); choose another drive letter, or "
                f"remove the RAM drive there first with `ramxchg teardown {letter}`",
                path=letter,
                command=command,
            )
        self._need_admin(command, f"creating the RAM drive {letter}")
        self._run(command, f"creating the RAM drive {letter}")
        device = self.host.query_dos_device(letter) or command[0]
        return MountedDisk(letter + "\\", device, self.name, (tuple(command),))

    def unmount(self, path: str, *, force: bool = False, missing_ok: bool = False) -> bool:
        """Remove the RAM drive (``-D``: force even while files are open).

        Drives of other tools, and ImDisk drives backed by an image file, are refused.
        """
        letter = drive_letter(path)
        status = self.status(path)
        if status is None and missing_ok:
            return False
        if status is None:
            raise RamDiskError(
                f"{letter} is not a drive of aim_ll or imdisk; refusing to remove it", path=path
            )
        if not status.ram_backed:
            raise RamDiskError(
                f"{letter} is backed by {status.image_file or 'an image file'}, not memory; "
                "refusing to remove it",
                path=path,
            )
        command = [self.tool(), "-D" if force else "-d", "-m", letter]
        self._need_admin(command, f"removing the RAM drive {letter}")
        self._run(command, f"removing the RAM drive {letter}")
        return True

    def status(self, path: str) -> ImDiskStatus | None:
        """``imdisk -l -m R:`` parsed, or None when the drive is not one of the tool's."""
        try:
            result = self._run([self.tool(), "-l", "-m", drive_letter(path)], "query")
        except RamDiskError:
            return None
        return parse_imdisk_status(result.stdout)

    def describe(self, path: str) -> RamDiskInfo:
        """Filesystem and size of the drive; RAM-backed when ImDisk/AIM says memory."""
        letter = drive_letter(path)
        device = self.host.query_dos_device(letter) or ""
        total, free = self.host.disk_usage(letter + "\\")
        status = self.status(path)
        ram = status.ram_backed if status is not None else False
        notes = () if status is None else (", ".join(status.flags),)
        return RamDiskInfo(
            path=path,
            mount_point=letter + "\\",
            fs_type=self.host.volume_fs_type(letter + "\\"),
            total_bytes=total,
            free_bytes=free,
            ram_backed=ram,
            device=device,
            adapter=self.name,
            notes=notes,
        )

    def persist(self, spec: DiskSpec, target_dir: str | None = None) -> list[str]:
        """Write the logon script and register it as an elevated logon scheduled task."""
        script = os.path.join(target_dir or _script_folder(), SCRIPT_NAME)
        text = windows_logon_script(drive_letter(spec.path), spec.size_bytes, spec.filesystem)
        if target_dir is not None:
            self.host.write_text(script, text)
            return [f"wrote {script}"]
        command = windows_task_command(script)
        self._need_admin(command, "registering a logon task that runs elevated")
        self.host.write_text(script, text)
        self._run(command, "registering the logon task")
        return [f"wrote {script}", f"ran {subprocess.list2cmdline(command)}"]

    def unpersist(self, path: str) -> list[str]:
        """Delete the logon task and its script (the task is per machine, not per drive)."""
        script = os.path.join(_script_folder(), SCRIPT_NAME)
        has_task = self.runner.run(["schtasks", "/Query", "/TN", TASK_NAME]).returncode == 0
        if not has_task and not self.host.exists(script):
            return []
        done = []
        if has_task:
            command = ["schtasks", "/Delete", "/TN", TASK_NAME, "/F"]
            self._need_admin(command, "deleting the elevated logon task")
            self._run(command, "deleting the logon task")
            done.append(f"ran {subprocess.list2cmdline(command)}")
        if self.host.remove(script):
            done.append(f"removed {script}")
        return done


def _script_folder() -> str:
    """Where the logon script lives: ``%LOCALAPPDATA%\\ramxchg``."""
    return os.path.join(os.environ.get("LOCALAPPDATA", os.path.expanduser("~")), "ramxchg")
