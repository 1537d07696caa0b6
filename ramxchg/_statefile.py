"""Reading the small state files of a channel (config, sidecars, groups, claims) safely."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import CorruptItem

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def read_state(path: str | Path, limit: int, what: str) -> bytes | None:
    """The bytes of a small state file; None if it does not exist.

    Never follows a symlink and never blocks on a FIFO (a channel may hold an outsider's
    files). Raises `CorruptItem` naming ``what`` and the file when it cannot be opened
    or holds more than ``limit`` bytes.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptItem(f"{what} {path} cannot be opened: {exc.strerror}", path=path) from exc
    try:
        raw = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise CorruptItem(f"{what} {path} is over {limit} bytes", path=path, limit_bytes=limit)
    return raw
