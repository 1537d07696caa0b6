"""Windows: ImDisk's ``imdisk`` (or ``aim_ll``), drive letters, the task scheduler."""

from __future__ import annotations

import errno
import re

from .base import FAILURE, GIB, FakeDisk, FakeWorld

_UNITS = {"": 1, "b": 512, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40})


def imdisk_size(text: str) -> int:
    """Bytes in ImDisk's ``-s``: lower-case units are decimal (and ``b`` is 512-byte
    blocks), upper-case ones binary, as ``imdisk /?`` says."""
    match = re.fullmatch(r"(\d+)([bkmgtKMGT]?)", text)
    if not match:
        raise ValueError(f"imdisk: invalid size {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


class ImDiskWorld(FakeWorld):
    """Windows with the ImDisk Toolkit, a C: drive, and the task scheduler."""

    name = "imdisk"
    platform = "win32"
    spot = "R:"
    other_spot = "S:"
    free_spot = "Q:"
    spot_spelling = '"R:"'
    mount_tools = ("aim_ll", "imdisk")
    shell = ("pwsh", "-NoProfile", "-Command")
    show_root = "; [Console]::Out.Write($env:RAMXCHG_ROOT)"

    def __init__(self) -> None:
        super().__init__(("imdisk", "schtasks"))
        self.tasks: set[str] = set()
        self.disks.append(FakeDisk("C:", 500 * GIB, False, "\\Device\\HarddiskVolume3", "NTFS"))
        self._numbers = iter(range(100))

    def inside(self, point: str) -> str:
        return point.rstrip("\\") + "\\cam"

    def add_disk(self, point: str) -> None:
        """An ImDisk drive backed by an image file, not by memory."""
        device = f"\\Device\\ImDisk{next(self._numbers)}"
        self.disks.append(FakeDisk(point, 1 << 20, False, device, "NTFS"))

    def registered(self) -> set[str]:
        return set(self.tasks)

    def disk_at(self, point: str) -> FakeDisk | None:
        return super().disk_at(point[:2])  # "R:", "R:\\", "R:\\folder": the drive R:

    def usage(self, path: str) -> tuple[int, int]:
        disk = self.disk_at(path)
        if disk is None or disk.size is None:
            raise FileNotFoundError(errno.ENOENT, "The system cannot find the path", path)
        return disk.size, disk.size

    def is_query(self, argv: list[str]) -> bool:
        return argv[1:2] in (["-l"], ["/Query"])

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if self.failing and not self.is_query(argv):
            return 1, "", FAILURE
        if argv[0] == "schtasks":
            return self._schtasks(argv)
        option, letter = argv[1], argv[argv.index("-m") + 1]
        disk = self.disk_at(letter)
        if option == "-a":
            return self._create(argv, letter) if disk is None else (1, "", "Drive in use.")
        if disk is None or "ImDisk" not in disk.device:
            return 1, "", "Not an ImDisk Virtual Disk Driver device."
        if option == "-l":
            backing = "No image file." if disk.ram else "Image file: \\??\\C:\\images\\disk.img"
            kind = "Virtual Memory" if disk.ram else "Queued I/O Image File"
            size = f"Size: {disk.size} bytes ({disk.size} B), {kind}, HDD, Modified."
            return 0, f"Mount point: {letter}\n{backing}\n{size}\n", ""
        self.disks.remove(disk)  # -d, -D
        return 0, "Notifying applications...\nDismounting filesystem...\nDone.\n", ""

    def _create(self, argv: list[str], letter: str) -> tuple[int, str, str]:
        size = imdisk_size(argv[argv.index("-s") + 1])
        device = f"\\Device\\ImDisk{next(self._numbers)}"
        formatted = re.search(r"/fs:(\w+)", argv[argv.index("-p") + 1])
        fs_type = formatted.group(1).upper() if formatted else "RAW"
        self.disks.append(FakeDisk(letter, size, True, device, fs_type))
        return 0, f"Creating device...\nCreated device {device[-1]}: {letter} -> RAM\nDone.\n", ""

    def _schtasks(self, argv: list[str]) -> tuple[int, str, str]:
        name = argv[argv.index("/TN") + 1]
        if argv[1] == "/Create":
            self.tasks.add(name)
        elif name not in self.tasks:
            return 1, "", "ERROR: The system cannot find the file specified."
        elif argv[1] == "/Delete":
            self.tasks.remove(name)
        return 0, "SUCCESS", ""
