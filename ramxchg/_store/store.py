"""One channel's store: its folder found or made, and the objects that keep its state.

`Channel` holds one `ChannelStore` and hands it to what it makes (a `Subscription`):
the one explicit way the layers above reach a channel's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ChannelNotFound
from ..disks.probe import warn_if_not_ram
from .config import ChannelConfig, check_mode, load_or_store
from .layout import ChannelLayout
from .names import check_name
from .retention import Retention
from .root import check_safe_dir, ensure_dir, find_default_root
from .sequence import SequenceCounter


@dataclass(frozen=True)
class ChannelStore:
    """The state of one channel folder: where its files are, its settings, its publish
    counter and the retention that keeps it within its limits."""

    name: str
    path: Path
    layout: ChannelLayout
    config: ChannelConfig
    counter: SequenceCounter
    retention: Retention


def open_store(
    name: str | os.PathLike[str],
    root: str | os.PathLike[str] | None,
    *,
    mode: int,
    wanted: dict[str, Any],
    create: bool,
    stacklevel: int,
) -> ChannelStore:
    """Find (or make, with ``create``) the channel folder and open its state.

    ``name`` is a channel name under ``root`` (`default_root` when None), or a path to a
    folder, which may be another user's shared folder (never a symlink). ``wanted``: the
    settings given, checked first and stored when the channel is new. Raises
    `InvalidSetting`, `InvalidName`, `ChannelNotFound` (``create=False``), `UnsafeRoot`,
    `ConfigMismatch`. A root not in RAM gets a `NotRamBackedWarning`, once.
    """
    ChannelConfig(**wanted)  # every setting is checked before anything is stored
    check_mode(mode)
    # A folder named by its path may be another user's, shared on purpose; a channel
    # named under a root must be ours (someone may have pre-created the name).
    by_path = isinstance(name, os.PathLike) or os.path.isabs(name)
    if by_path:
        path = Path(name)
        if not create and not os.path.lexists(path):
            raise ChannelNotFound(f"no channel folder {path}", path=path, name=path.name)
        check_safe_dir(path, owner_check=False)
        home = path  # warned about as a root is (once per filesystem)
    else:
        check_name(str(name), "channel")
        base = Path(root) if root is not None else find_default_root(create=create)
        path = base / str(name)
        if not create and not path.is_dir():
            problem = "" if base.is_dir() else f" (the root {base} does not exist)"
            raise ChannelNotFound(
                f"no channel {name!r} in {base}{problem}", path=path, name=str(name)
            )
        if root is not None:
            if create:
                ensure_dir(base)
            else:
                check_safe_dir(base)
        home = base  # any root is warned about, not only the default one
    layout = ChannelLayout(path)
    if create:
        layout.make_folders(mode, owner_check=not by_path)
    else:  # a reader: nothing is created, not even the state folder
        check_safe_dir(path, owner_check=not by_path)
    # Only once the channel is usable: a root that fails gets its error, not a warning.
    warn_if_not_ram(home, stacklevel=stacklevel + 1)
    config = load_or_store(layout.config_file, wanted, store=create)
    retention = Retention(layout, config)
    return ChannelStore(path.name, path, layout, config, retention.counter, retention)
