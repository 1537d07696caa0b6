"""Fake machines for the RAM-disk adapters: the two OS seams of each, with state.

A world answers its adapter's commands the way the real programs do (``mount``,
``imdisk``, ``hdiutil``/``diskutil``, ``systemctl``, ``schtasks``, ``launchctl``) and
remembers what they did, so a test can mount, describe, unmount and persist in turn and
see the machine change. Only the seams (`CommandRunner`, `HostView`) are fake: the
adapters run unchanged. `RealTmpfs` is the same interface over this Linux machine.

tests/contracts/test_disk_contract.py runs every world through the adapter contract; a
new adapter brings its world here (see `WORLDS`).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ramxchg.disks import (
    CommandResult,
    CommandRunner,
    RamDiskAdapter,
    format_size,
    get_adapter,
    parse_size,
)
from ramxchg.disks.tmpfs import MOUNTINFO, SHMEM_ENABLED
from tests.conftest import mount_entry

from .disk_fakes import FakeHost

GIB = 1024**3
#: What the fake programs print when a test makes them fail (`World.failing`).
FAILURE = "simulated failure: the device is busy"


@dataclass
class FakeDisk:
    """One mounted filesystem of a world."""

    mount_point: str
    #: bytes the OS gave it; None for no limit (what tmpfs does with ``size=0``)
    size: int | None
    ram: bool
    device: str
    fs_type: str


class _Runner(CommandRunner):
    """Runs a world's programs: a missing one raises like ``subprocess.run`` does."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        if argv[0] not in self.world.tools:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        code, out, err = self.world.answer(list(argv))
        if code == 0 and not self.world.is_query(list(argv)):
            self.world.changes.append(list(argv))
        return CommandResult(tuple(argv), code, out, err)

    def which(self, program: str) -> str | None:
        return f"/fake/bin/{program}" if program in self.world.tools else None


class _Host(FakeHost):
    """The host seam of a world: sizes and devices come from what is mounted."""

    def __init__(self, world: World, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.world = world

    def read_text(self, path: str) -> str | None:
        return self.world.read_text(path)

    def disk_usage(self, path: str) -> tuple[int, int]:
        return self.world.usage(path)

    def query_dos_device(self, drive: str) -> str | None:
        return self.world.dos_device(drive)

    def volume_fs_type(self, drive_root: str) -> str:
        disk = self.world.disk_at(drive_root[:2])
        return disk.fs_type if disk else ""

    def touch(self, path: str) -> None:
        if self.world.disk_at(os.path.dirname(path)) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        super().touch(path)


class World(ABC):
    """A machine one adapter runs on, faked at its seams, with what is mounted on it."""

    #: ``sys.platform`` of the machine (picks the adapter from the registry)
    platform: str
    #: where the tests mount a RAM disk, another disk, and nothing
    spot: str
    other_spot: str
    free_spot: str
    #: whether mounting and persisting need root/an elevated prompt
    needs_admin = True
    #: how the persisted files spell `spot` (the boot-time disk is the same disk)
    spot_spelling: str
    #: programs mounting needs (one of them is named when it is missing)
    mount_tools: tuple[str, ...]
    #: the shell the export line is for, as ``argv`` that runs a command string
    shell: tuple[str, ...] = ("sh", "-c")
    #: the machine is faked (tests that inject failures or install at boot need that)
    fake = True

    def __init__(self, tools: Sequence[str]) -> None:
        self.tools = set(tools)
        self.disks: list[FakeDisk] = []
        self.changes: list[list[str]] = []
        #: programs fail every command that would change something, printing `FAILURE`
        self.failing = False
        self.runner = _Runner(self)
        self.host = _Host(self)
        self.files = self.host.files
        self.adapter: RamDiskAdapter = get_adapter(self.platform, self.runner, self.host)

    # -- the state, for tests ---------------------------------------------------------------

    def disk_at(self, point: str) -> FakeDisk | None:
        """The topmost disk mounted exactly at ``point``."""
        found = [disk for disk in self.disks if disk.mount_point == point]
        return found[-1] if found else None

    @abstractmethod
    def add_disk(self, point: str) -> None:
        """Mount a disk that is not in RAM at ``point`` (what teardown must refuse)."""

    @abstractmethod
    def registered(self) -> set[str]:
        """What the machine would run at boot or logon for a RAM disk."""

    def inside(self, point: str) -> str:
        """A folder inside the disk mounted at ``point``."""
        return os.path.join(point, "cam")

    def files_under(self, folder: str) -> dict[str, str]:
        """The files written in ``folder``, with their text."""
        return {path: text for path, text in self.files.items() if path.startswith(folder + "/")}

    def size_spelling(self, size: int) -> str:
        """How the persisted files spell a disk of ``size`` bytes."""
        return format_size(size, exact=True)

    def close(self) -> None:  # noqa: B027 - a hook: only a real machine has things to undo
        """Undo what the world did to the real machine (nothing, when faked)."""

    # -- the fake programs ------------------------------------------------------------------

    @abstractmethod
    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        """Run ``argv`` on the fake machine: (exit code, stdout, stderr)."""

    @abstractmethod
    def is_query(self, argv: list[str]) -> bool:
        """Whether ``argv`` only reads (changes nothing, also when it succeeds)."""

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def usage(self, path: str) -> tuple[int, int]:
        disk = self._holding(path)
        total = disk.size if disk and disk.size is not None else 500 * GIB
        return total, total

    def dos_device(self, drive: str) -> str | None:
        return None

    def _holding(self, path: str) -> FakeDisk | None:
        inside = [d for d in self.disks if path == d.mount_point or _under(path, d.mount_point)]
        return max(inside, key=lambda d: len(d.mount_point), default=None)


def _under(path: str, point: str) -> bool:
    return path.startswith(point.rstrip("/") + "/")


# -- Linux ----------------------------------------------------------------------------------


class TmpfsWorld(World):
    """Linux with a kernel that has ``noswap``, huge pages, and systemd (or not)."""

    platform = "linux"
    spot = "/mnt/ram disk"
    other_spot = "/mnt/data"
    free_spot = "/mnt/nothing"
    spot_spelling = "/mnt/ram disk"
    mount_tools = ("mount",)
    FSTAB_BEFORE = "UUID=1 / ext4 defaults 0 1\ntmpfs /mnt/other tmpfs size=1G 0 0\n"

    def __init__(self, *, systemd: bool = True) -> None:
        super().__init__(("mount", "umount", "systemctl"))
        self.host.kernel = "6.8.0-31-generic"
        self.files[SHMEM_ENABLED] = "always within_size advise [never] deny force\n"
        self.files["/etc/fstab"] = self.FSTAB_BEFORE
        if systemd:
            self.files["/run/systemd/system"] = ""
        self.enabled: set[str] = set()
        self.disks.append(FakeDisk("/", 500 * GIB, False, "/dev/vda1", "ext4"))

    def add_disk(self, point: str) -> None:
        self.disks.append(FakeDisk(point, 100 * GIB, False, "/dev/vdb", "ext4"))

    def registered(self) -> set[str]:
        rows = (self.files.get("/etc/fstab") or "").splitlines()
        return self.enabled | {row for row in rows if row not in self.FSTAB_BEFORE}

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
            point = argv[-1]
            disk = self.disk_at(point)
            if disk is None:
                return 32, "", f"umount: {point}: not mounted."
            self.disks.remove(disk)
            return 0, "", ""
        if argv[:2] == ["systemctl", "enable"]:
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


# -- Windows --------------------------------------------------------------------------------

_IMDISK_UNITS = {"": 1, "b": 512, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IMDISK_UNITS.update({"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40})


def imdisk_size(text: str) -> int:
    """Bytes in ImDisk's ``-s``: lower-case units are decimal (and ``b`` is 512-byte
    blocks), upper-case ones binary, as ``imdisk /?`` says."""
    match = re.fullmatch(r"(\d+)([bkmgtKMGT]?)", text)
    if not match:
        raise ValueError(f"imdisk: invalid size {text!r}")
    return int(match.group(1)) * _IMDISK_UNITS[match.group(2)]


class ImDiskWorld(World):
    """Windows with the ImDisk Toolkit, a C: drive, and the task scheduler."""

    platform = "win32"
    spot = "R:"
    other_spot = "S:"
    free_spot = "Q:"
    spot_spelling = '"R:"'
    mount_tools = ("aim_ll", "imdisk")
    shell = ("pwsh", "-NoProfile", "-Command")

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
        return super().disk_at(point.rstrip("\\"))

    def usage(self, path: str) -> tuple[int, int]:
        disk = self.disk_at(path[:2])
        if disk is None or disk.size is None:
            raise FileNotFoundError(errno.ENOENT, "The system cannot find the path", path)
        return disk.size, disk.size

    def dos_device(self, drive: str) -> str | None:
        disk = self.disk_at(drive)
        return disk.device if disk else None

    def is_query(self, argv: list[str]) -> bool:
        return argv[1:2] in (["-l"], ["/Query"])

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if self.failing and not self.is_query(argv):
            return 1, "", FAILURE
        if argv[0] == "schtasks":
            return self._schtasks(argv)
        option, letter = argv[1], argv[argv.index("-m") + 1]
        disk = self.disk_at(letter)
        ours = disk is not None and "ImDisk" in disk.device
        if option == "-a":
            if disk is not None:
                return 1, "", f"Drive letter {letter} is already in use."
            size = imdisk_size(argv[argv.index("-s") + 1])
            device = f"\\Device\\ImDisk{next(self._numbers)}"
            fs_type = re.search(r"/fs:(\w+)", argv[-1]).group(1).upper()  # type: ignore[union-attr]
            self.disks.append(FakeDisk(letter, size, True, device, fs_type))
            return 0, "Creating device...\nCreated device 0: R: -> RAM\nDone.\n", ""
        if not ours:
            return 1, "", "Not an ImDisk Virtual Disk Driver device."
        assert disk is not None
        if option == "-l":
            backing = "No image file." if disk.ram else "Image file: \\??\\C:\\images\\disk.img"
            kind = "Virtual Memory" if disk.ram else "Queued I/O Image File"
            size = f"Size: {disk.size} bytes ({disk.size} B), {kind}, HDD, Modified."
            return 0, f"Mount point: {letter}\n{backing}\n{size}\n", ""
        self.disks.remove(disk)  # -d, -D
        return 0, "Notifying applications...\nDismounting filesystem...\nDone.\n", ""

    def _schtasks(self, argv: list[str]) -> tuple[int, str, str]:
        name = argv[argv.index("/TN") + 1]
        if argv[1] == "/Create":
            self.tasks.add(name)
        elif name not in self.tasks:
            return 1, "", "ERROR: The system cannot find the file specified."
        elif argv[1] == "/Delete":
            self.tasks.remove(name)
        return 0, "SUCCESS", ""


# -- macOS ----------------------------------------------------------------------------------


@dataclass
class _Image:
    path: str
    size: int
    device: str
    #: the device of its mounted volume ("" while attached without a volume)
    volume: str = ""


class HdiutilWorld(World):
    """macOS: ``hdiutil`` images, ``diskutil`` volumes, ``mount``, launchd agents."""

    platform = "darwin"
    spot = "/Volumes/ramxchg"
    other_spot = "/Volumes/Tool"
    free_spot = "/Volumes/gone"
    spot_spelling = "<string>ramxchg</string>"
    mount_tools = ("hdiutil", "diskutil")
    needs_admin = False

    def __init__(self) -> None:
        super().__init__(("hdiutil", "diskutil", "mount", "launchctl"))
        self.images: list[_Image] = []
        self.agents: set[str] = set()
        self._disks = iter(range(4, 100))
        self.disks.append(FakeDisk("/", 500 * GIB, False, "/dev/disk3s1s1", "apfs"))

    def size_spelling(self, size: int) -> str:
        return f"<string>{size}</string>"  # the plist passes bytes to the script

    def add_disk(self, point: str) -> None:
        """A read-only disk image (a downloaded .dmg) mounted at ``point``."""
        image = _Image("/Users/alice/Downloads/tool.dmg", 1 << 20, f"/dev/disk{next(self._disks)}")
        image.volume = image.device + "s1"
        self.images.append(image)
        self.disks.append(FakeDisk(point, image.size, False, image.volume, "hfs"))

    def registered(self) -> set[str]:
        return set(self.agents)

    def is_query(self, argv: list[str]) -> bool:
        return argv in (["mount"], ["hdiutil", "info"])

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if self.failing and not self.is_query(argv):
            return 1, "", f"{argv[0]}: {FAILURE}"
        if argv == ["mount"]:
            return 0, "".join(self._mount_line(disk) for disk in self.disks), ""
        if argv == ["hdiutil", "info"]:
            return 0, "framework       : 671.40.2\n" + "".join(map(self._info, self.images)), ""
        if argv[:3] == ["hdiutil", "attach", "-nomount"]:
            sectors = int(argv[3].removeprefix("ram://"))
            image = _Image(argv[3], sectors * 512, f"/dev/disk{next(self._disks)}")
            self.images.append(image)
            return 0, f"{image.device}          \t\n", ""
        if argv[:2] == ["diskutil", "erasevolume"]:
            return self._erase(*argv[2:5])
        if argv[:2] == ["hdiutil", "detach"]:
            return self._detach(argv[2])
        if argv[0] == "launchctl":
            (self.agents.add if argv[1] == "load" else self.agents.discard)(argv[-1])
        return 0, "", ""

    @staticmethod
    def _mount_line(disk: FakeDisk) -> str:
        return f"{disk.device} on {disk.mount_point} ({disk.fs_type}, local, nodev, nosuid)\n"

    def _info(self, image: _Image) -> str:
        """One image's section of ``hdiutil info``: its devices and where they are mounted."""
        rows = ""
        for device in dict.fromkeys([image.device, image.volume or image.device]):
            point = next((d.mount_point for d in self.disks if d.device == device), "")
            rows += f"{device}\t                               \t{point}\n"
        return f"{'=' * 48}\nimage-path      : {image.path}\n{rows}"

    def _erase(self, fs: str, name: str, device: str) -> tuple[int, str, str]:
        image = next((i for i in self.images if i.device == device), None)
        if image is None:
            return 1, "", f"Could not find disk: {device}"
        point, copy = f"/Volumes/{name}", 0
        while self.disk_at(point) is not None:  # macOS names a second volume "ramxchg 1"
            copy += 1
            point = f"/Volumes/{name} {copy}"
        image.volume = device
        self.disks.append(FakeDisk(point, image.size, True, device, fs.lower().rstrip("+")))
        return 0, f"Started erase on {device}\nFinished erase on {device}\n", ""

    def _detach(self, device: str) -> tuple[int, str, str]:
        image = next((i for i in self.images if i.device == device), None)
        if image is None:
            return 1, "", "hdiutil: detach failed - No such file or directory"
        self.images.remove(image)
        self.disks = [d for d in self.disks if d.device not in (image.device, image.volume)]
        return 0, f'"disk{device[9:]}" ejected.\n', ""


# -- this machine ---------------------------------------------------------------------------


class _RecordingRunner(CommandRunner):
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        return super().run(argv)


class RealTmpfs(World):
    """This Linux machine, through the real seams; mounts under ``folder`` (needs root)."""

    platform = "linux"
    mount_tools = ("mount",)
    fake = False

    def __init__(self, folder: Path) -> None:  # no World.__init__: nothing here is fake
        self.folder = folder
        self.spot = self.spot_spelling = str(folder / "ram disk")  # mountinfo escapes it
        self.other_spot = str(folder / "data")
        self.free_spot = str(folder / "nothing")
        self.runner = _RecordingRunner()  # type: ignore[assignment]
        self.changes = self.runner.calls  # every command tmpfs runs mounts or unmounts
        self.adapter = get_adapter(self.platform, self.runner)
        self.host = self.adapter.host  # type: ignore[assignment]
        self.tools = set()
        self.failing = False

    def disk_at(self, point: str) -> FakeDisk | None:
        entry = mount_entry(Path(point))
        if entry is None:
            return None
        total, _ = self.adapter.host.disk_usage(point)
        return FakeDisk(point, total, entry.fs_type == "tmpfs", entry.source, entry.fs_type)

    def add_disk(self, point: str) -> None:
        """Bind-mount a folder of this disk (not RAM) at ``point``."""
        source = self.folder / "bound"
        source.mkdir(exist_ok=True)
        Path(point).mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(source), point], check=True)

    def inside(self, point: str) -> str:
        folder = os.path.join(point, "cam")
        os.makedirs(folder, exist_ok=True)
        return folder

    def registered(self) -> set[str]:
        raise AssertionError("persisting for real would change how this machine boots")

    def files_under(self, folder: str) -> dict[str, str]:
        return {str(path): path.read_text() for path in Path(folder).iterdir()}

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        raise AssertionError("real programs answer for themselves")

    def is_query(self, argv: list[str]) -> bool:
        return False

    def close(self) -> None:
        """Unmount whatever the test left mounted under the folder, topmost first."""
        for _ in range(8):
            points = [p for p in (self.spot, self.other_spot) if mount_entry(Path(p))]
            if not points:
                return
            for point in points:
                subprocess.run(["umount", "-l", point], check=True)


#: adapter name -> the worlds it is tested in (a new adapter adds its world here)
WORLDS: dict[str, list[type[World]]] = {
    "tmpfs": [TmpfsWorld],
    "imdisk": [ImDiskWorld],
    "hdiutil": [HdiutilWorld],
}
