"""The small state files of a channel (config, sidecars, groups, claims): safe reads,
positioned reads, and files written once by whichever process comes first."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from .._errors import CorruptItem
from ..disks.files import link_unnamed, name_in, raise_if_full, write_hidden, write_unnamed

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
#: The first read asks for this much: asking for the whole limit (1 MiB for sidecars)
#: makes Python allocate, and glibc mmap, a buffer that size for every ~100-byte file.
_FIRST_READ = 1 << 16


def read_state(
    path: str | Path, limit: int, what: str, *, dir_fd: int | None = None
) -> bytes | None:
    """The bytes of a small state file; None if it does not exist.

    Never follows a symlink and never blocks on a FIFO (a channel may hold an outsider's
    files). Raises `CorruptItem` naming ``what`` and the file when it cannot be opened,
    is not a regular file or holds more than ``limit`` bytes. With ``dir_fd`` (an open
    folder, see `ramxchg._store.safedir`), the file is the one of that name in that folder.
    """
    try:
        fd = os.open(path if dir_fd is None else os.path.basename(path), _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptItem(f"{what} {path} cannot be opened: {exc.strerror}", path=path) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would read as empty
            raise CorruptItem(f"{what} {path} is not a regular file", path=path)
        raw = os.read(fd, min(limit + 1, _FIRST_READ))
        while _FIRST_READ <= len(raw) <= limit:  # a large file: read on, to past the limit
            more = os.read(fd, limit + 1 - len(raw))
            if not more:
                break
            raw += more
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise CorruptItem(f"{what} {path} is over {limit} bytes", path=path, limit_bytes=limit)
    return raw


def create_once(path: str | Path, data: bytes, *, dir_fd: int | None = None) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call created it.

    The data goes into a hidden temporary file beside ``path`` first and is then
    hard-linked into place: readers never see a partial file, and when several
    processes race exactly one wins (``link`` fails on an existing name). Nothing is
    left behind when it fails; a full disk raises `RamDiskFull`. With ``dir_fd``, the
    file is ``path``'s last part in that open folder (which then is never reached
    through a link); errors name ``path``.
    """
    return _create(path, data, None, dir_fd) is not None


def create_held(
    path: str | Path, data: bytes, hold: Callable[[int], object], *, dir_fd: int | None = None
) -> int | None:
    """`create_once`, keeping the new file open: ``hold(fd)`` runs on its descriptor (to
    take a lock, say) before the file appears under ``path``.

    Returns the descriptor, which the caller closes; None if ``path`` existed.
    """
    return _create(path, data, hold, dir_fd)


def _create(
    path: str | Path, data: bytes, hold: Callable[[int], object] | None, dir_fd: int | None
) -> int | None:
    """`create_once` and `create_held`: the descriptor kept (-1 without ``hold``), or None.

    In a folder given by ``dir_fd``, the file is made without a name where the system
    can (`write_unnamed`); else under a hidden name, which is removed after the link.
    """
    fd = None if dir_fd is None else write_unnamed(os.fspath(path), data, dir_fd=dir_fd)
    tmp = None
    if fd is None:
        tmp, fd = write_hidden(path, data, keep=True, dir_fd=dir_fd)
    try:
        if hold is not None:
            hold(fd)
        if tmp is not None:
            os.link(
                name_in(tmp, dir_fd), name_in(path, dir_fd), src_dir_fd=dir_fd, dst_dir_fd=dir_fd
            )
        else:
            link_unnamed(fd, os.fspath(path), dir_fd=dir_fd)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, FileExistsError):
            return None
        raise_if_full(exc, path, len(data), dir_fd)
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name_in(tmp, dir_fd), dir_fd=dir_fd)
    if hold is None:
        os.close(fd)
        return -1
    return fd
