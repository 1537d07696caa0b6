"""macOS: ``hdiutil`` images, ``diskutil`` volumes under /Volumes, ``mount``, launchd."""

from __future__ import annotations

from dataclasses import dataclass

from .base import FAILURE, GIB, FakeDisk, FakeWorld


@dataclass
class _Image:
    path: str
    size: int
    device: str
    #: the device of its mounted volume ("" while attached without a volume)
    volume: str = ""


class HdiutilWorld(FakeWorld):
    """macOS, with a downloaded .dmg to mount as the disk that is not RAM."""

    name = "hdiutil"
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
        self._numbers = iter(range(4, 100))
        self.disks.append(FakeDisk("/", 500 * GIB, False, "/dev/disk3s1s1", "apfs"))

    def size_spelling(self, size: int) -> str:
        return f"<string>{size}</string>"  # the launchd agent passes bytes to the script

    def add_disk(self, point: str) -> None:
        """A read-only disk image (a downloaded .dmg) mounted at ``point``."""
        device = f"/dev/disk{next(self._numbers)}"
        image = _Image("/Users/alice/Downloads/tool.dmg", 1 << 20, device, device + "s1")
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
            return 0, "".join(map(self._mount_line, self.disks)), ""
        if argv == ["hdiutil", "info"]:
            return 0, "framework       : 671.40.2\n" + "".join(map(self._info, self.images)), ""
        if argv[:3] == ["hdiutil", "attach", "-nomount"]:
            sectors = int(argv[3].removeprefix("ram://"))
            image = _Image(argv[3], sectors * 512, f"/dev/disk{next(self._numbers)}")
            self.images.append(image)
            return 0, f"{image.device}          \t\n", ""
        if argv[:2] == ["diskutil", "erasevolume"]:
            return self._erase(*argv[2:5])
        if argv[:2] == ["hdiutil", "detach"]:
            return self._detach(argv[2])
        if argv[:2] == ["launchctl", "load"]:
            self.agents.add(argv[-1])
        elif argv[:2] == ["launchctl", "unload"]:
            self.agents.discard(argv[-1])
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
        while self.disk_at(point) is not None:  # macOS mounts a second "ramxchg" as "ramxchg 1"
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
        return 0, f'"{device.removeprefix("/dev/")}" ejected.\n', ""
