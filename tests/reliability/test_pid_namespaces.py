"""Members in other pid namespaces, and reused pids: liveness by locks (issue #13).

A container (or ``unshare --pid``) sharing the RAM disk sees other processes' pids as
dead or as someone else; the kernel's locks die with their holder wherever it lives.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from ramxchg import Channel, Subscription
from ramxchg._store.groups import Group
from tests.reliability.conftest import Figures, Profile
from tests.test_liveness import MEMBER, _claims, _member

pytestmark = [pytest.mark.reliability, pytest.mark.root, pytest.mark.slow]

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


@pytest.fixture(scope="module")
def unshare() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a pid namespace")
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {probe.stderr.strip()}")


@contextmanager
def _namespaced_member(root: Path, channel: str) -> Iterator[tuple[str, psutil.Process]]:
    """A member in a new pid namespace, with its own /proc as in a container: (the item
    it holds, its process as we see it)."""
    with subprocess.Popen(
        [*UNSHARE, sys.executable, "-c", MEMBER, str(root), channel, "1", "-"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            _, name = proc.stdout.readline().split()
            [member] = psutil.Process(proc.pid).children()  # pid 1 of its namespace
            yield name, member
        finally:
            proc.kill()


def _counting_reclaims(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count `Group.reclaim_dead` calls in this process (each one judges every claim)."""
    calls = [0]
    original = Group.reclaim_dead

    def counted(group: Group) -> list[str]:
        calls[0] += 1
        return original(group)

    monkeypatch.setattr(Group, "reclaim_dead", counted)
    return lambda: calls[0]


def _never_delivered(sub: Subscription, held: str, sweeps: Callable[[], int], more: int) -> None:
    """Take items from ``sub`` until it has judged the claims ``more`` more times; fail if
    ``held`` is among them."""
    target = sweeps() + more
    deadline = time.monotonic() + 60
    while sweeps() < target:
        assert time.monotonic() < deadline, "the subscription stopped sweeping"
        try:
            item = sub.get(timeout=0.2)
        except TimeoutError:
            continue
        assert item.name != held, f"{held} taken over from a live member: delivered twice"
        item.ack()


def test_a_member_in_another_pid_namespace_is_never_taken_over(
    root: Path,
    unshare: None,
    profile: Profile,
    figures: Figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweeps = _counting_reclaims(monkeypatch)
    rounds = max(2, profile.consumer_kills // 5)
    ch = Channel("ns")
    ch.subscribe("g").close()
    received: list[str] = []
    with ch.subscribe("g") as sub:
        for _ in range(rounds):
            ch.put(np.arange(3))
            with _namespaced_member(root, "ns") as (held, member):
                claim = json.loads((_claims(ch) / held).read_bytes())
                assert claim["pid"] != member.pid  # its pid means nothing here
                ch.put(np.arange(3))  # ours to take meanwhile
                _never_delivered(sub, held, sweeps, 3)
                member.kill()
                member.wait(30)
                # Dead now: its lock went with it, and the item comes back to us.
                got = sub.get(timeout=30)
                assert got.name == held
                received.append(got.name)
                got.ack()
    status = ch.groups()[0]
    assert (status.backlog, status.in_flight) == (0, 0)
    assert len(ch) == 0
    figures.runs = f"{rounds} members in their own pid namespace, {2 * rounds} items"
    figures.faults = (
        "a member's pid means nothing outside its namespace: 3 sweeps while it lives "
        "(never taken over), then SIGKILL (taken over)"
    )
    figures.lost = rounds - len(received)


def _reuse_pid(pid: int) -> subprocess.Popen[bytes]:
    """A new process with the pid ``pid`` of a process that is gone (root only)."""
    for _ in range(200):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as last:
                last.write(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot choose the next pid here: {exc}")
        proc = subprocess.Popen(["sleep", "600"])
        if proc.pid == pid:
            return proc
        proc.kill()  # another process forked first: try again
        proc.wait()
    pytest.skip(f"could not get pid {pid} again (a busy machine)")


def test_a_reused_pid_keeps_no_dead_claim_alive(root: Path) -> None:
    ch = Channel("reuse")
    ch.subscribe("g").close()
    locking, foreign = ch.put(np.arange(3)).name, ch.put(np.arange(3)).name
    with _member(root, channel="reuse") as (pid, names, _):
        assert names == [locking]
        started = psutil.Process(pid).create_time()
        # A consumer that does not lock claims the other item (1.0, foreign), as this pid.
        record: dict[str, Any] = {"pid": pid, "started": started, "host": socket.gethostname()}
        (_claims(ch) / foreign).write_text(json.dumps(record))
    sleeper = _reuse_pid(pid)
    try:
        assert psutil.pid_exists(pid)  # someone else's now
        with ch.subscribe("g") as sub:
            got = [sub.get(timeout=30), sub.get(timeout=30)]
            # The locking claim by its free lock, whatever its pid; the other because its
            # pid's start time is not the claim's (the documented fallback).
            assert sorted(item.name for item in got) == sorted([locking, foreign])
            for item in got:
                item.ack()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert len(ch) == 0
