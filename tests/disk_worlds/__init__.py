"""Machines for the RAM-disk adapters to run on: faked at their two seams, with state.

A fake world (`FakeWorld`) answers its adapter's commands the way the real programs do
(``mount``, ``imdisk``, ``hdiutil``/``diskutil``, ``systemctl``, ``schtasks``,
``launchctl``) and remembers what they did, so a test can mount, describe, unmount and
persist in turn and see the machine change. Only the seams (`CommandRunner`, `HostView`)
are fake: the adapters run unchanged. `RealTmpfs` is the same `World` over this machine.

tests/contracts/test_disk_contract.py runs every adapter of the registry on its worlds;
a new adapter brings a module here and lists its worlds in `WORLDS`.
"""

from __future__ import annotations

from .base import FAILURE, FakeDisk, FakeWorld, World
from .hdiutil import HdiutilWorld
from .imdisk import ImDiskWorld
from .tmpfs import RealTmpfs, TmpfsFstabWorld, TmpfsWorld

#: adapter name -> the fake machines it is tested on
WORLDS: dict[str, list[type[FakeWorld]]] = {
    "tmpfs": [TmpfsWorld, TmpfsFstabWorld],
    "imdisk": [ImDiskWorld],
    "hdiutil": [HdiutilWorld],
}

__all__ = [
    "FAILURE",
    "WORLDS",
    "FakeDisk",
    "FakeWorld",
    "HdiutilWorld",
    "ImDiskWorld",
    "RealTmpfs",
    "TmpfsFstabWorld",
    "TmpfsWorld",
    "World",
]
