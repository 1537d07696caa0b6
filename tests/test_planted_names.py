"""Names another user plants in a shared channel's state folders (pool/, tmp/) stop no
delete, put or sweep: digits that are digits to ``str.isdigit`` but not to ``int``, and
numbers no process can have as its pid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ramxchg._store.pool
from ramxchg import Channel
from ramxchg._store.tmpfiles import TMP_GRACE_SECONDS
from tests.reliability._users import OTHER, as_user

pytestmark = pytest.mark.root

#: "²" is a digit to str.isdigit, not to int (ValueError)
ODD_DIGITS = ["\u00b2", "9\u00b9"]


def _plant(folder: str, name: str, age: float) -> None:
    path = Path(folder, name)
    path.write_bytes(b"planted")
    then = path.stat().st_mtime - age
    os.utime(path, (then, then))


def _shared(root: Path, *, group: bool = True) -> Channel:
    root.chmod(0o755)
    ch = Channel("shared", mode=0o1777)
    if group:  # items wait for its ack (not readable by the other user)
        ch.subscribe("g").close()
    return ch


def _delete_some(ch: Channel) -> None:
    for _ in range(3):
        item = ch.put(np.ones((512, 1024), np.uint16))
        ch.delete(item.name)
        assert not item.path.exists()


@pytest.mark.parametrize("size", ODD_DIGITS)
def test_a_name_planted_in_the_pool_stops_no_delete(root: Path, size: str) -> None:
    ch = _shared(root)
    pool = ch.path / ".ramxchg" / "pool"
    name = f"{size}.1.ffff"
    assert as_user(OTHER, _plant, str(pool), name, 0.0) == ("ok", None)
    _delete_some(ch)  # on 47d3edf: ValueError from every delete
    assert name in os.listdir(pool)  # another user's file: not ours to remove (sticky)


@pytest.mark.parametrize("pid", [*ODD_DIGITS, "99999999999", str(2**31)])
def test_a_name_planted_in_tmp_stops_no_sweep(root: Path, pid: str) -> None:
    ch = _shared(root)
    tmp = ch.path / ".ramxchg" / "tmp"
    name = f"x.{pid}.ffff.npy"  # no writer-lock marker: judged by its pid
    assert as_user(OTHER, _plant, str(tmp), name, 2 * TMP_GRACE_SECONDS) == ("ok", None)
    _delete_some(ch)
    # on 47d3edf: ValueError, or OverflowError from psutil, out of gc (and every sweep)
    assert ch.gc()["tmp_files"] == 1  # a pid no process has: dead (root may remove it)
    assert name not in os.listdir(tmp)


def _pool_one(folder: str) -> list[str]:
    """As another user: one item of theirs put and deleted, so pooled; the pool."""
    ch = Channel(folder)  # a folder shared with them
    ch.delete(ch.put(np.ones((512, 1024), np.uint16)).name)
    return os.listdir(ch.path / ".ramxchg" / "pool")


def test_a_co_producers_pooled_file_is_theirs_to_take_and_trim(
    root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = _shared(root, group=False)
    status, theirs = as_user(OTHER, _pool_one, str(ch.path))
    assert (status, len(theirs)) == ("ok", 1)
    with caplog.at_level("WARNING"):
        ch.put(np.ones((512, 1024), np.uint16))  # the same size: their file comes first
    # on 47d3edf: a warning on every put, and root removed their file
    assert os.listdir(ch.path / ".ramxchg" / "pool") == theirs
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    monkeypatch.setattr(ramxchg._store.pool, "POOL_IDLE_SECONDS", 0.0)
    ch.gc()  # trims idle pooled files: ours
    assert os.listdir(ch.path / ".ramxchg" / "pool") == theirs
