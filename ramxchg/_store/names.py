"""The naming rules for channels, items and groups, checked before the disk is touched."""

from __future__ import annotations

import re

from .._errors import InvalidName

MAX_NAME_LENGTH = 200

# ASCII only: Unicode look-alikes (fullwidth letters, dot leaders) would make two
# names that read the same.
_ALLOWED = re.compile(r"[A-Za-z0-9_.\-]+")

# Windows refuses these as file names whatever the case and whatever follows the first dot.
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)]
    + [f"LPT{i}" for i in range(10)]
)


def check_name(name: object, kind: str = "item") -> str:
    """Return ``name`` if it is a valid channel/item/group name, else raise `InvalidName`.

    Rules: 1 to 200 characters of ASCII letters, digits, ``-``, ``_`` and ``.``; not
    starting with ``.`` (hidden files belong to ramxchg); not ending with ``.`` (Windows
    drops it); not a Windows device name such as ``CON`` or ``lpt1.npy``.
    """
    if not isinstance(name, str):
        raise InvalidName(
            f"{kind} name must be a str, not {type(name).__name__}: {name!r}", name=name
        )
    shown = name if len(name) <= 60 else name[:57] + "..."
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidName(
            f"{kind} name {shown!r} has {len(name)} characters; allowed 1 to {MAX_NAME_LENGTH}",
            name=name,
            length=len(name),
        )
    if not _ALLOWED.fullmatch(name):
        bad = sorted({c for c in name if not _ALLOWED.fullmatch(c)})
        raise InvalidName(
            f"{kind} name {shown!r} has characters outside A-Z a-z 0-9 - _ . : {bad!r}", name=name
        )
    if name.startswith("."):
        raise InvalidName(
            f"{kind} name {shown!r} starts with '.', which marks hidden files", name=name
        )
    if name.endswith("."):
        raise InvalidName(f"{kind} name {shown!r} ends with '.', which Windows drops", name=name)
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        raise InvalidName(f"{kind} name {shown!r} is a reserved Windows device name", name=name)
    return name
