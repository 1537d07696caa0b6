"""Liveness by locks (issue #13): a member holds its claim locked while it works, and
subscriptions and ``ramxchg watch`` sweep what dead processes left."""

from __future__ import annotations

import fcntl
import gc
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest

import ramxchg._store.claims
import ramxchg._store.retention
from ramxchg import Channel, Subscription
from tests.conftest import wait_for

SPAWN = mp.get_context("spawn")


def _claims(ch: Channel, group: str = "g") -> Path:
    return ch.path / ".ramxchg" / "groups" / group / "claims"


def _lock_is_free(path: Path) -> bool:
    """Can we take ``flock(LOCK_EX)`` on ``path`` (through a descriptor of our own)?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _group_channel() -> Channel:
    """The channel "live" with the group g registered (it must ack every item)."""
    ch = Channel("live")
    ch.subscribe("g").close()
    return ch


def _receive_and_ack(sub: Subscription, names: set[str]) -> None:
    """Receive the items ``names`` (in any order, each within 10 s) and ack them."""
    got = [sub.get(timeout=10) for _ in names]
    assert {item.name for item in got} == names
    for item in got:
        item.ack()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    gone = SPAWN.Process(target=os.getpid)
    gone.start()
    gone.join()
    assert gone.pid is not None
    return gone.pid


#: A member: takes ``count`` items of group g and holds them, unacked, until killed.
#: With "fork", a forked child of it (which outlives it) holds its copies of everything.
#: Prints the child's pid (or -1) and the items.
MEMBER = textwrap.dedent(
    """
    import os, sys, threading
    from ramxchg import Channel
    root, channel, count, fork = sys.argv[1:]
    sub = Channel(channel, root=root).subscribe("g")
    names = [sub.get(timeout=60).name for _ in range(int(count))]
    child = os.fork() if fork == "fork" else -1
    if child != 0:
        print(child, *names, flush=True)
    threading.Event().wait(300)
    """
)

#: (the member's pid, the items it holds, its forked child's pid or -1)
Member = tuple[int, list[str], int]


@contextmanager
def _member(
    root: Path, count: int = 1, *, fork: bool = False, channel: str = "live"
) -> Iterator[Member]:
    """A member process of group g holding ``count`` claims, SIGKILLed (and reaped) on
    leaving."""
    argv = [sys.executable, "-c", MEMBER, str(root), channel, str(count), "fork" if fork else "-"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            child, *names = proc.stdout.readline().split()
            yield proc.pid, names, int(child)
        finally:
            proc.kill()


def test_a_claim_is_complete_and_locked_while_its_member_works(root: Path, no_leaks: None) -> None:
    ch = _group_channel()
    name = ch.put(np.arange(3)).name
    with _member(root) as (pid, names, _):
        assert names == [name]
        claim = _claims(ch) / name
        record = json.loads(claim.read_bytes())
        assert (record["pid"], record["lock"]) == (pid, True)
        assert not _lock_is_free(claim), "a member's claim is not locked while it works"
    wait_for(lambda: _lock_is_free(claim), what="the killed member's lock to go")


def test_a_claim_is_complete_and_locked_before_it_appears(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the ``link`` that makes a claim visible links: a whole record, locked."""
    ch = _group_channel()
    item = ch.put(np.arange(3))
    linked = []
    real_link = os.link

    def link(source: str, target: str, **dir_fds: int | None) -> None:
        folder = dir_fds.get("dst_dir_fd")  # claims are linked inside the claims folder
        where = Path(os.readlink(f"/proc/self/fd/{folder}")) if folder is not None else None
        if where == _claims(ch):
            hidden = where / source
            linked.append((json.loads(hidden.read_bytes()), _lock_is_free(hidden)))
        real_link(source, target, **dir_fds)

    monkeypatch.setattr(os, "link", link)
    with ch.subscribe("g") as sub:
        sub.get(timeout=5).ack()
    [(record, free)] = linked
    assert (record["seq"], record["pid"], record["lock"]) == (item.seq, os.getpid(), True)
    assert not free, "a claim became visible before its member locked it"


def test_the_lock_goes_with_the_ack_and_the_release(root: Path, no_leaks: None) -> None:
    ch = _group_channel()
    ch.subscribe("other").close()  # holds the items: acked ones stay in the channel
    first, second = ch.put(np.arange(3)).name, ch.put(np.arange(3)).name
    with ch.subscribe("g") as sub:
        items = [sub.get(timeout=5), sub.get(timeout=5)]
        assert [item.name for item in items] == [first, second]
        assert not _lock_is_free(_claims(ch) / first)
        assert not _lock_is_free(_claims(ch) / second)
        items[0].ack()
        ack = ch.path / ".ramxchg" / "groups" / "g" / "acks" / first
        assert ack.exists()
        assert _lock_is_free(ack)  # the claim became the ack, unlocked
        # `second` is given back on close, with its lock (no_leaks: its descriptor too)
    assert os.listdir(_claims(ch)) == []


def test_a_killed_member_is_taken_over_by_its_lock_whatever_its_pid_says(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pid fallback says every member lives; the lock says this one died."""
    monkeypatch.setattr(ramxchg._store.claims, "owner_is_alive", lambda owner: True)
    ch = _group_channel()
    name = ch.put(np.arange(3)).name
    with ch.subscribe("g") as sub:
        with _member(root) as (_, names, _):
            assert names == [name]
            with pytest.raises(TimeoutError):
                sub.get(timeout=0.2)  # held by a live member
        _receive_and_ack(sub, {name})  # killed: at the next sweep (no grace, no pid check)
    assert len(ch) == 0


def test_a_forked_child_does_not_keep_its_parents_claims_alive(root: Path) -> None:
    ch = _group_channel()
    names = {ch.put(np.arange(3)).name for _ in range(2)}
    with _member(root, count=2, fork=True) as (_, held, child):
        assert set(held) == names
    try:
        assert psutil.pid_exists(child)  # the member is dead, its forked child lives on
        with ch.subscribe("g") as sub:
            _receive_and_ack(sub, names)
    finally:
        os.kill(child, signal.SIGKILL)
    assert len(ch) == 0


def test_an_item_given_back_reaches_a_member_that_saw_it_taken(root: Path) -> None:
    ch = _group_channel()
    name = ch.put(np.arange(3)).name
    first = ch.subscribe("g")
    assert first.get(timeout=5).name == name
    with ch.subscribe("g") as second:
        with pytest.raises(TimeoutError):
            second.get(timeout=0.2)  # listed it, found it claimed: passed over
        first.close()  # gives it back unacked
        _receive_and_ack(second, {name})
    assert len(ch) == 0


def test_a_claim_that_does_not_lock_keeps_the_pid_fallback(root: Path) -> None:
    """Foreign consumers (and 1.0) do not lock: their claims live while their process does."""
    ch = _group_channel()
    alive, dead = ch.put(np.arange(3)), ch.put(np.arange(3))
    me = psutil.Process()
    host = socket.gethostname()
    for item, pid, started in (
        (alive, me.pid, me.create_time()),
        (dead, _dead_pid(), time.time()),
    ):
        record = {"pid": pid, "started": started, "host": host, "seq": item.seq}
        (_claims(ch) / item.name).write_text(json.dumps(record))  # unlocked
    with ch.subscribe("g") as sub:
        got = sub.get(timeout=10)
        assert got.name == dead.name  # its process is gone
        got.ack()
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.3)  # this process lives: its claim stays, unlocked as it is
    assert (_claims(ch) / alive.name).exists()


def _take_three_unacked(held: list[Subscription]) -> None:
    for _ in range(3):
        held[0].get(timeout=5).close()  # claimed; the item (which refers to it) dropped


def _drop(held: list[Subscription]) -> None:
    held.clear()
    gc.collect()


def test_descriptors_of_claims_go_with_an_unclosed_subscription(root: Path, no_leaks: None) -> None:
    ch = _group_channel()
    for _ in range(3):
        ch.put(np.arange(3))
    held: list[Subscription] = [ch.subscribe("g")]
    _take_three_unacked(held)
    assert len(os.listdir(_claims(ch))) == 3
    with pytest.warns(ResourceWarning, match="unclosed"):
        _drop(held)
    assert os.listdir(_claims(ch)) == []  # given back; no_leaks: their descriptors closed


def _leftover(ch: Channel, pid: int) -> Path:
    """A temporary file of a producer ``pid`` that died a minute ago, half-way."""
    path = ch.path / ".ramxchg" / "tmp" / f"auto.{pid}.{os.urandom(6).hex()}.npy"
    path.write_bytes(b"partial")
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


def test_a_subscription_sweeps_dead_temporary_files(root: Path) -> None:
    ch = Channel("live")
    with ch.subscribe() as sub:
        leftover = _leftover(ch, _dead_pid())
        deadline = time.monotonic() + 30
        while leftover.exists():  # no gc: the subscription's own sweep removes it
            assert time.monotonic() < deadline, "the subscription did not sweep it"
            with pytest.raises(TimeoutError):
                sub.get(timeout=0.2)


def test_sweep_counts_and_runs_at_most_once_per_interval(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ramxchg._store.retention, "SWEEP_SECONDS", 3600)
    ch = _group_channel()
    name = ch.put(np.arange(3)).name
    with _member(root):
        pass  # killed holding the item
    first = _leftover(ch, _dead_pid())
    ch = Channel("live")  # a handle that has not swept yet
    assert ch._retention.sweep() == {"tmp_files": 1, "claims": 1}
    assert not first.exists()
    assert os.listdir(_claims(ch)) == []
    second = _leftover(ch, _dead_pid())
    assert ch._retention.sweep() == {"tmp_files": 0, "claims": 0}  # swept a moment ago
    assert second.exists()
    second.unlink()
    assert name in ch


def test_watch_busy_with_a_command_still_sweeps(root: Path, tmp_path: Path) -> None:
    ch = _group_channel()
    ch.put(np.arange(3))
    go, started = tmp_path / "go", tmp_path / "started"
    command = f"sh -c 'touch {started}; while [ ! -e {go} ]; do sleep 0.02; done'"
    argv = ["watch", "live", "--group", "g", "--count", "1", "--exec", command]
    watch = subprocess.Popen(
        [sys.executable, "-m", "ramxchg", *argv],
        env={**os.environ, "RAMXCHG_ROOT": str(root)},
    )
    try:
        wait_for(started.exists, 30, "the command to start")
        leftover = _leftover(ch, _dead_pid())
        wait_for(lambda: not leftover.exists(), 30, "watch to sweep the dead producer's file")
        go.touch()
        assert watch.wait(30) == 0
    finally:
        watch.kill()
        watch.wait()
    assert len(ch) == 0
