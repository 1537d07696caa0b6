"""Channel: a folder of published arrays that any process can write and read."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from ._arrays import ArrayInput, ShapeInput, as_arrays, as_layout
from ._delivery.subscription import SubscribeOptions, Subscription
from ._errors import CorruptItem, InvalidName, ItemNotFound
from ._item import Item, entry_item, item_at
from ._store.config import OWNER_ONLY, ChannelConfig
from ._store.copy import take_file_hidden, write_file_hidden
from ._store.drop import drop_channel
from ._store.names import check_name
from ._store.publish import (
    allocate_item,
    check_free,
    find_existing,
    make_visible,
    write_item,
)
from ._store.registry import drop, item_group_states, registered_group
from ._store.scan import publish_order, scan
from ._store.setaside import SetAsideFolder
from ._store.sidecar import encode_attrs
from ._store.status import ChannelStatus, GroupStatus, channel_status, group_status
from ._store.store import open_store
from ._store.tmpfiles import HiddenFile
from .formats import Format, format_for, get_format, suffixes


class Channel:
    """A channel: one folder, ``<root>/<name>``, of published arrays.

    Parameters
    ----------
    name
        Channel name (see the naming rules), or an absolute path to an existing folder
        to use it as a drop-in exchange folder (which may belong to another user who
        shared it; a symlink is always refused).
    root
        Folder holding channels; `default_root()` when None.
    format
        Default item format, ``"npy"`` or ``"hdf5"``; stored with the channel.
    mode
        Permissions of the channel folder when it is created: 0o700 (the default) for
        only you; 0o750 and a group, or 0o755, to share it read-only.
    keep_last, max_bytes, max_items, ttl, reserve_bytes
        Retention and limits, stored with the channel when it is created.
    recycle
        Keep deleted ``.npy`` item files and write later items of the same size into
        their pages, once no array maps them (faster on tmpfs with 4 KiB pages). The
        pool keeps as many as recent bursts had in flight, up to ``recycle`` files (64
        by default; 0: none), ``max_items``/``max_bytes`` and half the disk's free
        space. They hold RAM until reused, until the channel's next use (or ``gc``)
        finds that no producer took them for 10 s, or until the disk fills for one of
        your channels beside it.
    create
        False: open only a channel whose folder exists (`ChannelNotFound` otherwise), and
        write nothing (no state folder, no config), for readers such as ``ramxchg ls``.

    Every setting is checked first (`InvalidSetting` names a bad one). A root, or a
    folder used by path, that is not on a RAM disk gives a `NotRamBackedWarning`, once.

    Examples
    --------
    >>> ch = Channel("camera")
    >>> item = ch.put(np.zeros((4, 4)), attrs={"exposure": 0.01})
    >>> ch.get(item.name).array.sum()
    0.0
    """

    def __init__(
        self,
        name: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        *,
        format: str | None = None,
        mode: int = OWNER_ONLY,
        keep_last: int | None = None,
        max_bytes: int | None = None,
        max_items: int | None = None,
        ttl: float | None = None,
        reserve_bytes: int | None = None,
        recycle: int | None = None,
        create: bool = True,
    ) -> None:
        wanted = {
            key: value
            for key, value in {
                "format": format,
                "keep_last": keep_last,
                "max_bytes": max_bytes,
                "max_items": max_items,
                "ttl": ttl,
                "reserve_bytes": reserve_bytes,
                "recycle": recycle,
            }.items()
            if value is not None
        }
        self._store = open_store(name, root, mode=mode, wanted=wanted, create=create, stacklevel=2)
        self.name: str = self._store.name
        self.path: Path = self._store.path
        self.config: ChannelConfig = self._store.config
        self._layout = self._store.layout
        self._retention = self._store.retention

    def __repr__(self) -> str:
        return f"Channel({str(self.path)!r})"

    # -- publishing -------------------------------------------------------------------------

    def put(
        self,
        array: ArrayInput,
        name: str | None = None,
        *,
        attrs: Mapping[str, Any] | None = None,
        format: str | None = None,
        timeout: float | None = None,
        replace: bool = False,
    ) -> Item:
        """Publish a copy of ``array`` atomically as a new item and return it.

        The data is written once into a hidden file, then published with one atomic
        link as ``<name>.npy`` (``.h5`` for HDF5). ``name=None`` takes the next
        sequence number, zero-padded so names sort in publish order.

        When the channel has ``max_items``/``max_bytes``/``reserve_bytes``, waits up to
        ``timeout`` seconds (forever if None) for consumers to make room.

        ``replace=True`` (with a ``name``; re-running a notebook cell) publishes over an
        item of that name and format in one rename: readers find the old item or the new
        one, never neither; arrays taken from the old one keep their data; groups forget
        the old one as if it was deleted, and receive the new one.

        Raises `InvalidName`, `ItemExists`, `UnsupportedDtype` (object dtypes),
        TypeError/ValueError for attrs that are not JSON, `ChannelFull`, `RamDiskFull`.
        """
        fmt = self._format(format)
        if name is not None:
            check_name(name)  # whether it is taken is settled under the publish lock
        elif replace:
            raise ValueError("replace=True needs the name of the item to replace")
        arrays = as_arrays(array)
        meta = encode_attrs(attrs)
        needed = fmt.nbytes_for({key: (a.shape, a.dtype) for key, a in arrays.items()})
        hidden = write_item(
            self._retention,
            fmt,
            name or "auto",
            needed,
            lambda target: fmt.write(target, arrays, meta),
            timeout=timeout,
        )
        return self._publish(hidden, fmt, name, meta, replace=replace)

    @contextmanager
    def create(
        self,
        shape: ShapeInput,
        dtype: DTypeLike = None,
        name: str | None = None,
        *,
        attrs: Mapping[str, Any] | None = None,
        format: str | None = None,
        timeout: float | None = None,
        zero: bool = False,
    ) -> Iterator[np.ndarray]:
        """Allocate an item and yield its writable array, to be filled in place (a
        context manager: ``with ch.create((480, 640), "uint16") as frame: frame[:] = ...``).

        The array *is* the data region of a hidden file: no extra copy. Like
        ``np.empty``, it holds whatever the file held (a recycled file: an older item's
        bytes) unless ``zero=True``. The item is published when the block exits normally;
        on an exception nothing is published and the hidden file is removed. Do not use
        the array after the block.

        For HDF5, pass a dict ``{name: (shape, dtype)}`` as ``shape`` and get a dict of
        arrays (``dict[str, np.ndarray]``) back.
        """
        fmt = self._format(format)
        if name is not None:
            self._check_free_name(name)
        meta = encode_attrs(attrs)
        hidden, allocation = allocate_item(
            self._retention,
            fmt,
            name or "auto",
            as_layout(shape, dtype),
            meta,
            zero=zero,
            timeout=timeout,
        )
        try:
            arrays = allocation.arrays
            yield arrays if isinstance(shape, Mapping) else arrays["data"]
        except BaseException:
            allocation.release()
            hidden.discard()
            raise
        allocation.release()
        self._publish(hidden, fmt, name, meta)

    def put_file_bytes(
        self,
        data: Any,
        name: str | None = None,
        *,
        format: str,
        attrs: Mapping[str, Any] | None = None,
        origin: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Item:
        """Publish ``data``, the bytes of a whole ``format`` file, as an item, byte for byte.

        For copying items (``ramxchg bridge``): nothing is decoded or re-encoded. ``attrs``
        and ``origin`` (where the copy came from: `Item.origin`) go into the sidecar; the
        file must parse (`CorruptItem`). Otherwise like `put`.
        """
        fmt = self._format(format)
        if name is not None:
            check_name(name)
        meta, source = encode_attrs(attrs), encode_attrs(origin) if origin else None
        hidden = write_file_hidden(self._retention, fmt, name, data, timeout=timeout)
        return self._publish(hidden, fmt, name, meta, source)

    def put_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        attrs: Mapping[str, Any] | None = None,
        move: bool = False,
        replace: bool = False,
        timeout: float | None = None,
    ) -> Item:
        """Publish an existing ``.npy`` or ``.h5`` file as an item (named after the file's
        stem unless ``name`` is given), checked first and byte for byte.

        The file is copied, or with ``move=True`` hard-linked (no copy; the channel's
        filesystem only) and removed once published, so a failure leaves it where it
        was. ``replace`` and ``timeout`` as for `put`. Raises `CorruptItem` for a file
        that does not parse or is shorter than its header says, `RamxchgError` for a
        missing file or a move across filesystems, and what `put` raises.
        """
        source = Path(path)
        fmt = format_for(source)
        if fmt is None:
            raise CorruptItem(
                f"{source} has suffix {source.suffix!r}; ramxchg publishes "
                f"{' and '.join(suffixes())} files",
                path=source,
            )
        stem = check_name(name if name is not None else source.stem)
        if not replace:
            check_free(self._layout, stem)
        meta = encode_attrs(attrs)
        hidden = take_file_hidden(self._retention, fmt, stem, source, move=move, timeout=timeout)
        item = self._publish(hidden, fmt, stem, meta, replace=replace)
        if move:
            os.unlink(source)
        return item

    def _publish(
        self,
        hidden: HiddenFile,
        fmt: Format,
        name: str | None,
        attrs: dict[str, Any],
        origin: dict[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> Item:
        forget = self._retention.forget if replace else None
        published = make_visible(
            self._layout,
            self._store.counter,
            hidden,
            fmt,
            name=name,
            attrs=attrs,
            origin=origin,
            replace=forget,
            reclaim=self._retention.pool.drain,  # not tmp/: collecting it takes the lock
        )
        self._retention.enforce_age_and_count(keep=published.name)
        return item_at(self._layout, published.name, published.path, fmt, published.sidecar)

    def _format(self, name: str | None) -> Format:
        return get_format(name or self.config.format)

    def _check_free_name(self, name: str) -> None:
        check_name(name)
        check_free(self._layout, name)

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Item:
        """The published item called ``name``; `ItemNotFound` if there is none."""
        check_name(name)
        path = find_existing(self._layout, name)
        if path is None:
            raise ItemNotFound(
                f"no item {name!r} in channel {self.path}", path=self.path, name=name
            )
        return item_at(self._layout, name, path)

    def items(self) -> list[Item]:
        """Every published item, in publish order (by arrival, dropped-in files included)."""
        entries = sorted(scan(self._layout), key=publish_order)
        return [entry_item(self._layout, entry) for entry in entries]

    def names(self) -> list[str]:
        """Names of the published items, in publish order."""
        return [entry.name for entry in sorted(scan(self._layout), key=publish_order)]

    def latest(self) -> Item | None:
        """The most recently published item, or None when the channel is empty."""
        newest = max(scan(self._layout), key=publish_order, default=None)
        return entry_item(self._layout, newest) if newest is not None else None

    def delete(self, name: str) -> None:
        """Remove a published item (consumers that mapped it keep their pages)."""
        item = self.get(name)
        self._retention.delete(name, item.path)

    # -- consuming --------------------------------------------------------------------------

    def subscribe(
        self,
        group: str | None = None,
        *,
        start: Literal["earliest", "latest"] = "earliest",
        latest_only: bool = False,
        watch: Literal["auto", "events", "polling"] = "auto",
        settle: float | None = None,
        quarantine_after: float | None = None,
    ) -> Subscription:
        """Follow the channel: items are delivered as they are published.

        Parameters
        ----------
        group
            A durable consumer group (registered at once; it holds back retention and
            survives restarts; members share its items). None: anonymous, not durable.
        start
            ``"earliest"`` catches up on what is already there; ``"latest"`` skips it
            (for a group: only when the group is new).
        latest_only
            Always hand out the newest item, skipping the backlog (live viewers).
        watch
            ``"auto"``, ``"events"`` or ``"polling"``: how new items are noticed.
        settle, quarantine_after
            For files written in place by other programs (no sidecar): how long a file
            must stay unchanged to count as complete, and how long a malformed one may
            stay before it is quarantined (see docs/protocol.md, "Legacy producers").
        """
        options = SubscribeOptions(start, latest_only, watch, settle, quarantine_after)
        return Subscription(self, self._store, group, options)

    def groups(self) -> list[GroupStatus]:
        """Every durable group with its backlog (items it has not acked yet)."""
        return group_status(self._retention)

    def group_states(self, name: str) -> dict[str, Literal["pending", "claimed", "acked"]]:
        """Where the item ``name`` stands in each durable group: ``"pending"`` (not
        delivered yet, or given back), ``"claimed"`` (delivered to a member, not acked) or
        ``"acked"``. `ItemNotFound` if there is no such item."""
        self.get(name)
        return item_group_states(self._layout, name)

    def status(self) -> ChannelStatus:
        """Items, bytes and every group's backlog, from one listing of the folder."""
        return channel_status(self._retention)

    def ack(self, name: str, group: str) -> bool:
        """Mark the item ``name`` done for ``group`` (delivered to it or not).

        Returns True when that was the last group to ack, so the item was deleted.
        Raises `ItemNotFound` for an unknown item or group.
        """
        item = self.get(name)
        done_by = registered_group(self._layout, group)
        outcome = self._retention.ack(done_by, name, item._path, item.seq, item.published_ns)
        return outcome == "deleted"

    def drop_group(self, name: str) -> None:
        """Remove a durable group: it no longer receives items or holds back retention."""
        drop(self._layout, name)
        self._retention.gc()

    def drop(self) -> None:
        """Remove the whole channel: its folder, items, groups, settings (`ChannelNotFound`
        if gone). Mapped arrays keep their data; processes still using it fail: stop them."""
        drop_channel(self.path)

    @property
    def dead_letters(self) -> SetAsideFolder:
        """Items whose command kept failing (``ramxchg watch``): list, requeue, delete."""
        return SetAsideFolder(self._store, "dead", self._publish)

    @property
    def quarantine(self) -> SetAsideFolder:
        """Files moved out as malformed or unsafe (protocol section 9): likewise."""
        return SetAsideFolder(self._store, "quarantine", self._publish)

    def gc(self) -> dict[str, int]:
        """Apply retention now and remove what dead processes left behind.

        Returns how many of each were removed (``tmp_files``, ``orphan_sidecars``,
        ``stale_state``, ``released``, ``expired``, ``pooled_files``: recycled files no
        producer took for 10 s; ``dropped_groups``: folders of dropped groups that a drop
        killed half-way, or a member's claim landing meanwhile, left), and how many state
        folders were left alone
        (``unsafe_folders``: a symlink, or neither the channel owner's nor yours).
        """
        return self._retention.gc()

    def __len__(self) -> int:
        return sum(1 for _ in scan(self._layout))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            check_name(name)
        except InvalidName:
            return False
        return find_existing(self._layout, name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
