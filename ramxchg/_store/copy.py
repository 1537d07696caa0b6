"""Copying an item file as it is: its bytes, from another channel, into a hidden file."""

from __future__ import annotations

from typing import Any

from ..formats import Format
from ..formats.base import write_whole
from .publish import write_item
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
        fmt.describe(target.path)  # what is published is what was checked

    return write_item(retention, fmt, name or "auto", view.nbytes, write_checked, timeout=timeout)
