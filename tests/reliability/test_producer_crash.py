"""Producer crash: SIGKILL at random moments during put/create never shows a partial item."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ramxchg._store.publish
from ramxchg import Channel, CorruptItem, Subscription
from tests.reliability._work import intact, publish_random, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")


def _publish_forever(root: str, seed: int, max_bytes: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    warm_up()
    ch = Channel("crash", root=root)
    rng = np.random.default_rng(seed)
    ready.set()
    for i in range(10**9):
        publish_random(ch, rng, max_bytes, id=f"{seed}-{i}")


def _drain(sub: Subscription) -> tuple[int, int]:
    """Check every item delivered so far: (delivered, partial or corrupt)."""
    delivered = partial = 0
    while True:
        try:
            item = sub.get(timeout=0.3)
        except TimeoutError:
            return delivered, partial
        with item:
            delivered += 1
            try:
                partial += not intact(item)
            except CorruptItem:
                partial += 1


def test_sigkill_during_publish(root: Path, profile: Profile, figures: Figures) -> None:
    ch = Channel("crash")
    tmp = ch.path / ".ramxchg" / "tmp"
    rng = np.random.default_rng(8)
    delivered = partial = mid_write = kills = 0
    with ch.subscribe() as sub:
        # About a third of the kills land mid-write: if none has yet, kill some more
        # (at most 3x as many) rather than fail by chance.
        while kills < profile.producer_kills or (
            mid_write == 0 and kills < 3 * profile.producer_kills
        ):
            kills += 1
            ready = SPAWN.Event()
            proc = SPAWN.Process(target=_publish_forever, args=(str(root), kills, 4 << 20, ready))
            proc.start()
            assert ready.wait(60)
            # Fault injection, not synchronisation: the kill lands at a random moment.
            time.sleep(float(rng.uniform(0.0, 0.25)))
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
            proc.join(30)
            assert proc.exitcode == -signal.SIGKILL
            mid_write += any(f".{proc.pid}." in name for name in os.listdir(tmp))
            got, bad = _drain(sub)
            delivered += got
            partial += bad
        got, bad = _drain(sub)
        delivered += got
        partial += bad
    assert partial == 0
    assert delivered == len(ch), "every published item was delivered, nothing else"
    for item in ch.items():  # a fresh look, not through the subscription
        with item:
            assert intact(item), item
    report = ch.gc()  # no grace period: a dead producer's lock is free at once
    assert os.listdir(tmp) == [], "gc left temporary files of dead producers"
    sidecars = {name.removesuffix(".json") for name in os.listdir(ch.path / ".ramxchg" / "meta")}
    assert sidecars == set(ch.names()), "gc left sidecars without items"
    assert mid_write > 0, "no kill hit a write in progress: the test proved nothing"
    after = ch.put(np.arange(3), attrs={"crc": 0, "n": 3})  # the lock died with its holders
    assert after.name in ch
    figures.runs = f"{kills} kills, {delivered} items delivered"
    figures.faults = (
        f"SIGKILL at a random moment of put/create; {mid_write} kills left a half-written "
        f"temporary file, gc removed {report['tmp_files']} files and "
        f"{report['orphan_sidecars']} orphan sidecars"
    )
    figures.partial = partial


class _Died(BaseException):
    """Stands for SIGKILL at one exact instruction."""


def test_killed_right_after_the_link_does_not_wedge_auto_names(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = Channel("wedge")
    real_link = os.link

    def link_then_die(source: str, target: str, **where: Any) -> None:
        real_link(source, target, **where)  # through the held folders' descriptors
        raise _Died

    monkeypatch.setattr(ramxchg._store.publish.os, "link", link_then_die)
    with pytest.raises(_Died):
        ch.put(np.arange(3))
    monkeypatch.setattr(ramxchg._store.publish.os, "link", real_link)
    first = ch.names()
    second = ch.put(np.arange(4))  # used to raise ItemExists for good: the number was reused
    assert ch.names() == [*first, second.name]
    assert second.seq > ch.get(first[0]).seq
