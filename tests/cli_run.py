"""Running the real ``ramxchg`` executable: piped, or on a pseudo-terminal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

RAMXCHG = Path(sys.executable).with_name("ramxchg")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@dataclass
class Done:
    """How a run ended: exit code, standard output, standard error."""

    code: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        """Standard output as tab-separated rows."""
        return [line.split("\t") for line in self.out.splitlines()]


def executable() -> str:
    if not RAMXCHG.exists():
        pytest.skip(f"needs the ramxchg executable beside {sys.executable}")
    return str(RAMXCHG)


def ramxchg(*argv: str, root: Path | None = None, timeout: float = 120) -> Done:
    """Run ``ramxchg argv`` piped (not on a terminal), with ``$RAMXCHG_ROOT`` = ``root``."""
    env = dict(os.environ)
    if root is not None:
        env["RAMXCHG_ROOT"] = str(root)
    done = subprocess.run(
        [executable(), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Done(done.returncode, done.stdout, done.stderr)


class Terminal:
    """``ramxchg argv`` on a pseudo-terminal (stdin, stdout and stderr), 160 columns wide.

    The terminal is the process's controlling terminal, as a shell makes it: Ctrl-C
    typed on it (`interrupt`) reaches every process of the command, children included.
    ``program`` runs another program instead (a shell: ``["bash", "-i"]``), ``argv``
    being its arguments.
    """

    def __init__(
        self, *argv: str, root: Path | None = None, program: list[str] | None = None
    ) -> None:
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "160", "LINES": "50"}
        env.pop("NO_COLOR", None)
        if root is not None:
            env["RAMXCHG_ROOT"] = str(root)
        setsid = shutil.which("setsid")
        if setsid is None:
            pytest.skip("needs setsid (util-linux) to give a command its own terminal")
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        try:
            # setsid runs the command in a session of its own (under the same pid), with
            # the pty as its controlling terminal.
            self.proc = subprocess.Popen(
                [setsid, "--ctty", *(program or [executable()]), *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
            )
        finally:
            os.close(slave)
        self._raw = b""

    @property
    def text(self) -> str:
        """Everything shown so far, without colours, with plain line ends."""
        return _ANSI.sub("", self._raw.decode(errors="replace")).replace("\r\n", "\n")

    def read_until(self, condition: Callable[[str], bool], timeout: float = 60) -> str:
        """Read until ``condition(text)`` holds (fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not condition(self.text):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out; the terminal shows:\n{self.text}")
            if not self._read(0.1) and self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode}; the terminal shows:\n{self.text}")
        return self.text

    def interrupt(self) -> None:
        """Type Ctrl-C: the terminal sends SIGINT to the command's every process."""
        self.press("\x03")

    def press(self, keys: str) -> None:
        """Type ``keys`` on the terminal's keyboard (``"\\t"``: Tab)."""
        os.write(self._master, keys.encode())

    def wait(self, timeout: float = 120) -> Done:
        """Read to the end; the exit code and what was shown (as ``out``)."""
        deadline = time.monotonic() + timeout
        while self._read(0.1) or self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"still running after {timeout} s:\n{self.text}")
        self.proc.wait()
        self._close()
        return Done(self.proc.returncode, self.text, "")

    def _close(self) -> None:
        if self._master >= 0:
            os.close(self._master)
            self._master = -1

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError as exc:  # EIO: every slave end is closed (the process exited)
            if exc.errno != errno.EIO:
                raise
            return False
        self._raw += chunk
        return bool(chunk)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()


def on_terminal(*argv: str, root: Path | None = None) -> Done:
    """Run ``ramxchg argv`` to its end on a pseudo-terminal."""
    with Terminal(*argv, root=root) as terminal:
        return terminal.wait()
