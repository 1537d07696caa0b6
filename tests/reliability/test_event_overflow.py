"""Event overflow: a burst larger than the inotify queue; subscribers rescan, miss nothing."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.reliability._work import warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
KNOB = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.fixture
def inotify_queue(profile: Profile) -> Iterator[int]:
    """The queue length consumers get: the system default, or 256 in the fast profile.

    The fast profile's burst is smaller than the default queue (16,384), so it lowers
    the queue (root only) to make the burst overflow it.
    """
    default = int(KNOB.read_text()) if KNOB.exists() else 0
    if profile.burst_items > 4 * default:
        yield default
        return
    if os.geteuid() != 0:
        pytest.skip("needs root to lower fs.inotify.max_queued_events for a small burst")
    KNOB.write_text("256\n")
    try:
        yield 256
    finally:
        KNOB.write_text(f"{default}\n")


def _collect(root: str, count: int, ready: mp.Event, out: Connection) -> None:  # type: ignore[valid-type]
    warm_up()
    overflows = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "overflow" in record.getMessage().lower():
                overflows.append(record.getMessage())

    for name in ("watchdog", "ramxchg"):  # whichever reads the inotify queue reports it
        logging.getLogger(name).addHandler(Spy())
    seen = []
    with Channel("burst", root=root).subscribe() as sub:
        watching = sub.watching
        ready.set()
        while len(seen) < count:
            item = sub.get(timeout=120)
            seen.append(int(item.array[0]))
            item.close()
    out.send((seen == list(range(count)), len(set(seen)), len(overflows), watching))


def test_burst_overflowing_the_event_queue(
    root: Path, profile: Profile, figures: Figures, inotify_queue: int
) -> None:
    count = profile.burst_items
    ch = Channel("burst")
    ready = SPAWN.Event()
    receive, send = SPAWN.Pipe(duplex=False)
    consumer = SPAWN.Process(target=_collect, args=(str(root), count, ready, send), daemon=True)
    consumer.start()
    assert ready.wait(60)
    os.kill(consumer.pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:  # stopped, it reads no events: the kernel queue overflows and drops them
        for i in range(count):
            ch.put(np.array([i], dtype=np.int64))
    finally:
        os.kill(consumer.pid, signal.SIGCONT)  # type: ignore[arg-type]
    assert receive.poll(900)
    in_order, distinct, overflows, watching = receive.recv()
    consumer.join(30)
    assert watching == "events"
    assert in_order, f"missed or reordered items: {distinct} distinct of {count}"
    assert overflows > 0, "the event queue did not overflow: the test proved nothing"
    figures.runs = f"{count} items in one burst"
    figures.faults = (
        f"inotify queue of {inotify_queue} events overflowed ({overflows} overflow reported)"
    )
