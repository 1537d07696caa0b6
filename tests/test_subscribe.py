"""Subscriptions: delivery, catch-up, durable groups, acks, retention, backpressure."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, ChannelFull, ItemNotFound
from tests.conftest import items_until, wait_for
from tests.reliability._work import checksum

SPAWN = mp.get_context("spawn")


def _produce(root: str, channel: str, count: int, seed: int, started: mp.Event) -> None:  # type: ignore[valid-type]
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel(channel)
    rng = np.random.default_rng(seed)
    started.set()
    for i in range(count):
        data = rng.integers(0, 255, size=int(rng.integers(1, 2000)), dtype=np.uint8)
        ch.put(data, attrs={"crc": checksum(data), "i": i})


def _consume(root: str, channel: str, group: str, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel(channel)
    got: list[tuple[str, bool]] = []
    with ch.subscribe(group) as sub:
        for item in items_until(sub, stop):
            with item:
                got.append((item.name, checksum(item.array) == item.attrs["crc"]))
            item.ack()
    out.put((group, os.getpid(), got))


def test_fan_out_to_groups_and_competing_members(root: Path, no_leaks: None) -> None:
    count = 2000
    ch = Channel("fanout")
    groups = ["archive", "viewer", "workers"]
    for group in groups:  # registered before the producer starts: all hold retention
        ch.subscribe(group).close()
    stop, out, started = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    members = ["archive", "viewer", "workers", "workers", "workers"]
    consumers = [
        SPAWN.Process(target=_consume, args=(str(root), "fanout", g, stop, out)) for g in members
    ]
    for proc in consumers:
        proc.start()
    producer = SPAWN.Process(target=_produce, args=(str(root), "fanout", count, 1, started))
    producer.start()
    producer.join(120)
    assert producer.exitcode == 0
    wait_for(
        lambda: all(g.backlog == 0 and g.in_flight == 0 for g in ch.groups()),
        120,
        "every group to ack every item",
    )
    stop.set()
    results = [out.get(timeout=60) for _ in consumers]
    for proc in consumers:
        proc.join(60)
        assert proc.exitcode == 0
    per_group: dict[str, list[str]] = {g: [] for g in groups}
    per_worker = []
    for group, _pid, got in results:
        assert all(ok for _, ok in got), f"checksum mismatch in {group}"
        per_group[group].extend(name for name, _ in got)
        if group == "workers":
            per_worker.append(len(got))
    expected = [f"{seq:012d}" for seq in range(1, count + 1)]
    for group, names in per_group.items():
        assert sorted(names) == expected, f"{group} missed or duplicated items"
    assert per_group["archive"] == expected  # one member: publish order
    assert len(per_worker) == 3
    assert all(n > 0 for n in per_worker), f"a competing member got nothing: {per_worker}"
    # every group acked everything: retention removed every item and its state
    assert len(ch) == 0
    assert list((ch.path / ".ramxchg" / "tmp").iterdir()) == []
    assert list((ch.path / ".ramxchg" / "meta").iterdir()) == []


def _take_and_hang(root: str, channel: str, group: str, out: mp.Queue) -> None:  # type: ignore[valid-type]
    os.environ["RAMXCHG_ROOT"] = root
    sub = Channel(channel).subscribe(group)
    item = sub.get(timeout=30)
    out.put(item.name)
    threading.Event().wait(300)  # never acks: the test kills this process


def test_items_of_a_killed_consumer_are_redelivered(root: Path) -> None:
    ch = Channel("crash")
    ch.subscribe("g").close()
    names = [ch.put(np.arange(i + 1)).name for i in range(3)]
    out = SPAWN.Queue()
    victim = SPAWN.Process(target=_take_and_hang, args=(str(root), "crash", "g", out))
    victim.start()
    taken = out.get(timeout=60)
    assert taken == names[0]
    claims = ch.path / ".ramxchg" / "groups" / "g" / "claims"
    assert (claims / taken).exists()
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    victim.join(30)
    received = []
    with ch.subscribe("g") as sub:
        for _ in names:
            item = sub.get(timeout=10)
            received.append(item.name)
            item.ack()
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.3)
    assert sorted(received) == names  # the killed consumer's item came back, once
    assert len(ch) == 0


def _publish_many(root: str, channel: str, count: int) -> None:
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel(channel)
    for i in range(count):
        ch.put(np.array([i], dtype=np.int64))


def test_subscriber_joining_mid_stream_misses_and_duplicates_nothing(root: Path) -> None:
    count = 5000
    ch = Channel("midstream")
    producer = SPAWN.Process(target=_publish_many, args=(str(root), "midstream", count))
    producer.start()
    wait_for(lambda: len(ch) >= 500, 60, "the producer to get going")
    seen = []
    with ch.subscribe() as sub:
        assert sub.watching == "events"
        while len(seen) < count:
            item = sub.get(timeout=30)
            seen.append(int(item.array[0]))
            item.close()
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.2)
    producer.join(60)
    assert seen == list(range(count))


@pytest.fixture
def small_inotify_queue() -> object:
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    if os.geteuid() != 0:
        pytest.skip("needs root to lower fs.inotify.max_queued_events")
    old = knob.read_text()
    try:
        knob.write_text("32\n")
    except OSError as exc:
        pytest.skip(f"cannot lower max_queued_events here: {exc}")
    yield
    knob.write_text(old)


def _collect(root: str, channel: str, count: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    os.environ["RAMXCHG_ROOT"] = root
    overflows: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "overflow" in record.getMessage():
                overflows.append(record.getMessage())

    for logger in ("ramxchg", "watchdog"):  # whichever backend reads the events says so
        logging.getLogger(logger).addHandler(Spy())
    seen = []
    with Channel(channel).subscribe() as sub:
        ready.set()
        while len(seen) < count:
            item = sub.get(timeout=60)
            seen.append(int(item.array[0]))
            item.close()
    out.put((seen, len(overflows)))


def test_burst_that_overflows_the_inotify_queue_misses_nothing(
    root: Path, small_inotify_queue: object
) -> None:
    count = 3000
    Channel("burst")
    ready, out = SPAWN.Event(), SPAWN.Queue()
    consumer = SPAWN.Process(target=_collect, args=(str(root), "burst", count, ready, out))
    consumer.start()
    assert ready.wait(60)  # its inotify queue now exists, 32 events deep
    os.kill(consumer.pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        _publish_many(str(root), "burst", count)  # the kernel drops events meanwhile
    finally:
        os.kill(consumer.pid, signal.SIGCONT)  # type: ignore[arg-type]
    seen, overflows = out.get(timeout=120)
    consumer.join(30)
    assert seen == list(range(count))
    assert overflows > 0, "the inotify queue did not overflow: the test proved nothing"


def test_backpressure_times_out_with_channel_full(root: Path) -> None:
    ch = Channel("bp", max_items=3)
    ch.subscribe("g").close()
    for i in range(3):
        ch.put(np.array([i]))
    started = time.monotonic()
    with pytest.raises(ChannelFull) as info:
        ch.put(np.array([3]), "fourth", timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert (info.value.items, info.value.max_items) == (3, 3)
    assert "fourth" not in ch
    assert len(ch) == 3
    assert list((ch.path / ".ramxchg" / "tmp").iterdir()) == []


def _put_one(root: str, channel: str, name: str, ready: mp.Event) -> None:  # type: ignore[valid-type]
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel(channel)
    ready.set()
    ch.put(np.array([42]), name)


def test_blocked_producer_resumes_when_a_consumer_acks(root: Path) -> None:
    ch = Channel("resume", max_items=2)
    ch.subscribe("g").close()
    ch.put(np.array([0]))
    ch.put(np.array([1]))
    ready = SPAWN.Event()
    producer = SPAWN.Process(target=_put_one, args=(str(root), "resume", "late", ready))
    producer.start()
    assert ready.wait(60)
    producer.join(0.5)
    assert producer.is_alive(), "the producer should be waiting for room"
    assert "late" not in ch
    with ch.subscribe("g") as sub:
        sub.get(timeout=5).ack()  # retention deletes it: room for one more
        producer.join(30)
        assert producer.exitcode == 0
        assert "late" in ch


def test_start_latest_and_latest_only(root: Path) -> None:
    ch = Channel("latest")
    for i in range(5):
        ch.put(np.array([i]))
    with ch.subscribe(start="latest") as sub:
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.2)
        ch.put(np.array([5]))
        assert int(sub.get(timeout=5).array[0]) == 5
    with ch.subscribe(latest_only=True) as viewer:
        assert int(viewer.get(timeout=5).array[0]) == 5
        with pytest.raises(TimeoutError):
            viewer.get(timeout=0.2)
        for i in range(6, 10):
            ch.put(np.array([i]))
        wait_for(lambda: len(ch) == 10)
        time.sleep(0)  # let events arrive; get() also rescans on its own
        assert int(viewer.get(timeout=5).array[0]) in range(6, 10)
    with pytest.raises(ValueError, match="start"):
        ch.subscribe(start="middle")


def test_latest_only_group_acks_what_it_skips(root: Path) -> None:
    ch = Channel("latest-group")
    with ch.subscribe("live", latest_only=True) as viewer:
        for i in range(5):
            ch.put(np.array([i]))
        wait_for(lambda: len(ch) == 5)
        item = None
        while item is None or int(item.array[0]) != 4:
            item = viewer.get(timeout=5)
        item.ack()
    assert len(ch) == 0  # the skipped ones were acked too: nothing held back


def test_groups_are_durable_and_hold_retention(root: Path) -> None:
    ch = Channel("durable")
    ch.subscribe("slow").close()  # registered at once, before any get
    ch.put(np.zeros(4), "a")
    ch.put(np.ones(4), "b")
    again = Channel("durable")
    [status] = again.groups()
    assert (status.name, status.backlog, status.holding) == ("slow", 2, 2)
    with again.subscribe("slow") as sub:  # a new process would see the same
        first = sub.get(timeout=5)
        assert first.name == "a"
        first.ack()
    assert ch.names() == ["b"]
    assert ch.groups()[0].backlog == 1
    ch.drop_group("slow")
    assert ch.groups() == []
    with pytest.raises(ItemNotFound):
        ch.drop_group("slow")
    assert ch.names() == ["b"]  # with no group, items stay like files in a folder


def test_anonymous_subscriptions_hold_nothing_back(root: Path) -> None:
    ch = Channel("anon")
    with ch.subscribe() as sub:
        ch.put(np.zeros(1), "x")
        item = sub.get(timeout=5)
        item.ack()  # no group: a no-op
    assert ch.names() == ["x"]
    assert ch.groups() == []


def test_unacked_items_go_back_to_the_group_on_close(root: Path) -> None:
    ch = Channel("giveback")
    ch.subscribe("g").close()
    ch.put(np.zeros(1), "x")
    with ch.subscribe("g") as sub:
        assert sub.get(timeout=5).name == "x"
    with ch.subscribe("g") as sub:
        item = sub.get(timeout=5)
        assert item.name == "x"
        item.ack()
    assert len(ch) == 0


def test_dead_letter_moves_the_item_and_gives_nothing_back_on_close(root: Path) -> None:
    ch = Channel("dead")
    first = ch.subscribe("g")
    second = ch.subscribe("g")
    ch.put(np.arange(4), "frame", attrs={"n": 1})
    item = first.get(timeout=5)
    moved = first.dead_letter(item, "command failed", exit_status=3)
    assert moved is not None
    assert moved.parent == ch.path / ".ramxchg" / "dead"
    np.testing.assert_array_equal(np.load(moved), np.arange(4))
    reason = json.loads(moved.with_name(moved.name + ".reason.json").read_text())
    assert (reason["reason"], reason["exit_status"], reason["attrs"]) == (
        "command failed",
        3,
        {"n": 1},
    )
    assert "frame" not in ch
    item.ack()  # nothing left to ack: a no-op
    ch.put(np.arange(5), "frame")  # the name is free again; the other member claims it
    again = second.get(timeout=5)
    assert again.name == "frame"
    first.close()  # must not give back the other member's claim
    assert (ch.path / ".ramxchg" / "groups" / "g" / "claims" / "frame").exists()
    again.ack()
    second.close()
    assert "frame" not in ch


def test_channel_ack_without_a_subscription(root: Path) -> None:
    ch = Channel("acks")
    ch.subscribe("a").close()
    ch.subscribe("b").close()
    ch.put(np.arange(3), "x")
    with pytest.raises(ItemNotFound, match="no group 'nobody'"):
        ch.ack("x", "nobody")
    assert ch.ack("x", "a") is False  # b has not acked yet
    assert "x" in ch
    assert ch.ack("x", "b") is True
    assert "x" not in ch


def test_keep_last_and_ttl(root: Path) -> None:
    ring = Channel("ring", keep_last=3)
    for i in range(10):
        ring.put(np.array([i]))
    assert [int(it.array[0]) for it in ring.items()] == [7, 8, 9]
    fresh = Channel("fresh", ttl=0.2)
    fresh.put(np.zeros(1), "old")
    wait_for(lambda: time.time() - (fresh.path / "old.npy").stat().st_mtime > 0.25)
    fresh.put(np.zeros(1), "new")
    assert fresh.names() == ["new"]


def test_get_times_out_and_close_unblocks_a_waiting_iterator(root: Path, no_leaks: None) -> None:
    ch = Channel("waiting")
    sub = ch.subscribe()
    with pytest.raises(TimeoutError):
        sub.get(timeout=0.1)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(i.name for i in sub))
    reader.start()
    ch.put(np.zeros(1), "one")
    wait_for(lambda: received == ["one"])
    sub.close()
    reader.join(5)
    assert not reader.is_alive()
    with pytest.raises(EOFError):
        sub.get(timeout=0.1)


def test_polling_mode_delivers_without_events(root: Path) -> None:
    ch = Channel("poll")
    with ch.subscribe(watch="polling") as sub:
        assert sub.watching == "polling"
        ch.put(np.arange(3), "a")
        assert sub.get(timeout=5).name == "a"


def test_gc_removes_leftovers_of_dead_producers(root: Path) -> None:
    ch = Channel("gc")
    ch.put(np.zeros(1), "kept")
    tmp = ch.path / ".ramxchg" / "tmp"
    dead = SPAWN.Process(target=os.getpid)
    dead.start()
    dead.join()
    leftover = tmp / f"auto.{dead.pid}.abcdef.npy"
    leftover.write_bytes(b"partial")
    mine = tmp / f"auto.{os.getpid()}.123456.npy"
    mine.write_bytes(b"in progress")
    old = time.time() - 60
    for path in (leftover, mine):
        os.utime(path, (old, old))
    (ch.path / ".ramxchg" / "meta" / "ghost.json").write_text('{"seq": 9}')
    report = ch.gc()
    assert report["tmp_files"] == 1
    assert report["orphan_sidecars"] == 1
    assert not leftover.exists()
    assert mine.exists()  # its producer (this process) is alive
    assert ch.names() == ["kept"]
    mine.unlink()


def test_state_survives_a_fresh_process_view(root: Path) -> None:
    ch = Channel("state")
    ch.subscribe("g").close()
    ch.put(np.zeros(1), "a")
    group_file = ch.path / ".ramxchg" / "groups" / "g" / "group.json"
    assert group_file.exists()
    digest = hashlib.sha256(group_file.read_bytes()).hexdigest()
    ch.subscribe("g", start="latest").close()  # existing group: start is ignored
    assert hashlib.sha256(group_file.read_bytes()).hexdigest() == digest
    assert Channel("state").groups()[0].backlog == 1


def test_an_item_that_cannot_be_deleted_yet_is_left_whole_for_gc(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to delete a mapped file: the ack keeps the item, gc retries."""
    ch = Channel("windows-like", recycle=0)  # as on Windows, which cannot recycle
    ch.subscribe("g").close()
    ch.put(np.arange(4), "held")
    real_unlink = os.unlink

    def refuse_items(path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("held.npy"):
            raise PermissionError(13, "The process cannot access the file", str(path))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", refuse_items)
    with ch.subscribe("g") as sub:
        sub.get(timeout=5).ack()
    assert ch.names() == ["held"]
    assert ch.get("held").seq == 1  # sidecar kept: still an item, not a stray file
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert ch.gc()["released"] == 1
    assert ch.names() == []
