"""Hostile names: every API refuses them with InvalidName before touching the disk."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, InvalidName
from tests.reliability._audit import STRACE, Audit
from tests.reliability._work import warm_up
from tests.reliability.conftest import Figures

pytestmark = pytest.mark.reliability

SPAWN = mp.get_context("spawn")

HOSTILE_NAMES = [
    "../escape",
    "../../etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    "/etc/passwd",
    "/dev/shm/other",
    "//server/share",
    "C:\\Windows\\win.ini",
    "a\x00b",
    "\x00",
    "CON",
    "con",
    "nul.npy",
    "LPT1",
    "com9.h5",
    "CONIN$",
    "x" * 10_000,
    "x" * 201,
    "",
    "ｃａｍｅｒａ",  # fullwidth letters  # noqa: RUF001
    "camera\u2024npy",  # one dot leader
    "cam\u200bera",  # zero-width space
    "cаmera",  # Cyrillic a  # noqa: RUF001
    "café",
    ".hidden",
    "trailing.",
    "space name",
    "tab\tname",
    "new\nline",
    "~",
    "$HOME",
    "a*b",
    "a?b",
    "a:b",
    'a"b',
    "a|b",
    "a<b>",
]

OPERATIONS: dict[str, Callable[[Channel, str], Any]] = {
    "Channel": lambda ch, name: Channel(name, root=ch.path.parent),
    "put": lambda ch, name: ch.put(np.arange(3), name),
    "create": lambda ch, name: ch.create(3, "u1", name).__enter__(),
    "get": lambda ch, name: ch.get(name),
    "delete": lambda ch, name: ch.delete(name),
    "subscribe": lambda ch, name: ch.subscribe(name),
    "drop_group": lambda ch, name: ch.drop_group(name),
}


def _try_all(root: str, ready: mp.Event, go: mp.Event, out: Connection) -> None:  # type: ignore[valid-type]
    warm_up()
    ch = Channel("names", root=root)
    ready.set()
    go.wait()
    wrong = []
    for name in HOSTILE_NAMES:
        for operation, call in OPERATIONS.items():
            if operation == "Channel" and name.startswith("/"):
                continue  # an absolute path names an existing folder by design
            try:
                call(ch, name)
            except InvalidName:
                continue
            except Exception as exc:  # reported to the test as a failure
                wrong.append((name[:40], operation, repr(exc)[:200]))
            else:
                wrong.append((name[:40], operation, "accepted"))
    out.send(wrong)


def _tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_mtime_ns) for p in folder.rglob("*"))


def test_hostile_names_are_refused_untouched(root: Path, tmp_path: Path, figures: Figures) -> None:
    Channel("names").put(np.arange(3), "existing")
    before = _tree(root)
    ready, go = SPAWN.Event(), SPAWN.Event()
    receive, send = SPAWN.Pipe(duplex=False)
    proc = SPAWN.Process(target=_try_all, args=(str(root), ready, go, send), daemon=True)
    proc.start()
    assert ready.wait(60)
    audit = Audit(proc.pid, tmp_path / "strace.log") if STRACE else None
    go.set()
    assert receive.poll(120)
    wrong = receive.recv()
    proc.join(30)
    assert wrong == [], f"hostile names not refused with InvalidName: {wrong}"
    assert _tree(root) == before
    touched = audit.stop([]).outside if audit else []  # not even the channel may be touched
    assert touched == [], [t.path for t in touched]
    calls = len(HOSTILE_NAMES) * len(OPERATIONS)
    figures.runs = f"{len(HOSTILE_NAMES)} names x {len(OPERATIONS)} operations ({calls} calls)"
    figures.faults = "traversal, absolute, NUL, Windows devices, 10,000 chars, look-alikes"
    figures.outside = len(touched) if audit else -1
    assert os.path.exists(root / "names" / "existing.npy")
