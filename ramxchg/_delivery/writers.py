"""Which files some process still writes: open for writing, or mapped writable (Linux).

A legacy writer can keep writing after the close event that seemed to end its work
(``np.lib.format.open_memmap`` closes the file, then writes through a mapping) or
pause longer than any settle interval while it holds the file open (an h5py writer
that flushes and thinks). The kernel knows: this module reads it from ``/proc``, as
``fuser`` and ``lsof`` do.

- ``/proc/<pid>/fd/<fd>`` links whose target is the file (compared by ``st_dev`` and
  ``st_ino`` of the link's target, never by path), with ``O_WRONLY`` or ``O_RDWR`` in
  the ``flags:`` line of ``/proc/<pid>/fdinfo/<fd>``;
- ``/proc/<pid>/maps`` lines of the file's ``dev:inode`` with ``w`` and ``s`` (shared,
  writable) permissions: a mapping outlives the descriptor it was made from.

What it cannot see makes the answer incomplete (`WriterScan.complete` False), and the
caller must then not trust a close event alone (see _delivery/foreign.py):

- processes of other users when we are not root (their ``fd`` and ``maps`` are not
  readable), and all of them when ``/proc`` is mounted with ``hidepid``;
- no ``/proc`` at all (other systems).

It cannot know about, and does not report: processes in other PID namespaces
(containers sharing the disk), writers on other machines (network filesystems), a
mapping made read-only with ``mprotect`` that may be made writable again, and a
process that receives the file's descriptor from another one between two reads.

Parsers are pure functions of ``/proc`` text; `ProcFs` is the one OS seam.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

#: A file's identity: (st_dev, st_ino).
FileKey = tuple[int, int]


@dataclass(frozen=True)
class WriterScan:
    """What one look at every process found."""

    #: the asked-about files some visible process writes or maps writable
    writing: frozenset[FileKey]
    #: True when every process was looked at, and none was hidden from us
    complete: bool


def fdinfo_flags(text: str) -> int:
    """The open flags in a ``/proc/<pid>/fdinfo/<fd>`` text (octal ``flags:`` line)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "flags":
            return int(value.strip(), 8)
    raise ValueError(f"no flags: line in fdinfo text {text[:80]!r}")


def opened_for_writing(flags: int) -> bool:
    """True for a descriptor opened ``O_WRONLY`` or ``O_RDWR``."""
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def writable_mappings(maps: str, keys: set[FileKey]) -> set[FileKey]:
    """The ``keys`` mapped shared and writable in a ``/proc/<pid>/maps`` text.

    A line reads ``start-end perms offset major:minor inode path``; the device numbers
    are hex, the inode decimal.
    """
    inodes = {str(inode) for _, inode in keys}
    found: set[FileKey] = set()
    if not any(f" {inode} " in maps for inode in inodes):
        return found  # the common case, decided without splitting every line
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or fields[4] not in inodes:
            continue
        perms = fields[1]
        if perms[1:2] != "w" or perms[3:4] != "s":
            continue
        major, _, minor = fields[3].partition(":")
        key = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]))
        if key in keys:
            found.add(key)
    return found


def hides_processes(mountinfo: str) -> bool:
    """True when ``/proc`` is mounted with ``hidepid`` (other users' pids not listed)."""
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        if len(fields) < 5 or fields[4] != "/proc" or not post.startswith("proc "):
            continue
        options = post.split()[-1].split(",")
        # hidepid=0 / hidepid=off hide nothing; 1/2/noaccess/invisible/ptraceable do.
        return any(o.startswith("hidepid=") and o[8:] not in ("0", "off") for o in options)
    return False


class ProcFs:
    """The OS seam: reads under ``/proc``. Errors are the OSErrors the reads raise."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def available(self) -> bool:
        return os.path.isdir(f"{self.root}/self/fdinfo")

    def hides_processes(self) -> bool:
        if os.geteuid() == 0:
            return False  # root sees every pid whatever hidepid says
        with open(f"{self.root}/self/mountinfo") as f:
            return hides_processes(f.read())

    def pids(self) -> list[int]:
        return [int(name) for name in os.listdir(self.root) if name.isdigit()]

    def fds(self, pid: int) -> list[str]:
        return os.listdir(f"{self.root}/{pid}/fd")

    def fd_key(self, pid: int, fd: str) -> FileKey:
        info = os.stat(f"{self.root}/{pid}/fd/{fd}")  # follows the link to the open file
        return info.st_dev, info.st_ino

    def read(self, pid: int, name: str) -> str:
        with open(f"{self.root}/{pid}/{name}") as f:
            return f.read()


def find_writers(keys: Iterable[FileKey], proc: ProcFs | None = None) -> WriterScan:
    """Which of the files ``keys`` some process holds open for writing or maps writable."""
    wanted = set(keys)
    proc = proc or ProcFs()
    if not wanted or not proc.available():
        return WriterScan(frozenset(), complete=not wanted)
    complete = not proc.hides_processes()
    writing: set[FileKey] = set()
    for pid in proc.pids():
        try:
            writing |= _writes(proc, pid, wanted - writing)
        except FileNotFoundError:
            continue  # the process exited while we looked
        except OSError:  # another user's process (EACCES), a stale mount (ESTALE)...
            complete = False  # we cannot tell what it does
        if writing == wanted:
            return WriterScan(frozenset(writing), complete=False)  # the rest need no look
    return WriterScan(frozenset(writing), complete)


def _writes(proc: ProcFs, pid: int, keys: set[FileKey]) -> set[FileKey]:
    """The ``keys`` process ``pid`` writes (descriptors first, then its mappings)."""
    found: set[FileKey] = set()
    for fd in proc.fds(pid):
        try:
            key = proc.fd_key(pid, fd)
            if key in keys and opened_for_writing(fdinfo_flags(proc.read(pid, f"fdinfo/{fd}"))):
                found.add(key)
        except FileNotFoundError:
            continue  # closed meanwhile
    return found | writable_mappings(proc.read(pid, "maps"), keys - found)
