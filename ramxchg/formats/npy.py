""".npy items: numpy's own file format, written and mapped without ``np.save``/``np.load``.

We parse the header ourselves so that every malformed file becomes a `CorruptItem`
naming the file and the numbers, and so that nothing is ever unpickled.
"""

from __future__ import annotations

import ast
import os
import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import CorruptItem
from ..disks.files import read_at
from .base import (
    Allocation,
    Format,
    Layout,
    OpenedFile,
    WriteTarget,
    array_over,
    closer,
    map_fd,
    map_reserved,
    nbytes,
    open_locked_stat,
)

if TYPE_CHECKING:
    from .kept import KeptMappings

MAGIC = b"\x93NUMPY"
#: Files at least this large are sized before writing (huge pages on huge=within_size).
HUGE_PAGE = 2 << 20
#: numpy aligns the data to 64 bytes; we do the same so np.load agrees with us.
ALIGN = 64
#: Data of at least this many bytes starts mid-page (`MID_PAGE` past a 4 KiB boundary).
MID_PAGE_BYTES = 1 << 20
#: Where large items' data starts within a 4 KiB page. Buffers of that size from malloc
#: start at a page or 16 bytes past one; a copy whose destination is a little ahead of
#: its source modulo 4 KiB (4K aliasing) ran at a third of memcpy speed from 256 MB up
#: (docs/benchmarks.md). Mid-page keeps reads and writes far from that, both ways.
MID_PAGE = 2048
_PAGE = 4096
#: np.load refuses headers longer than this by default (its max_header_size).
NUMPY_HEADER_BYTES = 10_000
#: numpy refuses headers over 10,000 bytes by default; wide structured dtypes need more.
MAX_HEADER_BYTES = 1 << 20
_PREAMBLE = len(MAGIC) + 2
_KEYS = {"descr", "fortran_order", "shape"}


@lru_cache(maxsize=256)
def build_header(shape: tuple[int, ...], dtype: np.dtype[Any], fortran_order: bool) -> bytes:
    """The complete .npy header (magic to padding) for an array, padded to 64 bytes, and
    for `MID_PAGE_BYTES` of data and more, to a data offset `MID_PAGE` into a page."""
    descr = np.lib.format.dtype_to_descr(dtype)
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran_order}, 'shape': {shape!r}, }}"
    # One more space for True, a character shorter than False: a header is as long in
    # either order, so a file made (or recycled) for an item's size fits both.
    text += " " if fortran_order else ""
    for version, length_format, encoding in (
        (1, "<H", "latin1"),
        (2, "<I", "latin1"),
        (3, "<I", "utf8"),
    ):
        try:
            body = text.encode(encoding)
        except UnicodeEncodeError:
            continue  # field names outside latin-1 need version 3
        prefix = len(MAGIC) + 2 + struct.calcsize(length_format)
        unpadded = prefix + len(body) + 1
        padding = -unpadded % ALIGN
        mid_page = (MID_PAGE - unpadded) % _PAGE
        if nbytes(shape, dtype) >= MID_PAGE_BYTES and unpadded + mid_page <= NUMPY_HEADER_BYTES:
            padding = mid_page
        padded = body + b" " * padding + b"\n"
        if version == 1 and len(padded) > 0xFFFF:
            continue
        return MAGIC + bytes([version, 0]) + struct.pack(length_format, len(padded)) + padded
    raise AssertionError("utf8 encodes every str")  # pragma: no cover


def parse_header(head: bytes, path: str | Path) -> tuple[tuple[int, ...], np.dtype[Any], bool, int]:
    """Parse the header at the start of ``head``: (shape, dtype, fortran_order, data offset).

    ``head`` must hold at least the preamble; raises `CorruptItem` if more is needed.
    """
    major, start, length = _preamble(head, path)
    end = start + length
    if len(head) < end:
        raise CorruptItem(
            f"{path} is truncated inside its header: it declares {length} header "
            f"bytes but the file has {len(head)} bytes",
            path=path,
            expected_bytes=end,
            actual_bytes=len(head),
        )
    try:
        shape, dtype, fortran = _parse_fields(head[start:end], major)
    except _BadHeader as exc:
        raise CorruptItem(f"{path} {exc}", path=path) from exc.__cause__
    return shape, dtype, fortran, end


def _preamble(head: bytes, path: str | Path) -> tuple[int, int, int]:
    """Format version, header start and header length from the first bytes of a .npy file.

    Raises `CorruptItem` for a file that is not .npy or declares an oversized header.
    """
    if len(head) < _PREAMBLE + 2 or not head.startswith(MAGIC):
        raise CorruptItem(
            f"{path} is not a .npy file (no numpy magic in its first bytes)", path=path
        )
    major = head[6]
    if major == 1:
        (length,) = struct.unpack_from("<H", head, 8)
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise CorruptItem(f"{path} is truncated inside its .npy preamble", path=path)
        (length,) = struct.unpack_from("<I", head, 8)
        start = 12
    else:
        raise CorruptItem(
            f"{path} has unknown .npy format version {major}", path=path, version=major
        )
    if length > MAX_HEADER_BYTES:
        raise CorruptItem(
            f"{path} declares a {length}-byte header; the limit is {MAX_HEADER_BYTES}",
            path=path,
            header_bytes=length,
        )
    return major, start, length


class _BadHeader(ValueError):
    pass


@lru_cache(maxsize=1024)
def _parse_fields(raw: bytes, major: int) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """Shape, dtype and order from the header text, cached by its exact bytes.

    A stream of items of one shape repeats one header: ``ast.literal_eval`` then runs
    once, not per item. Errors are raised as `_BadHeader` (never cached).
    """
    try:
        text = raw.decode("utf8" if major == 3 else "latin1")
        fields = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise _BadHeader(f"has an unreadable .npy header: {exc}") from exc
    if not isinstance(fields, dict) or set(fields) != _KEYS:
        raise _BadHeader(f"has a .npy header without exactly the keys {sorted(_KEYS)}")
    shape, fortran = fields["shape"], fields["fortran_order"]
    if (
        not isinstance(shape, tuple)
        or not all(type(n) is int and n >= 0 for n in shape)
        or not isinstance(fortran, bool)
    ):
        raise _BadHeader(f"has an invalid shape {shape!r} or fortran_order {fortran!r}")
    try:
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
    except (TypeError, ValueError) as exc:
        raise _BadHeader(f"has an invalid dtype {fields['descr']!r}: {exc}") from exc
    if dtype.hasobject:
        raise _BadHeader(
            f"holds Python objects (dtype {dtype}); reading it would unpickle, which "
            "ramxchg never does"
        )
    return shape, dtype, fortran


def read_layout(
    fd: int, size: int, path: str | Path
) -> tuple[tuple[int, ...], np.dtype[Any], bool, int]:
    """Read and check the header of an open file of ``size`` bytes: shape, dtype,
    fortran, data offset.

    Raises `CorruptItem` when the header promises more bytes than the file has.
    """
    head = read_at(fd, 4096)
    _, start, length = _preamble(head, path)
    if len(head) < start + length <= size:  # a long header (wide structured dtypes)
        head = read_at(fd, start + length)
    shape, dtype, fortran, offset = parse_header(head, path)
    expected = offset + nbytes(shape, dtype)
    if size < expected:
        raise CorruptItem(
            f"{path} is truncated: its header promises {expected} bytes but the file has {size}",
            path=path,
            expected_bytes=expected,
            actual_bytes=size,
        )
    return shape, dtype, fortran, offset


def _only_array(arrays: Mapping[str, Any], path: str | Path) -> Any:
    if len(arrays) != 1:
        raise TypeError(
            f"a .npy item holds exactly one array, got {len(arrays)} for {path}; "
            "use format='hdf5' for several named arrays"
        )
    return next(iter(arrays.values()))


class NpyFormat(Format):
    """numpy's ``.npy`` format: one array per file, data right after a 64-byte-aligned header."""

    name = "npy"
    suffix = ".npy"
    recyclable = True

    def nbytes_for(self, layout: Layout) -> int:
        shape, dtype = _only_array(layout, "<new item>")
        return len(build_header(shape, dtype, False)) + nbytes(shape, dtype)

    def write(
        self, target: WriteTarget, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None
    ) -> None:
        array = _only_array(arrays, target.path)
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            allocation = self.allocate(target, {"data": (array.shape, array.dtype)}, attrs)
            try:
                allocation.arrays["data"][...] = array
            finally:
                allocation.release()
            return
        fortran = array.flags.f_contiguous and not array.flags.c_contiguous
        header = build_header(array.shape, array.dtype, fortran)
        flat = (array.T if fortran else array).reshape(-1).view(np.uint8)
        if target.mapping is not None:  # a recycled file, mapped: one memcpy, no syscall
            whole = np.frombuffer(target.mapping, np.uint8)
            whole[: len(header)] = np.frombuffer(header, np.uint8)
            whole[len(header) :] = flat
            return
        _resize(target, len(header) + flat.nbytes, mapped=False)
        _write_all(target.fd, header, memoryview(flat))

    def allocate(
        self, target: WriteTarget, layout: Layout, attrs: Mapping[str, Any] | None
    ) -> Allocation:
        shape, dtype = _only_array(layout, target.path)
        header = build_header(shape, dtype, False)
        size = len(header) + nbytes(shape, dtype)
        if target.mapping is not None:  # lend the producer's own mapping: a true loan
            target.mapping[: len(header)] = header
            array = array_over(target.mapping, shape, dtype, len(header))
            return _lent(array, lambda: None)
        _resize(target, size, mapped=True)
        _write_all(target.fd, memoryview(header))
        mapping = map_reserved(target.fd, size, new=target.size < size)
        array = array_over(mapping, shape, dtype, len(header))
        return _lent(array, closer(mapping))

    def describe_open(
        self, fd: int, size: int, path: str | Path
    ) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        shape, dtype, _, _ = read_layout(fd, size, path)
        return {"data": (shape, dtype)}

    def open(
        self, path: str | Path, *, copy_on_write: bool = False, kept: KeptMappings | None = None
    ) -> OpenedFile:
        fd, info = open_locked_stat(path)
        try:
            shape, dtype, fortran, offset = read_layout(fd, info.st_size, path)
            order = "F" if fortran else "C"
            if kept is not None and not copy_on_write and nbytes(shape, dtype):
                reused = kept.mapping(fd, info)
                if reused is not None:  # the array holds the lock; the mapping stays kept
                    array = array_over(reused, shape, dtype, offset, order, lock_fd=fd)
                    return OpenedFile({"data": array}, {"data": True})
            mapping = map_fd(fd, info.st_size, copy_on_write=copy_on_write)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the new mapping holds a duplicate of it, and so the lock
        if info.st_size == 0 or nbytes(shape, dtype) == 0:  # an empty array: nothing to map
            array = np.ndarray(shape, dtype, buffer=b"", order=order)
        else:
            array = array_over(mapping, shape, dtype, offset, order)
        return OpenedFile({"data": array}, {"data": info.st_size > 0}, release=closer(mapping))


def _lent(array: np.ndarray, release: Callable[[], None]) -> Allocation:
    """The allocation of ``array``, made read-only when released (the ``create`` block
    ends): kept past it, it holds no lock, and its file may by then be an item readers
    map, or a later item recycled into it."""

    def done() -> None:
        array.flags.writeable = False
        release()

    return Allocation({"data": array}, done)


def _resize(target: WriteTarget, size: int, *, mapped: bool) -> None:
    """Give the temporary file ``target`` its ``size`` before it is written from offset 0.

    A recycled file (see ramxchg/_store/pool.py) of exactly ``size`` bytes keeps its pages and
    is overwritten in place. A new file is sized first when it is to be mapped, or when
    large, which lets a huge=within_size tmpfs back it with huge pages.
    """
    if target.size != size and (target.size or size >= HUGE_PAGE or mapped):
        os.ftruncate(target.fd, size)


def _write_all(fd: int, *parts: bytes | memoryview) -> None:
    """Write every part, in one ``writev`` when possible; retry short writes.

    One call near 2 GiB is the most Linux writes at once, so large arrays loop.
    """
    views = [memoryview(part) for part in parts]
    while views:
        written = os.writev(fd, views) if hasattr(os, "writev") else os.write(fd, views[0])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
