"""Hostile files dropped into a channel: set aside with a reason, nothing outside touched."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import wait_for
from tests.reliability._audit import STRACE, Audit
from tests.reliability._hostile import MALFORMED, NOT_FILES, plant_outside
from tests.reliability._work import checksum, intact, logged_warnings, warm_up
from tests.reliability.conftest import Figures

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
GOOD_ITEMS = 10


def _consume(root: str, events: tuple, out: Connection) -> None:  # type: ignore[type-arg]
    ready, stop = events
    warm_up()
    warnings = logged_warnings()
    delivered: list[tuple[str, bool]] = []
    errors: list[str] = []
    with Channel("hostile", root=root).subscribe("g", settle=0.05, quarantine_after=0.3) as sub:
        ready.set()
        while not stop.is_set():
            try:
                item = sub.get(timeout=0.1)
            except TimeoutError:
                continue
            try:
                with item:
                    delivered.append((item.name, intact(item)))
            except Exception as exc:  # a hostile file delivered as an item: reported
                errors.append(f"{item.name}: {exc!r}"[:300])
            item.ack()
    out.send((delivered, errors, warnings))


def _quarantined(ch: Channel) -> dict[str, dict[str, object]]:
    folder = ch.path / ".ramxchg" / "quarantine"
    if not folder.is_dir():
        return {}
    found = {}
    for reason in folder.glob("*.reason.json"):
        record = json.loads(reason.read_text())
        found[record["file"]] = record
    return found


def _publish_good(ch: Channel, first: int) -> None:
    for i in range(first, first + GOOD_ITEMS // 2):
        data = np.full(1000, i, dtype=np.int32)
        ch.put(data, f"good{i}", attrs={"crc": checksum(data), "n": data.size})


def test_hostile_files_are_set_aside(root: Path, tmp_path: Path, figures: Figures) -> None:
    outside = root / "outside"  # same filesystem as the channel, so hard links work
    outside.mkdir()
    planted = plant_outside(outside)
    ch = Channel("hostile")
    _publish_good(ch, 0)
    ready, stop = SPAWN.Event(), SPAWN.Event()
    receive, send = SPAWN.Pipe(duplex=False)
    consumer = SPAWN.Process(target=_consume, args=(str(root), (ready, stop), send), daemon=True)
    consumer.start()
    assert ready.wait(60)
    audit = Audit(consumer.pid, tmp_path / "strace.log") if STRACE else None  # type: ignore[arg-type]
    for _kind, (filename, build) in {**MALFORMED, **NOT_FILES}.items():
        build(ch.path / filename, outside)
    _publish_good(ch, GOOD_ITEMS // 2)
    expected = {filename for filename, _ in {**MALFORMED, **NOT_FILES}.values()}
    wait_for(lambda: expected <= set(_quarantined(ch)), 60, "hostile files to be quarantined")
    wait_for(lambda: ch.groups()[0].backlog == 0, 60, "good items to be acked")
    stop.set()
    assert receive.poll(60)
    delivered, errors, warnings = receive.recv()
    consumer.join(30)
    assert consumer.exitcode == 0, "the subscriber died"

    quarantined = _quarantined(ch)
    for kind, (filename, _) in MALFORMED.items():
        record = quarantined[filename]
        assert record["reason"], kind
        assert (ch.path / ".ramxchg" / "quarantine" / filename).exists(), kind
        assert not os.path.lexists(ch.path / filename), kind
        assert any(filename in message for message in warnings), f"{kind} was not logged"
    assert sorted(delivered) == [(f"good{i}", True) for i in range(GOOD_ITEMS)], errors
    assert errors == []
    for kind, (filename, _) in NOT_FILES.items():  # set aside, never opened or followed
        assert quarantined[filename]["reason"], kind
        assert not os.path.lexists(ch.path / filename), kind
    assert not (outside / "PICKLE-EXECUTED").exists(), "a pickle was executed"
    assert not (outside / "CODE").exists(), "header text was executed"
    # secret.npy is the hard link's own inode: reading the delivered link reads it.
    read_outside = [p.name for p in planted if os.stat(p).st_atime_ns != 0 and p.suffix != ".npy"]
    touched = audit.stop([ch.path]).outside if audit else []
    assert touched == [], sorted({t.path for t in touched})
    assert read_outside == []
    figures.runs = f"{len(MALFORMED) + len(NOT_FILES)} kinds, {GOOD_ITEMS} good items around them"
    figures.faults = (
        f"{len(MALFORMED)} malformed .npy/.h5 quarantined with reason; "
        f"{len(NOT_FILES)} symlinks, hard link, FIFO, socket, folders and bad names set aside "
        "unopened"
    )
    figures.outside = len(touched) + len(read_outside) if audit else -1


def test_links_fifos_folders_and_bad_names_are_set_aside_too(root: Path) -> None:
    outside = root / "outside"
    outside.mkdir()
    plant_outside(outside)
    ch = Channel("hostile")
    for filename, build in NOT_FILES.values():
        build(ch.path / filename, outside)
    with (
        ch.subscribe("g", settle=0.05, quarantine_after=0.3) as sub,
        pytest.raises(TimeoutError),
    ):
        sub.get(timeout=2)
    assert {filename for filename, _ in NOT_FILES.values()} <= set(_quarantined(ch))
