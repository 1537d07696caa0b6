"""Dropping a whole channel: its folder is renamed away at once, then emptied."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .._errors import ChannelNotFound, UnsafeRoot
from .layout import STATE_DIR
from .pool import remove_emptied
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
                # The mappings producers and consumers keep of item files and pooled
                # files hold no lock, and would keep their RAM: emptied first.
                _empty_files(gone)
                _empty_pool(gone)
                gone.clear()
            parent.rmdir(hidden)
    log.info("dropped channel %s", path)


def _empty_files(folder: SafeDir) -> None:
    """Remove the files in ``folder``, each emptied first if no reader maps it
    (`remove_emptied`)."""
    for name in folder.names():
        info = folder.lstat(name)
        if info is not None and stat.S_ISREG(info.st_mode):
            remove_emptied(folder, name)


def _empty_pool(channel: SafeDir) -> None:
    """`_empty_files` of the channel's ``pool/``, if it is a folder (a link is left to
    `SafeDir.clear`, which removes it without following it)."""
    state = _folder(channel, STATE_DIR)
    if state is not None:
        with state:
            pool = _folder(state, "pool")
            if pool is not None:
                with pool:
                    _empty_files(pool)


def _folder(parent: SafeDir, name: str) -> SafeDir | None:
    info = parent.lstat(name)
    if info is None or not stat.S_ISDIR(info.st_mode):
        return None
    try:
        return parent.sub(name)
    except UnsafeRoot:  # swapped for a link meanwhile
        return None
