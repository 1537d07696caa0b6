"""Pool sizing (issue #15): the pool keeps the files a burst had in flight, within the
channel's limits and the disk's free space, and gives their RAM back once it is over."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import ramxchg._store.pool
from ramxchg import Channel
from ramxchg._store.pool import POOL_SHARE
from tests.conftest import mounted_tmpfs, wait_for
from tests.reliability._users import OTHER, as_user

SPAWN = mp.get_context("spawn")
FRAME = (512, 1024)  # 1 MiB of uint16
BURST = 8  # more than the 4 files the pool held before issue #15


def _pool(ch: Channel) -> list[Path]:
    folder = ch.path / ".ramxchg" / "pool"
    return sorted(folder / name for name in os.listdir(folder))


def _produce(root: str, name: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Put ``count`` items, none consumed meanwhile; send their inodes."""
    ch = Channel(name, root)
    out.put([os.stat(ch.put(np.full(FRAME, i, np.uint16)).path).st_ino for i in range(count)])


def _consume(root: str, name: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Take, read and ack ``count`` items (so each is deleted); send how many were whole."""
    whole = 0
    with Channel(name, root).subscribe("g") as sub:
        for _ in range(count):
            item = sub.get(timeout=30)
            with item:
                whole += int(item.array.min() == item.array.max())
            item.ack()
    out.put(whole)


def _burst(ch: Channel, count: int) -> list[int]:
    """A burst through real processes: a producer puts ``count`` items, all in flight at
    once, then a consumer takes and acks them all. The inodes of the items."""
    out = SPAWN.Queue()
    args = (str(ch.path.parent), ch.name, count, out)
    producer = SPAWN.Process(target=_produce, args=args)
    producer.start()
    inodes = out.get(timeout=60)
    producer.join(30)
    consumer = SPAWN.Process(target=_consume, args=args)
    consumer.start()
    assert out.get(timeout=60) == count
    consumer.join(30)
    assert (producer.exitcode, consumer.exitcode) == (0, 0)
    assert len(ch) == 0
    return inodes


def _channel(name: str, root: Path | None = None, **settings: int) -> Channel:
    ch = Channel(name, root, **settings)
    ch.subscribe("g").close()
    return ch


def test_a_second_burst_is_written_into_the_files_of_the_first(root: Path) -> None:
    ch = _channel("bursts")
    first = _burst(ch, BURST)
    assert len(_pool(ch)) == BURST  # on fc91b4e: 4, the other 4 files freed
    assert ch.status().pooled_bytes == sum(path.stat().st_size for path in _pool(ch))
    second = _burst(ch, BURST)
    assert sorted(second) == sorted(first)  # no new file: no page allocated or zeroed


def test_recycle_caps_the_pool(root: Path) -> None:
    ch = _channel("capped", recycle=3)
    first = _burst(ch, BURST)
    assert len(_pool(ch)) == 3
    second = _burst(ch, BURST)
    assert len(set(second) & set(first)) == 3


def _pool_legacy_files(ch: Channel, count: int) -> None:
    """Delete ``count`` items of FRAME written in place (legacy files: no limit stops a
    program that writes into the folder), as a consumer would."""
    for i in range(count):
        np.save(ch.path / f"legacy{i}.npy", np.zeros(FRAME, np.uint16))
    for i in range(count):
        ch.delete(f"legacy{i}")


def test_the_pool_holds_no_more_files_than_the_channel_holds_items(root: Path) -> None:
    ch = _channel("max-items", max_items=2)
    _pool_legacy_files(ch, 5)
    assert len(_pool(ch)) == 2  # on fc91b4e: 4, more than can ever be in flight


def test_the_pool_holds_no_more_bytes_than_the_channel_may(root: Path) -> None:
    size = np.zeros(FRAME, np.uint16).nbytes + 4096  # a file: data and its header
    ch = _channel("max-bytes", max_bytes=3 * size)
    _pool_legacy_files(ch, 5)
    assert len(_pool(ch)) == 3  # on fc91b4e: 4


@pytest.mark.root
def test_the_pool_takes_at_most_its_share_of_a_small_disk(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", 16 << 20) as mount:
        ch = _channel("share", mount)
        _burst(ch, 12)  # 12 MiB in flight on a 16 MiB disk
        pooled = sum(path.stat().st_size for path in _pool(ch))
        assert 0 < pooled <= POOL_SHARE * shutil.disk_usage(mount).free
        assert len(_pool(ch)) < 12
        _burst(ch, 12)  # the disk does not fill up: pooled files go first if needed


@pytest.mark.root
def test_the_ram_of_a_burst_comes_back_once_it_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ramxchg._store.pool, "POOL_IDLE_SECONDS", 1.0)
    with mounted_tmpfs(tmp_path / "ram", 64 << 20) as mount:
        ch = _channel("ram", mount)
        burst = _burst(ch, BURST)
        after_burst = shutil.disk_usage(mount).used
        # The stream goes on one item at a time: it reuses the newest pooled file, and
        # its producer's sweeps remove the files the burst no longer needs.
        stream = []
        with ch.subscribe("g") as sub:

            def one_at_a_time() -> bool:
                stream.append(os.stat(ch.put(np.ones(FRAME, np.uint16)).path).st_ino)
                item = sub.get(timeout=10)
                item.close()
                item.ack()
                return len(_pool(ch)) == 1

            wait_for(one_at_a_time, timeout=60, what="the idle pooled files to go")
        assert set(stream[:5]) <= set(burst)
        assert len(set(stream[:5])) == 1  # always the same file, so the others go idle
        freed = after_burst - shutil.disk_usage(mount).used
        assert freed >= (BURST - 1) * np.zeros(FRAME, np.uint16).nbytes
        # Once no one writes at all, gc gives back the last one.
        wait_for(lambda: ch.gc()["pooled_files"] == 1, timeout=30, what="gc to trim")
        assert _pool(ch) == []
        assert ch.status().pooled_bytes == 0


@pytest.mark.root
def test_a_full_disk_gets_back_the_ram_other_channels_pooled(root: Path) -> None:
    root.chmod(0o755)  # for the other user
    with mounted_tmpfs(root / "ram", 64 << 20) as mount:
        mount.chmod(0o1777)  # a shared root: another user's channel beside ours
        assert as_user(OTHER, _pool_one, str(mount)) == ("ok", 1)
        idle = _channel("idle", mount)
        _burst(idle, 12)  # 12 MiB in flight; then no one uses the channel again
        pooled = sum(path.stat().st_size for path in _pool(idle))
        assert pooled >= 8 << 20
        free = shutil.disk_usage(mount).free
        # Room only with the idle channel's pooled files gone (on 47d3edf: RamDiskFull,
        # only the writing channel's own pool was emptied).
        Channel("busy", mount).put(np.ones(free - (4 << 20) + pooled, np.uint8))
        assert _pool(idle) == []
        assert len(os.listdir(mount / "theirs" / ".ramxchg" / "pool")) == 1  # theirs to empty


def _pool_one(root: str) -> int:
    """As another user: a channel of theirs with one pooled file."""
    ch = Channel("theirs", root, mode=0o755)
    ch.delete(ch.put(np.ones(FRAME, np.uint16)).name)
    return len(_pool(ch))
