"""Sidecars: the small JSON file that travels with each published item.

``.ramxchg/meta/<name>.json`` holds the item's sequence number, format, publish time
and the user's ``attrs``. It is written (complete, then renamed into place) before the
item becomes visible, so a reader that sees the item can always read its sidecar.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .._errors import CorruptItem, InvalidAttrs
from ..formats.hdf5 import JSON_ATTRS
from .safedir import SafeDir
from .statefile import read_state

#: A sidecar larger than this is refused (a hostile file must not exhaust memory).
MAX_SIDECAR_BYTES = 1 << 20

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar says about an item."""

    seq: int
    format: str
    published_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)
    #: where a copied item came from (``ramxchg bridge``); None for items published here
    origin: dict[str, Any] | None = None
    #: inode and size of the item's file (written since protocol 1.1; None in older
    #: sidecars): a sidecar is for that one file only (`belongs_to`)
    ino: int | None = None
    size: int | None = None
    #: the bytes it was read from (None for one made here): a later read of the same
    #: bytes is the same sidecar, not parsed again (`ramxchg._store.scan.item_sidecar`)
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> bytes:
        if not self.attrs and self.origin is None and None not in (self.ino, self.size):
            # the common case, without json's machinery
            return (
                b'{"version":1,"seq":%d,"format":"%s","published_ns":%d,"ino":%d,"size":%d,'
                b'"attrs":{}}'
                % (self.seq, self.format.encode(), self.published_ns, self.ino, self.size)
            )
        mine = {"ino": self.ino, "size": self.size, "origin": self.origin}
        return json.dumps(
            {
                "version": 1,
                "seq": self.seq,
                "format": self.format,
                "published_ns": self.published_ns,
                **{key: value for key, value in mine.items() if value is not None},
                "attrs": self.attrs,
            },
            separators=(",", ":"),
            allow_nan=False,
        ).encode()

    def belongs_to(self, info: os.stat_result) -> bool:
        """Is this the sidecar of the file with ``lstat`` ``info``?

        Not when it records another inode or size: it was left by a producer that died
        before linking its item (or half-way through deleting one), and a file of that
        name written later by another program must not pass for that item (docs/
        protocol.md, section 3). Sidecars without these fields (protocol 1.0) are
        taken on trust.
        """
        return (self.ino is None or self.ino == info.st_ino) and (
            self.size is None or self.size == info.st_size
        )


#: Deepest nesting of lists and dicts inside attrs (a loop in the data ends here too).
MAX_ATTRS_DEPTH = 64
#: Most elements a numpy array may have as an attrs value; bigger ones belong in the data.
MAX_ATTR_ARRAY_ELEMENTS = 1024
#: Top-level keys a format keeps for itself.
_RESERVED_KEYS = (JSON_ATTRS,)
_SUPPORTED = (
    "attrs take None, bool, int, float, str, lists, tuples, dicts with str keys, numpy "
    "scalars and small arrays, datetime/date/time, np.datetime64 and paths"
)


def encode_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``attrs`` as the plain JSON values every reader will see (before anything is written).

    The one converter for every format; the rules are the table in docs/protocol.md
    section 3: numpy scalars become bool/int/float/str, numpy arrays of at most
    `MAX_ATTR_ARRAY_ELEMENTS` elements nested lists, datetimes ISO 8601 strings, tuples
    lists, paths str. Raises `InvalidAttrs` naming the key for anything else (NaN and
    Infinity, bytes, larger arrays, nesting deeper than `MAX_ATTRS_DEPTH`, ...).
    """
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise InvalidAttrs(f"attrs must be a dict, not {type(attrs).__name__}", key_path="attrs")
    plain = {}
    for key, value in attrs.items():
        text, where = _key(key, "attrs")
        if text == "" or text in _RESERVED_KEYS:
            why = "is empty" if text == "" else "is reserved by ramxchg's HDF5 format"
            raise InvalidAttrs(f"{where}: the key {why}", key_path=where)
        try:
            plain[text] = _json_value(value, where, 1)
        except _TooDeep:  # named by its top-level key: the full path is as deep as the data
            raise InvalidAttrs(
                f"{where} nests deeper than {MAX_ATTRS_DEPTH} levels of lists and dicts "
                "(or contains itself)",
                key_path=where,
            ) from None
    size = len(json.dumps(plain, separators=(",", ":")))
    if size > MAX_SIDECAR_BYTES // 2:
        raise InvalidAttrs(
            f"attrs take {size} bytes as JSON; the limit is {MAX_SIDECAR_BYTES // 2}: put "
            "large values as data",
            key_path="attrs",
            bytes=size,
        )
    return plain


class _TooDeep(Exception):
    """Nesting past `MAX_ATTRS_DEPTH`; `encode_attrs` names the top-level key."""


def _json_value(value: Any, where: str, depth: int) -> Any:
    """``value`` (at key path ``where``) as a plain JSON value, by the documented rules."""
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value  # the common cases first: attrs are converted on every put
    if isinstance(value, np.ndarray):
        return _json_array(value, where, depth)
    if isinstance(value, (Mapping, list, tuple)):
        if depth > MAX_ATTRS_DEPTH:
            raise _TooDeep
        if isinstance(value, Mapping):
            result = {}
            for key, item in value.items():
                text, at = _key(key, where)
                result[text] = _json_value(item, at, depth + 1)
            return result
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        # float16/float32: the shortest decimal that reads back as the same value
        number = float(value) if isinstance(value, float) else float(str(value))
        if not math.isfinite(number):
            raise InvalidAttrs(_non_finite(number, where), key_path=where)
        return number
    if isinstance(value, str):
        return str.__str__(value)  # np.str_ and str enums: the text itself
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise InvalidAttrs(f"{where} is NaT (not a time): store None", key_path=where)
        return str(np.datetime_as_string(value))
    if isinstance(value, PurePath):
        return str(value)
    raise InvalidAttrs(f"{where} {_refusal(value)}", key_path=where, type=kind.__name__)


def _key(key: Any, where: str) -> tuple[str, str]:
    """``key`` of the dict at ``where`` as plain text, and the key path it names."""
    if not isinstance(key, str):
        raise InvalidAttrs(
            f"{where} has the key {key!r} ({type(key).__name__}): keys must be strings",
            key_path=where,
        )
    text = str.__str__(key)  # np.str_ and str enums: the text itself
    return text, f"{where}[{text!r}]"


def _json_array(value: np.ndarray, where: str, depth: int) -> Any:
    """A small numpy array as nested lists (its dtype is not kept)."""
    if value.size > MAX_ATTR_ARRAY_ELEMENTS:
        raise InvalidAttrs(
            f"{where} is a numpy array of {value.size} elements; attrs take at most "
            f"{MAX_ATTR_ARRAY_ELEMENTS}: put it as data (an HDF5 item holds several arrays)",
            key_path=where,
            elements=value.size,
        )
    if depth + value.ndim - 1 > MAX_ATTRS_DEPTH:
        raise _TooDeep
    kind = value.dtype.kind
    if kind == "O":
        return _json_value(value.tolist(), where, depth)  # each element by the same rules
    if kind in "fM":
        if kind == "f" and value.dtype != np.float64:  # as for scalars: float32 0.1 -> 0.1
            value = value.astype(str).astype(np.float64)
        bad = ~np.isfinite(value) if kind == "f" else np.isnat(value)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            at = where + "".join(f"[{i}]" for i in index)
            raise InvalidAttrs(
                _non_finite(float(value[index]), at) if kind == "f" else f"{at} is NaT: store None",
                key_path=at,
            )
        return np.datetime_as_string(value).tolist() if kind == "M" else value.tolist()
    if kind in "biuU":
        return value.tolist()
    raise InvalidAttrs(f"{where} {_refusal(value)}", key_path=where, dtype=str(value.dtype))


def _non_finite(value: float, where: str) -> str:
    name = "NaN" if math.isnan(value) else "Infinity"
    return f"{where} is {name}, which JSON does not have: store None or a string instead"


def _refusal(value: Any) -> str:
    """Why ``value`` has no JSON form, and what to store instead."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        what = f"a numpy array of dtype {value.dtype}"
        if kind == "c":
            return f"is {what}: complex numbers have no JSON form; store real and imag parts"
        if kind == "m":
            return f"is {what}: store durations as numbers of seconds"
        return f"is {what} (bytes or records), which has no JSON form: put it as data"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (
            f"is {type(value).__name__}, which JSON cannot hold: decode text "
            "(value.decode()) or put binary data as a uint8 array"
        )
    if isinstance(value, (complex, np.complexfloating)):
        return "is a complex number, which JSON cannot hold: store real and imag parts"
    if isinstance(value, (dt.timedelta, np.timedelta64)):
        return "is a duration: store a number of seconds (td.total_seconds())"
    return f"is a {type(value).__name__}, which has no JSON form; {_SUPPORTED}"


def write_sidecar(meta: SafeDir, name: str, sidecar: Sidecar, tmp: SafeDir, tmp_name: str) -> None:
    """Write a sidecar complete as the new file ``tmp_name`` in the folder ``tmp``, then
    rename it to ``name`` in the folder ``meta`` (open folders: no link is followed).

    So ``name`` holds a whole sidecar or none (an orphan one of a crashed producer is
    replaced): a full disk fails the write, never leaving a short file in its place.
    On any error the temporary file is removed and the error raised.
    """
    data = memoryview(sidecar.to_json())
    try:
        fd = tmp.open_file(tmp_name, _CREATE_FLAGS, 0o666)
        try:
            while data:  # a nearly full disk may take part of it, then fail
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        tmp.replace(tmp_name, meta, name)
    except BaseException:
        tmp.unlink(tmp_name)
        raise


def read_sidecar(path: str | Path) -> Sidecar | None:
    """The sidecar at ``path``; None when there is none (a file dropped in by another tool).

    Raises `CorruptItem` for a sidecar that is too large or not the expected JSON.
    """
    raw = read_state(path, MAX_SIDECAR_BYTES, "sidecar")
    return None if raw is None else parse_sidecar(raw, path)


def parse_sidecar(raw: bytes, path: str | Path) -> Sidecar:
    """The sidecar read from ``path`` as ``raw``; `CorruptItem` when it is not valid."""
    try:
        data = json.loads(raw)
        sidecar = Sidecar(
            seq=data["seq"],
            format=data["format"],
            published_ns=data["published_ns"],
            attrs=data.get("attrs") or {},
            origin=data.get("origin"),
            ino=data.get("ino"),
            size=data.get("size"),
            raw=raw,
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
        or not all(_optional_count(value) for value in (sidecar.ino, sidecar.size))
    ):
        raise CorruptItem(f"sidecar {path} has fields of the wrong type", path=path)
    return sidecar


def _optional_count(value: object) -> bool:
    """None, or an int >= 0 (not a bool): what ``ino`` and ``size`` may hold."""
    return value is None or (type(value) is int and value >= 0)
