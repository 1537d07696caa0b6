"""Self-healing without a daemon: a producer SIGKILLed in the middle of a large ``put``
leaves its temporary file, and ordinary use of the channel (other producers' puts and a
subscription) removes it within seconds, with no ``gc``."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import wait_for
from tests.reliability._work import checksum, intact
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
#: Producers killed mid-put, per profile.
KILLS = {"fast": 3, "full": 20}
BIG = 128 << 20


def _put_big_forever(root: str, ready: mp.Event) -> None:  # type: ignore[valid-type]
    ch = Channel("heal", root=root)
    array = np.ones(BIG, np.uint8)
    ready.set()
    while True:
        ch.put(array, attrs={"crc": checksum(array), "n": BIG})


def _kill_mid_put(root: Path, tmp: Path) -> list[Path]:
    """Start a producer of large items and SIGKILL it while a file of its is in tmp."""
    ready = SPAWN.Event()
    proc = SPAWN.Process(target=_put_big_forever, args=(str(root), ready))
    proc.start()
    assert ready.wait(60)
    mine = f".{proc.pid}."
    wait_for(lambda: any(mine in n for n in os.listdir(tmp)), 60, "a put in progress")
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(30)
    return [path for path in tmp.iterdir() if mine in path.name]


def test_a_killed_producers_ram_comes_back_with_ordinary_use(
    root: Path, profile: Profile, figures: Figures
) -> None:
    ch = Channel("heal", keep_last=2)
    tmp = ch.path / ".ramxchg" / "tmp"
    kills = leftovers = 0
    slowest = 0.0
    with ch.subscribe() as sub:
        while leftovers < KILLS[profile.name]:
            kills += 1
            assert kills <= 10 * KILLS[profile.name], "kills kept missing the puts"
            left = _kill_mid_put(root, tmp)
            if not left:
                continue  # the kill landed between two puts
            leftovers += 1
            started = time.monotonic()

            def ordinary_use(left: list[Path] = left) -> bool:
                small = np.arange(100)
                ch.put(small, attrs={"crc": checksum(small), "n": small.size})
                with contextlib.suppress(TimeoutError), sub.get(timeout=0.05) as item:
                    assert intact(item)
                return not any(path.exists() for path in left)

            wait_for(ordinary_use, 30, "the killed producer's file to go without gc")
            slowest = max(slowest, time.monotonic() - started)
    assert os.listdir(tmp) == []
    for item in ch.items():
        with item:
            assert intact(item), item
    figures.runs = f"{kills} producers of 128 MiB items killed, {leftovers} mid-put"
    figures.faults = (
        f"SIGKILL during put; each leftover went with ordinary use (puts, a subscription), "
        f"no gc: at most {slowest:.1f} s later"
    )
