"""platform/ copies equal the generated text; systemd unit names and `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ramxchg.disks import DiskSpec, get_adapter
from ramxchg.disks.persist import (
    fstab_line,
    launchd_plist,
    macos_script,
    mount_unit_name,
    systemd_escape_path,
    systemd_mount_unit,
    windows_logon_script,
    windows_task_command,
)

from .disk_fakes import FakeHost, FakeRunner

PLATFORM = Path(__file__).resolve().parent.parent / "platform"
MAC_SCRIPT = "/Users/YOU/Library/Application Support/ramxchg/ramxchg-ramdisk.sh"

ODD_PATHS = [
    "/mnt/ramxchg",
    "/mnt/ram-disk",
    "/mnt/ram disk",
    "/mnt/données/ünïcode-ü",
    "/srv//ramxchg/./data/",
    "/mnt/.hidden",
    "/mnt/a\\b",
    "/",
]


def test_platform_holds_no_python() -> None:
    assert (PLATFORM / "README.md").is_file()
    assert not list(PLATFORM.rglob("*.py"))
    for folder in ("linux", "windows", "macos", "containers"):
        assert (PLATFORM / folder / "README.md").is_file()


def test_linux_copies_match_the_generated_text() -> None:
    unit = PLATFORM / "linux" / mount_unit_name("/mnt/ramxchg")
    assert unit.name == "mnt-ramxchg.mount"
    assert unit.read_text() == systemd_mount_unit("/mnt/ramxchg")
    fstab = (PLATFORM / "linux" / "fstab.example").read_text().splitlines(keepends=True)
    assert fstab[-1] == fstab_line("/mnt/ramxchg")
    assert fstab_line("/mnt/ram disk") == (
        "tmpfs /mnt/ram\\040disk tmpfs size=8G,mode=1777,huge=within_size,noswap 0 0\n"
    )


def test_windows_copy_matches_the_generated_text() -> None:
    copy = (PLATFORM / "windows" / "ramxchg-ramdisk.ps1").read_bytes().decode()
    assert copy == windows_logon_script()
    assert '[string]$Size = "8G"' in copy
    assert '-p "/fs:ntfs /q /y"' in copy
    assert "https://sourceforge.net/projects/imdisk-toolkit/" in copy


def test_macos_copies_match_the_generated_text() -> None:
    assert (PLATFORM / "macos" / "ramxchg-ramdisk.sh").read_text() == macos_script()
    plist = (PLATFORM / "macos" / "org.ramxchg.ramdisk.plist").read_text()
    assert plist == launchd_plist(MAC_SCRIPT)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_macos_script_is_valid_sh() -> None:
    subprocess.run(["sh", "-n", str(PLATFORM / "macos" / "ramxchg-ramdisk.sh")], check=True)


def test_windows_task_command() -> None:
    command = windows_task_command(r"C:\Users\me\AppData\Local\ramxchg\ramxchg-ramdisk.ps1")
    assert command[:4] == ["schtasks", "/Create", "/TN", "ramxchg-ramdisk"]
    assert command[6:] == ["/SC", "ONLOGON", "/RL", "HIGHEST", "/F"]
    assert command[5] == (
        "powershell.exe -NoProfile -ExecutionPolicy Bypass -File "
        r"C:\Users\me\AppData\Local\ramxchg\ramxchg-ramdisk.ps1"
    )


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("/mnt/ramxchg", "mnt-ramxchg"),
        ("/mnt/ram-disk", "mnt-ram\\x2ddisk"),
        ("/mnt/ram disk", "mnt-ram\\x20disk"),
        ("/mnt/données", "mnt-donn\\xc3\\xa9es"),
        ("/srv//ramxchg/./data/", "srv-ramxchg-data"),
        ("/mnt/.hidden", "mnt-.hidden"),
        ("/.dot", "\\x2edot"),
        ("/", "-"),
    ],
)
def test_systemd_escape_path(path: str, escaped: str) -> None:
    assert systemd_escape_path(path) == escaped


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape")
@pytest.mark.parametrize("path", [*ODD_PATHS, "/.dot"])
def test_escape_agrees_with_systemd_escape(path: str) -> None:
    done = subprocess.run(
        ["systemd-escape", "--path", path], capture_output=True, text=True, check=True
    )
    assert systemd_escape_path(path) == done.stdout.strip()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("path", [p for p in ODD_PATHS if p != "/"])
def test_unit_passes_systemd_analyze_verify(path: str, tmp_path: Path) -> None:
    unit = tmp_path / mount_unit_name(path)
    unit.write_text(systemd_mount_unit(path))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "ramxchg" not in done.stderr  # no warnings about our unit either


def test_persist_to_a_folder_writes_the_same_text_as_platform() -> None:
    spec = DiskSpec("/mnt/ramxchg", 8 * 1024**3, uid=0, gid=0, noswap=True)
    linux = get_adapter(platform="linux", runner=FakeRunner(), host=FakeHost(files={
        "/sys/kernel/mm/transparent_hugepage/shmem_enabled": "[never]"}))  # fmt: skip
    assert linux.persist(spec, "/out") == [
        "wrote /out/mnt-ramxchg.mount",
        "wrote /out/fstab.ramxchg",
    ]
    text = linux.host.written["/out/mnt-ramxchg.mount"]
    assert "Options=size=8G,mode=1777,uid=0,gid=0,huge=within_size,noswap\n" in text
    windows = get_adapter(platform="win32", runner=FakeRunner(("imdisk",)), host=FakeHost())
    windows.persist(DiskSpec("R:", 8 * 1024**3), "/out")
    assert windows.host.written["/out/ramxchg-ramdisk.ps1"] == (
        (PLATFORM / "windows" / "ramxchg-ramdisk.ps1").read_text()
    )
    mac = get_adapter(platform="darwin", runner=FakeRunner(), host=FakeHost())
    mac.persist(DiskSpec("/Volumes/ramxchg", 8 * 1024**3), "/out")
    assert mac.host.written["/out/ramxchg-ramdisk.sh"] == macos_script()
    assert mac.host.written["/out/org.ramxchg.ramdisk.plist"] == launchd_plist(
        "/out/ramxchg-ramdisk.sh"
    )
    assert mac.runner.calls == []  # nothing registered with the system


def test_persist_registers_with_the_system() -> None:
    windows = get_adapter(platform="win32", runner=FakeRunner(("aim_ll",)), host=FakeHost())
    windows.persist(DiskSpec("R:", 4 * 1024**3))
    [call] = windows.runner.calls
    assert call[:4] == ["schtasks", "/Create", "/TN", "ramxchg-ramdisk"]
    [(script, text)] = windows.host.written.items()
    assert script.endswith("ramxchg-ramdisk.ps1")
    assert '[string]$Size = "4G"' in text
    files = {"/run/systemd/system": ""}
    linux = get_adapter(platform="linux", runner=FakeRunner(), host=FakeHost(files=files))
    linux.persist(DiskSpec("/mnt/ram-disk", 1024**3, noswap=False))
    assert list(linux.host.written) == ["/etc/systemd/system/mnt-ram\\x2ddisk.mount"]
    assert linux.runner.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "mnt-ram\\x2ddisk.mount"],
    ]
    no_systemd = get_adapter(
        platform="linux", runner=FakeRunner(), host=FakeHost(files={"/etc/fstab": "# fstab"})
    )
    no_systemd.persist(DiskSpec("/mnt/ram", 1024**3, noswap=False))
    assert no_systemd.host.written["/etc/fstab"] == (
        "# fstab\ntmpfs /mnt/ram tmpfs size=1G,mode=1777,uid=1000,gid=1000 0 0\n"
    )
