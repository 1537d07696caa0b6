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
import os
import sys

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

    def unlock(fd: int) -> None:
        """Drop our lock on ``fd`` now, whatever other descriptors of it still exist."""
        fcntl.flock(fd, fcntl.LOCK_UN)
