"""A channel's settings, stored once with the channel so every process agrees on them."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .._errors import ConfigMismatch, CorruptItem, InvalidSetting
from ..formats import get_format
from .statefile import create_once, read_state

_MAX_CONFIG_BYTES = 64 * 1024
#: The most pooled files of a channel created without ``recycle``: the pool holds what
#: recent bursts had in flight, up to this (see _store/pool.py).
DEFAULT_RECYCLE = 64


class FileMode(int):
    """Permission bits that show in octal (``0o700``), so ``help(Channel)`` reads well."""

    def __repr__(self) -> str:
        return f"0o{self:o}"


#: A new channel's folders: only their owner may enter them.
OWNER_ONLY = FileMode(0o700)


@dataclass(frozen=True)
class ChannelConfig:
    """Default format, retention and limits of a channel (see `Channel`)."""

    format: str = "npy"
    keep_last: int | None = None
    max_bytes: int | None = None
    max_items: int | None = None
    ttl: float | None = None
    reserve_bytes: int = 0
    recycle: int = DEFAULT_RECYCLE

    def __post_init__(self) -> None:
        # Checked here, so neither a caller's value nor a config.json written by another
        # program can reach a put as, say, keep_last=2.5 (a TypeError after publishing).
        try:
            get_format(self.format)
        except (ValueError, TypeError) as exc:
            raise _invalid("format", self.format, "a known format name ('npy', 'hdf5')") from exc
        for name in ("keep_last", "max_bytes", "max_items"):
            if getattr(self, name) is not None:
                self._set_int(name, minimum=1, wanted="a positive integer or None")
        self._set_int("reserve_bytes", minimum=0, wanted="an integer >= 0")
        self._set_int("recycle", minimum=0, wanted="an integer >= 0")
        ttl = self.ttl
        if ttl is not None:
            wanted = "a finite number of seconds > 0, or None"
            if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
                raise _invalid("ttl", ttl, wanted)
            if not (math.isfinite(ttl) and ttl > 0):
                raise _invalid("ttl", ttl, wanted)
            if not isinstance(ttl, (int, float)):  # e.g. numpy.float64: store a plain float
                object.__setattr__(self, "ttl", float(ttl))

    def _set_int(self, name: str, *, minimum: int, wanted: str) -> None:
        """Check that setting ``name`` is an integer >= ``minimum``; store it as an int."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _invalid(name, value, wanted)
        if value < minimum:
            raise _invalid(name, value, wanted)
        object.__setattr__(self, name, int(value))

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> ChannelConfig:
        try:
            data = json.loads(raw)
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptItem(f"channel config {path} is not valid: {exc}", path=path) from exc


def check_mode(mode: object) -> None:
    """`InvalidSetting` unless ``mode`` is permission bits for the channel's folders."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise _invalid("mode", mode, "permission bits (0 to 0o7777)")


def _invalid(setting: str, value: object, wanted: str) -> InvalidSetting:
    return InvalidSetting(
        f"channel setting {setting} must be {wanted}, not {value!r}", setting=setting, value=value
    )


def load_or_store(path: Path, wanted: dict[str, Any], *, store: bool = True) -> ChannelConfig:
    """The channel's stored config; the first opener stores ``wanted`` atomically.

    ``wanted`` holds only settings the caller passed explicitly; any that differ from
    the stored ones raise `ConfigMismatch`. ``store=False`` (a reader): with no stored
    config, ``wanted`` is used as it is and nothing is written.
    """
    stored = _read(path)
    if stored is None:
        candidate = ChannelConfig(**wanted)
        if not store:
            return candidate
        if create_once(path, candidate.to_json()):
            return candidate
        stored = _read(path)  # another process stored one first: theirs counts
    assert stored is not None
    differing = {k: (v, getattr(stored, k)) for k, v in wanted.items() if getattr(stored, k) != v}
    if differing:
        detail = ", ".join(f"{k}={new!r} (stored {old!r})" for k, (new, old) in differing.items())
        raise ConfigMismatch(
            f"channel {path.parent.parent} was created with other settings: {detail}",
            path=path,
            differing=differing,
        )
    return stored


def _read(path: Path) -> ChannelConfig | None:
    raw = read_state(path, _MAX_CONFIG_BYTES, "channel config")
    return None if raw is None else ChannelConfig.from_json(raw, path)
