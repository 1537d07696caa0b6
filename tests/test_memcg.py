"""A memory cgroup's limit: a producer gets RamDiskFull, where the kernel would kill it.

Pages written to a RAM disk are charged to the writer's memory cgroup; past its limit the
kernel's OOM killer kills the process rather than failing the write (docs/reliability.md).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ramxchg._store.room
import ramxchg.cli._setup
from ramxchg import Channel, RamDiskFull
from ramxchg._store.layout import ChannelLayout
from ramxchg._store.room import check_memory
from ramxchg.disks.base import RAM_FS_MAGIC, in_ram, statfs_magic
from ramxchg.disks.memcg import (
    UNLIMITED,
    CgroupFiles,
    MemoryLimit,
    headroom,
    parse_cgroups,
    parse_stat,
    swap_total,
)

from .conftest import mounted_tmpfs, run_cli

MB = 1 << 20
NO_SWAP = "MemTotal:       24000000 kB\nSwapTotal:             0 kB\n"


def _tree(base: Path, files: dict[str, str]) -> CgroupFiles:
    """Canned ``/proc`` and cgroup files under ``base``."""
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return CgroupFiles(proc=str(base / "proc"), mount=str(base / "cgroup"))


def _v1(path: str, limit: int, usage: int, file_pages: int = 0, memsw: int = 0) -> dict[str, str]:
    """One v1 level: its limit, use and page cache (and memory+swap limit, if any)."""
    folder = f"cgroup/memory/{path}"
    level = {
        f"{folder}memory.limit_in_bytes": f"{limit}\n",
        f"{folder}memory.usage_in_bytes": f"{usage}\n",
        f"{folder}memory.stat": f"cache 1\ntotal_active_file {file_pages}\ntotal_inactive_file 0\n",
    }
    if memsw:
        level[f"{folder}memory.memsw.limit_in_bytes"] = f"{memsw}\n"
    return level


def _v2(
    path: str, limit: str, current: int, file_pages: int = 0, swap: str = "max"
) -> dict[str, str]:
    """One v2 level (``limit`` "max" for none)."""
    return {
        f"cgroup/{path}memory.max": f"{limit}\n",
        f"cgroup/{path}memory.current": f"{current}\n",
        f"cgroup/{path}memory.stat": f"anon 1\nactive_file {file_pages}\ninactive_file 0\n",
        f"cgroup/{path}memory.swap.max": f"{swap}\n",
    }


def test_proc_self_cgroup_is_read_for_both_versions() -> None:
    text = "12:pids:/a\n4:memory:/jobs/x:y\n3:cpu,cpuacct:/b\n0::/user.slice/s\nbroken\n\n"
    assert parse_cgroups(text) == {
        "pids": "/a",
        "memory": "/jobs/x:y",  # a colon in a cgroup's name stays in its path
        "cpu": "/b",
        "cpuacct": "/b",
        "": "/user.slice/s",
    }


def test_memory_stat_and_swap_are_read_and_junk_is_skipped() -> None:
    assert parse_stat("anon 5\nfile 7\nbogus line\nodd \u00b2\n\n") == {"anon": 5, "file": 7}
    assert swap_total("MemTotal: 100 kB\nSwapTotal:  2048 kB\n") == 2 * MB
    assert swap_total(NO_SWAP) == 0
    assert swap_total("SwapTotal: \u00b2 kB\nSwapTotal:\n") == 0


def test_v1_counts_dropped_page_cache_as_free(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "5:pids:/\n4:memory:/jobs/one\n",
            "proc/meminfo": NO_SWAP,
            **_v1("jobs/one/", 100 * MB, 80 * MB, file_pages=15 * MB),
        },
    )
    limit = headroom(files)
    assert limit == MemoryLimit("/jobs/one", 100 * MB, 80 * MB, 15 * MB)
    assert limit.free_bytes == 35 * MB


def test_v1_takes_the_tightest_ancestor_with_its_own_use(tmp_path: Path) -> None:
    """A slice limited to 1 GB holding services that use 900 MB leaves a service with a
    limit of its own of 2 GB only 100 MB."""
    files = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/slice/service\n",
            "proc/meminfo": NO_SWAP,
            **_v1("slice/service/", 2048 * MB, 300 * MB),
            **_v1("slice/", 1024 * MB, 900 * MB),
            **_v1("", UNLIMITED + 1, 5000 * MB),  # the top: no limit
        },
    )
    assert headroom(files) == MemoryLimit("/slice", 1024 * MB, 900 * MB, 0)


def test_v1_in_a_container_that_mounts_its_own_cgroup_as_the_top(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/docker/abc\n",
            "proc/meminfo": NO_SWAP,
            **_v1("", 64 * MB, 70 * MB),
        },
    )
    limit = headroom(files)
    assert limit is not None
    assert limit.limit_bytes == 64 * MB
    assert limit.free_bytes == 0  # over the limit already: nothing is free, not less


def test_no_limit_swap_or_unreadable_figures_give_no_answer(tmp_path: Path) -> None:
    unlimited = {"proc/self/cgroup": "4:memory:/\n", "proc/meminfo": NO_SWAP}
    assert headroom(_tree(tmp_path / "a", {**unlimited, **_v1("", 9223372036854771712, 1)})) is None
    limited = {**unlimited, **_v1("", 100 * MB, 1)}
    swapping = {**limited, "proc/meminfo": "SwapTotal: 8 kB\n"}
    assert headroom(_tree(tmp_path / "b", swapping)) is None  # pages may go to swap
    junk = {**limited, "cgroup/memory/memory.usage_in_bytes": "lots\n"}
    assert headroom(_tree(tmp_path / "c", junk)) is None
    assert headroom(_tree(tmp_path / "d", {"proc/meminfo": NO_SWAP})) is None
    assert headroom(CgroupFiles(proc=str(tmp_path / "absent"))) is None
    outside = {**limited, "proc/self/cgroup": "4:memory:/../other\n"}  # cgroupns
    assert headroom(_tree(tmp_path / "e", outside)) is None


def test_swap_forbidden_by_a_level_still_gives_an_answer(tmp_path: Path) -> None:
    """Swap on the machine, but a memory+swap limit equal to the memory limit (v1) or
    ``memory.swap.max`` 0 (v2): the pages cannot go to swap, the kernel kills."""
    swap = "SwapTotal: 1048576 kB\n"
    v1 = {"proc/self/cgroup": "4:memory:/\n", "proc/meminfo": swap}
    v1 |= _v1("", 100 * MB, 10 * MB, memsw=100 * MB)
    assert headroom(_tree(tmp_path / "v1", v1)) == MemoryLimit("/", 100 * MB, 10 * MB, 0)
    v2 = {
        "proc/self/cgroup": "0::/pod/job\n",
        "proc/meminfo": swap,
        "cgroup/cgroup.controllers": "",
    }
    v2 |= _v2("pod/job/", str(100 * MB), 10 * MB)  # the limit here, swap forbidden above
    v2 |= _v2("pod/", "max", 10 * MB, swap="0")
    assert headroom(_tree(tmp_path / "v2", v2)) == MemoryLimit("/pod/job", 100 * MB, 10 * MB, 0)
    unlimited_v1 = {"proc/self/cgroup": "4:memory:/\n", "proc/meminfo": swap}
    unlimited_v1 |= _v1("x/", 100 * MB, 10 * MB, memsw=200 * MB)  # swap allowed here ...
    unlimited_v1 |= _v1("", UNLIMITED, 1, memsw=UNLIMITED)  # ... unlimited is no ban
    unlimited_v1["proc/self/cgroup"] = "4:memory:/x\n"
    assert headroom(_tree(tmp_path / "v1-swap", unlimited_v1)) is None


def test_v2_takes_the_tightest_ancestor(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/pods/a/job\n",
            "proc/meminfo": NO_SWAP,
            "cgroup/cgroup.controllers": "cpu memory pids\n",
            **_v2("pods/a/job/", "max", 10 * MB),  # no limit of its own
            **_v2("pods/a/", str(200 * MB), 150 * MB, file_pages=10 * MB),  # 60 MB free
            **_v2("pods/", str(1000 * MB), 100 * MB),  # 900 MB free
        },
    )
    assert headroom(files) == MemoryLimit("/pods/a", 200 * MB, 150 * MB, 10 * MB)


def test_v2_in_a_cgroup_namespace_and_beside_v1(tmp_path: Path) -> None:
    """In a container's cgroup namespace its own cgroup is "/" and the top of the mount;
    on a hybrid host v2 is mounted as ``unified`` beside v1's hierarchies."""
    container = {"proc/self/cgroup": "0::/\n", "proc/meminfo": NO_SWAP}
    container |= {"cgroup/cgroup.controllers": "memory\n", **_v2("", str(512 * MB), 12 * MB)}
    assert headroom(_tree(tmp_path / "ns", container)) == MemoryLimit("/", 512 * MB, 12 * MB, 0)
    hybrid = {"proc/self/cgroup": "1:name=systemd:/x\n0::/x\n", "proc/meminfo": NO_SWAP}
    hybrid |= {f"cgroup/unified/{k[7:]}": v for k, v in _v2("x/", str(64 * MB), MB).items()}
    assert headroom(_tree(tmp_path / "hybrid", hybrid)) == MemoryLimit("/x", 64 * MB, MB, 0)


def _tight(tmp_path: Path, free: int) -> CgroupFiles:
    """Canned files of a v1 cgroup "/tight" with ``free`` bytes left."""
    return _tree(
        tmp_path / "tight",
        {
            "proc/self/cgroup": "4:memory:/tight\n",
            "proc/meminfo": NO_SWAP,
            **_v1("tight/", 1024 * MB, 1024 * MB - free),
        },
    )


def _ram_root(root: Path | None = None) -> Path:
    """A folder on a RAM disk (``root``, else /dev/shm); skip where there is none."""
    folder = root or Path("/dev/shm")
    if not folder.is_dir() or statfs_magic(str(folder)) not in RAM_FS_MAGIC:
        pytest.skip(f"needs a RAM disk ({folder} is none)")
    return folder


def test_check_memory_refuses_only_large_new_pages_on_a_ram_disk(tmp_path: Path) -> None:
    files = _tight(tmp_path, 40 * MB)
    channel = ChannelLayout(tmp_path / "frames")
    on_disk = os.open(tmp_path / "on-disk", os.O_RDWR | os.O_CREAT, 0o600)
    ram_file = _ram_root() / f"ramxchg-test-{os.getpid()}"
    ram_fd = os.open(ram_file, os.O_RDWR | os.O_CREAT, 0o600)
    ram_file.unlink()
    try:
        if in_ram(on_disk):
            pytest.skip(f"{tmp_path} is a RAM disk here: no real disk to compare with")
        check_memory(channel, ram_fd, 24 * MB, files)  # 24 + 16 MB margin fit in 40
        with pytest.raises(RamDiskFull, match=r"memory limit \(1 GB for cgroup /tight") as raised:
            check_memory(channel, ram_fd, 32 * MB, files)
        assert raised.value.free_bytes == 40 * MB
        assert raised.value.needed_bytes == 32 * MB
        check_memory(channel, on_disk, 512 * MB, files)  # page cache: dropped, not killed for
        check_memory(channel, ram_fd, 15 * MB, _tight(tmp_path / "b", 0))  # small: unchecked
    finally:
        os.close(on_disk)
        os.close(ram_fd)


def test_a_recycled_file_is_not_checked_a_new_one_is(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recycled file takes no new pages: reusing it is fine with no memory left."""
    channel = Channel("frames", _ram_root(root))
    with channel.subscribe("g") as subscription:
        channel.put(np.ones(32 * MB, np.uint8))
        item = subscription.get(timeout=10)
        item.close()
        item.ack()  # deleted: its file goes to the pool
    tight = _tight(tmp_path, 0)
    monkeypatch.setattr(ramxchg._store.room, "headroom", lambda files=None: headroom(tight))
    channel.put(np.full(32 * MB, 2, np.uint8))  # into the pooled file
    with pytest.raises(RamDiskFull, match="memory limit"):
        channel.put(np.ones(48 * MB, np.uint8))  # a new file
    assert len(channel) == 1
    assert not list((channel.path / ".ramxchg" / "tmp").iterdir())


def test_status_shows_the_limit_and_says_when_it_is_below_the_free_space(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _ram_root(root)  # the advice is for RAM disks
    tight = _tight(tmp_path, 100 * MB)
    monkeypatch.setattr(ramxchg.cli._setup, "headroom", lambda: headroom(tight))
    code, out, _ = run_cli(capsys, "status", "--root", str(root), "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["memory_limit"]["cgroup"] == "/tight"
    assert shown["memory_limit"]["free_bytes"] == 100 * MB
    assert any("cgroup /tight" in tip and "RamDiskFull" in tip for tip in shown["advice"])
    code, out, _ = run_cli(capsys, "status", "--root", str(root))
    assert "memory_limit\t1 GB (cgroup /tight), 100 MB free" in out
    monkeypatch.setattr(ramxchg.cli._setup, "headroom", lambda: None)
    code, out, _ = run_cli(capsys, "status", "--root", str(root))
    assert "memory_limit\tnone" in out
    assert "cgroup" not in out


def _memory_cgroup_parent() -> Path | None:
    """A folder a new memory cgroup can be made in, with this process's own as parent
    (cgroup v1's memory hierarchy; v2 where memory is delegated to children)."""
    cgroups = parse_cgroups(Path("/proc/self/cgroup").read_text())
    if "memory" in cgroups:
        parent = Path("/sys/fs/cgroup/memory") / cgroups["memory"].lstrip("/")
    elif "" in cgroups:
        parent = Path("/sys/fs/cgroup") / cgroups[""].lstrip("/")
        controls = parent / "cgroup.subtree_control"
        if not controls.exists() or "memory" not in controls.read_text().split():
            return None
    else:
        return None
    return parent if os.access(parent, os.W_OK) else None


@contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A new memory cgroup limited to ``limit`` bytes; removed afterwards."""
    parent = _memory_cgroup_parent()
    if parent is None:
        pytest.skip(
            "needs a memory cgroup this process may make children in (root; with cgroup "
            "v2, memory delegated in the subtree_control of this process's own cgroup)"
        )
    if swap_total(Path("/proc/meminfo").read_text()):
        pytest.skip("swap is on: the kernel swaps RAM-disk pages out instead of killing")
    folder = parent / f"ramxchg-test-{os.getpid()}"
    folder.mkdir()
    try:
        v2 = (folder / "memory.max").exists()
        (folder / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
        yield folder
    finally:
        folder.rmdir()  # its processes are gone; charges left go to the parent


def _producer(channel_path: str, cgroup: str, sizes: list[int], report: Any) -> None:
    """Join ``cgroup`` (what is allocated from now on is charged to it), then put arrays
    of ``sizes`` bytes, reporting each outcome."""
    channel = Channel(Path(channel_path))
    arrays = [np.ones(size, np.uint8) for size in sizes]  # charged before joining
    Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
    for array in arrays:
        try:
            channel.put(array)
            report.put(("ok", array.nbytes))
        except RamDiskFull as exc:
            report.put(("full", str(exc)))


@pytest.mark.root
def test_a_producer_over_its_memory_limit_gets_ram_disk_full_instead_of_being_killed(
    tmp_path: Path,
) -> None:
    """Three 56 MB items from a process in a cgroup limited to 150 MB, on a 1 GB tmpfs:
    two fit, the third would take the cgroup past its limit. Before the check the
    kernel killed the producer (SIGKILL) there, with the RAM disk far from full."""
    ctx = mp.get_context("spawn")
    with mounted_tmpfs(tmp_path / "ram", 1 << 30) as ram, memory_cgroup(150 * MB) as cgroup:
        channel = Channel("frames", ram)
        report = ctx.Queue()
        producer = ctx.Process(
            target=_producer, args=(str(channel.path), str(cgroup), [56 * MB] * 3, report)
        )
        producer.start()
        try:
            producer.join(120)
            assert producer.exitcode == 0, f"the producer died (exit code {producer.exitcode})"
            outcomes = [report.get(timeout=10) for _ in range(3)]
            assert [kind for kind, _ in outcomes] == ["ok", "ok", "full"]
            assert "memory limit" in outcomes[2][1]
            assert cgroup.name in outcomes[2][1]
            assert len(channel) == 2  # what did not fit left nothing behind
            assert not list((channel.path / ".ramxchg" / "tmp").iterdir())
        finally:
            if producer.is_alive():
                producer.kill()
                producer.join()
            channel.drop()  # its pages are charged to the cgroup until deleted
