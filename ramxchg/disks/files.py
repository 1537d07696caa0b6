"""Whole small files written atomically, the one way every layer does it: a hidden
temporary file beside the target (same folder, same filesystem), then one ``rename``
or ``link``; or, for a file created once where Linux allows it, a file without a name
in that folder, linked in. Also positioned reads."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
from pathlib import Path

from .._errors import RamDiskFull
from .units import format_size

# O_EXCL and no link followed: never writes through a name planted in a shared folder
_CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def replace_whole(path: str | Path, data: bytes, *, dir_fd: int | None = None) -> None:
    """Set ``path`` to ``data`` in one ``rename``: readers see the old file or the new one.

    The temporary file is beside ``path``: the same filesystem, so the rename is atomic.
    Nothing is left behind when it fails; a full disk raises `RamDiskFull`. With
    ``dir_fd`` (an open folder), the file is the one of ``path``'s last part in that
    folder (`name_in`): so in every function here, whose errors name ``path``.
    """
    tmp, _ = write_hidden(path, data, dir_fd=dir_fd)
    try:
        os.replace(
            name_in(tmp, dir_fd), name_in(path, dir_fd), src_dir_fd=dir_fd, dst_dir_fd=dir_fd
        )
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name_in(tmp, dir_fd), dir_fd=dir_fd)
        name_fully(exc, path, dir_fd)
        raise


def name_in(path: str | Path, dir_fd: int | None) -> str:
    """What a call given ``dir_fd`` takes for ``path``: its last part (the name in that
    folder, never a path through links), or ``path`` itself without a ``dir_fd``."""
    return os.path.basename(path) if dir_fd is not None else os.fspath(path)


def name_fully(exc: BaseException, path: str | Path, dir_fd: int | None) -> None:
    """Make an OSError of a call given ``dir_fd`` name its files by their full paths in
    ``path``'s folder, not by the bare names the call took."""
    if dir_fd is None or not isinstance(exc, OSError):
        return
    folder = os.path.dirname(path)
    if isinstance(exc.filename, str) and os.sep not in exc.filename:  # named once only
        exc.filename = os.path.join(folder, exc.filename)
    if isinstance(exc.filename2, str) and os.sep not in exc.filename2:
        exc.filename2 = os.path.join(folder, exc.filename2)


def write_hidden(
    path: str | Path, data: bytes, *, keep: bool = False, dir_fd: int | None = None
) -> tuple[str, int]:
    """A new hidden file beside ``path`` (in the folder ``dir_fd``, if given) holding
    ``data``: its path, and its descriptor if ``keep`` (else -1)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        fd = os.open(name_in(tmp, dir_fd), _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        raise_if_full(exc, path, len(data), dir_fd)
        raise
    try:
        _write_all(fd, data)
        if not keep:
            closing, fd = fd, -1  # not closed twice: close frees it even when it fails
            os.close(closing)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name_in(tmp, dir_fd), dir_fd=dir_fd)
        raise_if_full(exc, path, len(data), dir_fd)
        raise
    return tmp, fd


#: A file made without a name (Linux's O_TMPFILE), linked in through its /proc entry.
_UNNAMED_FLAGS = getattr(os, "O_TMPFILE", 0) | os.O_WRONLY
#: Where a process's descriptors have names that linkat can follow.
_PROC_FDS = "/proc/self/fd"
#: What opening an unnamed file fails with where the kernel or filesystem has none.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def write_unnamed(path: str, data: bytes, *, dir_fd: int) -> int | None:
    """A new file without a name in the folder ``dir_fd`` holding ``data``, to be named
    ``path``'s last part by `link_unnamed`: its descriptor. None where the system cannot make one
    (not Linux, no /proc, a filesystem without O_TMPFILE): use `write_hidden`.

    No one sees it before it is linked, and it vanishes with its last descriptor: a
    process that dies on the way leaves nothing behind.
    """
    if not _can_link_unnamed():
        return None
    fd = -1
    try:
        fd = os.open(".", _UNNAMED_FLAGS, 0o666, dir_fd=dir_fd)
        _write_all(fd, data)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        elif isinstance(exc, OSError) and exc.errno in _NO_UNNAMED:
            return None
        raise_if_full(exc, path, len(data), dir_fd)
        raise
    return fd


@functools.cache
def _can_link_unnamed() -> bool:
    """Has the system O_TMPFILE, and a /proc to link such files in by (asked once)?"""
    return _UNNAMED_FLAGS != os.O_WRONLY and os.path.isdir(_PROC_FDS)


def link_unnamed(fd: int, path: str, *, dir_fd: int | None) -> None:
    """Name the file of `write_unnamed` ``path`` in the folder ``dir_fd`` it was made in:
    one ``linkat``, which fails (FileExistsError) if the name is taken."""
    # linkat with AT_SYMLINK_FOLLOW (a dir_fd makes Python call it: a plain link() would
    # try to link the /proc entry itself, EXDEV)
    try:
        os.link(f"{_PROC_FDS}/{fd}", name_in(path, dir_fd), dst_dir_fd=dir_fd, follow_symlinks=True)
    except OSError as exc:
        name_fully(exc, path, dir_fd)
        raise


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):  # a nearly full disk may take part of it, then fail
        written += os.write(fd, data[written:])


def raise_if_full(
    exc: BaseException, path: str | Path, needed: int, dir_fd: int | None = None
) -> None:
    """Raise `RamDiskFull` from ``exc`` if it is an ENOSPC/EDQUOT writing ``path`` (its
    last part in the folder ``dir_fd``, if given); else return, for the caller to raise
    ``exc``, which names ``path``'s folder (`name_fully`)."""
    name_fully(exc, path, dir_fd)
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    folder = os.path.dirname(path) or "its folder"
    if dir_fd is not None:  # measured through the folder's descriptor
        usage = os.statvfs(dir_fd)
        free = usage.f_bavail * usage.f_frsize
    else:
        free = shutil.disk_usage(folder).free
    raise RamDiskFull(
        f"{folder} is full: no room for {os.path.basename(path)} ({format_size(needed)}, "
        f"{format_size(free)} free); free some room (consume or delete items, `ramxchg gc`)",
        path=path,
        needed_bytes=needed,
        free_bytes=free,
    ) from exc


def read_at(fd: int, count: int, offset: int = 0) -> bytes:
    """Up to ``count`` bytes at ``offset``, with ``pread`` where the OS has it."""
    if hasattr(os, "pread"):
        return os.pread(fd, count, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows has no pread
    return os.read(fd, count)  # pragma: no cover
