"""ramxchg: pass large numpy arrays between processes through files on a RAM disk.

Producers publish arrays into a channel (a folder) with one atomic rename; consumers
map them zero-copy. See README.md and docs/ for the guide and the on-disk protocol.
"""

from __future__ import annotations

from ._channel import Channel, ChannelStatus, GroupStatus
from ._delivery.subscription import Subscription
from ._errors import (
    ChannelFull,
    ChannelNotFound,
    ConfigMismatch,
    CorruptItem,
    GroupNotFound,
    InvalidAttrs,
    InvalidName,
    InvalidSetting,
    ItemExists,
    ItemNotFound,
    NotRamBackedWarning,
    RamDiskError,
    RamDiskFull,
    RamxchgError,
    UnsafeRoot,
    UnsupportedDtype,
)
from ._item import Item
from ._store.layout import list_channels
from ._store.root import default_root
from ._store.setaside import SetAsideFile, SetAsideFolder
from ._store.sidecar import encode_attrs
from ._version import __version__

__all__ = [
    "Channel",
    "ChannelFull",
    "ChannelNotFound",
    "ChannelStatus",
    "ConfigMismatch",
    "CorruptItem",
    "GroupNotFound",
    "GroupStatus",
    "InvalidAttrs",
    "InvalidName",
    "InvalidSetting",
    "Item",
    "ItemExists",
    "ItemNotFound",
    "NotRamBackedWarning",
    "RamDiskError",
    "RamDiskFull",
    "RamxchgError",
    "SetAsideFile",
    "SetAsideFolder",
    "Subscription",
    "UnsafeRoot",
    "UnsupportedDtype",
    "__version__",
    "default_root",
    "encode_attrs",
    "list_channels",
]
