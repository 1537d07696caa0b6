"""Item: one published array file, mapped zero-copy on demand."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from ._errors import GroupNotFound
from ._store.layout import ChannelLayout
from ._store.scan import Entry, arrival_ns, item_sidecar
from ._store.sidecar import Sidecar
from .formats import Format, OpenedFile, format_for
from .formats.base import nbytes
from .formats.kept import KeptMappings, whole_file

_T = TypeVar("_T")


class Item:
    """A published item: its name, metadata and zero-copy arrays.

    ``item.array`` maps the file read-only on first use; nothing is copied. Release
    the mapping with ``item.close()`` or ``with item: ...``. Arrays taken from the item
    stay valid after close (the mapping lives until the last of them is freed), and
    never change: the file's reader lock lives with them, so it is not recycled.
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        fmt: Format,
        sidecar_path: str | Path,
        *,
        sidecar: Sidecar | None = None,
    ) -> None:
        self.name = name
        self._path = path
        self.format = fmt.name
        self._fmt = fmt
        self._sidecar_path = sidecar_path
        self._sidecar = sidecar
        self._sidecar_read = sidecar is not None
        self._opened: OpenedFile | None = None
        self._on_ack: Callable[[Item], bool] | None = None
        #: the file's inode when a subscription delivered it: with ``seq``, which item this is
        self._ino: int | None = None
        #: the subscription's mappings of recycled files, to read this one through
        self._kept: KeptMappings | None = None

    def __repr__(self) -> str:
        return f"<Item {self.name!r} seq={self.seq} {self.path}>"

    # -- metadata ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The item's file."""
        if not isinstance(self._path, Path):  # built on first use: put() need not pay for it
            self._path = Path(self._path)
        return self._path

    @property
    def sidecar(self) -> Sidecar | None:
        """The item's sidecar; None for a legacy item (dropped in by another program, or
        with a sidecar that is not valid), as the channel's listing decides."""
        if not self._sidecar_read:
            try:
                info = os.lstat(self._path)
            except FileNotFoundError:
                return None  # deleted: its sidecar (if still there) is nobody's
            self._sidecar = item_sidecar(self._sidecar_path, info)
            self._sidecar_read = True
        return self._sidecar

    @property
    def seq(self) -> int | None:
        """Position in the channel's publish order (None for legacy items)."""
        sidecar = self.sidecar
        return sidecar.seq if sidecar else None

    @property
    def published_ns(self) -> int:
        """Publish time in ns since the epoch (when it arrived, for dropped-in files)."""
        sidecar = self.sidecar
        return sidecar.published_ns if sidecar else arrival_ns(os.lstat(self._path))

    @property
    def origin(self) -> dict[str, Any] | None:
        """Where the item was copied from (`Channel.put_file_bytes`), else None."""
        sidecar = self.sidecar
        return dict(sidecar.origin) if sidecar and sidecar.origin is not None else None

    @property
    def attrs(self) -> dict[str, Any]:
        """The ``attrs`` given to ``put``/``create`` (plus in-file attributes for HDF5)."""
        sidecar = self.sidecar
        stored = dict(sidecar.attrs) if sidecar else {}
        if self._fmt.file_attrs:
            stored.update(self._open().attrs)
        return stored

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the item's array (of ``"data"`` or the only one for HDF5)."""
        return self._single_layout()[0]

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of the item's array."""
        return self._single_layout()[1]

    @property
    def nbytes(self) -> int:
        """Bytes of array data in the item (all arrays, for HDF5)."""
        if self._opened is not None:
            return sum(array.nbytes for array in self._opened.arrays.values())
        return sum(nbytes(shape, dtype) for shape, dtype in self.layouts().values())

    def layouts(self) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """Shape and dtype of each array, read from the file's metadata (nothing mapped)."""
        return self._fmt.describe(self._path, locked=True)

    def _single_layout(self) -> tuple[tuple[int, ...], np.dtype[Any]]:
        if self._opened is not None:
            array = self.array
            return array.shape, array.dtype
        return _only(self, self.layouts())

    # -- data -------------------------------------------------------------------------------

    def _open(self) -> OpenedFile:
        if self._opened is None:
            self._opened = self._fmt.open(self._path, kept=self._kept)
        return self._opened

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the item by name (``{"data": ...}`` for .npy), read-only."""
        return dict(self._open().arrays)

    @property
    def array(self) -> np.ndarray:
        """The item's array, read-only and mapped zero-copy from the file."""
        return _only(self, self._open().arrays)

    @property
    def zero_copy(self) -> dict[str, bool]:
        """For each array: True if it is mapped from the file, False if it was read."""
        return dict(self._open().zero_copy)

    @property
    def dataset_attrs(self) -> dict[str, dict[str, Any]]:
        """Attributes of each dataset (HDF5); empty dicts for .npy."""
        opened = self._open()
        return {name: dict(opened.dataset_attrs.get(name, {})) for name in opened.arrays}

    def file_bytes(self) -> np.ndarray:
        """The item's whole file, header and data, read-only and zero-copy, as a uint8
        array: what `Channel.put_file_bytes` publishes byte for byte elsewhere.

        Like the item's arrays, it holds the reader lock while it lives: the file never
        changes under it. A subscription reads a recycled file through the mapping it
        keeps of it (no new mapping per item).
        """
        return whole_file(self._path, self._kept)

    def open(self, mode: str = "r") -> np.ndarray:
        """A new mapping of the item's array: ``"r"`` read-only, ``"c"`` copy-on-write.

        Copy-on-write arrays can be modified in this process; the file never changes.
        """
        if mode not in ("r", "c"):
            raise ValueError(f"mode must be 'r' or 'c', not {mode!r}")
        if mode == "r":
            return self.array
        return _only(self, self._fmt.open(self._path, copy_on_write=True).arrays)

    # -- lifetime ---------------------------------------------------------------------------

    def ack(self) -> bool:
        """Mark the item done for the subscription's group (a no-op outside a group).

        An ack counts for this item only, never for a newer item published under its
        name. Returns False when it changed nothing: the item was gone already (deleted
        by ``keep_last``/``ttl``, by hand or as a dead letter), it was acked before, or
        there is no group. Raises `GroupNotFound` when the group was dropped meanwhile;
        after any other error (an I/O error deleting the item) the item is still ours,
        and ``ack`` may be called again.
        """
        if self._on_ack is None:
            return False
        on_ack, self._on_ack = self._on_ack, None
        try:
            return on_ack(self)
        except GroupNotFound:
            raise  # for good: the group's claims went with it
        except BaseException:
            self._on_ack = on_ack  # not acked, still ours: it may be acked again
            raise

    def close(self) -> None:
        """Release the mapping (it lives on while arrays taken from it are alive)."""
        if self._opened is not None:
            opened, self._opened = self._opened, None
            opened.release()

    def __enter__(self) -> Item:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _only(item: Item, arrays: Mapping[str, _T]) -> _T:
    """The one value of ``arrays``; ValueError naming the file when it holds several."""
    if len(arrays) != 1:
        raise ValueError(
            f"{item.path} holds {len(arrays)} arrays {sorted(arrays)}, not one; "
            "use item.arrays[name]"
        )
    return next(iter(arrays.values()))


def item_at(
    layout: ChannelLayout,
    name: str,
    path: str,
    fmt: Format | None = None,
    sidecar: Sidecar | None = None,
) -> Item:
    """The `Item` of the published file ``path`` of a channel; ``sidecar`` when already
    read (else it is read on first use)."""
    if fmt is None:
        fmt = format_for(path)
        assert fmt is not None, path  # published names always carry a format's suffix
    return Item(name, path, fmt, layout.sidecar(name), sidecar=sidecar)


def entry_item(layout: ChannelLayout, entry: Entry) -> Item:
    """The `Item` of a scanned entry, with the sidecar the scan read."""
    return item_at(layout, entry.name, entry.path, sidecar=entry.sidecar)
