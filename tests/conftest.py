"""Shared fixtures: a private channel root on tmpfs per test, and a leak check."""

from __future__ import annotations

import fcntl
import gc
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from ramxchg import Channel, Item, NotRamBackedWarning, Subscription
from ramxchg._store.held import HELD
from ramxchg.cli import main
from ramxchg.disks import probe as ramdisk
from ramxchg.disks.tmpfs import MountEntry, parse_mountinfo

SHM = Path("/dev/shm")
_T = TypeVar("_T")


def pytest_configure(config: pytest.Config) -> None:
    """Tests type Ctrl-C (SIGINT) at the commands they start, as a terminal would. A
    run started in the background by a shell without job control (``pytest &`` in a
    script) has SIGINT ignored, and an ignored signal stays ignored in every child, so
    those commands would never see it: handle it here, as an interactive run does, and
    children start with the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/reliability/: options must be known wherever pytest starts.
    parser.addoption(
        "--profile",
        choices=["fast", "full"],
        default=None,
        help="reliability suite profile (default: $RAMXCHG_RELIABILITY or 'fast')",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``root`` are skipped, with a reason, when not running as root."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root (mounts a tmpfs or changes users)")


def mount_entry(path: Path) -> MountEntry | None:
    """The topmost mount at exactly ``path``, from /proc/self/mountinfo (escapes decoded)."""
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    found = [entry for entry in entries if entry.mount_point == str(path)]
    return found[-1] if found else None


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``ramxchg <argv>`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tmp_files(channel: Channel) -> list[Path]:
    """What is left in the channel's hidden tmp folder (half-written items would be)."""
    return list((channel.path / ".ramxchg" / "tmp").iterdir())


def lock_is_free(path: Path) -> bool:
    """Can we take ``flock(LOCK_EX)`` on ``path`` (through a descriptor of our own)? False
    while a producer, reader or member holds its lock on the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def before_the_next_lock(
    monkeypatch: pytest.MonkeyPatch, counter: Any, action: Callable[[], _T]
) -> list[_T]:
    """Run ``action`` once, as the next caller goes for the publish lock of ``counter``
    (a `SequenceCounter`), before it waits for it: what another process may do in that
    gap. ``action`` may take the lock itself (the hook is spent first). Returns a list
    that holds what ``action`` returned, once it ran."""
    lock, ran, spent = counter.lock, [], []

    def hooked(*args: object) -> object:
        if not spent:
            spent.append(True)
            ran.append(action())
        return lock(*args)

    monkeypatch.setattr(counter, "lock", hooked)
    return ran


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every name under ``folder`` (itself too): mode, mtime and a hash of the content."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        info = os.lstat(path)
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, content)
    return found


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.005)


def file_clock_passes(ns: int, probe: Path) -> None:
    """Wait until files touched from now on get a ctime after ``ns``.

    File times come from the kernel's coarse clock (a tick behind ``time.time_ns``), so
    an item's arrival time can trail the publish time of a ``put`` made just before it.
    """

    def later() -> bool:
        probe.touch()
        os.utime(probe)
        return os.stat(probe).st_ctime_ns > ns

    wait_for(later, what="the file clock to pass the last publish time")


@pytest.fixture(autouse=True)
def _fresh_ram_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test meets the once-per-filesystem `NotRamBackedWarning` afresh."""
    monkeypatch.setattr(ramdisk, "_warned", set())


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh channel root on tmpfs (or the temp dir), also set as $RAMXCHG_ROOT."""
    base = SHM if SHM.is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="ramxchg-test-", dir=base))
    monkeypatch.setenv("RAMXCHG_ROOT", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def items_until(sub: Subscription, stop: Any, poll: float = 0.2) -> Iterator[Item]:
    """The subscription's items, until ``stop`` (an Event) is set and none came for ``poll`` s."""
    while True:
        try:
            yield sub.get(timeout=poll)
        except TimeoutError:
            if stop.is_set():
                return


@contextmanager
def warned_if_not_ram(folder: Path) -> Iterator[None]:
    """Expect the block to warn (`NotRamBackedWarning`) if ``folder`` is on a disk or a
    small RAM disk, as every channel root there does once; else expect no warning."""
    if ramdisk.advice(ramdisk.info(folder)):
        with pytest.warns(NotRamBackedWarning):
            yield
    else:
        yield


@contextmanager
def mounted_tmpfs(mountpoint: Path, size: int) -> Iterator[Path]:
    """Mount a real tmpfs of ``size`` bytes at ``mountpoint``; skip without root."""
    with mounted("tmpfs", mountpoint, f"size={size},mode=0700") as path:
        yield path


@contextmanager
def mounted(fstype: str, mountpoint: Path, options: str) -> Iterator[Path]:
    """Mount a real ``fstype`` (tmpfs, ramfs) at ``mountpoint``; skip without root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a {fstype}")
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", fstype, "-o", options, fstype, str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {fstype} here: {result.stderr.strip()}")
    try:
        with warned_if_not_ram(mountpoint):  # a small RAM disk: warned about once, here
            ramdisk.warn_if_not_ram(mountpoint)
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def mapped_from(array: Any) -> object:
    """What an array's memory belongs to in the end: its chain of bases, through views."""
    while isinstance(array, (np.ndarray, memoryview)):
        array = array.obj if isinstance(array, memoryview) else array.base
    return array


def _open_fds() -> set[int]:
    fd_dir = Path("/proc/self/fd")
    return {int(name) for name in os.listdir(fd_dir)} if fd_dir.is_dir() else set()


@pytest.fixture
def no_leaks(root: Path) -> Iterator[None]:
    """Fail the test if it leaves threads, file descriptors or temporary files behind."""
    resource_tracker.ensure_running()  # multiprocessing keeps its pipe open for good
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    gc.collect()
    wait_for(lambda: set(threading.enumerate()) <= threads_before, 5.0, "threads to stop")
    for held in list(HELD):  # a live channel handle's state folders: no leak
        held.close()
    leaked_fds = _open_fds() - fds_before
    assert not leaked_fds, f"file descriptors leaked: {sorted(leaked_fds)}"
    leftovers = [p for p in root.rglob("*") if "/.ramxchg/tmp/" in str(p)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
