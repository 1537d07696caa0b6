"""Sidecars: the small JSON file that travels with each published item.

``.ramxchg/meta/<name>.json`` holds the item's sequence number, format, publish time
and the user's ``attrs``. It is written before the item becomes visible, so a reader
that sees the item can always read its sidecar.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import CorruptItem
from ._statefile import read_state

#: A sidecar larger than this is refused (a hostile file must not exhaust memory).
MAX_SIDECAR_BYTES = 1 << 20


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar says about an item."""

    seq: int
    format: str
    published_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)
    #: where a copied item came from (``ramxchg bridge``); None for items published here
    origin: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        if not self.attrs and self.origin is None:  # the common case, without json's machinery
            return b'{"version":1,"seq":%d,"format":"%s","published_ns":%d,"attrs":{}}' % (
                self.seq,
                self.format.encode(),
                self.published_ns,
            )
        data = {
            "version": 1,
            "seq": self.seq,
            "format": self.format,
            "published_ns": self.published_ns,
            "attrs": self.attrs,
        }
        if self.origin is not None:
            data["origin"] = self.origin
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def encode_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check that ``attrs`` is JSON-serialisable (before anything is written).

    Raises TypeError for non-JSON values and ValueError for NaN/inf, which JSON lacks.
    """
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a dict, not {type(attrs).__name__}")
    plain = dict(attrs)
    try:
        text = json.dumps(plain, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"attrs are not valid JSON: {exc}") from exc
    except TypeError as exc:
        raise TypeError(f"attrs must be JSON-serialisable: {exc}") from exc
    if len(text) > MAX_SIDECAR_BYTES // 2:
        raise ValueError(
            f"attrs take {len(text)} bytes as JSON; the limit is {MAX_SIDECAR_BYTES // 2}"
        )
    result: dict[str, Any] = json.loads(text)  # what readers will see: tuples become lists
    return result


def write_sidecar(path: Path, sidecar: Sidecar) -> None:
    """Write the sidecar of an item that is not yet visible (so no temp file needed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        os.write(fd, sidecar.to_json())
    finally:
        os.close(fd)


def read_sidecar(path: Path) -> Sidecar | None:
    """The sidecar at ``path``; None when there is none (a file dropped in by another tool).

    Raises `CorruptItem` for a sidecar that is too large or not the expected JSON.
    """
    raw = read_state(path, MAX_SIDECAR_BYTES, "sidecar")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        sidecar = Sidecar(
            seq=data["seq"],
            format=data["format"],
            published_ns=data["published_ns"],
            attrs=data.get("attrs") or {},
            origin=data.get("origin"),
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CorruptItem(f"sidecar {path} is not valid: {exc}", path=path) from exc
    if (
        type(sidecar.seq) is not int
        or sidecar.seq < 1
        or not isinstance(sidecar.attrs, dict)
        or not isinstance(sidecar.origin, (dict, type(None)))
        or type(sidecar.published_ns) is not int
        or not isinstance(sidecar.format, str)
    ):
        raise CorruptItem(f"sidecar {path} has fields of the wrong type", path=path)
    return sidecar
