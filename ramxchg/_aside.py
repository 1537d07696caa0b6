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

from ._root import ensure_dir

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.json"


def set_aside(
    source: str | os.PathLike[str], folder: Path, reason: str, **details: Any
) -> Path | None:
    """Move ``source`` into ``folder`` and write ``<file>.reason.json`` next to it.

    The move is one ``rename`` (same filesystem), so two processes racing to set the
    same file aside cannot both succeed: the loser gets None. A file of the same name
    already in ``folder`` is kept; the new one gets ``<name>.<ns><suffix>``.
    ``details`` (JSON values) are added to the reason file. Logs a warning naming the
    file and the reason, so every caller reports it the same way.
    """
    source = Path(source)
    ensure_dir(folder)
    target = folder / source.name
    if os.path.lexists(target):
        target = folder / f"{source.stem}.{time.time_ns()}{source.suffix}"
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return None  # gone already: deleted, or set aside by another process
    record = {
        "version": 1,
        "file": source.name,
        "reason": reason,
        "set_aside_ns": time.time_ns(),
        "pid": os.getpid(),
        **details,
    }
    reason_file = target.with_name(target.name + REASON_SUFFIX)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, reason_file)  # readers never see a half-written reason
    log.warning("set aside %s as %s: %s", source, target, reason)
    return target


def read_reason(moved: Path) -> dict[str, Any]:
    """The reason record written beside a file that was set aside."""
    data: dict[str, Any] = json.loads(moved.with_name(moved.name + REASON_SUFFIX).read_text())
    return data
