"""Locks on open files: how producers, readers and collectors tell who is alive.

Protocol 1.1 (docs/protocol.md, section 11) uses BSD ``flock`` locks. One belongs to
the open file description, not to a pid: the kernel drops it when the last descriptor
of that description closes (a mapping made from it holds a descriptor too, in Python),
so it dies with its holder in every pid namespace, and no pid can be reused to fake it.

On Windows, ``msvcrt`` byte-range locks of the first byte stand in for exclusive locks.
Shared locks are not taken there: Windows refuses to rename or delete a file that is
open or mapped, so a file a reader maps never reaches the pool of recycled files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from .._errors import CorruptItem

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def try_lock(fd: int, *, shared: bool = False) -> bool:
        """Take a lock on the open file ``fd`` if no one holds a conflicting one.

        ``shared``: a reader's lock, which readers hold together; else exclusive.
        Returns False, holding nothing, when the lock is taken.
        """
        if shared:
            return True
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def lock_file(fd: int) -> None:
        """Take the exclusive lock on the open file ``fd``, waiting for it if need be."""
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)

    def unlock(fd: int) -> None:
        """Drop our lock on ``fd`` now, whatever other descriptors of it still exist."""
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):  # held none (a shared lock is not taken)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(fd: int, *, shared: bool = False) -> bool:
        """Take a lock on the open file ``fd`` if no one holds a conflicting one.

        ``shared``: a reader's lock, which readers hold together; else exclusive.
        Returns False, holding nothing, when the lock is taken.
        """
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def lock_file(fd: int) -> None:
        """Take the exclusive lock on the open file ``fd``, waiting for it if need be.

        It belongs to the open file description: the kernel drops it when the last
        descriptor of it closes, so it dies with its holder, in every pid namespace.
        """
        fcntl.flock(fd, fcntl.LOCK_EX)

    def unlock(fd: int) -> None:
        """Drop our lock on ``fd`` now, whatever other descriptors of it still exist."""
        fcntl.flock(fd, fcntl.LOCK_UN)


#: Added to every open of a lock file: no link followed, and a FIFO planted in its place
#: does not block.
NOFOLLOW_NONBLOCK = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
)
#: How a lock file is opened: created if missing, never through a link.
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | NOFOLLOW_NONBLOCK


def open_plain(open_file: Callable[[], int], path: str | Path) -> int:
    """``open_file()``, which opens ``path`` with ``O_NOFOLLOW``, refusing anything but a
    plain file of one name as `CorruptItem` naming it: a symbolic link (ELOOP), a FIFO
    (it would block), and a hard link (its data may be a file outside the channel, and
    the counter is written in place)."""
    try:
        fd = open_file()
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise CorruptItem(f"{path} is a symbolic link; refusing to use it", path=path) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_nlink > 1:
        problem = f"has {info.st_nlink} names (hard links)"
    else:
        return fd
    os.close(fd)
    raise CorruptItem(f"{path} {problem}; refusing to use it", path=path)


class FileLock:
    """Hold an exclusive lock on ``path`` (created if missing); ``with`` yields its descriptor.

    One ``with`` at a time per object. A class, not a generator-based context manager:
    it runs for every published item. ``dir_fd``: the file is the one named like
    ``path``'s last part in that open folder (see `ramxchg._store.safedir`). ``wait``:
    False to raise `BlockingIOError` at once when the lock is held, also by this very
    process on another descriptor (a lock belongs to the open file, so a thread that
    holds it and waits for it again waits for itself, forever).
    """

    def __init__(self, path: str | Path, dir_fd: int | None = None, *, wait: bool = True) -> None:
        self.path = path
        self._dir_fd = dir_fd
        self._wait = wait
        self._fd = -1

    def __enter__(self) -> int:
        fd = open_plain(self._open, self.path)
        try:
            if self._wait:
                lock_file(fd)
            elif not try_lock(fd):
                raise BlockingIOError(errno.EWOULDBLOCK, "the lock is held", os.fspath(self.path))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, -1
        try:
            unlock(fd)
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The lock file, opened (created if missing) for reading and writing."""
        name = self.path if self._dir_fd is None else os.path.basename(self.path)
        return os.open(name, LOCK_FLAGS, 0o666, dir_fd=self._dir_fd)
