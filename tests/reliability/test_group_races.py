"""Groups under races: competing members with instant acks, and names published again
while acks are late. Every item goes to each group exactly once (issue #12)."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, ItemNotFound
from tests.conftest import items_until, wait_for
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
#: competing members: rounds of ITEMS items, one every PACE seconds
ROUNDS = {"fast": 3, "full": 20}
ITEMS = 200
PACE = 0.0005
#: name reuse: how many times ``frame`` is published
REUSES = {"fast": 300, "full": 3000}


def _member(where: tuple[str, str], group: str, ack_delay: float, stop: Any, out: Any) -> None:
    """Take items of the channel ``where`` (root, name) until told to stop, ack each after
    up to ``ack_delay`` s; report them.

    Reports (id, the value read, what the ack returned) per item; the value is None when
    the item was deleted before it could be read (only allowed where the producer
    withdrew it).
    """
    root, channel = where
    rng = random.Random()
    got: list[tuple[int, int | None, bool]] = []
    with Channel(channel, root=root).subscribe(group) as sub:
        out.put(("ready", group, []))
        for item in items_until(sub, stop):
            try:
                with item:
                    value: int | None = int(item.array[0])
            except ItemNotFound:
                value = None
            if ack_delay:
                time.sleep(rng.uniform(0, ack_delay))  # an ack that comes late, on purpose
            got.append((item.attrs["id"], value, item.ack()))
    out.put(("done", group, got))


def _start_members(
    root: Path, channel: str, groups: list[str], ack_delay: float
) -> tuple[list[Any], Any, Any]:
    """Spawn one member per entry of ``groups``; return once every one has subscribed."""
    stop, out = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_member, args=((str(root), channel), g, ack_delay, stop, out))
        for g in groups
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert out.get(timeout=120)[0] == "ready"
    return procs, stop, out


Received = list[tuple[int, int | None, bool]]


def _collect(procs: list[Any], stop: Any, out: Any) -> dict[str, Received]:
    """Stop the members; every item each group received, over all its members."""
    stop.set()
    per_group: dict[str, Received] = {}
    for _ in procs:
        kind, group, got = out.get(timeout=120)
        assert kind == "done"
        per_group.setdefault(group, []).extend(got)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return per_group


def test_competing_members_with_instant_acks(
    root: Path, profile: Profile, figures: Figures
) -> None:
    """Three members of one group woken by the same event: one gets the item, once."""
    ch = Channel("compete")
    ch.subscribe("g").close()
    procs, stop, out = _start_members(root, "compete", ["g"] * 3, ack_delay=0.0)
    rounds = ROUNDS[profile.name]
    for round_ in range(rounds):
        for i in range(ITEMS):
            ident = round_ * ITEMS + i
            ch.put(np.full(1, ident), attrs={"id": ident})
            time.sleep(PACE)  # the pace of the stream, not a synchronisation
        wait_for(lambda: len(ch) == 0, 60, f"round {round_} to be acked")
    [got] = _collect(procs, stop, out).values()
    counts = Counter(ident for ident, _, _ in got)
    published = rounds * ITEMS
    twice = sorted(ident for ident, n in counts.items() if n > 1)
    assert not twice, f"delivered more than once: {twice[:20]}"
    assert sorted(counts) == list(range(published)), "items lost"
    assert all(value == ident for ident, value, _ in got), "an item read another item's data"
    assert all(acked for _, _, acked in got), "an ack found its item gone"
    figures.runs = f"{rounds} x {ITEMS} items, 3 members of one group"
    figures.faults = f"an item every {PACE * 1000:g} ms, acks at once (ack deletes the item)"
    figures.lost = published - len(counts)
    figures.partial = sum(1 for ident, value, _ in got if value != ident)


def test_names_published_again_while_acks_are_late(
    root: Path, profile: Profile, figures: Figures
) -> None:
    """``frame`` is published, withdrawn if not acked soon, and published again.

    Two groups of two members ack after a random delay, so acks often come after their
    item was deleted and a new ``frame`` published. A late ack must change nothing: every
    ``frame`` the producer did not withdraw was deleted by acks, so both groups received
    it; no group receives one twice.
    """
    ch = Channel("reuse")
    for group in ("a", "b"):
        ch.subscribe(group).close()
    procs, stop, out = _start_members(root, "reuse", ["a", "a", "b", "b"], ack_delay=0.002)
    rng = random.Random(12)
    withdrawn: set[int] = set()
    count = REUSES[profile.name]
    for ident in range(count):
        ch.put(np.full(1, ident), "frame", attrs={"id": ident})
        deadline = time.monotonic() + rng.uniform(0, 0.005)
        while "frame" in ch and time.monotonic() < deadline:
            time.sleep(0.0002)  # give the groups a random while to ack, then withdraw it
        try:
            ch.delete("frame")
            withdrawn.add(ident)
        except ItemNotFound:
            pass  # both groups acked it
    per_group = _collect(procs, stop, out)
    kept = set(range(count)) - withdrawn
    lost = late = 0
    for group, got in per_group.items():
        counts = Counter(ident for ident, _, _ in got)
        twice = sorted(ident for ident, n in counts.items() if n > 1)
        assert not twice, f"group {group} received more than once: {twice[:20]}"
        missed = sorted(kept - set(counts))
        lost += len(missed)
        assert not missed, f"group {group} never received (deleted by a late ack?): {missed[:20]}"
        wrong = [(i, v) for i, v, _ in got if i in kept and v != i]
        assert not wrong, f"group {group} read another frame's data: {wrong[:20]}"
        assert all(acked for i, _, acked in got if i in kept), "an ack of a kept frame failed"
        late += sum(1 for _, _, acked in got if not acked)
    assert len(kept) > count // 10, "too few frames acked by both groups to test anything"
    assert late > count // 10, "too few late acks to test anything"
    figures.runs = f"{count} x the same name, 2 groups x 2 members"
    figures.faults = (
        f"acks up to 2 ms late: {len(withdrawn)} frames withdrawn and the name published "
        f"again first; {late} acks came after their frame was gone and changed nothing"
    )
    figures.lost = lost
