"""Dropping a whole channel: its folder is renamed away at once, then emptied."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .._errors import ChannelNotFound
from .layout import STATE_DIR
from .safedir import SafeDir

log = logging.getLogger(__name__)


def drop_channel(path: Path) -> None:
    """Remove the channel folder ``path`` with everything in it, never following a link.

    It is first renamed to a hidden name beside it, so the channel is gone in one step
    (a producer still using it fails instead of filling a half-removed folder, and a new
    channel of that name can be created at once); the hidden folder is then emptied and
    removed. Raises `ChannelNotFound` if ``path`` is no channel folder (a folder holding
    a ``.ramxchg`` state folder), `UnsafeRoot` for a symlink.
    """
    missing = ChannelNotFound(f"no channel folder {path}", path=path, name=path.name)
    with SafeDir.open(path.parent) as parent:
        info = parent.lstat(path.name)
        if info is None or stat.S_ISREG(info.st_mode):
            raise missing
        channel = parent.sub(path.name)  # UnsafeRoot for a symlink or a FIFO
        if channel is None:
            raise missing
        with channel:
            if channel.lstat(STATE_DIR) is None:
                raise ChannelNotFound(
                    f"{path} is no channel (it has no {STATE_DIR} folder)",
                    path=path,
                    name=path.name,
                )
        hidden = f".{path.name}.dropped.{os.getpid()}.{os.urandom(4).hex()}"
        if not parent.rename(path.name, parent, hidden):
            raise missing
        gone = parent.sub(hidden)
        if gone is not None:
            with gone:
                gone.clear()
            parent.rmdir(hidden)
    log.info("dropped channel %s", path)
