"""``ramxchg put``, ``ls``, ``info``, ``ack``, ``gc`` through ``ramxchg.cli.main``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from ramxchg import Channel, ItemNotFound
from tests.conftest import mounted_tmpfs, run_cli, warned_if_not_ram


@pytest.mark.parametrize(
    "command",
    ["put", "ls", "info", "ack", "gc", "watch", "rm", "drop", "requeue", "completion"],
)
def test_every_subcommand_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert f"ramxchg {command} " in out.split("examples:", 1)[1]


def test_put_copies_and_publishes_atomically(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "frame.npy"
    np.save(source, np.arange(12.0).reshape(3, 4))
    code, out, _ = run_cli(capsys, "put", "cam", str(source), "--attrs", '{"exposure": 0.5}')
    assert code == 0
    assert out.split("\t")[:2] == ["frame", "1"]
    assert source.exists()  # a copy
    item = Channel("cam").get("frame")
    assert item.seq == 1
    assert item.attrs == {"exposure": 0.5}
    np.testing.assert_array_equal(item.array, np.arange(12.0).reshape(3, 4))
    assert os.listdir(root / "cam" / ".ramxchg" / "tmp") == []


def test_put_move_on_the_same_filesystem(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = root / "outside"
    outside.mkdir()
    files = [outside / "a.npy", outside / "b.h5"]
    np.save(files[0], np.ones(5))
    with h5py.File(files[1], "w") as f:
        f["x"] = np.arange(3)
    code, out, _ = run_cli(capsys, "put", "cam", *map(str, files), "--move", "--json")
    assert code == 0
    assert [(r["name"], r["seq"]) for r in json.loads(out)] == [("a", 1), ("b", 2)]
    assert not any(f.exists() for f in files)
    channel = Channel("cam")
    assert channel.names() == ["a", "b"]
    assert channel.get("b").arrays["x"].tolist() == [0, 1, 2]


def test_put_move_across_filesystems_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.stat(tmp_path).st_dev == os.stat(root).st_dev:
        pytest.skip("needs the temp dir and the root on different filesystems")
    source = tmp_path / "a.npy"
    np.save(source, np.ones(5))
    code, _, err = run_cli(capsys, "put", "cam", str(source), "--move")
    assert code == 1
    assert "another filesystem" in err
    assert "drop --move to copy it" in err
    assert source.exists()
    assert Channel("cam").names() == []


@pytest.mark.root
def test_put_of_a_file_larger_than_the_ram_disk_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "big.npy"
    np.save(source, np.zeros(2 << 20, np.uint8))  # 2 MiB into a 1 MiB tmpfs
    with mounted_tmpfs(tmp_path / "small", 1 << 20) as small:
        code, out, err = run_cli(capsys, "put", "cam", str(source), "--root", str(small))
        assert (code, out) == (1, "")
        assert "filled up while writing an item of 2 MB;" in err  # 1e11b05: 2097280 bytes
        assert " bytes are free" not in err
        channel = Channel("cam", root=small)
        assert channel.names() == []
        assert os.listdir(channel.path / ".ramxchg" / "tmp") == []  # nothing half-written


def test_put_refuses_garbage_and_taken_names(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY\x01\x00" + b"x" * 40)
    truncated = tmp_path / "cut.npy"
    np.save(truncated, np.ones(1000))
    os.truncate(truncated, 500)
    for path in (junk, truncated):
        code, _, err = run_cli(capsys, "put", "cam", str(path))
        assert code == 1
        assert str(path) in err
    good = tmp_path / "good.npy"
    np.save(good, np.ones(2))
    assert run_cli(capsys, "put", "cam", str(good))[0] == 0
    code, _, err = run_cli(capsys, "put", "cam", str(good))
    assert code == 1
    assert "already published" in err
    assert Channel("cam").names() == ["good"]
    assert run_cli(capsys, "put", "cam", str(good), str(junk), "--name", "x")[0] == 2


def test_ls_and_info_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    channel = Channel("cam")
    channel.put(np.zeros((2, 3), "<f4"), attrs={"k": [1, 2]})
    channel.put({"a": np.arange(4), "b/c": np.ones((2, 2))}, name="multi", format="hdf5")
    (channel.path / "legacy.npy").write_bytes((channel.path / "000000000001.npy").read_bytes())
    channel.subscribe(group="g").close()
    code, out, _ = run_cli(capsys, "ls", "cam", "--json")
    assert code == 0
    listing = json.loads(out)
    assert [(r["name"], r["seq"], r["format"]) for r in listing] == [
        ("000000000001", 1, "npy"),
        ("multi", 2, "hdf5"),
        ("legacy", None, "npy"),
    ]
    for record in listing:
        assert set(record) == {
            "name",
            "seq",
            "format",
            "path",
            "bytes",
            "published_ns",
            "published",
        }
        assert record["bytes"] == os.stat(record["path"]).st_size
    code, out, _ = run_cli(capsys, "info", "cam", "000000000001", "--json")
    info = json.loads(out)
    assert info["arrays"] == {"data": {"shape": [2, 3], "dtype": "<f4"}}
    assert info["attrs"] == {"k": [1, 2]}
    assert info["groups"] == {"g": "pending"}
    code, out, _ = run_cli(capsys, "info", "cam", "multi", "--json")
    assert json.loads(out)["arrays"] == {
        "a": {"shape": [4], "dtype": "<i8"},
        "b/c": {"shape": [2, 2], "dtype": "<f8"},
    }
    code, _, err = run_cli(capsys, "info", "cam", "nothing")
    assert code == 1
    assert "no item 'nothing'" in err


def test_ack_an_item_never_delivered_releases_it(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = Channel("cam")
    channel.subscribe(group="reader").close()
    channel.subscribe(group="other").close()
    name = channel.put(np.ones(3)).name
    code, out, _ = run_cli(capsys, "ack", "cam", name, "--group", "reader")
    assert code == 0
    assert "deleted" not in out
    assert (channel.path / ".ramxchg" / "groups" / "reader" / "acks" / name).exists()
    code, out, _ = run_cli(capsys, "ack", "cam", name, "--group", "other")
    assert "deleted" in out
    assert name not in channel
    code, out, _ = run_cli(capsys, "ack", "cam", name, "--group", "other")
    assert (code, out) == (
        0,
        f"{name}: already done (gone: deleted, or never published)\n",
    )
    channel.put(np.ones(3), name="x")
    code, _, err = run_cli(capsys, "ack", "cam", "x", "--group", "nobody")
    assert code == 1
    assert "no group 'nobody'" in err


def test_gc_every_channel_and_absolute_paths(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("one", "two"):
        channel = Channel(name)
        (channel.path / ".ramxchg" / "meta" / "orphan.json").write_text("{}")
    code, out, _ = run_cli(capsys, "gc", "--json")
    assert code == 0
    report = json.loads(out)
    assert {Path(p).name for p in report} == {"one", "two"}
    assert all(counts["orphan_sidecars"] == 1 for counts in report.values())
    code, out, _ = run_cli(capsys, "ls", str(root / "one"), "--json")
    assert code == 0
    assert json.loads(out) == []


def test_gc_of_a_root_without_channels_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "gc", "--root", str(tmp_path / "empty"))
    assert (code, out) == (0, "")
    assert err == f"no channels under {tmp_path / 'empty'}: nothing to collect\n"


def test_gc_of_every_channel_skips_links_and_reports_a_broken_channel(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = Channel("good")
    (good.path / ".ramxchg" / "meta" / "orphan.json").write_text("{}")
    broken = Channel("broken")
    (broken.path / ".ramxchg" / "config.json").write_text("not json")
    (tmp_path / "elsewhere").mkdir()
    with warned_if_not_ram(tmp_path / "elsewhere"):
        elsewhere = Channel(tmp_path / "elsewhere")  # a channel outside the root...
    (elsewhere.path / ".ramxchg" / "meta" / "orphan.json").write_text("{}")
    (root / "linked").symlink_to(elsewhere.path)  # ...linked into it: not ours to walk
    code, out, _ = run_cli(capsys, "gc", "--json")
    assert code == 1
    report = json.loads(out)
    assert set(report) == {str(good.path), str(broken.path)}
    assert report[str(good.path)]["orphan_sidecars"] == 1
    assert "config.json" in report[str(broken.path)]["error"]
    assert (elsewhere.path / ".ramxchg" / "meta" / "orphan.json").exists()
    code, out, _ = run_cli(capsys, "status", "--json")
    assert {row["name"] for row in json.loads(out)["channels"]} == {"good", "broken"}


@pytest.mark.parametrize(
    "argv", [("ls", "typo"), ("info", "typo", "x"), ("ack", "typo", "x", "--group", "g")]
)
def test_reading_a_missing_channel_fails_and_creates_nothing(
    root: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (1, "")
    assert "no channel 'typo'" in err
    assert os.listdir(root) == []
    with pytest.raises(ItemNotFound):
        Channel("typo", create=False)
    assert os.listdir(root) == []
    Channel("typo")  # publishers still create it
    assert Channel("typo", create=False).names() == []


def _tree(folder: Path) -> list[tuple[str, int, int]]:
    """Every name under ``folder`` (itself included) with its mode and mtime."""
    found = [(".", os.lstat(folder).st_mode, os.lstat(folder).st_mtime_ns)]
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent) / name
            info = os.lstat(path)
            found.append((str(path.relative_to(folder)), info.st_mode, info.st_mtime_ns))
    return sorted(found)


@pytest.mark.parametrize(
    "argv", [("ls",), ("ls", "--json"), ("info", "a"), ("info", "a", "--json"), ("gc",)]
)
def test_read_only_commands_write_nothing_in_a_plain_folder(
    root: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    folder = root / "plain"  # any folder with .npy files: /etc, a data folder
    folder.mkdir()
    np.save(folder / "a.npy", np.arange(3))
    before = _tree(folder)
    command, *rest = argv
    code, out, err = run_cli(capsys, command, str(folder), *rest)
    assert code == 0, err
    assert _tree(folder) == before  # on 3c44b6e: .ramxchg/ and its folders were created
    if command != "gc":
        assert "a" in out


@pytest.mark.parametrize(
    "argv", [("ls", "cam"), ("info", "cam", "a"), ("status",), ("status", "--json")]
)
def test_read_only_commands_do_not_complete_a_channel(
    root: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    channel = Channel("cam")
    channel.put(np.arange(3), "a")
    state = channel.path / ".ramxchg"
    for folder in ("tmp", "groups", "pool"):  # as an older version or another program left it
        (state / folder).rmdir()
    (state / "config.json").unlink()
    before = _tree(channel.path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert _tree(channel.path) == before


@pytest.mark.parametrize("argv", [("ls", "cam"), ("info", "cam", "a"), ("gc",), ("gc", "cam")])
def test_read_only_commands_do_not_create_the_root(
    root: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
) -> None:
    missing = root / "not-yet"
    monkeypatch.setenv("RAMXCHG_ROOT", str(missing))
    run_cli(capsys, *argv)
    assert not missing.exists()
