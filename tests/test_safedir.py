"""Safe folder walks: never through a link, only in the folder itself (both code paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ramxchg import ChannelNotFound, UnsafeRoot
from ramxchg._store import safedir as _safedir
from ramxchg._store.held import HeldState
from ramxchg._store.safedir import SafeDir, StateTree


@pytest.fixture(params=["descriptors", "paths"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways: folder descriptors (POSIX), and lstat-checked paths (no openat)."""
    monkeypatch.setattr(_safedir, "DIR_FD", request.param == "descriptors")
    return str(request.param)


def _sub(folder: SafeDir, name: str) -> SafeDir:
    found = folder.sub(name)
    assert found is not None
    return found


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``channel/.ramxchg/{meta,groups/g/acks}``, ``meta`` holding a file, and an outside
    folder with files that a walk following a link would remove."""
    state = tmp_path / "channel" / ".ramxchg"
    (state / "groups" / "g" / "acks").mkdir(parents=True)
    (state / "meta").mkdir()
    (state / "meta" / "a.json").write_text("{}")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep").write_text("mine")
    return tmp_path


def test_walks_stay_in_the_folder(tree: Path, way: str) -> None:
    channel = tree / "channel"
    with StateTree(channel, ".ramxchg") as state:
        meta = state.folder("meta")
        assert meta is not None
        assert meta.names() == ["a.json"]
        acks = state.folder("groups", "g", "acks")
        assert acks is not None
        assert meta.rename("a.json", acks, "a") is True
        assert meta.rename("a.json", acks, "a") is False  # gone: no error
        assert acks.lstat("a") is not None
        assert acks.unlink("a") is True
        assert acks.unlink("a") is False
        assert state.folder("missing", "deeper") is None
        groups = state.folder("groups")
        assert groups is not None
        with groups.make_sub("new") as new:
            os.close(new.open_file("f", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        with _sub(groups, "g") as group:
            group.clear()
            assert group.names() == []
    assert (channel / ".ramxchg" / "groups" / "new" / "f").is_file()


@pytest.mark.parametrize("swapped", [".ramxchg", "meta", "groups/g", "groups/g/acks"])
def test_a_folder_swapped_for_a_link_is_refused(tree: Path, way: str, swapped: str) -> None:
    state_folder = tree / "channel" / ".ramxchg"
    target = state_folder if swapped == ".ramxchg" else state_folder / swapped
    os.rename(target, tree / "moved-away")
    target.symlink_to(tree / "outside")
    parts = () if swapped == ".ramxchg" else tuple(swapped.split("/"))
    with (
        StateTree(tree / "channel", ".ramxchg") as state,
        pytest.raises(UnsafeRoot, match="symlink"),
    ):
        state.folder(*parts)
    (tree / "file").write_text("x")
    with SafeDir.open(tree) as top, pytest.raises(UnsafeRoot, match="not a folder"):
        top.sub("file")
    assert os.listdir(tree / "outside") == ["keep"]


def test_clear_never_follows_a_link_inside(tree: Path, way: str) -> None:
    acks = tree / "channel" / ".ramxchg" / "groups" / "g" / "acks"
    (acks / "link").symlink_to(tree / "outside")
    with SafeDir.open(tree / "channel" / ".ramxchg" / "groups") as groups, _sub(groups, "g") as g:
        g.clear()
    assert os.listdir(tree / "outside") == ["keep"]
    assert os.listdir(tree / "channel" / ".ramxchg" / "groups" / "g") == []


@pytest.mark.root
def test_owner_check_refuses_another_users_folder(tree: Path, way: str) -> None:
    planted = tree / "channel" / ".ramxchg" / "meta"
    os.chown(planted, 61002, 61002)
    with StateTree(tree / "channel", ".ramxchg", check_owner=True) as state:
        with pytest.raises(UnsafeRoot, match="uid 61002"):
            state.folder("meta")
        assert state.folder("groups") is not None
    with StateTree(tree / "channel", ".ramxchg") as state:
        assert state.folder("meta") is not None  # no owner check asked for


def test_a_held_folder_stays_the_folder_it_was_opened_on(tree: Path) -> None:
    """A held descriptor never follows a link swapped in for its folder; the tree opened
    anew refuses the link; folders outside ``keep`` are held while they are still the
    folder of their name, and opened again once made anew."""
    state_folder = tree / "channel" / ".ramxchg"
    held = HeldState(
        lambda: StateTree(tree / "channel", ".ramxchg"), 60.0, frozenset({("meta",)}), hold=4
    )
    with held.use() as state:
        meta = state.folder("meta")
        acks = state.folder("groups", "g", "acks")
    os.rename(state_folder / "meta", tree / "moved-away")
    (state_folder / "meta").symlink_to(tree / "outside")
    with held.use() as state:
        assert state.folder("meta") is meta  # held: still the real (moved) folder
        assert meta is not None
        assert meta.unlink("a.json")
        assert state.folder("groups", "g", "acks") is acks  # still that folder: held
    (state_folder / "groups" / "g" / "acks").rename(tree / "old-acks")
    (state_folder / "groups" / "g" / "acks").mkdir()  # e.g. a group registered again
    with held.use() as state:
        again = state.folder("groups", "g", "acks")
        assert again is not None
        assert again is not acks  # made anew: opened again
        assert again.stat().st_ino == (state_folder / "groups" / "g" / "acks").stat().st_ino
    assert os.listdir(tree / "moved-away") == []
    held.close()  # as when it is `max_age` old
    with held.use() as state, pytest.raises(UnsafeRoot, match="symlink"):
        state.folder("meta")
    assert os.listdir(tree / "outside") == ["keep"]
    held.close()


def test_only_the_first_folders_outside_keep_are_held(tree: Path) -> None:
    """A channel may have many groups: the descriptors held besides ``keep`` are bounded."""
    held = HeldState(lambda: StateTree(tree / "channel", ".ramxchg"), 60.0, hold=2)
    with held.use() as state:
        groups, acks = state.folder("groups"), state.folder("groups", "g", "acks")
    with held.use() as state:
        assert state.folder("groups") is groups  # the state folder, then groups/: held
        assert state.folder("groups", "g", "acks") is not acks  # the third: opened again
    held.close()


def test_a_failed_use_opens_the_folders_again(tree: Path) -> None:
    held = HeldState(lambda: StateTree(tree / "channel", ".ramxchg"), 60.0, frozenset({("meta",)}))
    with held.use() as state:
        first = state.folder("meta")

    def fail() -> None:
        with held.use() as state:
            assert state.folder("meta") is first
            raise FileNotFoundError("a rename into a folder removed meanwhile")

    with pytest.raises(FileNotFoundError, match="removed meanwhile"):
        fail()
    with held.use() as state:
        assert state.folder("meta") is not first
    held.close()


def test_links_and_replaces_stay_in_the_folders(tree: Path, way: str) -> None:
    channel = tree / "channel"
    with StateTree(channel, ".ramxchg") as state:
        meta, acks = state.existing("meta"), state.existing("groups", "g", "acks")
        meta.link("a.json", acks, "a")  # the entry itself: a second name of that file
        assert os.path.samefile(channel / ".ramxchg" / "meta" / "a.json", acks.path / "a")
        with pytest.raises(FileExistsError):
            meta.link("a.json", acks, "a")
        (meta.path / "link").symlink_to(tree / "outside" / "keep")
        meta.link("link", acks, "b")  # linked as a link, never followed
        assert (acks.path / "b").is_symlink()
        acks.link_from(tree / "outside" / "keep", "c")
        assert acks.has("c")
        assert not acks.has("missing")
        meta.replace("a.json", acks, "c")
        assert not meta.has("a.json")
        assert acks.entry("c") == str(channel / ".ramxchg" / "groups" / "g" / "acks" / "c")
    assert (tree / "outside" / "keep").read_text() == "mine"


def test_errors_name_the_full_paths(tree: Path, way: str) -> None:
    state_folder = tree / "channel" / ".ramxchg"
    with StateTree(tree / "channel", ".ramxchg") as state:
        meta, groups = state.existing("meta"), state.existing("groups")
        with pytest.raises(FileNotFoundError) as opened:
            meta.open_file("missing", os.O_RDONLY)
        assert opened.value.filename == str(state_folder / "meta" / "missing")
        with pytest.raises(FileNotFoundError) as replaced:
            meta.replace("missing", groups, "new")
        assert replaced.value.filename == str(state_folder / "meta" / "missing")
        assert replaced.value.filename2 == str(state_folder / "groups" / "new")
        with pytest.raises(FileExistsError) as linked:
            meta.link("a.json", groups, "g")
        assert linked.value.filename == str(state_folder / "meta" / "a.json")
        assert linked.value.filename2 == str(state_folder / "groups" / "g")


def test_existing_says_which_folder_is_missing(tree: Path, way: str) -> None:
    with StateTree(tree / "channel", ".ramxchg") as state:
        with pytest.raises(ChannelNotFound, match="dropped") as missing:
            state.existing("groups", "h", "acks")
        assert missing.value.path == str(tree / "channel" / ".ramxchg" / "groups" / "h" / "acks")
        assert isinstance(missing.value, FileNotFoundError)
    with StateTree(tree / "gone", ".ramxchg") as state, pytest.raises(ChannelNotFound):
        state.existing("tmp")


def test_the_tree_records_each_folders_inode(tree: Path, way: str) -> None:
    with StateTree(tree / "channel", ".ramxchg") as state:
        meta = state.existing("meta")
        inode = os.stat(tree / "channel" / ".ramxchg" / "meta").st_ino
        assert meta.ino == (inode if way == "descriptors" else None)
