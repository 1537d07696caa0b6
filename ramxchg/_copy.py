"""Copying an item file as it is: its bytes, from another channel, into a hidden file."""

from __future__ import annotations

from typing import Any

from ._layout import ChannelLayout
from ._publish import check_room, write_hidden
from ._retention import Retention
from .formats import Format
from .formats.base import write_whole


def write_file_hidden(
    layout: ChannelLayout,
    retention: Retention,
    fmt: Format,
    name: str | None,
    data: Any,
    *,
    timeout: float | None,
) -> str:
    """Write ``data``, a whole ``fmt`` file, to a hidden file once the channel has room.

    Returns the hidden file's path, for `make_visible`. Raises `CorruptItem` if the
    bytes do not parse as ``fmt`` (nothing is left behind), and what `Channel.put`
    raises when there is no room.
    """
    view = memoryview(data).cast("B")
    retention.wait_for_room(view.nbytes, timeout)
    check_room(layout, view.nbytes)

    def write_checked(path: str) -> None:
        write_whole(path, view)  # over a recycled file of this size, if one is there
        fmt.describe(path)  # what is published is what was checked

    return write_hidden(
        layout, fmt, name or "auto", view.nbytes, write_checked, pool=retention.pool
    )
