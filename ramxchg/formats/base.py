"""The interface every item file format implements (.npy, HDF5)."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import mmap
import os
import stat
import sys
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._errors import CorruptItem, ItemNotFound, UnsupportedDtype
from ..disks.fallocate import fallocate
from .locks import try_lock

if TYPE_CHECKING:
    from .kept import KeptMappings

log = logging.getLogger(__name__)

#: name -> (shape, dtype): what ``create`` allocates.
Layout = Mapping[str, "tuple[tuple[int, ...], np.dtype[Any]]"]

#: A reader retries its shared lock this long, pausing `READ_LOCK_PAUSE` between tries:
#: a producer holds its exclusive lock on a file only until just after publishing it.
READ_LOCK_SECONDS = 1.0
READ_LOCK_PAUSE = 0.001
#: How long a reader opens a name again while it is replaced under it (`open_locked`).
REPLACED_RETRY_SECONDS = 5.0


@dataclass
class WriteTarget:
    """An open file to write a new item into (a producer's locked temporary file)."""

    #: open for reading and writing; its owner closes it
    fd: int
    #: where the file is, for messages
    path: str
    #: bytes it holds: 0 when new, an older item's size when recycled (see _store/pool.py)
    size: int = 0
    #: a recycled file of ours: all ``size`` bytes mapped writable, every page in place
    #: (see _store/slots.py); writing into it is a memcpy. Its producer keeps the mapping;
    #: this export of it keeps it mapped for as long as the target uses it.
    mapping: memoryview | None = None


@dataclass
class OpenedFile:
    """The arrays of one item file, mapped (or read) and ready to hand out."""

    arrays: dict[str, np.ndarray]
    zero_copy: dict[str, bool]
    attrs: dict[str, Any] = field(default_factory=dict)
    dataset_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    release: Callable[[], None] = lambda: None


@dataclass
class Allocation:
    """Writable arrays that are the data regions of a freshly sized file."""

    arrays: dict[str, np.ndarray]
    release: Callable[[], None]


class Format(ABC):
    """One on-disk format: how to write, allocate, describe and map item files."""

    #: short name used in the API and the sidecar ("npy", "hdf5")
    name: str
    #: file suffix of published items (".npy", ".h5")
    suffix: str
    #: True when ``write``/``allocate`` overwrite a file already at the path in place
    #: (keeping its pages) when it has the right size: recycled files (see _store/pool.py)
    recyclable: bool = False
    #: True when the file itself carries attributes (HDF5), which `Item.attrs` merges in
    file_attrs: bool = False

    @abstractmethod
    def write(
        self, target: WriteTarget, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None
    ) -> None:
        """Write ``arrays`` into ``target`` (a temporary file: new, or recycled if
        `recyclable`)."""

    @abstractmethod
    def allocate(
        self, target: WriteTarget, layout: Layout, attrs: Mapping[str, Any] | None
    ) -> Allocation:
        """Size ``target`` for ``layout`` and map each array's data region writable.

        The arrays hold whatever the file held: zeros when new, an older item's bytes
        when recycled.
        """

    @abstractmethod
    def open(
        self, path: str | Path, *, copy_on_write: bool = False, kept: KeptMappings | None = None
    ) -> OpenedFile:
        """Map the arrays of a published file read-only (or copy-on-write), holding the
        reader lock (`open_locked`) for as long as the arrays live.

        ``kept``: a consumer's kept mappings (kept.py), to read a recycled file through
        the mapping it made of that file before, where the format can.

        Raises `CorruptItem` naming the file when it is malformed.
        """

    def describe(
        self, path: str | Path, *, locked: bool = False
    ) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """Shape and dtype of each array, from the file's metadata only. ``locked``: read
        it under the reader lock (`open_locked`), as a published item must be: a file
        being emptied and removed (or recycled) is then `ItemNotFound`, not misread."""
        fd, size = open_locked(path) if locked else open_regular(path)
        try:
            return self.describe_open(fd, size, path)
        finally:
            os.close(fd)

    @abstractmethod
    def describe_open(
        self, fd: int, size: int, path: str | Path
    ) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """`describe` of the open file ``fd`` of ``size`` bytes (``path`` names it in
        messages): a producer checks what it wrote through its own descriptor, not by a
        path, which may lead to another file by then."""

    @abstractmethod
    def nbytes_for(self, layout: Layout) -> int:
        """Bytes a file holding ``layout`` will take (for free-space checks)."""


def check_dtype(dtype: np.dtype[Any], what: str) -> np.dtype[Any]:
    """Refuse dtypes that would need pickling (objects, also nested in structures)."""
    if dtype.hasobject:
        raise UnsupportedDtype(
            f"{what} has dtype {dtype} which holds Python objects; ramxchg never pickles. "
            "Convert to a numeric, bool, string or structured dtype.",
            dtype=str(dtype),
        )
    return dtype


def nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    """Bytes of array data for ``shape`` and ``dtype`` (exact: Python integers)."""
    return math.prod(shape) * np.dtype(dtype).itemsize


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (os.pwrite may write less: Linux caps one call
    near 2 GiB)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def write_whole(target: WriteTarget, data: memoryview) -> None:
    """Write ``data`` from the start of ``target``, overwriting a recycled file in place.

    A recycled file the producer keeps mapped (``target.mapping``: lent only when the
    file is as long as ``data``) gets one memcpy; a new file is sized first: a
    huge=within_size tmpfs then backs it with huge pages.
    """
    if target.mapping is not None:
        target.mapping[:] = data
        return
    if target.size != data.nbytes:
        os.ftruncate(target.fd, data.nbytes)
    pwrite_all(target.fd, data, 0)


def open_regular(path: str | Path, *, writable: bool = False) -> tuple[int, int]:
    """Open ``path`` without following a symlink or blocking on a FIFO: (fd, size).

    The size comes from the same ``fstat`` that checks the file's type.

    Raises `CorruptItem` for anything but a regular file (FIFO, socket, folder, link),
    `ItemNotFound` when the file is gone (deleted or retired after it was listed).
    """
    fd, info = _open_regular(path, writable=writable)
    return fd, info.st_size


def _open_regular(path: str | Path, *, writable: bool = False) -> tuple[int, os.stat_result]:
    """`open_regular`, with the file's whole ``fstat`` (a reader locking it needs its inode)."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        name = Path(path).stem
        raise ItemNotFound(
            f"{path} is gone (deleted since it was listed)", path=path, name=name
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
            raise CorruptItem(f"{path} is not a regular file ({exc.strerror})", path=path) from exc
        raise
    info = os.fstat(fd)
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise CorruptItem(f"{path} is not a regular file (mode {kind:o})", path=path)
    return fd, info


def open_locked(path: str | Path) -> tuple[int, int]:
    """`open_regular`, holding the reader lock (protocol 1.1, rule 2): (fd, size).

    See `open_locked_stat`.
    """
    fd, info = open_locked_stat(path)
    return fd, info.st_size


def open_locked_stat(path: str | Path) -> tuple[int, os.stat_result]:
    """`open_regular`, holding the reader lock (protocol 1.1, rule 2): (fd, its fstat
    taken under the lock).

    A shared ``flock``, taken before mapping. It belongs to the descriptor, which a
    mapping duplicates, so it lives as long as the mapping and any array over it, after
    the descriptor is closed and the item deleted: a producer recycles only a file that
    no one holds this way (see _store/pool.py). Once locked, the name must still be that file:
    one deleted between the open and the lock may have been recycled by then, and is
    `ItemNotFound` (deleted while it was being opened).
    """
    # The name replaced by a new file meanwhile (put replace=True): open it again, for as
    # long as the name is there. A loaded machine can preempt us between the open and the
    # lock several times in a row; only a name that stays replaced faster than we can open
    # it for REPLACED_RETRY_SECONDS counts as missing.
    deadline = time.monotonic() + REPLACED_RETRY_SECONDS
    while True:
        fd, info = _open_regular(path)
        try:
            if _lock_shared(fd, path, info):
                return fd, os.fstat(fd)  # its size now that no one may change it
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not os.path.lexists(path) or time.monotonic() >= deadline:
            break
    name = Path(path).stem
    raise ItemNotFound(f"{path} was deleted while it was being opened", path=path, name=name)


def _lock_shared(fd: int, path: str | Path, info: os.stat_result) -> bool:
    """Take the shared lock on ``fd`` (the file ``info`` describes); False if ``path``
    no longer names that file. A producer holds its exclusive lock only until just after
    publishing: past `READ_LOCK_SECONDS`, the file is read without the lock (logged).
    """
    deadline = time.monotonic() + READ_LOCK_SECONDS
    while not try_lock(fd, shared=True):
        if not still_named(path, info):
            return False  # deleted, and being written over by a producer now
        if time.monotonic() >= deadline:
            log.warning(
                "%s: another process has held an exclusive lock on it for %s s; reading it "
                "without the reader lock (a producer may recycle the file under this reader)",
                path,
                READ_LOCK_SECONDS,
            )
            break
        time.sleep(READ_LOCK_PAUSE)
    return still_named(path, info)


def lstat_or_none(path: str | Path) -> os.stat_result | None:
    """``os.lstat(path)`` (a link is not followed); None if nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def still_named(path: str | Path, info: os.stat_result) -> bool:
    """Is ``path`` (not following a link) the file ``info`` describes?"""
    return same_file(info, lstat_or_none(path))


def same_file(info: os.stat_result, other: os.stat_result | None) -> bool:
    """Do two stats describe one file (``other`` None: nothing was there)?"""
    return other is not None and (other.st_ino, other.st_dev) == (info.st_ino, info.st_dev)


def same_incarnation(kept: os.stat_result, taken: os.stat_result) -> bool:
    """Are these, read a moment apart, the same inode, not just the same number?

    A kept descriptor pins its inode, so its number is not given to another file, except
    when a 32-bit inode counter wraps (tmpfs ``inode32``, ramfs): then another file may
    carry it, and must not be read or written through this file's mapping. Its times
    tell them apart (nanoseconds, set when each was last renamed or written).
    """
    return (kept.st_ctime_ns, kept.st_mtime_ns, kept.st_size) == (
        taken.st_ctime_ns,
        taken.st_mtime_ns,
        taken.st_size,
    )


_HUGE_PAGE = 2 << 20
#: Read-only mappings at least this large are populated when made (`map_fd`).
POPULATE_BYTES = 4 << 20
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def map_fd(fd: int, size: int, *, writable: bool = False, copy_on_write: bool = False) -> mmap.mmap:
    """Map the first ``size`` bytes of ``fd``; size 0 gives an anonymous 1-byte map."""
    if size == 0:
        return mmap.mmap(-1, 1)
    if copy_on_write:
        access = mmap.ACCESS_COPY
    else:
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        if not writable and size >= POPULATE_BYTES and _MAP_POPULATE:
            # All page-table entries in one call instead of a fault per 16 pages
            # (fault-around): ~1.6x faster to read 64 MB; slower below a few MB.
            flags = mmap.MAP_SHARED | _MAP_POPULATE
            return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
    return mmap.mmap(fd, size, access=access)


#: madvise(MADV_POPULATE_WRITE), Linux 5.14+: allocate and map every page in one call.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def map_reserved(fd: int, size: int, *, new: bool = False) -> mmap.mmap:
    """Map ``size`` bytes of ``fd`` writable with every page allocated up front.

    Writing through a mapping into a full tmpfs would kill the process with SIGBUS, so
    the pages are allocated now and a full disk fails here with ENOSPC instead.
    ``MADV_POPULATE_WRITE`` does it in one pass (~1.3x faster than ``fallocate`` and
    then faulting every page); older kernels fall back to ``fallocate``.

    ``new``: the file's pages are not there yet (a file just sized). ``fallocate``
    allocates them first and the populate only maps them: 10-20 % faster than the
    populate alone (``benchmarks/bench_newfile.py``). A recycled file's pages are all
    there, and a ``fallocate`` would only walk them (~23 ms for 512 MB). The system call
    itself, not ``posix_fallocate``, whose emulation on ramfs writes every page (see
    `ramxchg.disks.fallocate`).
    """
    linux = sys.platform.startswith("linux")
    allocated = (new or not linux) and fallocate(fd, size)
    mapping = map_fd(fd, size, writable=True)
    if size == 0 or not linux:
        return mapping
    if size >= _HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        # Huge pages for a new file on a tmpfs mounted huge=advise (no effect elsewhere).
        # Advice only: a kernel without transparent huge pages refuses it (EINVAL).
        with contextlib.suppress(OSError):
            mapping.madvise(mmap.MADV_HUGEPAGE)
    try:
        mapping.madvise(_MADV_POPULATE_WRITE)
    except OSError as exc:
        if exc.errno == errno.EFAULT:  # a page could not be allocated: the disk is full
            mapping.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
        if exc.errno != errno.EINVAL:  # EINVAL: kernel without it
            mapping.close()
            raise
        if not allocated:
            fallocate(fd, size)
    return mapping


def array_over(
    mapping: mmap.mmap | memoryview,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    offset: int,
    order: Literal["C", "F"] = "C",
    *,
    lock_fd: int | None = None,
) -> np.ndarray:
    """``np.ndarray(shape, dtype, buffer=mapping, offset=offset, order=order)``, except
    that the array keeps the bytes mapped for as long as it (or any view of it) lives,
    and with ``lock_fd``, keeps that descriptor (a reader's lock) open as long, too.

    numpy releases the buffer of the object it is given at once (and
    ``np.ndarray(buffer=memoryview)`` keeps only the view's underlying object), so
    ``mapping.close()`` would unmap the pages under such an array (SIGSEGV on its next
    read). ``np.frombuffer`` of a memoryview keeps an export of the mmap in a memoryview
    of its own. So, like ``np.load(mmap_mode="r")``, the mapping lives until the last
    array over it is gone, and ``close()`` raises BufferError until then.

    That uint8 array (``pinned``) is the base of the array returned and of every view of
    it: numpy collapses a view's base through arrays down to the last one before a
    non-array (the memoryview). So ``pinned`` is freed exactly with the last array over
    this opening, and closing ``lock_fd`` then drops the lock with it, however long the
    mapping itself lives on (a consumer's kept mapping: kept.py).
    """
    pinned = np.frombuffer(memoryview(mapping), np.uint8)
    array = np.ndarray(shape, dtype, buffer=pinned, offset=offset, order=order)
    if lock_fd is not None:
        weakref.finalize(pinned, os.close, lock_fd)
    return array


def closer(mapping: mmap.mmap) -> Callable[[], None]:
    """A release function that unmaps now if no array still uses the mapping.

    If the caller still holds an array (made by `array_over`), the mapping stays until
    the last such array is freed.
    """

    def release() -> None:
        # While arrays still hold an export, the mapping is freed with the last of them.
        with contextlib.suppress(BufferError):
            mapping.close()

    return release
