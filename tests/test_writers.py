"""Which processes write a file: /proc parsers on canned text, and real processes."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from ramxchg._delivery.writers import (
    FileKey,
    ProcFs,
    fdinfo_flags,
    find_writers,
    hides_processes,
    opened_for_writing,
    writable_mappings,
)

SPAWN = mp.get_context("spawn")
NOBODY = 65534

needs_proc = pytest.mark.skipif(not ProcFs().available(), reason="needs Linux /proc fdinfo")

FDINFO = "pos:\t0\nflags:\t0100002\nmnt_id:\t29\nino:\t1234\n"
MAPS = """\
5581c3a4e000-5581c3a50000 r--p 00000000 08:01 2097 /usr/bin/cat
7f1c0a000000-7f1c0a800000 rw-s 00000000 00:1a 4242 /dev/shm/a.npy
7f1c0b000000-7f1c0b800000 r--s 00000000 00:1a 4343 /dev/shm/b.npy
7f1c0c000000-7f1c0c800000 rw-p 00000000 00:1a 4444 /dev/shm/c.npy
7f1c0d000000-7f1c0d800000 rw-s 00000000 00:1b 4545 /other/d.npy (deleted)
7ffd5e1f2000-7ffd5e213000 rw-p 00000000 00:00 0 [stack]
"""


def _dev(major: int, minor: int) -> int:
    return os.makedev(major, minor)


def test_fdinfo_flags_and_access_mode() -> None:
    assert fdinfo_flags(FDINFO) == 0o100002
    assert opened_for_writing(os.O_RDWR | os.O_CREAT)
    assert opened_for_writing(os.O_WRONLY)
    assert not opened_for_writing(os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(ValueError, match="no flags"):
        fdinfo_flags("pos:\t0\n")


def test_writable_mappings_are_shared_and_writable_of_that_device_and_inode() -> None:
    keys = {(_dev(0, 0x1A), n) for n in (4242, 4343, 4444, 4545)} | {(_dev(0, 0x1B), 4545)}
    assert writable_mappings(MAPS, keys) == {(_dev(0, 0x1A), 4242), (_dev(0, 0x1B), 4545)}
    assert writable_mappings(MAPS, {(_dev(0, 0x1C), 4242)}) == set()  # another device
    assert writable_mappings("", keys) == set()


def test_hidepid_is_read_from_the_proc_mount() -> None:
    line = "22 1 0:21 / {} rw,nosuid shared:12 - proc proc rw{}\n"
    assert hides_processes(line.format("/proc", ",hidepid=invisible"))
    assert hides_processes(line.format("/proc", ",hidepid=2,gid=4"))
    assert not hides_processes(line.format("/proc", ",hidepid=0"))
    assert not hides_processes(line.format("/proc", ""))
    assert not hides_processes(line.format("/mnt/proc", ",hidepid=2"))


class _FakeProc(ProcFs):
    """Three processes: one writing (by descriptor), one exited, one another user's."""

    def __init__(self, key: FileKey) -> None:
        self.key = key

    def available(self) -> bool:
        return True

    def hides_processes(self) -> bool:
        return False

    def pids(self) -> list[int]:
        return [10, 11, 12]

    def fds(self, pid: int) -> list[str]:
        if pid == 11:
            raise FileNotFoundError(pid)
        if pid == 12:
            raise PermissionError(pid)
        return ["0", "3"]

    def fd_key(self, pid: int, fd: str) -> FileKey:
        return self.key if fd == "3" else (0, 1)

    def read(self, pid: int, name: str) -> str:
        return FDINFO if name == "fdinfo/3" else ""


def test_find_writers_through_the_seam() -> None:
    key = (_dev(0, 0x1A), 4242)
    scan = find_writers({key}, _FakeProc(key))
    assert scan.writing == {key}
    assert not scan.complete  # pid 12 could not be looked at
    assert find_writers(set(), _FakeProc(key)).complete


# -- real processes -------------------------------------------------------------------------


def _hold(path: str, how: str, ready: Connection, stop: Connection) -> None:
    """Open (and maybe map) ``path`` as ``how`` says, report, and wait until told."""
    flags = os.O_RDONLY if how in ("read", "map-read", "map-private") else os.O_RDWR
    fd = os.open(path, flags)
    mapping = None
    if how.startswith("map"):
        access = {"map-read": mmap.ACCESS_READ, "map-private": mmap.ACCESS_COPY}
        mapping = mmap.mmap(fd, 0, access=access.get(how, mmap.ACCESS_WRITE))
        os.close(fd)  # the mapping alone remains
    ready.send(os.getpid())
    stop.recv()
    if mapping is not None:
        mapping.close()
    elif fd is not None:
        os.close(fd)


@needs_proc
@pytest.mark.parametrize(
    ("how", "writing"),
    [
        ("read", False),
        ("write", True),
        ("map-read", False),
        ("map-private", False),
        ("map-write", True),
    ],
)
def test_find_writers_sees_real_processes(tmp_path: Path, how: str, writing: bool) -> None:
    path = tmp_path / "a.npy"
    path.write_bytes(b"x" * 4096)
    info = os.stat(path)
    key = (info.st_dev, info.st_ino)
    ready_recv, ready_send = SPAWN.Pipe(duplex=False)
    stop_recv, stop_send = SPAWN.Pipe(duplex=False)
    proc = SPAWN.Process(target=_hold, args=(str(path), how, ready_send, stop_recv))
    proc.start()
    try:
        assert ready_recv.poll(60)
        ready_recv.recv()
        assert (key in find_writers({key}).writing) is writing
    finally:
        stop_send.send(None)
        proc.join(30)
    assert find_writers({key}).writing == frozenset()


def _scan_as_nobody(key: FileKey, out: Connection) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    out.send(find_writers({key}).complete)


@needs_proc
@pytest.mark.root
def test_another_users_processes_make_the_answer_incomplete(tmp_path: Path) -> None:
    # 'fork': uid 65534 cannot run this interpreter (it lives under /root).
    fork = mp.get_context("fork")
    info = os.stat(tmp_path)
    receive, send = fork.Pipe(duplex=False)
    proc = fork.Process(target=_scan_as_nobody, args=((info.st_dev, info.st_ino), send))
    proc.start()
    assert receive.poll(60)
    assert receive.recv() is False  # root's processes (this one) are hidden from nobody
    proc.join(30)
