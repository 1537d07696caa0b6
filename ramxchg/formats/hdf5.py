"""HDF5 items: several named arrays in one ``.h5`` file, mapped zero-copy where possible.

Writing: h5py lays out the file through the producer's locked descriptor (contiguous
datasets, allocated early, never filled, no timestamps, so the same arrays always make
the same bytes; ``libver=("earliest", "v110")`` so HDF5 1.10 tools read it), and the
data goes straight to each dataset's offset (``pwrite`` for
``put``, a writable mapping for ``create``). Datasets of `ALIGN_THRESHOLD` bytes or more start on an
`ALIGNMENT` boundary (huge pages on tmpfs); the gap before them is a hole in the file.

Reading: the file is opened once with `open_regular` (no symlinks, no FIFOs; holding the
reader lock when it is mapped: `open_locked`) and h5py reads its metadata through that
descriptor (h5py's file-object driver, which takes no
HDF5 file lock whatever ``HDF5_USE_FILE_LOCKING`` says). Contiguous, unfiltered,
allocated datasets whose stored type is numpy's are views of one read-only mapping;
the others (chunked, compressed, compact, converted types) are read through h5py.

Rules:

- Names ``"a/b"`` create group ``a``. Soft links are aliases and are not listed.
- External links, external storage and virtual datasets would read other files:
  such a file is refused with `CorruptItem` (nothing outside the file is opened).
- ``attrs``: each key is one root attribute. str, bool, int (64-bit) and float are
  stored as native HDF5 attributes; every other value (None, lists, dicts, big ints)
  is stored as its JSON text and its key is listed in the root attribute
  `JSON_ATTRS`, so reading decodes exactly those back.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import CorruptItem, InvalidName, UnsupportedDtype
from .base import (
    Allocation,
    Format,
    Layout,
    OpenedFile,
    WriteTarget,
    array_over,
    check_dtype,
    closer,
    map_fd,
    map_reserved,
    nbytes,
    open_locked,
    pwrite_all,
)

if TYPE_CHECKING:
    import h5py

    from .kept import KeptMappings

log = logging.getLogger(__name__)

#: Datasets of at least this many bytes are aligned (smaller ones pack after the metadata).
ALIGN_THRESHOLD = 16 << 20
#: ... to this boundary: one huge page. At most 12.5% extra file size, and a hole.
ALIGNMENT = 2 << 20
#: Root attribute listing the attribute names stored as JSON text.
JSON_ATTRS = "ramxchg:json"
#: Room for the superblock, groups and dataset headers (an over-estimate).
_METADATA_BYTES = 8192
_PER_DATASET_BYTES = 1024
#: HDF5 stores a dataset's type in one object header message, which must be under 64 KiB
#: (``H5O_MESG_MAX_SIZE``): a structured dtype with many long field names can exceed it.
_MAX_MESSAGE_BYTES = 1 << 16
_INT64 = (-(1 << 63), (1 << 63) - 1)
#: What h5py raises for malformed files (OverflowError: absurd sizes read from them).
_H5PY_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, OverflowError)


class Hdf5Format(Format):
    """HDF5 files (``.h5``): named datasets and attributes, readable by any HDF5 tool."""

    name = "hdf5"
    file_attrs = True
    suffix = ".h5"

    def nbytes_for(self, layout: Layout) -> int:
        total = _METADATA_BYTES
        for key, (shape, dtype) in layout.items():
            size = nbytes(shape, dtype)
            total += _PER_DATASET_BYTES + size + (ALIGNMENT if size >= ALIGN_THRESHOLD else 0)
            if np.dtype(dtype).names is not None:  # its field names and types: up to 64 KiB
                total += _type_bytes(_file_type(np.dtype(dtype), f"array {key!r}"))
        return total

    def write(
        self, target: WriteTarget, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None
    ) -> None:
        layout = {key: (array.shape, array.dtype) for key, array in arrays.items()}
        if not all(a.flags.c_contiguous for a in arrays.values()):
            allocation = self.allocate(target, layout, attrs)
            try:
                for key, array in arrays.items():
                    allocation.arrays[key][...] = array
            finally:
                allocation.release()
            return
        offsets = _create(target, layout, attrs)
        for key, array in arrays.items():
            if array.nbytes:
                pwrite_all(target.fd, memoryview(array.reshape(-1).view(np.uint8)), offsets[key])

    def allocate(
        self, target: WriteTarget, layout: Layout, attrs: Mapping[str, Any] | None
    ) -> Allocation:
        offsets = _create(target, layout, attrs)
        mapping = map_reserved(target.fd, os.fstat(target.fd).st_size, new=True)
        arrays = {}
        for key, (shape, dtype) in layout.items():
            offset = offsets[key]
            if offset is None:  # nothing to store: HDF5 allocates no data region
                arrays[key] = np.empty(shape, dtype)
            else:
                arrays[key] = array_over(mapping, shape, dtype, offset)
        return Allocation(arrays, closer(mapping))

    def describe_open(
        self, fd: int, size: int, path: str | Path
    ) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        with _h5_file(fd, path) as h5file:
            return {name: (ds.shape, ds.dtype) for name, ds, _ in _datasets(h5file, path)}

    def open(
        self, path: str | Path, *, copy_on_write: bool = False, kept: KeptMappings | None = None
    ) -> OpenedFile:
        # ``kept`` is not used: HDF5 files are not recycled, so none comes back.
        with _opened(path) as (fd, size, h5file):
            mapping = map_fd(fd, size, copy_on_write=copy_on_write)
            try:
                return _read_all(h5file, path, mapping, size, copy_on_write)
            except BaseException:
                closer(mapping)()
                raise


# -- writing --------------------------------------------------------------------------------


def _check_names(names: list[str]) -> None:
    """Dataset names are ``/``-separated paths; none may be a group of another."""
    for name in names:
        parts = name.split("/")
        if not name or any(part in ("", ".", "..") for part in parts):
            raise InvalidName(
                f"dataset name {name!r} must be non-empty '/'-separated parts without "
                "'.', '..' or a leading, trailing or doubled '/'",
                name=name,
            )
        for cut in range(1, len(parts)):
            if "/".join(parts[:cut]) in names:
                raise InvalidName(
                    f"dataset name {name!r} needs {'/'.join(parts[:cut])!r} to be a group, "
                    "but it is also a dataset",
                    name=name,
                )


def _file_type(dtype: np.dtype[Any], what: str) -> Any:
    """The HDF5 type storing ``dtype`` byte for byte; `UnsupportedDtype` if there is none."""
    from h5py import h5t

    check_dtype(dtype, what)
    try:
        file_type = h5t.py_create(dtype, logical=True)
    except TypeError as exc:
        hint = " Encode text as bytes ('S' dtype)." if dtype.kind == "U" else ""
        raise UnsupportedDtype(
            f"{what} has dtype {dtype}, which HDF5 cannot store.{hint}", dtype=str(dtype)
        ) from exc
    if dtype.names is not None and _type_bytes(file_type) >= _MAX_MESSAGE_BYTES:
        raise UnsupportedDtype(
            f"{what} has a structured dtype of {len(dtype.names)} fields whose HDF5 "
            f"description takes {_type_bytes(file_type)} bytes; HDF5 stores less than "
            f"{_MAX_MESSAGE_BYTES}. Use fewer or shorter field names, or format='npy'.",
            dtype=str(dtype),
        )
    return file_type


def _type_bytes(file_type: Any) -> int:
    """Bytes the HDF5 type takes in the file (``encode`` adds a 2-byte prefix)."""
    return len(file_type.encode()) - 2


def _create(
    target: WriteTarget, layout: Layout, attrs: Mapping[str, Any] | None
) -> dict[str, int | None]:
    """Lay out the new file with every dataset allocated (never filled); return data
    offsets.

    h5py writes through the producer's own descriptor (its file-object driver): the
    file stays the one it created and locked, whatever happens to its name.
    """
    import h5py
    from h5py import h5d, h5p, h5s

    _check_names(list(layout))
    types = {
        key: _file_type(np.dtype(dtype), f"array {key!r}") for key, (_, dtype) in layout.items()
    }
    offsets: dict[str, int | None] = {}
    with (
        io.FileIO(target.fd, "r+b", closefd=False) as raw,
        h5py.File(
            raw,
            "w",
            libver=("earliest", "v110"),
            locking=False,
            alignment_threshold=ALIGN_THRESHOLD,
            alignment_interval=ALIGNMENT,
        ) as h5file,
    ):
        lcpl = h5p.create(h5p.LINK_CREATE)
        lcpl.set_create_intermediate_group(True)
        for key, (shape, _) in layout.items():
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_layout(h5d.CONTIGUOUS)
            dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
            dcpl.set_obj_track_times(False)  # no write time: one content, one file
            space = h5s.create_simple(tuple(shape)) if shape else h5s.create(h5s.SCALAR)
            dsid = h5d.create(h5file.id, key.encode(), types[key], space, dcpl=dcpl, lcpl=lcpl)
            offsets[key] = dsid.get_offset()
            dsid.close()
        _write_attrs(h5file.attrs, attrs or {})
    return offsets


def _write_attrs(target: h5py.AttributeManager, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` as converted by ``encode_attrs`` (plain JSON values, non-empty keys
    other than `JSON_ATTRS`): the one converter, so both formats follow the same rules."""
    as_json = []
    for key, value in attrs.items():
        if isinstance(value, (str, bool, float)) or (
            isinstance(value, int) and _INT64[0] <= value <= _INT64[1]
        ):
            target[key] = np.bool_(value) if isinstance(value, bool) else value
        else:
            target[key] = json.dumps(value, allow_nan=False)
            as_json.append(key)
    if as_json:
        target[JSON_ATTRS] = json.dumps(as_json)


# -- reading --------------------------------------------------------------------------------


@contextmanager
def _opened(path: str | Path) -> Iterator[tuple[int, int, h5py.File]]:
    """The file's descriptor, holding the reader lock to map it (`open_locked`), its size
    and h5py's view of it (`_h5_file`)."""
    fd, size = open_locked(path)
    try:
        with _h5_file(fd, path) as h5file:
            yield fd, size, h5file
    finally:
        os.close(fd)


@contextmanager
def _h5_file(fd: int, path: str | Path) -> Iterator[h5py.File]:
    """h5py's view of the open file ``fd`` (``path`` names it in messages); h5py errors
    become `CorruptItem`."""
    import h5py

    with io.FileIO(fd, "rb", closefd=False) as raw:
        try:
            h5file = h5py.File(raw, "r")
        except _H5PY_ERRORS as exc:
            raise CorruptItem(f"{path} is not a readable HDF5 file: {exc}", path=path) from exc
        with h5file:
            try:
                yield h5file
            except CorruptItem:
                raise
            except _H5PY_ERRORS as exc:
                raise CorruptItem(f"{path} has unreadable HDF5 contents: {exc}", path=path) from exc


def _datasets(
    h5file: h5py.File, path: str | Path
) -> Iterator[tuple[str, h5py.Dataset, h5py.h5p.PropDCID]]:
    """Every dataset reached by hard links, in name order, with its creation property list.

    Refuses links and datasets whose data lives in other files.
    """
    import h5py
    from h5py import h5d, h5l, h5o

    links: list[tuple[bytes, int]] = []
    # Nothing may raise inside the callback: h5py cannot pass that exception through.
    h5file.id.links.visit(lambda raw, info: links.append((raw, info.type)), info=True)
    for raw, kind in links:
        name = raw.decode("utf-8", "surrogateescape")
        if kind == h5l.TYPE_SOFT:
            continue  # an alias of an object that is listed under its own name
        if kind != h5l.TYPE_HARD:
            raise CorruptItem(
                f"{path} has a link {name!r} to another file (type {kind}); "
                "ramxchg never follows links out of an item",
                path=path,
                link=name,
            )
        if h5o.get_info(h5file.id, raw).type != h5o.TYPE_DATASET:
            continue
        dataset = h5py.Dataset(h5d.open(h5file.id, raw))
        dcpl = dataset.id.get_create_plist()
        if dcpl.get_layout() == h5d.VIRTUAL or dcpl.get_external_count() > 0:
            raise CorruptItem(
                f"{path}: dataset {name!r} keeps its data in other files (virtual or "
                "external storage); ramxchg never reads outside an item",
                path=path,
                dataset=name,
            )
        if dataset.shape is None:
            log.warning("%s: skipping dataset %r, which has no dataspace", path, name)
            continue
        yield name, dataset, dcpl


def _map_offset(
    dataset: h5py.Dataset, dcpl: h5py.h5p.PropDCID, size: int, path: str | Path
) -> int | None:
    """Where the dataset's bytes are in the file, if they can be mapped as they are."""
    from h5py import h5d, h5t

    if dcpl.get_layout() != h5d.CONTIGUOUS or dcpl.get_nfilters() or dataset.dtype.hasobject:
        return None
    if dataset.id.get_type() != h5t.py_create(dataset.dtype, logical=True):
        return None  # stored differently from numpy's layout: h5py converts
    offset = dataset.id.get_offset()
    if offset is None:
        return None  # never written: reading gives the fill value
    end = offset + nbytes(dataset.shape, dataset.dtype)
    if end > size:
        raise CorruptItem(
            f"{path} is truncated: dataset {dataset.name!r} ends at byte {end} "
            f"but the file has {size}",
            path=path,
            expected_bytes=end,
            actual_bytes=size,
        )
    return int(offset)


def _read_all(
    h5file: h5py.File, path: str | Path, mapping: Any, size: int, copy_on_write: bool
) -> OpenedFile:
    arrays: dict[str, np.ndarray] = {}
    zero_copy: dict[str, bool] = {}
    dataset_attrs: dict[str, dict[str, Any]] = {}
    for name, dataset, dcpl in _datasets(h5file, path):
        offset = _map_offset(dataset, dcpl, size, path)
        if offset is not None:
            array = array_over(mapping, dataset.shape, dataset.dtype, offset)
        elif dataset.size == 0:
            array = np.empty(dataset.shape, dataset.dtype)
        else:
            array = dataset[()]
            if not isinstance(array, np.ndarray):  # a 0-d dataset reads as a scalar
                array = np.asarray(array)
        if offset is None:
            array.flags.writeable = copy_on_write
        arrays[name] = array
        zero_copy[name] = offset is not None or dataset.size == 0
        dataset_attrs[name] = _read_attrs(dataset.attrs, path, name)
    attrs = _read_attrs(h5file.attrs, path, "/")
    return OpenedFile(arrays, zero_copy, attrs, dataset_attrs, release=closer(mapping))


def _read_attrs(source: h5py.AttributeManager, path: str | Path, owner: str) -> dict[str, Any]:
    """Attributes as Python values; the keys listed in `JSON_ATTRS` decoded from JSON."""
    values: dict[str, Any] = {}
    for key in source:
        try:
            values[key] = _plain(source[key])
        except (OSError, TypeError, ValueError, OverflowError) as exc:
            if key == JSON_ATTRS:  # without it, JSON values would pass as plain text
                raise CorruptItem(f"{path}: unreadable {key!r}: {exc}", path=path) from exc
            log.warning("%s: skipping unreadable attribute %r of %s: %s", path, key, owner, exc)
    json_keys = values.pop(JSON_ATTRS, None)
    if json_keys is None:
        return values
    try:
        for key in json.loads(json_keys):
            values[key] = json.loads(values[key])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptItem(f"{path} has malformed JSON attributes: {exc}", path=path) from exc
    return values


def _plain(value: Any) -> Any:
    """An attribute value as plain Python: scalars and text as such, arrays as lists
    (attributes written by other tools), so every attrs value has a JSON form."""
    import h5py

    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()  # nested lists of Python scalars; text decoded below
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
