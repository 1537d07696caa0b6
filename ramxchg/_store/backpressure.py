"""Backpressure: a producer waits until its channel has room for one more item.

``max_items`` and ``max_bytes`` count the items in the channel folder; ``reserve_bytes``
keeps that much of the disk free (docs/protocol.md, section 5). Checked without the
publish lock: producers checking at the same time may each see room, so a limit can be
overshot by one item per producer publishing at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .._errors import ChannelFull, RamDiskFull
from ..disks import format_size
from .config import ChannelConfig
from .layout import ChannelLayout
from .scan import is_item_filename


def wait_for_room(
    layout: ChannelLayout,
    config: ChannelConfig,
    drain: Callable[[], int],
    needed: int,
    timeout: float | None,
) -> None:
    """Block until an item of ``needed`` bytes fits the limits, or raise.

    Raises `ChannelFull` (``max_items``/``max_bytes``) or `RamDiskFull` (the free-space
    reserve) when ``timeout`` seconds pass first; ``timeout=None`` waits forever. Short of
    the reserve, ``drain()`` (the channel's pool) frees what it can first.
    """
    if config.max_items is None and config.max_bytes is None and not config.reserve_bytes:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.0005
    while True:
        # Only what a limit needs: sizes for max_bytes, free space for the reserve.
        count, used = _usage(layout.path, sizes=config.max_bytes is not None)
        free = shutil.disk_usage(layout.path).free if config.reserve_bytes else 0
        over_items = config.max_items is not None and count + 1 > config.max_items
        over_bytes = config.max_bytes is not None and used + needed > config.max_bytes
        over_disk = bool(config.reserve_bytes) and free - needed < config.reserve_bytes
        if not (over_items or over_bytes or over_disk):
            return
        if over_disk and drain():
            continue  # pooled files held the room: look again at once
        if deadline is not None and time.monotonic() >= deadline:
            if over_disk and not (over_items or over_bytes):
                raise RamDiskFull(
                    f"{layout.path}: {format_size(needed)} more would leave "
                    f"{format_size(max(free - needed, 0))} free, under the reserve of "
                    f"{format_size(config.reserve_bytes)} (waited {timeout} s)",
                    path=layout.path,
                    needed_bytes=needed,
                    free_bytes=free,
                    reserve_bytes=config.reserve_bytes,
                )
            limit = None if config.max_bytes is None else format_size(config.max_bytes)
            raise ChannelFull(
                f"channel {layout.path} holds {count} items / {format_size(used)}; "
                f"one more of {format_size(needed)} exceeds max_items={config.max_items} / "
                f"max_bytes={limit}, and no consumer freed room in {timeout} s",
                path=layout.path,
                items=count,
                bytes=used,
                max_items=config.max_items,
                max_bytes=config.max_bytes,
                needed_bytes=needed,
                timeout=timeout,
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _usage(folder: Path, *, sizes: bool) -> tuple[int, int]:
    """Items in the channel folder, and the bytes they take when ``sizes``."""
    count = used = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_item_filename(entry.name):
                count += 1
                if not sizes:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    used += entry.stat(follow_symlinks=False).st_size
    return count, used
