"""A file's pages allocated in one system call, or nothing where the filesystem cannot.

On Linux ``fallocate(2)`` itself, not ``os.posix_fallocate``: where the filesystem has
none, glibc's falls back to writing a byte into every 4 KiB block (a ``pread`` and a
``pwrite`` per page). On ramfs that made a new 512 MB file take 0.6-1.5 s to map instead
of 0.37 s, for pages that the populate which follows allocates anyway. The C library is
looked up on first use, not at import. Elsewhere ``os.posix_fallocate`` where Python has
it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from functools import cache
from typing import Any

from .base import libc

#: What a filesystem without fallocate (or a C library without it) says.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def fallocate(fd: int, size: int) -> bool:
    """Allocate the pages of the first ``size`` bytes of the open file ``fd``.

    Returns False, having done nothing, where the filesystem or the C library has no
    fallocate. Raises OSError: ENOSPC when the disk is full (tmpfs gives back what the
    call allocated; ramxchg then removes the file).
    """
    if size <= 0:
        return False
    call = _libc_fallocate() if sys.platform.startswith("linux") else None
    if call is None:
        return _posix_fallocate(fd, size)
    while call(fd, 0, 0, size) != 0:
        err = ctypes.get_errno()
        if err in _UNSUPPORTED:
            return False
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))
    return True


def _posix_fallocate(fd: int, size: int) -> bool:
    if not hasattr(os, "posix_fallocate"):
        return False
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        return False
    return True


@cache
def _libc_fallocate() -> Any:
    """The C library's ``fallocate`` with 64-bit offsets, or None."""
    found = libc()
    call = (
        None
        if found is None
        else getattr(found, "fallocate64", None) or getattr(found, "fallocate", None)
    )
    if call is not None:
        call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        call.restype = ctypes.c_int
    return call
