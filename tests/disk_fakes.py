"""Fakes for the two RAM-disk seams: a command runner and a host view with canned answers."""

from __future__ import annotations

from collections.abc import Sequence

from ramxchg.disks import CommandResult, CommandRunner, HostView


class FakeRunner(CommandRunner):
    """Records every command; answers from ``replies`` keyed by the argv prefix."""

    def __init__(
        self,
        tools: Sequence[str] = (),
        replies: dict[tuple[str, ...], tuple[int, str, str]] | None = None,
    ) -> None:
        self.tools = set(tools)
        self.replies = replies or {}
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        for prefix, (code, out, err) in self.replies.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return CommandResult(tuple(argv), code, out, err)
        return CommandResult(tuple(argv), 0, "", "")

    def which(self, program: str) -> str | None:
        return f"/fake/bin/{program}" if program in self.tools else None


class FakeHost(HostView):
    """A host with canned files, privileges, sizes and devices; writes are recorded."""

    def __init__(
        self,
        *,
        files: dict[str, str] | None = None,
        admin: bool = True,
        usage: tuple[int, int] = (8 * 1024**3, 8 * 1024**3),
        magic: int | None = None,
        kernel: str = "6.1.0-18-amd64",
        dos_devices: dict[str, str] | None = None,
        fs_type: str = "NTFS",
    ) -> None:
        self.files = dict(files or {})
        self.admin = admin
        self.usage = usage
        self.magic = magic
        self.kernel = kernel
        self.dos_devices = dos_devices or {}
        self.fs_type = fs_type
        self.written: dict[str, str] = {}
        self.touched: list[str] = []
        self.made: list[str] = []
        self.removed: list[str] = []

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def disk_usage(self, path: str) -> tuple[int, int]:
        return self.usage

    def statfs_magic(self, path: str) -> int | None:
        return self.magic

    def is_admin(self) -> bool:
        return self.admin

    def kernel_release(self) -> str:
        return self.kernel

    def ids(self) -> tuple[int, int]:
        return (1000, 1000)

    def query_dos_device(self, drive: str) -> str | None:
        return self.dos_devices.get(drive)

    def volume_fs_type(self, drive_root: str) -> str:
        return self.fs_type

    def exists(self, path: str) -> bool:
        return path in self.files

    def write_text(self, path: str, text: str) -> None:
        self.written[path] = text
        self.files[path] = text  # read back and seen by exists(), as on a real host

    def remove(self, path: str) -> bool:
        self.removed.append(path)
        return self.files.pop(path, None) is not None

    def make_dir(self, path: str) -> None:
        self.made.append(path)

    def touch(self, path: str) -> None:
        self.touched.append(path)
