"""What is particular to each adapter, through fake seams: its command lines, the output of
its programs, its wording. What every adapter does is tests/contracts/test_disk_contract.py.
"""

from __future__ import annotations

import subprocess

import pytest

from ramxchg import RamDiskError
from ramxchg.disks import (
    DiskSpec,
    HdiutilAdapter,
    TmpfsAdapter,
    get_adapter,
)
from ramxchg.disks.hdiutil import parse_attach, parse_hdiutil_info, parse_mount_output
from ramxchg.disks.imdisk import drive_letter, parse_imdisk_status
from ramxchg.disks.persist import fstab_line, mount_unit_name
from ramxchg.disks.tmpfs import MOUNTINFO, SHMEM_ENABLED

from .disk_fakes import FakeHost, FakeRunner
from .disk_worlds import HdiutilWorld, ImDiskWorld

GIB = 1024**3

IMDISK_STATUS = """\
Mount point: R:
No image file.
Size: 8589934592 bytes (8 GB), Virtual Memory, HDD, Modified.
"""
IMDISK_FILE_STATUS = """\
Drive letter: S
Image file: \\??\\C:\\images\\disk.img
Size: 1048576 bytes (1 MB), Queued I/O Image File, HDD.
"""
HDIUTIL_ATTACH = "/dev/disk4          \t\n"
HDIUTIL_INFO = """\
framework       : 671.40.2
driver          : 671.40.2
================================================
image-path      : ram://16777216
image-alias     :
shadow-path     : <none>
image-type      : read/write
blockcount      : 16777216
blocksize       : 512
writeable       : TRUE
/dev/disk4\t                               \t/Volumes/ramxchg
================================================
image-path      : /Users/alice/Downloads/tool.dmg
image-type      : UDIF read-only compressed (zlib)
/dev/disk5\tGUID_partition_scheme          \t
/dev/disk5s1\tApple_HFS                      \t/Volumes/Tool
"""
MAC_MOUNT = """\
/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)
devfs on /dev (devfs, local, nobrowse)
/dev/disk4 on /Volumes/ramxchg (hfs, local, nodev, nosuid, noowners, mounted by alice)
/dev/disk5s1 on /Volumes/Tool (hfs, local, nodev, nosuid, read-only, mounted by alice)
"""


# -- Windows --------------------------------------------------------------------------------


def _windows(tools: tuple[str, ...] = ("imdisk",)) -> ImDiskWorld:
    world = ImDiskWorld()
    world.tools.update(tools)
    return world


def test_imdisk_mount_and_unmount_command_lines() -> None:
    world = _windows()
    mounted = world.adapter.mount(DiskSpec("r:\\", 8 * GIB))
    command = ["imdisk", "-a", "-s", "8G", "-m", "R:", "-p", "/fs:ntfs /q /y"]
    assert world.changes == [command]
    assert mounted.mount_point == "R:\\"
    assert mounted.device == "\\Device\\ImDisk0"
    # How Windows will quote it: the format parameters stay one argument.
    assert subprocess.list2cmdline(command).endswith('-p "/fs:ntfs /q /y"')
    world.adapter.unmount("R:")
    world.adapter.mount(DiskSpec("R:", 8 * GIB))
    world.adapter.unmount("R:", force=True)
    assert world.changes[1:] == [
        ["imdisk", "-d", "-m", "R:"],
        command,
        ["imdisk", "-D", "-m", "R:"],
    ]


def test_windows_persistence_formats_with_the_chosen_filesystem() -> None:
    world = _windows()
    spec = DiskSpec("R:", 4 * GIB, filesystem="FAT32")
    world.adapter.mount(spec)
    assert world.changes[0][-2:] == ["-p", "/fs:fat32 /q /y"]
    assert world.adapter.describe("R:").fs_type == "FAT32"
    world.adapter.persist(spec)
    [script] = [text for path, text in world.host.written.items() if path.endswith(".ps1")]
    assert '-p "/fs:fat32 /q /y"' in script  # the drive made at logon is the same drive


def test_aim_ll_is_preferred_with_the_same_switches() -> None:
    world = _windows(tools=("imdisk", "aim_ll"))
    world.adapter.mount(DiskSpec("S:", 512 * 1024**2))
    assert world.changes == [["aim_ll", "-a", "-s", "512M", "-m", "S:", "-p", "/fs:ntfs /q /y"]]


def test_windows_missing_tool_names_the_download_pages() -> None:
    world = _windows()
    world.tools.clear()
    with pytest.raises(RamDiskError) as caught:
        world.adapter.mount(DiskSpec("R:", GIB))
    message = str(caught.value)
    assert "https://sourceforge.net/projects/imdisk-toolkit/" in message
    assert "https://arsenalrecon.com/downloads" in message


def test_windows_without_elevation() -> None:
    world = _windows()
    world.host.admin = False
    with pytest.raises(RamDiskError, match="Run as administrator") as caught:
        world.adapter.mount(DiskSpec("R:", GIB))
    assert 'imdisk -a -s 1G -m R: -p "/fs:ntfs /q /y"' in str(caught.value)
    assert caught.value.command == ["imdisk", "-a", "-s", "1G", "-m", "R:", "-p", "/fs:ntfs /q /y"]
    world.host.admin = True
    world.adapter.mount(DiskSpec("R:", GIB))
    world.host.admin = False
    with pytest.raises(RamDiskError, match="elevated"):
        world.adapter.unmount("R:")
    assert world.disk_at("R:") is not None


def test_powershell_export_line_quotes_the_root() -> None:
    adapter = _windows().adapter
    assert adapter.export_line("R:\\ramxchg") == "$env:RAMXCHG_ROOT = 'R:\\ramxchg'"
    # In single quotes PowerShell expands nothing ($x, `n stay); only ' is doubled.
    assert adapter.export_line("R:\\it's $x `n") == "$env:RAMXCHG_ROOT = 'R:\\it''s $x `n'"


def test_parse_imdisk_outputs() -> None:
    ram = parse_imdisk_status(IMDISK_STATUS)
    assert (ram.mount_point, ram.image_file, ram.size_bytes) == ("R:", None, 8 * GIB)
    assert ram.flags == ("Virtual Memory", "HDD", "Modified")
    assert ram.ram_backed
    disk = parse_imdisk_status(IMDISK_FILE_STATUS)
    assert disk.mount_point == "S"
    assert disk.image_file == "\\??\\C:\\images\\disk.img"
    assert not disk.ram_backed
    with pytest.raises(RamDiskError, match="no Size line"):
        parse_imdisk_status("No such device.\n")


def test_describe_an_imdisk_drive() -> None:
    world = _windows()
    world.adapter.mount(DiskSpec("R:", 8 * GIB))
    disk = world.adapter.describe("R:\\ramxchg")
    assert (disk.device, disk.fs_type, disk.mount_point) == ("\\Device\\ImDisk0", "NTFS", "R:\\")
    assert disk.notes == ("Virtual Memory, HDD, Modified",)
    system = world.adapter.describe("C:\\Users")
    assert not system.ram_backed
    assert system.device == "\\Device\\HarddiskVolume3"
    assert system.notes == ()


@pytest.mark.parametrize(("text", "letter"), [("r", "R:"), ("R:", "R:"), ("s:\\x\\y", "S:")])
def test_drive_letters(text: str, letter: str) -> None:
    assert drive_letter(text) == letter


def test_bad_drive_letter() -> None:
    with pytest.raises(RamDiskError, match="not a drive letter"):
        drive_letter("/mnt/x")


# -- macOS ----------------------------------------------------------------------------------


def _mac(tools=("hdiutil", "diskutil"), replies=None) -> tuple[HdiutilAdapter, FakeRunner]:
    runner = FakeRunner(tools, replies)
    adapter = get_adapter(platform="darwin", runner=runner, host=FakeHost())
    assert isinstance(adapter, HdiutilAdapter)
    return adapter, runner


def test_hdiutil_mount_command_lines() -> None:
    world = HdiutilWorld()
    mounted = world.adapter.mount(DiskSpec("/Volumes/ramxchg", 8 * GIB))
    assert world.changes == [
        ["hdiutil", "attach", "-nomount", "ram://16777216"],
        ["diskutil", "erasevolume", "HFS+", "ramxchg", "/dev/disk4"],
    ]
    assert mounted.device == "/dev/disk4"
    assert world.host.touched == ["/Volumes/ramxchg/.metadata_never_index"]
    world.adapter.unmount("/Volumes/ramxchg", force=True)
    assert world.changes[-1] == ["hdiutil", "detach", "/dev/disk4", "-force"]


def test_hdiutil_apfs_and_odd_sizes_round_up_to_sectors() -> None:
    world = HdiutilWorld()
    world.adapter.mount(DiskSpec("/Volumes/fast", 1000, filesystem="APFS"))
    assert world.changes[0][-1] == "ram://2"
    assert world.changes[1] == ["diskutil", "erasevolume", "APFS", "fast", "/dev/disk4"]
    assert world.adapter.describe("/Volumes/fast").fs_type == "apfs"


def test_hdiutil_detaches_when_formatting_fails() -> None:
    adapter, runner = _mac(
        replies={
            ("hdiutil", "attach"): (0, HDIUTIL_ATTACH, ""),
            ("diskutil",): (1, "", "Error: -69888"),
        }
    )
    with pytest.raises(RamDiskError, match="-69888"):
        adapter.mount(DiskSpec("/Volumes/ramxchg", GIB))
    assert runner.calls[-1] == ["hdiutil", "detach", "/dev/disk4"]


def test_hdiutil_refuses_a_mount_point_outside_volumes() -> None:
    adapter, runner = _mac()
    with pytest.raises(RamDiskError, match="/Volumes/<name>"):
        adapter.mount(DiskSpec("/tmp/ram", GIB))
    assert runner.calls == []


def test_parse_hdiutil_outputs() -> None:
    assert parse_attach(HDIUTIL_ATTACH) == "/dev/disk4"
    with pytest.raises(RamDiskError, match="unexpected hdiutil attach output"):
        parse_attach("hdiutil: attach failed - Resource busy\n")
    images = parse_hdiutil_info(HDIUTIL_INFO)
    assert [(i.image_path, i.ram_backed) for i in images] == [
        ("ram://16777216", True),
        ("/Users/alice/Downloads/tool.dmg", False),
    ]
    assert images[0].devices == (("/dev/disk4", "/Volumes/ramxchg"),)
    assert images[1].devices == (("/dev/disk5", ""), ("/dev/disk5s1", "/Volumes/Tool"))
    mounts = parse_mount_output(MAC_MOUNT)
    assert mounts[2].device == "/dev/disk4"
    assert mounts[2].mount_point == "/Volumes/ramxchg"
    assert mounts[2].fs_type == "hfs"
    assert "noowners" in mounts[2].options


# -- Linux without root ---------------------------------------------------------------------

MOUNTINFO_TEXT = "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"


def _linux(admin: bool, kernel: str = "6.1.0-18-amd64") -> tuple[TmpfsAdapter, FakeRunner]:
    runner = FakeRunner(("mount", "umount"))
    files = {MOUNTINFO: MOUNTINFO_TEXT, SHMEM_ENABLED: "always within_size advise [never]\n"}
    host = FakeHost(files=files, admin=admin, kernel=kernel)
    adapter = get_adapter(platform="linux", runner=runner, host=host)
    assert isinstance(adapter, TmpfsAdapter)
    return adapter, runner


def test_tmpfs_command_line_with_huge_pages_and_noswap() -> None:
    adapter, runner = _linux(admin=True, kernel="6.8.0")
    adapter.mount(DiskSpec("/mnt/ramxchg", 8 * GIB))
    assert runner.calls == [
        ["mount", "-t", "tmpfs", "-o",
         "size=8G,mode=1777,uid=1000,gid=1000,huge=within_size,noswap", "tmpfs", "/mnt/ramxchg"]
    ]  # fmt: skip
    assert adapter.host.made == ["/mnt/ramxchg"]


def test_tmpfs_command_line_old_kernel_no_huge() -> None:
    adapter, runner = _linux(admin=True)
    adapter.mount(DiskSpec("/mnt/ramxchg", 512 * 1024**2, mode=0o700, huge=False, uid=0, gid=0))
    assert runner.calls[0][4] == "size=512M,mode=700,uid=0,gid=0"


def test_linux_non_root_error_gives_the_exact_sudo_command() -> None:
    adapter, runner = _linux(admin=False)
    with pytest.raises(RamDiskError) as caught:
        adapter.mount(DiskSpec("/mnt/ram disk", 8 * GIB))
    message = str(caught.value)
    assert (
        "sudo mkdir -p '/mnt/ram disk' && sudo mount -t tmpfs -o "
        "size=8G,mode=1777,uid=1000,gid=1000,huge=within_size tmpfs '/mnt/ram disk'"
    ) in message
    assert "/dev/shm is a tmpfs that works without root" in message
    assert caught.value.command[:3] == ["mount", "-t", "tmpfs"]
    assert runner.calls == []


# -- undoing --persist ------------------------------------------------------------------------


def test_tmpfs_persist_without_systemd_adds_one_fstab_line() -> None:
    adapter, _ = _linux(admin=True)
    host = adapter.host
    assert isinstance(host, FakeHost)
    spec = DiskSpec("/mnt/ramxchg", 1 << 30)
    commented = "#tmpfs /mnt/ramxchg tmpfs size=1G 0 0\n"  # a comment mounts nothing
    host.files["/etc/fstab"] = commented
    assert adapter.persist(spec) == [
        f"added to /etc/fstab: {fstab_line('/mnt/ramxchg', adapter.options(spec)).strip()}"
    ]
    assert host.written["/etc/fstab"] == commented + fstab_line(
        "/mnt/ramxchg", adapter.options(spec)
    )
    host.files["/etc/fstab"] = "tmpfs /mnt/ramxchg tmpfs size=2G 0 0\n"
    assert adapter.persist(spec) == ["/etc/fstab already mounts /mnt/ramxchg; left unchanged"]


def test_tmpfs_unpersist_disables_the_unit_and_drops_only_its_fstab_line() -> None:
    adapter, runner = _linux(admin=True)
    path = "/mnt/ram disk"
    unit = mount_unit_name(path)
    unit_file = f"/etc/systemd/system/{unit}"
    others = "UUID=1 / ext4 defaults 0 1\ntmpfs /mnt/other tmpfs size=1G 0 0\n"
    host = adapter.host
    assert isinstance(host, FakeHost)
    host.files.update(
        {"/run/systemd/system": "", unit_file: "[Mount]\n", "/etc/fstab": others + fstab_line(path)}
    )
    done = adapter.unpersist(path)
    assert runner.calls == [["systemctl", "disable", unit], ["systemctl", "daemon-reload"]]
    assert host.removed == [unit_file]
    assert host.written["/etc/fstab"] == others
    assert len(done) == 4
    host.files["/etc/fstab"] = others
    assert adapter.unpersist(path) == []  # nothing left: nothing run
    assert len(runner.calls) == 2


def test_tmpfs_unpersist_needs_root_and_says_how() -> None:
    adapter, runner = _linux(admin=False)
    host = adapter.host
    assert isinstance(host, FakeHost)
    host.files["/etc/fstab"] = fstab_line("/mnt/ramxchg")
    with pytest.raises(RamDiskError, match="sudo ramxchg teardown /mnt/ramxchg --persist"):
        adapter.unpersist("/mnt/ramxchg")
    assert runner.calls == []
    assert host.written == {}
