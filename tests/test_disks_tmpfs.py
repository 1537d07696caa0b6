"""Real tmpfs mounts through the adapter (root only): mountinfo, info(), a channel on it."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ramxchg
from ramxchg._errors import RamDiskError
from ramxchg.disks import DiskSpec, TmpfsAdapter
from ramxchg.disks import probe as ramdisk
from ramxchg.disks.tmpfs import find_mount, kernel_at_least, parse_mountinfo
from tests.conftest import mount_entry

pytestmark = pytest.mark.root

MIB = 1024**2


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs with huge=within_size, mounted through the adapter."""
    point = tmp_path / "ram disk"  # a space: mountinfo escapes it as \040
    adapter = TmpfsAdapter()
    adapter.mount(DiskSpec(str(point), 64 * MIB))
    yield point
    if mount_entry(point) is not None:
        adapter.unmount(str(point), force=True)


def _read_sum(root: str, name: str) -> float:
    return float(ramxchg.Channel("cam", root=root).get(name).array.sum())


def test_mount_shows_in_mountinfo_with_size_and_huge_pages(mounted: Path) -> None:
    entry = mount_entry(mounted)
    assert entry is not None
    assert entry.fs_type == "tmpfs"
    assert entry.option("size") == "65536k"
    assert entry.option("huge") == "within_size"
    if kernel_at_least(os.uname().release, (6, 4)):
        assert "noswap" in entry.options
    assert os.stat(mounted).st_mode & 0o7777 == 0o1777  # the default mode is not listed


def test_info_of_the_mount(mounted: Path) -> None:
    disk = ramdisk.info(mounted)
    assert disk.ram_backed
    assert disk.fs_type == "tmpfs"
    assert disk.mount_point == str(mounted)
    assert disk.total_bytes == 64 * MIB
    assert disk.huge_pages == "within_size"
    assert disk.small  # 64 MiB: the Docker trap, so it is reported
    with pytest.warns(ramxchg.NotRamBackedWarning, match="only 64 MB"):
        ramdisk.warn_if_not_ram(mounted)


def test_publish_and_read_through_the_mount(mounted: Path) -> None:
    with pytest.warns(ramxchg.NotRamBackedWarning, match="only 64 MB"):  # as any small root
        channel = ramxchg.Channel("cam", root=mounted)
    array = np.arange(1_000_000, dtype=np.float64)
    item = channel.put(array, "frame")
    assert Path(item.path).parent.parent == mounted
    assert find_mount(parse_mountinfo(Path("/proc/self/mountinfo").read_text()), str(item.path))
    with channel.get("frame") as got:
        np.testing.assert_array_equal(got.array, array)
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_read_sum, (str(mounted), "frame")) == float(array.sum())


def test_unmount_gives_the_folder_back(tmp_path: Path) -> None:
    point = tmp_path / "ram"
    adapter = TmpfsAdapter()
    adapter.mount(DiskSpec(str(point), 16 * MIB, huge=False))
    assert ramdisk.info(point).huge_pages in ("never", "deny", "force")
    with pytest.raises(RamDiskError, match="already a mount point"):
        adapter.mount(DiskSpec(str(point), 16 * MIB))
    adapter.unmount(str(point))
    assert mount_entry(point) is None
    assert not ramdisk.info(point).ram_backed or ramdisk.info(point).mount_point != str(point)
