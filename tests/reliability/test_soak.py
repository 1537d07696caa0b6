"""Soak: 2 producers, 3 groups (one with 3 competing members), random items, no loss."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import items_until, wait_for
from tests.reliability._audit import STRACE, Audit
from tests.reliability._work import intact, publish_random, resources, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
GROUPS = {"archive": 1, "viewer": 1, "workers": 3}
#: Descriptors/mappings a process may gain after warming up (watchdog, h5py caches).
SLACK = 4


def _produce(root: str, tag: str, plan: tuple[int, int], events: tuple, out: mp.Queue) -> None:  # type: ignore[type-arg]
    count, max_bytes = plan
    ready, go = events
    warm_up()
    ch = Channel("soak", root=root)
    rng = np.random.default_rng(int(tag[1:]))
    ready.set()
    go.wait()
    warm = end = resources()
    for i in range(count):
        publish_random(ch, rng, max_bytes, id=f"{tag}-{i}")
        if i == min(50, count - 1):
            warm = resources()
    end = resources()
    out.put(("producer", tag, [], 0, warm, end))


def _consume(root: str, group: str, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    warm_up()
    ch = Channel("soak", root=root)
    ids: list[str] = []
    bad = 0
    warm = None
    with ch.subscribe(group) as sub:
        ready.set()
        for item in items_until(sub, stop):
            with item:
                ids.append(item.attrs["id"])
                bad += not intact(item)
            item.ack()
            if len(ids) == 50:
                warm = resources()
    end = resources()
    out.put(("consumer", group, ids, bad, warm or end, end))


def test_soak(root: Path, profile: Profile, figures: Figures, tmp_path: Path) -> None:
    per_producer = profile.soak_items
    ch = Channel("soak", max_bytes=1 << 30)  # backpressure keeps RAM bounded if consumers lag
    for group in GROUPS:  # registered first: every group must get every item
        ch.subscribe(group).close()
    stop, out = SPAWN.Event(), SPAWN.Queue()
    consumers, audits = [], []
    for group, members in GROUPS.items():
        for _ in range(members):
            ready = SPAWN.Event()
            proc = SPAWN.Process(target=_consume, args=(str(root), group, ready, stop, out))
            proc.start()
            assert ready.wait(60)
            consumers.append(proc)
    go = SPAWN.Event()
    producers = []
    for tag in ("p1", "p2"):
        ready = SPAWN.Event()
        args = (str(root), tag, (per_producer, profile.soak_max_bytes), (ready, go), out)
        producers.append(SPAWN.Process(target=_produce, args=args))
        producers[-1].start()
        assert ready.wait(60)
    if STRACE:
        audits = [
            Audit(proc.pid, tmp_path / f"strace.{proc.pid}") for proc in consumers + producers
        ]
    go.set()
    for proc in producers:
        proc.join(3600)
        assert proc.exitcode == 0
    wait_for(
        lambda: all(g.backlog == 0 and g.in_flight == 0 for g in ch.groups()),
        600,
        "every group to ack every item",
    )
    stop.set()
    reports = [out.get(timeout=120) for _ in consumers + producers]
    for proc in consumers:
        proc.join(60)
        assert proc.exitcode == 0

    expected = sorted(f"{tag}-{i}" for tag in ("p1", "p2") for i in range(per_producer))
    received: dict[str, list[str]] = {group: [] for group in GROUPS}
    for role, who, ids, bad, warm, end in reports:
        assert bad == 0, f"{role} {who}: {bad} items failed their checksum"
        assert end[0] <= warm[0] + SLACK, f"{role} {who}: descriptors grew {warm[0]} -> {end[0]}"
        assert end[1] <= warm[1] + SLACK, f"{role} {who}: mappings grew {warm[1]} -> {end[1]}"
        if role == "consumer":
            received[who] += ids
    for group, ids in received.items():
        assert sorted(ids) == expected, f"group {group} lost or duplicated items"
    assert len(ch) == 0, "every group acked every item, so none should remain"
    assert list((ch.path / ".ramxchg" / "tmp").iterdir()) == []
    assert list((ch.path / ".ramxchg" / "meta").iterdir()) == []
    outside = [touch for audit in audits for touch in audit.stop([ch.path]).outside]
    assert outside == [], f"touched outside the channel: {outside[:5]}"
    figures.runs = f"{2 * per_producer} items x 3 groups, 5 consumers, 2 producers"
    largest = profile.soak_max_bytes >> 20
    figures.faults = f"none; random sizes 1 B..{largest} MB, 10 dtypes, .npy/HDF5, put/create"
    figures.outside = len(outside) if STRACE else -1
