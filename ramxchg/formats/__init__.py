"""Item file formats, chosen in one place: by name for writing, by suffix for reading."""

from __future__ import annotations

import os
from pathlib import PurePath

from .base import Allocation, Format, Layout, OpenedFile
from .hdf5 import Hdf5Format
from .npy import NpyFormat

_FORMATS: dict[str, Format] = {"npy": NpyFormat(), "hdf5": Hdf5Format()}
_SUFFIXES = tuple(fmt.suffix for fmt in _FORMATS.values())


def register(fmt: Format) -> None:
    """Make a format available by its name and its suffix."""
    global _SUFFIXES
    _FORMATS[fmt.name] = fmt
    _SUFFIXES = tuple(fmt.suffix for fmt in _FORMATS.values())


def get_format(name: str) -> Format:
    """The format called ``name`` ("npy", "hdf5"); ValueError for an unknown one."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known: {sorted(_FORMATS)}") from None


def format_for(path: PurePath | str) -> Format | None:
    """The format whose suffix ``path`` has, or None when it is not an item file."""
    suffix = os.path.splitext(path)[1]  # pathlib costs ~10x more on this hot path
    for fmt in _FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    return None


def suffixes() -> tuple[str, ...]:
    """Suffixes of every item file format, e.g. (".npy", ".h5")."""
    return _SUFFIXES


__all__ = [
    "Allocation",
    "Format",
    "Layout",
    "OpenedFile",
    "format_for",
    "get_format",
    "register",
    "suffixes",
]
