"""Other users: a channel is private unless created shared; others' folders are refused."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, UnsafeRoot
from tests.reliability.conftest import Figures

pytestmark = [pytest.mark.reliability, pytest.mark.root]

NOBODY = 65534
# 'fork', not 'spawn': the other user cannot execute this interpreter (it lives under
# /root), so the reader is a fork of the test process that drops to uid 65534.
FORK = mp.get_context("fork")


def _read_as_nobody(path: str, name: str, api: bool, out: Connection) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        if api:
            array = Channel(path).get(name).array
        else:
            array = np.load(Path(path) / f"{name}.npy", allow_pickle=False)
        out.send(("read", int(array.sum())))
    except PermissionError as exc:  # UnsafeRoot is a PermissionError too
        out.send((type(exc).__name__, str(exc)))


def _reader(path: Path, name: str, *, api: bool = False) -> tuple[str, object]:
    receive, send = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_read_as_nobody, args=(str(path), name, api, send))
    proc.start()
    assert receive.poll(60)
    result = receive.recv()
    proc.join(30)
    return result


@pytest.fixture
def open_root(root: Path) -> Path:
    """The test root, traversable by others (as /dev/shm is)."""
    os.chmod(root, 0o755)
    return root


def test_default_channel_is_private(open_root: Path, figures: Figures) -> None:
    ch = Channel("private")
    ch.put(np.arange(10), "secret")
    assert os.stat(ch.path).st_mode & 0o777 == 0o700
    assert _reader(ch.path, "secret")[0] == "PermissionError"
    assert _reader(ch.path, "secret", api=True)[0] in ("PermissionError", "UnsafeRoot")
    figures.runs = "private, shared 0o755, shared 0o750 + group, 4 hostile folders"
    figures.faults = "reader under uid 65534; folders owned by 65534; symlink swaps"


@pytest.mark.parametrize("mode", [0o755, 0o750])
def test_shared_channel_is_readable_by_others(open_root: Path, mode: int) -> None:
    ch = Channel("shared", mode=mode)
    ch.put(np.arange(10), "public")
    if mode == 0o750:  # shared with a group: the reader's
        os.chown(ch.path, -1, NOBODY)
    assert os.stat(ch.path).st_mode & 0o777 == mode
    assert _reader(ch.path, "public") == ("read", 45)


def test_shared_channel_is_readable_through_the_api(open_root: Path) -> None:
    ch = Channel("shared", mode=0o755)
    ch.put(np.arange(10), "public")
    assert _reader(ch.path, "public", api=True) == ("read", 45)


def test_root_or_channel_of_another_user_is_refused(root: Path, tmp_path: Path) -> None:
    theirs = root / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafeRoot) as info:
        Channel("x", root=theirs)
    assert info.value.owner_uid == NOBODY
    (root / "taken").mkdir()
    os.chown(root / "taken", NOBODY, NOBODY)
    with pytest.raises(UnsafeRoot):
        Channel("taken")
    assert os.listdir(root / "taken") == [], "nothing was created in their folder"


def test_symlinked_root_or_channel_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "swapped").symlink_to(elsewhere)
    with pytest.raises(UnsafeRoot, match="symlink"):
        Channel("swapped")
    link_root = tmp_path / "link-root"
    link_root.symlink_to(root)
    with pytest.raises(UnsafeRoot, match="symlink"):
        Channel("x", root=link_root)
    ch = Channel("victim")
    shutil.rmtree(ch.path)
    ch.path.symlink_to(elsewhere)  # swapped after creation
    with pytest.raises(UnsafeRoot, match="symlink"):
        Channel("victim")
    assert os.listdir(elsewhere) == []
