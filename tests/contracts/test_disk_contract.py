"""The RAM-disk adapter contract: what `ramxchg.disks.RamDiskAdapter` promises, for each one.

Like zarr's store tests, one suite runs over every implementation. The adapters come
from the registry (`ramxchg.disks.ADAPTERS`); each runs on a fake machine of its own OS
(tests/disk_worlds/: the adapter's two seams, answering like the real programs and
remembering what they did), and tmpfs also on this machine when root. A new adapter
gets the whole suite by registering in ``ADAPTERS`` and adding its world to
``disk_worlds.WORLDS`` (the first test fails until it does). Command lines, parsers and
the text of each mechanism stay in tests/test_disks_fake.py and tests/test_disks_tmpfs.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ramxchg import RamDiskError
from ramxchg.disks import ADAPTERS, DiskSpec, adapter_class, get_adapter
from tests.disk_fakes import FakeHost, FakeRunner
from tests.disk_worlds import WORLDS, FakeWorld, RealTmpfs, World

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
TARGET = "/target"

#: every adapter of the registry on each of its fake machines, and tmpfs on this one
_WORLDS = [
    pytest.param(world, id=world.name)
    for cls in dict.fromkeys(ADAPTERS.values())
    for world in WORLDS.get(cls.name, [])
] + [pytest.param(RealTmpfs, id=RealTmpfs.name, marks=pytest.mark.root)]


@pytest.fixture(params=_WORLDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    made = RealTmpfs(tmp_path) if request.param is RealTmpfs else request.param()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def fake(world: World) -> FakeWorld:
    """A fake machine: the test makes programs fail, drops privileges or installs things
    at boot, which this machine must not see."""
    if not isinstance(world, FakeWorld):
        pytest.skip("needs a fake machine (it fails programs, drops privileges or installs)")
    return world


def _target(world: World, tmp_path: Path) -> str:
    """A folder to persist into: never a real system folder."""
    return TARGET if isinstance(world, FakeWorld) else str(tmp_path / "persisted")


def _one_line_to_run(message: str) -> bool:
    """Whether an error message gives the fix as an indented command line to copy."""
    return re.search(r"\n  \S", message) is not None


# -- the registry ---------------------------------------------------------------------------


def test_every_platform_gets_its_adapter_with_the_seams_and_a_world() -> None:
    names = set()
    for platform, cls in ADAPTERS.items():
        runner, host = FakeRunner(), FakeHost()
        adapter = get_adapter(platform=platform, runner=runner, host=host)
        assert type(adapter) is cls
        assert adapter_class(platform) is cls
        assert (adapter.runner, adapter.host) == (runner, host)
        assert cls.name
        assert cls.default_path
        assert cls.name in WORLDS, f"add a fake machine for {cls.name} to disk_worlds.WORLDS"
        names.add(cls.name)
    assert len(names) == len(set(ADAPTERS.values())), "two adapters share a name"


def test_an_unknown_platform_is_refused() -> None:
    with pytest.raises(RamDiskError, match="no RAM-disk adapter for platform 'sunos5'"):
        get_adapter(platform="sunos5")


# -- mount and describe ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [1000, 4 * KIB, 65568 * KIB, 512 * MIB, 1536 * MIB, 8 * GIB], ids=str
)
def test_mount_makes_a_ram_disk_of_the_size_asked(world: World, size: int) -> None:
    mounted = world.adapter.mount(DiskSpec(world.spot, size))
    assert mounted.adapter == world.adapter.name
    assert [list(command) for command in mounted.commands] == world.changes
    disk = world.disk_at(world.spot)
    assert disk is not None
    assert disk.ram
    assert disk.size is not None
    assert size <= disk.size < size + 4 * KIB  # rounded up to pages or sectors at most
    info = world.adapter.describe(mounted.mount_point)
    assert info.ram_backed
    assert (info.adapter, info.mount_point) == (world.adapter.name, mounted.mount_point)
    assert info.total_bytes == disk.size
    assert info.used_bytes == info.total_bytes - info.free_bytes
    assert info.to_dict()["adapter"] == world.adapter.name


def test_describe_tells_a_ram_disk_from_another_disk(world: World) -> None:
    mounted = world.adapter.mount(DiskSpec(world.spot, 64 * MIB))
    world.add_disk(world.other_spot)
    inside = world.adapter.describe(world.inside(mounted.mount_point))
    assert inside.ram_backed
    assert inside.mount_point == mounted.mount_point
    other = world.adapter.describe(world.other_spot)
    assert not other.ram_backed
    assert other.adapter == world.adapter.name
    assert other.mount_point != mounted.mount_point


@pytest.mark.parametrize("occupied_by", ["ram disk", "other disk"])
def test_mounting_where_a_disk_is_mounted_is_refused(world: World, occupied_by: str) -> None:
    if occupied_by == "ram disk":
        spot = world.adapter.mount(DiskSpec(world.spot, 64 * MIB)).mount_point
    else:
        spot = world.other_spot
        world.add_disk(spot)
    there, changes = world.disk_at(spot), list(world.changes)
    with pytest.raises(RamDiskError, match="teardown"):
        world.adapter.mount(DiskSpec(spot, 128 * MIB))
    assert world.changes == changes
    assert world.disk_at(spot) == there


# -- teardown -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["plain", "force", "missing_ok"])
def test_unmount_removes_the_disk_and_a_second_time_finds_nothing(world: World, how: str) -> None:
    mounted = world.adapter.mount(DiskSpec(world.spot, 64 * MIB))
    options = {"plain": {}, "force": {"force": True}, "missing_ok": {"missing_ok": True}}[how]
    assert world.adapter.unmount(mounted.mount_point, **options) is True
    assert world.disk_at(world.spot) is None
    changes = list(world.changes)
    assert world.adapter.unmount(mounted.mount_point, missing_ok=True) is False
    with pytest.raises(RamDiskError):
        world.adapter.unmount(mounted.mount_point)
    assert world.changes == changes


def test_unmount_where_nothing_is_mounted(world: World) -> None:
    with pytest.raises(RamDiskError, match=re.escape(world.free_spot)):
        world.adapter.unmount(world.free_spot)
    assert world.adapter.unmount(world.free_spot, missing_ok=True) is False
    assert world.changes == []


@pytest.mark.parametrize("missing_ok", [False, True], ids=["plain", "missing_ok"])
def test_unmount_refuses_what_is_not_a_ram_disk(world: World, missing_ok: bool) -> None:
    world.add_disk(world.other_spot)
    there = world.disk_at(world.other_spot)
    with pytest.raises(RamDiskError, match="refusing"):
        world.adapter.unmount(world.other_spot, force=True, missing_ok=missing_ok)
    assert world.disk_at(world.other_spot) == there
    assert world.changes == []


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -4096, 1.5 * GIB, True, "8G"], ids=repr)
def test_a_size_that_is_not_a_positive_number_of_bytes_is_refused(
    world: World, size: object, tmp_path: Path
) -> None:
    """Fails on 28845df: ``size=0`` made tmpfs mount with no limit at all."""
    with pytest.raises(RamDiskError, match="size"):
        world.adapter.mount(DiskSpec(world.spot, size))  # type: ignore[arg-type]
    with pytest.raises(RamDiskError, match="size"):
        world.adapter.persist(DiskSpec(world.spot, size), _target(world, tmp_path))  # type: ignore[arg-type]
    assert world.runner.calls == []
    assert world.disk_at(world.spot) is None


def test_a_failing_program_is_a_ram_disk_error_naming_it(fake: FakeWorld) -> None:
    fake.failing = True
    with pytest.raises(RamDiskError) as info:
        fake.adapter.mount(DiskSpec(fake.spot, 64 * MIB))
    error = info.value
    assert error.returncode != 0
    assert error.command[0] in fake.tools
    assert shlex.join(error.command) in str(error)
    assert "simulated failure" in str(error)
    assert fake.disk_at(fake.spot) is None
    assert fake.changes == []


def test_a_missing_program_is_named(fake: FakeWorld) -> None:
    fake.tools.clear()
    with pytest.raises(RamDiskError) as info:
        fake.adapter.mount(DiskSpec(fake.spot, 64 * MIB))
    assert any(tool in str(info.value) for tool in fake.mount_tools)
    assert fake.disk_at(fake.spot) is None


def test_without_privileges_the_error_gives_the_command_to_run(fake: FakeWorld) -> None:
    fake.host.admin = False
    if not fake.needs_admin:
        fake.adapter.mount(DiskSpec(fake.spot, 64 * MIB))
        assert fake.disk_at(fake.spot) is not None
        return
    with pytest.raises(RamDiskError) as info:
        fake.adapter.mount(DiskSpec(fake.spot, 64 * MIB))
    message = str(info.value)
    assert _one_line_to_run(message)
    assert all(word in message for arg in info.value.command for word in arg.split())
    assert fake.runner.calls == []
    assert fake.disk_at(fake.spot) is None


# -- persistence ----------------------------------------------------------------------------


def test_persist_into_a_folder_writes_the_same_disk_there_and_installs_nothing(
    world: World, tmp_path: Path
) -> None:
    target = _target(world, tmp_path)
    done = world.adapter.persist(DiskSpec(world.spot, 8 * GIB), target)
    written = world.files_under(target)
    assert written
    assert sorted(done) == sorted(f"wrote {path}" for path in written)
    assert world.changes == []
    text = "".join(written.values())
    assert world.spot_spelling in text
    assert world.size_spelling(8 * GIB) in text
    if isinstance(world, FakeWorld):
        assert world.registered() == set()


def test_unpersist_undoes_persist_exactly_and_then_finds_nothing(fake: FakeWorld) -> None:
    before = dict(fake.files)
    done = fake.adapter.persist(DiskSpec(fake.spot, 8 * GIB))
    assert done
    assert all(line.startswith(("wrote ", "ran ", "added ")) for line in done)
    assert fake.registered()
    assert fake.adapter.unpersist(fake.spot)
    assert fake.files == before
    assert fake.registered() == set()
    changes = list(fake.changes)
    assert fake.adapter.unpersist(fake.spot) == []
    assert fake.changes == changes


def test_without_privileges_persisting_says_what_to_run(fake: FakeWorld) -> None:
    if not fake.needs_admin:
        pytest.skip(f"{fake.adapter.name} persists for the user: no privileges needed")
    fake.host.admin = False
    with pytest.raises(RamDiskError) as info:
        fake.adapter.persist(DiskSpec(fake.spot, 8 * GIB))
    assert _one_line_to_run(str(info.value))
    assert fake.changes == []
    fake.host.admin = True
    fake.adapter.persist(DiskSpec(fake.spot, 8 * GIB))
    installed, changes = dict(fake.files), list(fake.changes)
    fake.host.admin = False
    with pytest.raises(RamDiskError) as info:
        fake.adapter.unpersist(fake.spot)
    assert _one_line_to_run(str(info.value))
    assert (fake.files, fake.changes) == (installed, changes)


@pytest.mark.parametrize("root", ["/mnt/ram disk", "/mnt/it's", "/mnt/$HOME;`x`"])
def test_the_export_line_sets_the_root_in_its_shell(world: World, root: str) -> None:
    if shutil.which(world.shell[0]) is None:
        pytest.skip(f"needs {world.shell[0]}")
    line = world.adapter.export_line(root)
    shown = subprocess.run(
        [*world.shell, line + world.show_root], capture_output=True, text=True, check=True
    ).stdout
    assert shown == root
