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
        dead/                       dead letters: items whose command kept failing
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .root import ensure_dir, find_default_root
from .safedir import StateTree

STATE_DIR = ".ramxchg"
#: docs/protocol.md's version; the ``"version"`` fields of the files hold its major part.
PROTOCOL_VERSION = "1.1"


@dataclass(frozen=True)
class ChannelLayout:
    """The paths of one channel folder.

    Folders are `Path` objects, computed once. The per-item helpers return plain
    strings: they run several times per publish, where pathlib's overhead showed up
    as the largest cost of a small ``put``.
    """

    path: Path

    @cached_property
    def state(self) -> Path:
        return self.path / STATE_DIR

    @cached_property
    def tmp(self) -> Path:
        return self.state / "tmp"

    @cached_property
    def meta(self) -> Path:
        return self.state / "meta"

    @cached_property
    def groups(self) -> Path:
        return self.state / "groups"

    @cached_property
    def quarantine(self) -> Path:
        return self.state / "quarantine"

    @cached_property
    def dead(self) -> Path:
        return self.state / "dead"

    @cached_property
    def pool(self) -> Path:
        return self.state / "pool"

    @cached_property
    def config_file(self) -> Path:
        return self.state / "config.json"

    @cached_property
    def seq_file(self) -> Path:
        return self.state / "seq"

    @cached_property
    def _prefixes(self) -> tuple[str, str, str]:
        return (f"{self.path}{os.sep}", f"{self.meta}{os.sep}", f"{self.tmp}{os.sep}")

    def sidecar(self, name: str) -> str:
        """``.ramxchg/meta/<name>.json``."""
        return f"{self._prefixes[1]}{name}.json"

    def item(self, name: str, suffix: str) -> str:
        """``<name><suffix>`` in the channel folder."""
        return f"{self._prefixes[0]}{name}{suffix}"

    def file(self, filename: str) -> str:
        """``filename`` in the channel folder."""
        return f"{self._prefixes[0]}{filename}"

    def make_folders(self, mode: int, *, owner_check: bool = True) -> None:
        """Create the channel folder (with ``mode``) and its state folders.

        ``owner_check=False``: the folders may belong to another user (a shared channel).
        """
        ensure_dir(self.path, mode, owner_check=owner_check)
        for folder in (self.state, self.tmp, self.meta, self.groups, self.pool):
            ensure_dir(folder, mode, owner_check=owner_check)

    def open_state(self, *, check_owner: bool = False) -> StateTree:
        """The state folders, each opened on first use without following a link.

        Every walk of a state folder goes through this (see `ramxchg._store.safedir`).
        ``check_owner``: refuse folders that belong neither to the channel's owner nor to us.
        """
        return StateTree(self.path, STATE_DIR, check_owner=check_owner)

    def temp_name(self, stem: str, suffix: str) -> str:
        """A unique name for a temporary file in ``tmp/``: ``<stem>.<pid>.<random><suffix>``.

        Our producers lock their files and put the marker in ``suffix`` (see _store/tmpfiles.py);
        the pid tells whoever collects an unmarked file whether its writer runs.
        """
        return f"{stem}.{os.getpid()}.{os.urandom(6).hex()}{suffix}"

    def in_tmp(self, name: str) -> str:
        """``.ramxchg/tmp/<name>``."""
        return f"{self._prefixes[2]}{name}"


def list_channels(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The channel folders directly under ``root`` (`default_root` when None, not
    created), sorted: real folders (not symlinks, not hidden) holding a ``.ramxchg``
    state folder. Empty if ``root`` is not a folder."""
    base = Path(root) if root is not None else find_default_root(create=False)
    if not base.is_dir():
        return []
    return [
        entry
        for entry in sorted(base.iterdir())
        if not entry.name.startswith(".")
        and not entry.is_symlink()
        and entry.is_dir()
        and (entry / STATE_DIR).is_dir()
    ]
