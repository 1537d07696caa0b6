"""``ramxchg setup``/``teardown``/``status`` through ramxchg.cli.main, with real mounts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import ramxchg
from ramxchg.cli import main
from ramxchg.disks import HostView
from ramxchg.disks.persist import fstab_line, mount_unit_name, systemd_mount_unit
from ramxchg.disks.tmpfs import kernel_at_least
from tests.conftest import mount_entry


def _mounted(path: Path) -> bool:
    return mount_entry(path) is not None


@pytest.mark.parametrize("command", ["setup", "teardown", "status"])
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"ramxchg {command}" in out


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setup", "/x", "--size", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err


def test_status_json_of_the_default_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    channel = ramxchg.Channel("cam")
    channel.put(np.zeros(1000), "a")
    channel.put(np.zeros(500), "b")
    channel.subscribe("viewers").close()  # registers the group
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"root", "disk", "pages", "memory_limit", "advice", "channels"}
    assert data["root"] == str(root)
    assert data["disk"]["ram_backed"] is True
    assert data["disk"]["fs_type"] == "tmpfs"
    assert {"total_bytes", "free_bytes", "used_bytes", "huge_pages", "mount_options"} <= set(
        data["disk"]
    )
    [cam] = data["channels"]
    assert cam["name"] == "cam"
    assert cam["items"] == 2
    assert cam["bytes"] == sum(item.path.stat().st_size for item in channel.items())
    assert cam["error"] is None
    assert cam["pooled"] == 0
    assert [g["name"] for g in cam["groups"]] == ["viewers"]
    assert cam["groups"][0]["backlog"] == 2


def test_status_shows_the_ram_the_pool_holds(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = ramxchg.Channel("cam", keep_last=1)
    first = channel.put(np.zeros(1000))
    size = first.path.stat().st_size
    channel.put(np.zeros(1000))  # keep_last=1: the first one's file is pooled
    assert main(["status", "--json"]) == 0
    [cam] = json.loads(capsys.readouterr().out)["channels"]
    assert cam["pooled"] == size
    assert main(["status"]) == 0  # piped: one field per line, the pooled bytes too
    [row] = [
        line.split("\t")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("channel\t")
    ]
    assert row[:5] == [
        "channel",
        "cam",
        "1",
        str(channel.get(channel.names()[0]).path.stat().st_size),
        str(size),
    ]


def test_status_piped_is_one_field_per_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    channel = ramxchg.Channel("cam")
    channel.put(np.zeros(10))
    channel.subscribe("viewers").close()
    assert main(["status"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    fields = {line[0]: line[1:] for line in lines if line[0] != "channel"}
    assert fields["root"] == [str(root)]
    assert fields["filesystem"] == ["tmpfs"]
    assert fields["ram_backed"] == ["yes"]
    assert int(fields["size"][0]) > int(fields["free"][0]) > 0  # bytes, for programs
    assert "huge_pages" in fields
    size = channel.status().bytes
    assert [line for line in lines if line[0] == "channel"] == [
        ["channel", "cam", "1", str(size), "0", "viewers:1", "-"]
    ]


@pytest.mark.root
def test_setup_status_teardown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    point = tmp_path / "ram"
    assert main(["setup", str(point), "--size", "32M", "--json"]) == 0
    try:
        result = json.loads(capsys.readouterr().out)
        assert result["export"] == f"export RAMXCHG_ROOT={point}"
        assert result["disk"]["total_bytes"] == 32 * 1024**2
        assert result["disk"]["huge_pages"] == "within_size"
        assert result["commands"][0][:3] == ["mount", "-t", "tmpfs"]
        assert _mounted(point)

        with pytest.warns(ramxchg.NotRamBackedWarning, match="only 32 MB"):
            ramxchg.Channel("cam", root=point).put(np.ones(100), "x")
        assert main(["status", "--root", str(point), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["channels"][0]["items"] == 1
        assert any("only 32 MB" in tip for tip in status["advice"])

        assert main(["teardown", str(point)]) == 1
        err = capsys.readouterr().err
        assert "cam (1 items)" in err
        assert "--force" in err
        assert _mounted(point)
    finally:
        if _mounted(point):
            assert main(["teardown", str(point), "--force"]) == 0
    out = capsys.readouterr().out
    assert "unmounted" in out
    # What stays is a plain folder on disk: an exported root there would write to disk.
    assert f"unset RAMXCHG_ROOT if it points at {point}" in out
    assert not _mounted(point)


@pytest.mark.root
def test_setup_prints_export_and_persists_to_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point = tmp_path / "ram-disk"
    target = tmp_path / "units"
    argv = ["setup", str(point), "--size", "16M", "--no-huge", "--persist-to", str(target)]
    assert main(argv) == 0
    try:
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == f"export RAMXCHG_ROOT={point}"
        assert "huge pages: never" in out[0]
        unit = target / mount_unit_name(str(point))
        assert f"wrote {unit}" in out
        uid, gid = HostView().ids()
        options = f"size=16M,mode=1777,uid={uid},gid={gid}"
        if kernel_at_least(os.uname().release, (6, 4)):  # noswap where the kernel has it
            options += ",noswap"
        assert unit.read_text() == systemd_mount_unit(str(point), options)
        assert (target / "fstab.ramxchg").read_text() == fstab_line(str(point), options)
    finally:
        assert main(["teardown", str(point)]) == 0


@pytest.mark.root
def test_empty_disk_tears_down_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point = tmp_path / "ram"
    assert main(["setup", str(point), "--size", "16M"]) == 0
    with pytest.warns(ramxchg.NotRamBackedWarning, match="only 16 MB"):
        ramxchg.Channel("empty", root=point)
    assert main(["teardown", str(point), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == {"unmounted": str(point), "dropped": [], "unpersisted": []}
    assert not _mounted(point)


@pytest.mark.root
def test_teardown_persist_undoes_setup_persist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real mounts and files; only /etc/fstab and the unit folder are stand-ins."""
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1234 / ext4 defaults 0 1\n")
    units = tmp_path / "systemd"
    monkeypatch.setattr(ramxchg.disks.tmpfs, "FSTAB", str(fstab))
    monkeypatch.setattr(ramxchg.disks.tmpfs, "UNIT_DIR", str(units))
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here: setup --persist would enable a real mount unit")
    point = tmp_path / "ram disk"  # a space: escaped as \040 in fstab
    assert main(["setup", str(point), "--size", "16M", "--persist"]) == 0
    try:
        capsys.readouterr()
        assert "\\040" in fstab.read_text().splitlines()[-1]  # persist added the line
        units.mkdir()  # and a unit left by a setup from when systemd ran
        (units / mount_unit_name(str(point))).write_text("[Mount]\n")
        assert main(["teardown", str(point), "--persist"]) == 0
        out = capsys.readouterr().out
    finally:
        if _mounted(point):
            main(["teardown", str(point), "--force"])
    assert not _mounted(point)
    assert f"removed {units / mount_unit_name(str(point))}" in out
    assert fstab.read_text() == "UUID=1234 / ext4 defaults 0 1\n"  # the rest is kept
    assert f"unmounted {point}" in out
    assert main(["teardown", str(point), "--persist"]) == 0  # twice: nothing left to undo
    out = capsys.readouterr().out
    assert "nothing was installed" in out
    assert "not a mounted RAM disk" in out
