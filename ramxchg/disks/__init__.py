"""RAM-disk adapters, one module per mechanism, chosen by `sys.platform` in `get_adapter`.

============  ===========================  =====================================
platform      adapter                      mechanism
============  ===========================  =====================================
linux         `tmpfs.TmpfsAdapter`         ``mount -t tmpfs`` (huge pages)
win32         `imdisk.ImDiskAdapter`       ImDisk or Arsenal Image Mounter
darwin        `hdiutil.HdiutilAdapter`     ``hdiutil attach ram://``
============  ===========================  =====================================

Every module imports on every OS; OS calls happen only when an adapter method runs.
"""

from __future__ import annotations

import sys

from .._errors import RamDiskError
from .base import (
    CommandResult,
    CommandRunner,
    DiskSpec,
    HostView,
    MountedDisk,
    RamDiskAdapter,
    RamDiskInfo,
)
from .hdiutil import HdiutilAdapter
from .imdisk import ImDiskAdapter
from .tmpfs import TmpfsAdapter
from .units import format_size, parse_size

#: ``sys.platform`` prefix -> adapter class; the one place the choice is made.
ADAPTERS: dict[str, type[RamDiskAdapter]] = {
    "linux": TmpfsAdapter,
    "win32": ImDiskAdapter,
    "cygwin": ImDiskAdapter,
    "darwin": HdiutilAdapter,
}


def adapter_class(platform: str | None = None) -> type[RamDiskAdapter]:
    """The adapter class for ``platform`` (default: this machine's `sys.platform`)."""
    platform = platform or sys.platform
    for prefix, cls in ADAPTERS.items():
        if platform.startswith(prefix):
            return cls
    raise RamDiskError(
        f"no RAM-disk adapter for platform {platform!r}; supported: {', '.join(ADAPTERS)}",
        platform=platform,
    )


def get_adapter(
    platform: str | None = None,
    runner: CommandRunner | None = None,
    host: HostView | None = None,
) -> RamDiskAdapter:
    """The RAM-disk adapter for ``platform``, using ``runner``/``host`` as its OS seams."""
    return adapter_class(platform)(runner=runner, host=host)


__all__ = [
    "ADAPTERS",
    "CommandResult",
    "CommandRunner",
    "DiskSpec",
    "HdiutilAdapter",
    "HostView",
    "ImDiskAdapter",
    "MountedDisk",
    "RamDiskAdapter",
    "RamDiskInfo",
    "TmpfsAdapter",
    "adapter_class",
    "format_size",
    "get_adapter",
    "parse_size",
]
