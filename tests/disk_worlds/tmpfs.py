"""Linux: ``mount``/``umount`` and /proc/self/mountinfo, systemd or /etc/fstab; and the
real machine (`RealTmpfs`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ramxchg.disks import get_adapter, parse_size
from ramxchg.disks.tmpfs import MOUNTINFO, SHMEM_ENABLED
from tests.conftest import mount_entry

from .base import FAILURE, GIB, FakeDisk, FakeWorld, RecordingRunner, World


class TmpfsWorld(FakeWorld):
    """Linux with a kernel that has ``noswap`` and huge pages, run by systemd."""

    name = "tmpfs"
    platform = "linux"
    spot = spot_spelling = "/mnt/ram disk"  # mountinfo escapes the space
    other_spot = "/mnt/data"
    free_spot = "/mnt/nothing"
    mount_tools = ("mount",)
    systemd = True
    FSTAB = "UUID=1 / ext4 defaults 0 1\ntmpfs /mnt/other tmpfs size=1G 0 0\n"

    def __init__(self) -> None:
        super().__init__(("mount", "umount", "systemctl"))
        self.host.kernel = "6.8.0-31-generic"
        self.files[SHMEM_ENABLED] = "always within_size advise [never] deny force\n"
        self.files["/etc/fstab"] = self.FSTAB
        if self.systemd:
            self.files["/run/systemd/system"] = ""
        self.enabled: set[str] = set()
        self.disks.append(FakeDisk("/", 500 * GIB, False, "/dev/vda1", "ext4"))

    def add_disk(self, point: str) -> None:
        self.disks.append(FakeDisk(point, 100 * GIB, False, "/dev/vdb", "ext4"))

    def registered(self) -> set[str]:
        rows = (self.files.get("/etc/fstab") or "").splitlines()
        return self.enabled | {row for row in rows if row not in self.FSTAB}

    def read_text(self, path: str) -> str | None:
        if path == MOUNTINFO:
            return "".join(self._mountinfo_line(n, d) for n, d in enumerate(self.disks, 22))
        return super().read_text(path)

    @staticmethod
    def _mountinfo_line(number: int, disk: FakeDisk) -> str:
        point = disk.mount_point.replace("\\", "\\134").replace(" ", "\\040")
        size = "" if disk.size is None or not disk.ram else f",size={disk.size // 1024}k"
        fs = f"{disk.fs_type} {disk.device} rw{size}"
        return f"{number} 1 0:{number} / {point} rw,relatime - {fs}\n"

    def is_query(self, argv: list[str]) -> bool:
        return False

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if self.failing:
            return 32, "", f"{argv[0]}: {FAILURE}"
        if argv[:4] == ["mount", "-t", "tmpfs", "-o"]:
            return self._mount(argv[4], argv[-1])
        if argv[0] == "umount":
            disk = self.disk_at(argv[-1])
            if disk is None:
                return 32, "", f"umount: {argv[-1]}: not mounted."
            self.disks.remove(disk)
        elif argv[:2] == ["systemctl", "enable"]:
            self.enabled.add(argv[2])
        elif argv[:2] == ["systemctl", "disable"]:
            self.enabled.discard(argv[2])
        return 0, "", ""

    def _mount(self, options: str, point: str) -> tuple[int, str, str]:
        if point not in self.host.made:
            return 32, "", f"mount: {point}: mount point does not exist."
        size: int | None = None
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key == "size" and value != "0":  # tmpfs: size=0 is no limit at all
                size = parse_size(value)
        self.disks.append(FakeDisk(point, size, True, "tmpfs", "tmpfs"))
        return 0, "", ""


class TmpfsFstabWorld(TmpfsWorld):
    """Linux without systemd: what mounts at boot is a line in /etc/fstab."""

    name = "tmpfs-fstab"
    systemd = False


class RealTmpfs(World):
    """This Linux machine, through the real seams; mounts under ``folder`` (needs root)."""

    name = "tmpfs-real"
    platform = "linux"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.spot = self.spot_spelling = str(folder / "ram disk")  # mountinfo escapes it
        self.other_spot = str(folder / "data")
        self.free_spot = str(folder / "nothing")
        self.runner = RecordingRunner()
        self.changes = self.runner.calls  # every command tmpfs runs mounts or unmounts
        self.adapter = get_adapter(self.platform, self.runner)

    def disk_at(self, point: str) -> FakeDisk | None:
        entry = mount_entry(Path(point))
        if entry is None:
            return None
        total, _ = self.adapter.host.disk_usage(point)
        return FakeDisk(point, total, entry.fs_type == "tmpfs", entry.source, entry.fs_type)

    def add_disk(self, point: str) -> None:
        """Bind-mount a folder of this machine's own disk (not RAM) at ``point``."""
        source = self.folder / "bound"
        source.mkdir(exist_ok=True)
        Path(point).mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(source), point], check=True)

    def inside(self, point: str) -> str:
        folder = super().inside(point)
        os.makedirs(folder, exist_ok=True)  # statfs needs it to exist
        return folder

    def files_under(self, folder: str) -> dict[str, str]:
        return {str(path): path.read_text() for path in Path(folder).iterdir()}

    def close(self) -> None:
        """Unmount what the test left mounted (stacked mounts: until none is left)."""
        for point in (self.spot, self.other_spot):
            while mount_entry(Path(point)) is not None:
                subprocess.run(["umount", "-l", point], check=True)
