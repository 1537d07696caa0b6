"""Exceptions raised by ramxchg.

Every error ramxchg raises on purpose derives from :class:`RamxchgError` and also
from the builtin a caller would naturally catch::

    RamxchgError(Exception)
    ├── InvalidName(ValueError)        a name breaks the naming rules
    ├── InvalidAttrs(ValueError, TypeError)  an attrs value without a JSON form
    ├── ItemNotFound(KeyError)         no item of that name in the channel
    │   ├── GroupNotFound              no durable group of that name (or it was dropped)
    │   └── ChannelNotFound(FileNotFoundError)  no such channel (``create=False``)
    ├── ItemExists(FileExistsError)    publishing a name that is taken
    ├── CorruptItem(ValueError)        a file that looks like an item but is malformed
    ├── UnsupportedDtype(TypeError)    object dtypes: never pickled, never written
    ├── ConfigMismatch(ValueError)     a channel reopened with other settings
    ├── InvalidSetting(ValueError)     a channel setting of the wrong type or out of range
    ├── UnsafeRoot(PermissionError)    a root or channel that is a symlink or someone else's
    ├── ChannelFull(TimeoutError)      backpressure: the channel stayed over its limits
    ├── RamDiskFull(OSError)           the RAM disk has no room (errno ENOSPC)
    └── RamDiskError(RuntimeError)     a RAM disk could not be set up or removed

    NotRamBackedWarning(UserWarning)   a channel root on a disk, not in RAM (a warning)

Each carries the path involved as ``.path`` and the numbers as attributes named
in its docstring, and survives pickling (so it crosses process boundaries).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any


class RamxchgError(Exception):
    """Root of every error ramxchg raises on purpose.

    Parameters
    ----------
    message
        The human-readable explanation; it names the file and the numbers.
    path
        The file or folder involved, if any.
    **details
        Numbers and facts involved, set as attributes of the same name.
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike[str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.__dict__.update(details)

    def __str__(self) -> str:
        # KeyError would otherwise repr-quote the message.
        return self.message


class InvalidName(RamxchgError, ValueError):
    """A channel, item or group name breaks the naming rules (``.name`` holds it)."""


class InvalidAttrs(RamxchgError, ValueError, TypeError):
    """An ``attrs`` value has no JSON form (NaN, bytes, a large array, ...).

    ``.key_path`` names the value, e.g. ``attrs['calib']['m'][1][0]``. Also a TypeError,
    which is what unsupported types raised before this class existed.
    """


class ItemNotFound(RamxchgError, KeyError):
    """No published item of that name (``.name``) exists in the channel."""


class GroupNotFound(ItemNotFound):
    """No durable group ``.group`` in the channel ``.path``: never registered, or dropped
    (`Channel.drop_group`) while a member was still using it."""


class ChannelNotFound(ItemNotFound, FileNotFoundError):
    """No channel ``.name`` at ``.path``: opened with ``create=False`` (a reader such as
    ``ramxchg ls``), or dropped (`Channel.drop`). Also a FileNotFoundError."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errno = _errno.ENOENT
        self.strerror = message
        self.filename = self.path


class ItemExists(RamxchgError, FileExistsError):
    """An item of that name (``.name``) is already published; items are immutable."""


class CorruptItem(RamxchgError, ValueError):
    """A file in a channel looks like an item but is malformed.

    ``.path`` names the file; ``.expected_bytes`` and ``.actual_bytes`` are set when
    the header promises more data than the file holds.
    """


class UnsupportedDtype(RamxchgError, TypeError):
    """The array's dtype (``.dtype``) holds Python objects, which are never pickled."""


class ConfigMismatch(RamxchgError, ValueError):
    """A channel was opened with settings that differ from the ones stored with it."""


class InvalidSetting(RamxchgError, ValueError):
    """A channel setting (``.setting``) has the wrong type or is out of range (``.value``)."""


class UnsafeRoot(RamxchgError, PermissionError):
    """A root or channel folder is a symlink or is owned by another user (``.owner_uid``)."""


class ChannelFull(RamxchgError, TimeoutError):
    """Publishing would exceed the channel's ``max_items``/``max_bytes`` past the timeout.

    Attributes: ``.items``, ``.bytes``, ``.max_items``, ``.max_bytes``, ``.needed_bytes``,
    ``.timeout``.
    """


class RamDiskFull(RamxchgError, OSError):
    """The RAM disk under the channel has no room: ``.needed_bytes``, ``.free_bytes``."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errno = _errno.ENOSPC
        self.strerror = message
        self.filename = self.path


class RamDiskError(RamxchgError, RuntimeError):
    """A RAM disk could not be created, described or removed (``.command`` when relevant)."""


class NotRamBackedWarning(UserWarning):
    """The channel root is on a disk, not in RAM: ramxchg works but is slower."""
