"""Which files a process touches: strace attached to it, every path-taking syscall logged.

``strace -f -y -xx -e trace=%file`` prints each call on a path (open, stat, rename,
unlink, mkdir, ...) and, thanks to ``-y``, the real file behind every returned and passed
descriptor, so a symlink that an ``open`` followed shows up under its target's path.

A path counts as *outside* unless it is inside one of the allowed folders (the
channel) or is one of the interpreter's own read-only files (Python's prefix and
``sys.path``, ``/usr``, ``/lib``, ``/etc``, ``/proc``, ``/sys``, ``/dev`` but not
``/dev/shm``). Any call that may write (open for writing, create, rename, unlink,
link, mkdir, chmod, truncate, utime) outside the allowed folders counts, wherever it is.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

STRACE = shutil.which("strace")

_RUNTIME = tuple(
    sorted(
        {
            q
            for p in [sys.prefix, sys.base_prefix, *sys.path, "/usr", "/lib", "/lib64", "/etc"]
            for q in (p, os.path.realpath(p))
            if p and p != "/"
        }
        - {"/tmp", "/dev/shm", "/var/tmp"}
    )
)
_SYSTEM = ("/proc/", "/sys/", "/dev/")
_WRITING = re.compile(
    r"^(rename|renameat2?|unlink|unlinkat|link|linkat|symlink|symlinkat|mkdir|mkdirat|rmdir|"
    r"chmod|fchmodat|chown|fchownat|lchown|truncate|utimensat|utimes|mknod|mknodat|creat)$"
)
_CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+([a-z0-9_]+)\((.*)$")
_FD_PATH = re.compile(r"<((?:[^<>\\]|\\.)*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ALL_HEX = re.compile(r"(?:\\x[0-9a-f]{2})*")
_RESULT_FD = re.compile(r"=\s+\d+<((?:[^<>\\]|\\.)*)>")


def _unescape(text: str) -> str:
    """strace -xx prints bytes as \\xHH; decode them back to a file name."""
    if _ALL_HEX.fullmatch(text):  # the usual case: one fast conversion
        return os.fsdecode(bytes.fromhex(text.replace("\\x", "")))
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode())
    return os.fsdecode(raw.replace(b'\\"', b'"').replace(b"\\\\", b"\\"))


@dataclass
class Touch:
    """One syscall on a path."""

    call: str
    path: str
    writes: bool
    line: str


@dataclass
class AuditReport:
    """What an audited process touched outside the allowed folders."""

    calls: int = 0
    outside: list[Touch] = field(default_factory=list)

    @property
    def paths_outside(self) -> list[str]:
        return sorted({touch.path for touch in self.outside})


def _inside(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _runtime_file(path: str) -> bool:
    if path.startswith("/dev/shm"):
        return False
    folders = ("/proc", "/sys", "/dev", "/", "")  # listing them too (legacy files: /proc)
    return path.startswith(_SYSTEM) or _inside(path, _RUNTIME) or path in folders


def parse(log: str, allowed: Iterable[str]) -> AuditReport:
    """Classify every logged call: inside ``allowed``, a runtime file, or outside."""
    folders = [os.path.realpath(f) for f in allowed]
    report = AuditReport()
    for line in log.splitlines():
        match = _CALL.match(line)
        if not match:
            continue
        call, rest = match[2], match[3]
        writes = bool(_WRITING.match(call)) or (
            call.startswith("open") and any(f in rest for f in ("O_WRONLY", "O_RDWR", "O_CREAT"))
        )
        paths = []  # (path, whether the call may write there)
        strings = _STRING.findall(rest)
        result = _RESULT_FD.search(rest)
        if result:  # the file the kernel actually opened (symlinks resolved)
            paths.append((_unescape(result[1]), writes))
        if strings:
            # -xx prints every byte of a string as \xHH: split at the quotes, each name's
            # folder is the descriptor printed before it (renameat, linkat take two)
            parts = rest.split('"')
            # a link's source is only read (linkat's /proc/self/fd/N: an unnamed file)
            source_writes = writes and not call.startswith("link")
            paths.append((_path(parts[0], strings[0]), source_writes))
            if call.startswith(("rename", "link", "symlink")) and len(strings) > 1:
                paths.append((_path(parts[2], strings[1]), writes))
        if not paths:
            continue
        report.calls += 1
        for path, writing in paths:
            if not path.startswith("/"):  # pipe:[N], socket:[N], anon_inode:...: not files
                continue
            if _inside(path, folders):
                continue
            if not writing and _runtime_file(path):
                continue
            if path == "/dev/null":
                continue
            report.outside.append(Touch(call, path, writing, line))
    return report


def _path(before: str, name: str) -> str:
    """The path of the (escaped) ``name`` that a call was given, in the folder of the
    descriptor printed in ``before`` (the arguments before it), or the cwd."""
    dirfd = _FD_PATH.search(before)
    base = _unescape(dirfd[1]) if dirfd else os.getcwd()
    if not base.startswith("/"):
        base = os.getcwd()
    return os.path.normpath(os.path.join(base, _unescape(name)))


class Audit:
    """strace attached to a running process until `stop` (or the process exits).

    Parameters
    ----------
    pid
        The process to watch (its threads and future children too).
    log
        Where strace writes its log.
    """

    def __init__(self, pid: int, log: Path) -> None:
        if STRACE is None:
            raise RuntimeError("strace is not installed")
        self.log = log
        self._proc = subprocess.Popen(
            [STRACE, "-f", "-qq", "-y", "-xx", "-s", "4096", "-e", "trace=%file",
             "-e", "signal=none", "-o", str(log), "-p", str(pid)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while _tracer_of(pid) == 0:  # attached once the kernel names strace as the tracer
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strace could not attach to pid {pid}")
            time.sleep(0.01)

    def stop(self, allowed: Iterable[str]) -> AuditReport:
        """Detach, then classify what the process touched."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        self._proc.wait(60)
        return parse(self.log.read_text(errors="replace"), allowed)


def _tracer_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return -1
    found = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
    return int(found[1]) if found else 0
