"""Where each file of a channel lives: the on-disk protocol's names in one place.

See docs/protocol.md. A channel folder holds published items (``<name>.npy``,
``<name>.h5``) and one hidden state folder::

    <channel>/
      <name>.npy | <name>.h5        published items (immutable)
      .ramxchg/
        config.json                 retention and limits, written once
        seq                         the publish counter, guarded by a lock on itself
        meta/<name>.json            sidecar: seq, format, attrs, publish time
        tmp/                        items being written (never visible to readers)
        groups/<group>/             durable consumer groups
        quarantine/                 hostile or malformed files moved aside
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._root import ensure_dir

STATE_DIR = ".ramxchg"
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class ChannelLayout:
    """The paths of one channel folder."""

    path: Path

    @property
    def state(self) -> Path:
        return self.path / STATE_DIR

    @property
    def tmp(self) -> Path:
        return self.state / "tmp"

    @property
    def meta(self) -> Path:
        return self.state / "meta"

    @property
    def groups(self) -> Path:
        return self.state / "groups"

    @property
    def quarantine(self) -> Path:
        return self.state / "quarantine"

    @property
    def config_file(self) -> Path:
        return self.state / "config.json"

    @property
    def seq_file(self) -> Path:
        return self.state / "seq"

    def sidecar(self, name: str) -> Path:
        return self.meta / f"{name}.json"

    def item(self, name: str, suffix: str) -> Path:
        return self.path / f"{name}{suffix}"

    def create(self, mode: int) -> None:
        """Create the channel folder (with ``mode``) and its state folders."""
        ensure_dir(self.path, mode)
        for folder in (self.state, self.tmp, self.meta, self.groups):
            ensure_dir(folder, mode)

    def temp_name(self, stem: str, suffix: str) -> Path:
        """A unique temporary path in the hidden tmp folder: ``<stem>.<pid>.<random><suffix>``.

        The pid lets ``gc`` tell a dead producer's leftovers from a live one's work.
        """
        return self.tmp / f"{stem}.{os.getpid()}.{os.urandom(6).hex()}{suffix}"
