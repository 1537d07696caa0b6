"""The private part of watchdog that `ramxchg._delivery.notifiers.InotifyNotifier` reads
still works.

The subscriber uses watchdog's ``observers.inotify_c`` binding directly (no reader
thread). That module is not public API, so pyproject.toml pins ``watchdog<8``: 4.0.0,
5.0.3, 6.0.0, 7.0.0 and 7.1.0 were checked to have the same binding. When a newer
watchdog is allowed, this test says whether the binding moved.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux (inotify)"
)

#: What InotifyNotifier takes from inotify_c.InotifyConstants: the kernel's ABI values.
CONSTANTS = {
    "IN_CLOSE_WRITE": 0x00000008,
    "IN_MOVED_TO": 0x00000080,
    "IN_CREATE": 0x00000100,
    "IN_Q_OVERFLOW": 0x00004000,
    "IN_ONLYDIR": 0x01000000,
}
MOVED = (
    "watchdog {version} changed watchdog.observers.inotify_c, which "
    "ramxchg._delivery.notifiers.InotifyNotifier uses: {what}. Pin watchdog below {major} in "
    "pyproject.toml, or give ramxchg its own inotify binding."
)


def _moved(what: str) -> str:
    found = version("watchdog")
    return MOVED.format(version=found, what=what, major=found.split(".")[0])


def test_the_pin_excludes_the_watchdog_majors_nobody_checked() -> None:
    text = (REPO / "pyproject.toml").read_text()
    [pin] = re.findall(r'"watchdog[^"]*"', text)
    assert pin == '"watchdog>=4.0,<8"'
    assert 4 <= int(version("watchdog").split(".")[0]) < 8, _moved("the version is outside the pin")


def test_inotify_c_has_the_binding_and_the_constants() -> None:
    try:
        from watchdog.observers import inotify_c
    except ImportError as exc:
        pytest.fail(_moved(f"it no longer imports ({exc})"))
    missing = [
        name for name in ("inotify_init", "inotify_add_watch") if not hasattr(inotify_c, name)
    ]
    constants = getattr(inotify_c, "InotifyConstants", None)
    missing += [f"InotifyConstants.{n}" for n in CONSTANTS if not hasattr(constants, n)]
    assert not missing, _moved(f"missing {', '.join(missing)}")
    wrong = {n: getattr(constants, n) for n, v in CONSTANTS.items() if getattr(constants, n) != v}
    assert not wrong, _moved(f"constants with other values: {wrong}")


def test_the_binding_watches_a_folder_and_reports_errno(tmp_path: Path) -> None:
    from watchdog.observers import inotify_c

    fd = inotify_c.inotify_init()
    assert fd >= 0, _moved(f"inotify_init returned {fd}")
    try:
        mask = CONSTANTS["IN_CREATE"] | CONSTANTS["IN_ONLYDIR"]
        assert inotify_c.inotify_add_watch(fd, os.fsencode(tmp_path), mask) >= 0
        # InotifyNotifier reads the failure's errno through ctypes (use_errno=True)
        missing = os.fsencode(tmp_path / "missing")
        assert inotify_c.inotify_add_watch(fd, missing, mask) == -1
        assert ctypes.get_errno() == errno.ENOENT, _moved("errno is not kept (use_errno)")
        (tmp_path / "item.npy").touch()
        _wd, event_mask, _cookie, length = struct.unpack_from("iIII", os.read(fd, 4096))
        assert event_mask & CONSTANTS["IN_CREATE"]
        assert length > 0
    finally:
        os.close(fd)
