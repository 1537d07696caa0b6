"""Copying an item file as it is, into a hidden file: bytes from another channel
(``ramxchg bridge``) or a file that is already there (``ramxchg put``)."""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from typing import Any

from .._errors import ItemNotFound, RamxchgError
from ..formats import Format
from ..formats.base import WriteTarget, write_whole
from .publish import link_item, write_item
from .retention import Retention
from .tmpfiles import HiddenFile


def write_file_hidden(
    retention: Retention,
    fmt: Format,
    name: str | None,
    data: Any,
    *,
    timeout: float | None,
) -> HiddenFile:
    """Write ``data``, a whole ``fmt`` file, to a hidden file once the channel has room.

    Returns the hidden file, for `make_visible`. Raises `CorruptItem` if the bytes do
    not parse as ``fmt`` (nothing is left behind), and what `Channel.put` raises when
    there is no room.
    """
    view = memoryview(data).cast("B")

    def write_checked(target: HiddenFile) -> None:
        write_whole(target, view)  # over a recycled file of this size, if one is there
        _check(fmt, target)

    return write_item(retention, fmt, name or "auto", view.nbytes, write_checked, timeout=timeout)


def take_file_hidden(
    retention: Retention,
    fmt: Format,
    stem: str,
    source: Path,
    *,
    move: bool,
    timeout: float | None,
) -> HiddenFile:
    """The file ``source`` as a hidden item file: copied (checked again once copied), or
    with ``move`` hard-linked (same filesystem only; the caller removes ``source`` once
    published, so a failure leaves it where it was).

    Raises `CorruptItem` for a file whose header does not parse or promises more bytes
    than it has (checked before anything is copied), `RamxchgError` for a missing
    ``source`` or a ``move`` across filesystems, and what `Channel.put` raises when there
    is no room.
    """
    try:
        fmt.describe(source)  # garbage is refused before anything is copied
    except ItemNotFound as exc:  # open_regular's word for a missing file
        raise RamxchgError(f"{source}: no such file to publish", path=source) from exc
    if move:
        try:
            return link_item(retention, source, stem, fmt.suffix)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            raise RamxchgError(
                f"{source} is on another filesystem than {retention.layout.path}: it can "
                "only be copied (move=False)",
                path=source,
            ) from exc

    def copy_checked(target: WriteTarget) -> None:
        with source.open("rb") as src, io.FileIO(target.fd, "r+b", closefd=False) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.truncate()  # a recycled file is as long as the source was at stat()
        _check(fmt, target)

    size = os.stat(source).st_size
    return write_item(retention, fmt, stem, size, copy_checked, timeout=timeout)


def _check(fmt: Format, target: WriteTarget) -> None:
    """Raise `CorruptItem` unless what was written parses as ``fmt``: what is published
    is what was checked, read through the writer's own descriptor."""
    fmt.describe_open(target.fd, os.fstat(target.fd).st_size, target.path)
