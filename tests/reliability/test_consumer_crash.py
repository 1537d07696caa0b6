"""Consumer crash: SIGKILL between delivery and ack; every item acked exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.reliability._work import intact, publish_random, warm_up
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")


def _ack_some_then_hang(root: str, acks_log: str, before: int, out: Connection) -> None:
    """Ack ``before`` items (each logged after its ack), then take one more and hang."""
    warm_up()
    with Channel("cc", root=root).subscribe("g") as sub, open(acks_log, "a") as log:
        for _ in range(before):
            item = sub.get(timeout=60)
            with item:
                assert intact(item)
            item.ack()
            log.write(f"{item.name}\n")
            log.flush()
        held = sub.get(timeout=60)
        out.send(held.name)  # delivered, not acked: now the test kills us
        time.sleep(3600)


def _consume_rest(ch: Channel, acks_log: Path) -> int:
    taken = 0
    with ch.subscribe("g") as sub, acks_log.open("a") as log:
        while ch.groups()[0].backlog:
            try:
                item = sub.get(timeout=1)
            except TimeoutError:
                continue
            with item:
                assert intact(item)
            item.ack()
            log.write(f"{item.name}\n")
            taken += 1
    return taken


def test_sigkill_between_delivery_and_ack(
    root: Path, tmp_path: Path, profile: Profile, figures: Figures
) -> None:
    kills = profile.consumer_kills
    ch = Channel("cc")
    ch.subscribe("g").close()  # registered first: it must ack every item
    rng = np.random.default_rng(3)
    for i in range(kills * 3):
        publish_random(ch, rng, 256 << 10, id=str(i))
    published = set(ch.names())
    acks_log = tmp_path / "acks.log"
    held = []
    for _ in range(kills):
        # A pipe per consumer: a process killed while holding a shared mp.Queue's write
        # lock would block every later writer.
        receive, send = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(
            target=_ack_some_then_hang,
            args=(str(root), str(acks_log), int(rng.integers(0, 3)), send),
            daemon=True,
        )
        proc.start()
        assert receive.poll(120), "the consumer got no item"
        held.append(receive.recv())
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
    _consume_rest(ch, acks_log)
    acked = acks_log.read_text().split()
    assert sorted(acked) == sorted(published), "lost or acked twice"
    assert set(held) <= published
    status = ch.groups()[0]
    assert (status.backlog, status.in_flight) == (0, 0)
    assert len(ch) == 0, "acked items are released"
    figures.runs = f"{kills} kills, {len(published)} items"
    figures.faults = (
        f"SIGKILL of a consumer holding a delivered, unacked item ({len(set(held))} distinct "
        "items held at a kill)"
    )
    figures.lost = len(published - set(acked))


def test_claim_left_empty_by_a_consumer_killed_while_claiming(root: Path) -> None:
    """A consumer killed between creating its claim file and writing it leaves it empty."""
    ch = Channel("cc")
    ch.subscribe("g").close()
    item = ch.put(np.arange(3))
    claim = ch.path / ".ramxchg" / "groups" / "g" / "claims" / item.name
    claim.write_bytes(b"")
    long_ago = time.time() - 3600
    os.utime(claim, (long_ago, long_ago))  # the consumer died an hour ago
    with ch.subscribe("g") as sub:
        got = sub.get(timeout=5)
        assert got.name == item.name
        got.ack()
    assert len(ch) == 0
