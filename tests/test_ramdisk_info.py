"""ramdisk.info and its parsers, fed canned /proc/self/mountinfo text."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ramxchg import Channel, NotRamBackedWarning
from ramxchg._errors import RamDiskError
from ramxchg.disks import TmpfsAdapter, parse_size
from ramxchg.disks import probe as ramdisk
from ramxchg.disks.base import has_cap_sys_admin
from ramxchg.disks.tmpfs import (
    MOUNTINFO,
    SHMEM_ENABLED,
    find_mount,
    huge_policy,
    kernel_at_least,
    parse_mountinfo,
    parse_shmem_enabled,
)

from .disk_fakes import FakeHost

MOUNTINFO_TEXT = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
24 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=12334460k,mode=755
25 24 0:23 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,size=65536k
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
41 22 0:39 / /mnt/ram\\040disk rw,relatime shared:40 - tmpfs tmpfs rw,size=8388608k,mode=1777,\
uid=1000,gid=1000,huge=within_size,noswap
42 22 0:40 / /mnt/r rw,relatime - ramfs none rw
43 22 0:41 / /mnt/ramxchg-data rw,relatime - ext4 /dev/vdb rw
"""


def test_parse_mountinfo_fields_and_octal_escapes() -> None:
    entries = parse_mountinfo(MOUNTINFO_TEXT)
    assert [e.mount_point for e in entries] == [
        "/", "/dev", "/dev/shm", "/dev/shm", "/mnt/ram disk", "/mnt/r", "/mnt/ramxchg-data",
    ]  # fmt: skip
    ram = entries[4]
    assert ram.fs_type == "tmpfs"
    assert ram.source == "tmpfs"
    assert ram.mount_options == ("rw", "relatime")
    assert ram.option("huge") == "within_size"
    assert ram.option("size") == "8388608k"
    assert "noswap" in ram.options
    assert entries[0].super_options == ("rw", "errors=remount-ro")


def test_parse_mountinfo_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="malformed mountinfo line"):
        parse_mountinfo("not a mountinfo line\n")


@pytest.mark.parametrize(
    ("path", "mount_point", "size"),
    [
        ("/dev/shm/ramxchg-0/cam", "/dev/shm", "24684084k"),  # the top of a stacked mount
        ("/mnt/ram disk/x", "/mnt/ram disk", "8388608k"),
        ("/mnt/ramxchg-data", "/mnt/ramxchg-data", None),
        ("/mnt/ramx", "/", None),  # a prefix of a mount point is not inside it
        ("/dev", "/dev", "12334460k"),
    ],
)
def test_find_mount_longest_and_topmost(path: str, mount_point: str, size: str | None) -> None:
    entry = find_mount(parse_mountinfo(MOUNTINFO_TEXT), path)
    assert entry.mount_point == mount_point
    assert entry.option("size") == size


def test_find_mount_without_any_mount() -> None:
    with pytest.raises(RamDiskError, match="no mount"):
        find_mount([], "/x")


def test_huge_policy_from_options_and_sysfs() -> None:
    entries = parse_mountinfo(MOUNTINFO_TEXT)
    shm, ram, ext4 = entries[3], entries[4], entries[6]
    assert huge_policy(ram, "never") == "within_size"
    assert huge_policy(shm, "never") == "never"
    assert huge_policy(shm, "force") == "force"
    assert huge_policy(ram, "deny") == "deny"
    assert huge_policy(ext4, "never") is None
    assert parse_shmem_enabled("always within_size advise [never] deny force\n") == "never"
    assert parse_shmem_enabled("always [within_size] advise never deny force") == "within_size"
    assert parse_shmem_enabled(None) is None


@pytest.mark.parametrize(
    ("release", "expected"),
    [("6.4.0", True), ("6.18.44-fc", True), ("6.1.0-18-amd64", False), ("5.15.0", False)],
)
def test_kernel_at_least(release: str, expected: bool) -> None:
    assert kernel_at_least(release, (6, 4)) is expected


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("8G", 8 * 1024**3), ("512M", 512 * 1024**2), ("1.5GiB", 1536 * 1024**2),
     ("64k", 65536), ("4096", 4096), ("2T", 2 * 1024**4)],
)  # fmt: skip
def test_parse_size(text: str, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "8 apples", "1X"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_cap_sys_admin_from_proc_status() -> None:
    assert has_cap_sys_admin("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert not has_cap_sys_admin("CapEff:\t0000000000000000\n")
    assert has_cap_sys_admin("CapEff:\t0000000000200000\n")  # bit 21 alone


def _adapter(usage: tuple[int, int] = (8 * 1024**3, 6 * 1024**3), magic: int | None = None):
    files = {MOUNTINFO: MOUNTINFO_TEXT, SHMEM_ENABLED: "always within_size advise [never]\n"}
    return TmpfsAdapter(host=FakeHost(files=files, usage=usage, magic=magic))


def test_describe_tmpfs_with_huge_pages() -> None:
    disk = ramdisk.info("/mnt/ram disk/cam", adapter=_adapter())
    assert disk.ram_backed
    assert disk.fs_type == "tmpfs"
    assert disk.mount_point == "/mnt/ram disk"
    assert disk.huge_pages == "within_size"
    assert "size=8388608k" in disk.mount_options
    assert (disk.total_bytes, disk.free_bytes, disk.used_bytes) == (8 << 30, 6 << 30, 2 << 30)
    assert not disk.small
    assert ramdisk.advice(disk) == []


def test_describe_disk_and_ramfs() -> None:
    disk = ramdisk.info("/mnt/ramxchg-data/x", adapter=_adapter())
    assert not disk.ram_backed
    assert disk.fs_type == "ext4"
    assert disk.huge_pages is None
    assert ramdisk.info("/mnt/r", adapter=_adapter()).ram_backed


def test_statfs_magic_wins_over_the_mount_table() -> None:
    disk = ramdisk.info("/mnt/ramxchg-data", adapter=_adapter(magic=0x01021994))
    assert disk.ram_backed
    assert disk.fs_type == "tmpfs"


def test_small_ram_disk_advice_names_the_fixes() -> None:
    disk = ramdisk.info("/dev/shm", adapter=_adapter(usage=(64 << 20, 60 << 20)))
    assert disk.small
    text = " ".join(ramdisk.advice(disk))
    for fix in ("--shm-size", "medium: Memory", "memory limit", "ramxchg setup", "64 MB"):
        assert fix in text


def test_info_of_real_dev_shm() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not Path(MOUNTINFO).exists():
        pytest.skip("needs /dev/shm and /proc")
    disk = ramdisk.info(shm)
    assert disk.ram_backed
    assert disk.fs_type == "tmpfs"
    assert disk.total_bytes > 0
    assert disk.huge_pages in {"never", "always", "within_size", "advise", "deny", "force"}
    assert disk.to_dict()["used_bytes"] == disk.used_bytes


def test_warning_once_per_root() -> None:
    adapter = _adapter(usage=(64 << 20, 60 << 20))
    root = "/dev/shm/ramxchg-test-once"
    with pytest.warns(NotRamBackedWarning, match="only 64 MB"):
        assert ramdisk.warn_if_not_ram(root, adapter=adapter) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ramdisk.warn_if_not_ram(root, adapter=adapter) is None


def test_no_warning_for_a_good_ram_disk() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        disk = ramdisk.warn_if_not_ram("/mnt/ram disk/good", adapter=_adapter())
    assert disk is not None
    assert disk.ram_backed


def test_warning_for_a_disk_root() -> None:
    with pytest.warns(NotRamBackedWarning, match="not in RAM.*ramxchg setup"):
        ramdisk.warn_if_not_ram("/mnt/ramxchg-data/root", adapter=_adapter())


@pytest.fixture
def disk_folder(tmp_path: Path) -> Path:
    """A fresh folder on a disk (the temp dir), where channels must warn."""
    if ramdisk.info(tmp_path).ram_backed:
        pytest.skip("needs a temp dir on a disk, not in RAM")
    return tmp_path


@pytest.mark.parametrize("given", ["env", "root", "path"])
def test_every_root_on_a_disk_warns_once(
    disk_folder: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    folder = disk_folder / "exported"  # e.g. RAMXCHG_ROOT after a teardown: a plain folder
    folder.mkdir()
    if given == "env":
        monkeypatch.setenv("RAMXCHG_ROOT", str(folder))

    def open_channel(name: str) -> Channel:
        if given == "path":
            (folder / name).mkdir(exist_ok=True)
            return Channel(folder / name)
        return Channel(name, root=folder if given == "root" else None)

    with pytest.warns(NotRamBackedWarning, match="not in RAM") as caught:  # 3c44b6e: none
        open_channel("a")
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_channel("b")  # once per filesystem: not again for each channel
        open_channel("a")


def test_roots_in_ram_do_not_warn(root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Channel("a")
        Channel("b", root=root / "sub")
        (root / "by-path").mkdir()
        Channel(root / "by-path")
