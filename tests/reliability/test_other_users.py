"""Other users: a channel is private unless created shared; others' folders are refused."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, UnsafeRoot
from tests.reliability._users import NOBODY, as_user
from tests.reliability._work import logged_warnings
from tests.reliability.conftest import Figures

pytestmark = [pytest.mark.reliability, pytest.mark.root]


def _read(path: str, name: str, api: bool) -> int:
    if api:
        array = Channel(path).get(name).array
    else:
        array = np.load(Path(path) / f"{name}.npy", allow_pickle=False)
    return int(array.sum())


def _reader(path: Path, name: str, *, api: bool = False) -> tuple[str, object]:
    """Read item ``name`` as uid 65534: ("ok", its sum), or (exception name, message)."""
    return as_user(NOBODY, _read, str(path), name, api)


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
    assert _reader(ch.path, "public") == ("ok", 45)


def test_shared_channel_is_readable_through_the_api(open_root: Path) -> None:
    ch = Channel("shared", mode=0o755)
    ch.put(np.arange(10), "public")
    assert _reader(ch.path, "public", api=True) == ("ok", 45)


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


def _follow(path: str) -> tuple[list[str], list[str]]:
    """Follow another user's channel until 2 items came and both bad files were given up on.

    Returns the names delivered and the warnings logged.
    """
    warnings = logged_warnings()
    names: list[str] = []

    def given_up(filename: str) -> bool:
        return any(filename in w and "left where it is" in w for w in warnings)

    deadline = time.monotonic() + 60
    with Channel(path).subscribe(watch="polling", settle=0.05, quarantine_after=0.1) as sub:
        while len(names) < 2 or not (given_up("link.npy") and given_up("broken.npy")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"after 60 s: {names}, {warnings}")
            try:
                names.append(sub.get(timeout=0.05).name)
            except TimeoutError:
                continue
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.3)  # more rescans meet both files again: no new warning
    return sorted(names), warnings


def test_a_reader_of_another_uid_leaves_what_it_cannot_set_aside(open_root: Path) -> None:
    ch = Channel("shared", mode=0o755)
    ch.put(np.arange(10), "a")
    (ch.path / "link.npy").symlink_to("/etc/hostname")  # set aside at once, unopened
    (ch.path / "broken.npy").write_bytes(b"not an array")  # quarantined once it stays so
    ch.put(np.arange(5), "b")
    status, result = as_user(NOBODY, _follow, str(ch.path))
    assert status == "ok", result  # on 3c44b6e: PermissionError from the quarantine folder
    names, warnings = result
    assert names == ["a", "b"]
    for filename in ("link.npy", "broken.npy"):
        assert sum(filename in w for w in warnings) == 1, warnings
    assert (ch.path / "link.npy").is_symlink()
    assert (ch.path / "broken.npy").read_bytes() == b"not an array"
