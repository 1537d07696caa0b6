"""What a world is (`World`), and the fake seams every fake one shares (`FakeWorld`)."""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ramxchg.disks import CommandResult, CommandRunner, RamDiskAdapter, format_size, get_adapter
from tests.disk_fakes import FakeHost

GIB = 1024**3
#: What the fake programs print when a test makes them fail (`FakeWorld.failing`).
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


class RecordingRunner(CommandRunner):
    """Runs programs and records every command line it was given."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        return super().run(argv)


class World(ABC):
    """A machine one adapter runs on: where to mount, and what is mounted there."""

    #: test id, e.g. ``"tmpfs"``
    name: str
    #: ``sys.platform`` of the machine (picks the adapter from the registry)
    platform: str
    #: where the tests mount a RAM disk, another disk, and nothing
    spot: str
    other_spot: str
    free_spot: str
    #: how the persisted files spell `spot` (the boot-time disk is the same disk)
    spot_spelling: str
    #: the shell the export line is for, as ``argv`` that runs a command string, and the
    #: command that then prints the root it set
    shell: tuple[str, ...] = ("sh", "-c")
    show_root = '; printf %s "$RAMXCHG_ROOT"'

    adapter: RamDiskAdapter
    runner: RecordingRunner
    #: the commands that changed the machine, in order
    changes: list[list[str]]

    @abstractmethod
    def disk_at(self, point: str) -> FakeDisk | None:
        """The topmost disk mounted exactly at ``point``."""

    @abstractmethod
    def add_disk(self, point: str) -> None:
        """Mount a disk that is not in RAM at ``point`` (what teardown must refuse)."""

    @abstractmethod
    def files_under(self, folder: str) -> dict[str, str]:
        """The files written in ``folder``, with their text."""

    def inside(self, point: str) -> str:
        """A folder inside the disk mounted at ``point``."""
        return os.path.join(point, "cam")

    def size_spelling(self, size: int) -> str:
        """How the persisted files spell a disk of ``size`` bytes."""
        return format_size(size, exact=True)

    def close(self) -> None:  # noqa: B027 - a hook: only a real machine has things to undo
        """Undo what the test did to the real machine (nothing, when faked)."""


class _Runner(RecordingRunner):
    """Runs a fake world's programs; a missing one raises as ``subprocess.run`` does."""

    def __init__(self, world: FakeWorld) -> None:
        super().__init__()
        self.world = world

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
    """The host seam of a fake world: sizes and devices come from what is mounted."""

    def __init__(self, world: FakeWorld) -> None:
        super().__init__()
        self.world = world

    def read_text(self, path: str) -> str | None:
        return self.world.read_text(path)

    def disk_usage(self, path: str) -> tuple[int, int]:
        return self.world.usage(path)

    def query_dos_device(self, drive: str) -> str | None:
        disk = self.world.disk_at(drive)
        return disk.device if disk and self.world.platform == "win32" else None

    def volume_fs_type(self, drive_root: str) -> str:
        disk = self.world.disk_at(drive_root)
        return disk.fs_type if disk else ""

    def touch(self, path: str) -> None:
        if self.world.disk_at(os.path.dirname(path)) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        super().touch(path)


class FakeWorld(World):
    """A machine faked at the adapter's seams: its programs are `answer`, its files and
    privileges `host` (a `FakeHost`)."""

    #: whether mounting and persisting need root/an elevated prompt
    needs_admin = True
    #: programs mounting needs (one of them is named when it is missing)
    mount_tools: tuple[str, ...]

    def __init__(self, tools: Sequence[str]) -> None:
        self.tools = set(tools)
        self.disks: list[FakeDisk] = []
        self.changes = []
        #: programs fail every command that would change something, printing `FAILURE`
        self.failing = False
        self.runner = _Runner(self)
        self.host = _Host(self)
        self.files = self.host.files
        self.adapter = get_adapter(self.platform, self.runner, self.host)

    def disk_at(self, point: str) -> FakeDisk | None:
        found = [disk for disk in self.disks if disk.mount_point == point]
        return found[-1] if found else None

    def files_under(self, folder: str) -> dict[str, str]:
        return {path: text for path, text in self.files.items() if path.startswith(folder + "/")}

    @abstractmethod
    def registered(self) -> set[str]:
        """What the machine would run at boot or logon for a RAM disk."""

    @abstractmethod
    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        """Run ``argv`` on the fake machine: (exit code, stdout, stderr)."""

    @abstractmethod
    def is_query(self, argv: list[str]) -> bool:
        """Whether ``argv`` only reads (changes nothing, also when it succeeds)."""

    def read_text(self, path: str) -> str | None:
        """What the host reads at ``path`` (/proc files are made from the state)."""
        return self.files.get(path)

    def usage(self, path: str) -> tuple[int, int]:
        """``(total, free)`` bytes of the disk holding ``path``: an empty disk."""
        inside = [
            disk
            for disk in self.disks
            if path == disk.mount_point or path.startswith(disk.mount_point.rstrip("/") + "/")
        ]
        disk = max(inside, key=lambda disk: len(disk.mount_point))
        total = disk.size if disk.size is not None else 500 * GIB
        return total, total
