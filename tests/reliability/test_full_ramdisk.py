"""A full RAM disk: a small real tmpfs fills up; nothing partial, and work resumes."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem, RamDiskFull
from ramxchg.disks import format_size
from tests.conftest import mounted_tmpfs
from tests.reliability._work import checksum, intact, publish_random, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.root]

SPAWN = mp.get_context("spawn")
SIZE = 16 << 20


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted at a temporary folder."""
    with mounted_tmpfs(tmp_path / "small", SIZE) as mountpoint:
        yield mountpoint


def _check_all(ch: Channel) -> int:
    """Every item in the channel is whole; returns how many are not."""
    bad = 0
    for item in ch.items():
        with item:
            try:
                bad += not intact(item)
            except CorruptItem:
                bad += 1
    return bad


def _fill(ch: Channel, rng: np.random.Generator, cycle: int) -> RamDiskFull:
    """Publish random items until the disk is full; return the error."""
    for i in range(10_000):
        try:
            publish_random(ch, rng, 3 << 20, id=f"{cycle}-{i}")
        except RamDiskFull as exc:
            return exc
    raise AssertionError("10,000 items fitted on a 16 MiB disk")


def test_filling_up_and_freeing_space(
    small_tmpfs: Path, profile: Profile, figures: Figures
) -> None:
    ch = Channel("full", root=small_tmpfs)
    rng = np.random.default_rng(5)
    fulls = partial = delivered = 0
    with ch.subscribe() as sub:
        for cycle in range(profile.full_cycles):
            error = _fill(ch, rng, cycle)
            fulls += 1
            assert error.needed_bytes > 0
            assert error.free_bytes >= 0
            assert _shows(str(error), error.needed_bytes)
            assert _shows(str(error), error.free_bytes)
            assert error.path == str(ch.path)
            assert os.listdir(ch.path / ".ramxchg" / "tmp") == [], "a partial file was left"
            partial += _check_all(ch)
            while True:  # what subscribers got is whole too
                try:
                    item = sub.get(timeout=0.05)
                except TimeoutError:
                    break
                with item:
                    delivered += 1
                    partial += not intact(item)
            for name in ch.names()[::2] if len(ch) > 1 else ch.names():
                ch.delete(name)  # free some space: the channel must work again at once
            publish_random(ch, rng, 1024, id=f"{cycle}-after")
    assert partial == 0
    assert shutil.disk_usage(small_tmpfs).free > 0
    figures.runs = f"{profile.full_cycles} fill-ups of a {SIZE >> 20} MiB tmpfs"
    figures.faults = f"ENOSPC: {fulls} RamDiskFull raised; {delivered} items delivered meanwhile"
    figures.partial = partial


def _produce(root: str, count: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    warm_up()
    ch = Channel("pressure", root=root)
    ready.set()
    for i in range(count):
        data = np.full(1 << 20, i % 251, dtype=np.uint8)
        ch.put(data, attrs={"crc": checksum(data), "n": data.size})  # waits for room


def test_blocked_producer_resumes_when_consumers_ack(small_tmpfs: Path, figures: Figures) -> None:
    count = 40  # 40 MiB through a 16 MiB disk
    ch = Channel("pressure", root=small_tmpfs, reserve_bytes=6 << 20)
    ch.subscribe("g").close()
    ready = SPAWN.Event()
    producer = SPAWN.Process(target=_produce, args=(str(small_tmpfs), count, ready), daemon=True)
    producer.start()
    assert ready.wait(60)
    got = 0
    peak = 0
    with ch.subscribe("g") as sub:
        while got < count:
            item = sub.get(timeout=60)
            peak = max(peak, len(ch))
            with item:
                assert intact(item)
            item.ack()
            got += 1
    producer.join(60)
    assert producer.exitcode == 0
    assert peak < count, "the producer never had to wait"
    assert len(ch) == 0
    figures.runs = f"{count} x 1 MiB items through a {SIZE >> 20} MiB tmpfs"
    figures.faults = f"backpressure (reserve_bytes): at most {peak} items on disk at once"


def _shows(message: str, size: int) -> bool:
    """Does the error message give ``size``: for people, or in bytes where that is closer?"""
    return format_size(size) in message or f"{size} bytes" in message
