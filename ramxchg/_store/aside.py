"""Moving a file out of a channel into a hidden folder, with a reason file beside it.

Used for quarantine (legacy files that stay malformed) and dead letters (items whose
command kept failing). See docs/protocol.md, "Files set aside"::

    .ramxchg/quarantine/<file>                the file, moved (one rename)
    .ramxchg/quarantine/<file>.reason.json    {"version": 1, "file": ..., "reason": ...,
                                               "set_aside_ns": T, "pid": P, ...}
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .safedir import SafeDir

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.json"
#: Files we could not move (another user's channel): each is reported once, not per scan.
_left_in_place: set[tuple[str, int]] = set()
_MAX_REMEMBERED = 4096


def set_aside(
    source: str | os.PathLike[str], folder: Path, reason: str, **details: Any
) -> Path | None:
    """Move ``source`` into ``folder`` and write ``<file>.reason.json`` next to it.

    ``source`` is a file of a channel and ``folder`` one of its state folders
    (``<channel>/.ramxchg/quarantine``); both are reached through folder descriptors,
    never through a link. The move is one ``rename``, so two processes racing to set the
    same file aside cannot both succeed: the loser gets None. A file of the same name
    already in ``folder`` is kept; the new one gets ``<name>.<ns><suffix>``. ``details``
    (JSON values) are added to the reason file. Logs a warning naming the file and the
    reason, so every caller reports it the same way.

    A file we may not move (a reader of another user's channel, or a state folder that is
    a link) is left where it is: logged once, and None is returned.
    """
    source = Path(source)
    channel, state = folder.parent.parent, folder.parent.name
    try:
        with (
            SafeDir.open(channel) as top,
            top.make_sub(state) as inner,
            inner.make_sub(folder.name) as aside,
        ):
            name = _move(top, aside, source, reason, details)
    except (PermissionError, FileNotFoundError) as exc:  # UnsafeRoot is a PermissionError
        _report_left(source, reason, exc)
        return None
    if name is None:
        return None  # gone already: deleted, or set aside by another process
    target = folder / name
    log.warning("set aside %s as %s: %s", source, target, reason)
    return target


def _move(
    channel: SafeDir, aside: SafeDir, source: Path, reason: str, details: dict[str, Any]
) -> str | None:
    """Rename ``source`` from ``channel`` into ``aside``, write its reason: the name used."""
    record = {
        "version": 1,
        "file": source.name,
        "reason": reason,
        "set_aside_ns": time.time_ns(),
        "pid": os.getpid(),
        **details,
    }
    encoded = json.dumps(record, indent=1).encode()  # details that are no JSON: nothing moved
    name = source.name
    if aside.lstat(name) is not None:
        name = f"{source.stem}.{time.time_ns()}{source.suffix}"
    if not channel.rename(source.name, aside, name):
        return None
    aside.write_whole(name + REASON_SUFFIX, encoded)
    return name


def _report_left(source: Path, reason: str, error: OSError) -> None:
    """Log, once per file, that ``source`` stays where it is."""
    try:
        key = (os.fspath(source), os.lstat(source).st_ino)
    except FileNotFoundError:
        return
    if key in _left_in_place:
        return
    if len(_left_in_place) >= _MAX_REMEMBERED:
        _left_in_place.clear()
    _left_in_place.add(key)
    log.warning("cannot set aside %s (%s): %s; left where it is", source, reason, error)


def read_reason(moved: Path) -> dict[str, Any]:
    """The reason record written beside a file that was set aside."""
    data: dict[str, Any] = json.loads(moved.with_name(moved.name + REASON_SUFFIX).read_text())
    return data
