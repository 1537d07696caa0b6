"""A channel's settings, stored once with the channel so every process agrees on them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ._errors import ConfigMismatch, CorruptItem
from ._statefile import create_once, read_state

_MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class ChannelConfig:
    """Default format, retention and limits of a channel (see `Channel`)."""

    format: str = "npy"
    keep_last: int | None = None
    max_bytes: int | None = None
    max_items: int | None = None
    ttl: float | None = None
    reserve_bytes: int = 0
    recycle: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_last", "max_bytes", "max_items", "ttl"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive number or None, not {value!r}")
        if self.recycle < 0:
            raise ValueError(f"recycle must be >= 0, not {self.recycle}")
        if self.reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, not {self.reserve_bytes}")

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


def load_or_store(path: Path, wanted: dict[str, Any]) -> ChannelConfig:
    """The channel's stored config; the first opener stores ``wanted`` atomically.

    ``wanted`` holds only settings the caller passed explicitly; any that differ from
    the stored ones raise `ConfigMismatch`.
    """
    stored = _read(path)
    if stored is None:
        candidate = ChannelConfig(**wanted)
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
