"""The benchmark's harness: the consumer's check catches wrong bytes (reported with the
consumer's reason, not after the producer's timeout), and a transport that cannot start
is reported per size while the run goes on."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel
from ramxchg.bench import runner, suite
from ramxchg.bench.runner import BenchConfig, run_transport
from ramxchg.bench.transports import PipeTransport, Sender, Transport
from ramxchg.bench.transports_files import ChannelTransport
from ramxchg.cli import main
from ramxchg.disks import get_adapter

pytestmark = pytest.mark.slow

KB = 1 << 10
TINY = BenchConfig(sizes=(KB, 64 * KB), repeat=1, quick=True)


class _CorruptSender(Sender):
    """Sends every message with one byte changed, or one byte short."""

    def __init__(self, conn: Any, short: bool) -> None:
        self.conn = conn
        self.short = short

    def send(self, message: np.ndarray) -> None:
        if self.short:
            self.conn.send_bytes(memoryview(message)[:-1])
            return
        changed = message.copy()
        changed[-1] ^= 0xFF
        self.conn.send_bytes(memoryview(changed))


class CorruptPipe(PipeTransport):
    """A pipe that damages what it carries (module level: the workers unpickle it)."""

    name = "corrupt"
    label = "corrupt pipe"

    def __init__(self, short: bool) -> None:
        self.short = short

    def sender(self, link: Any) -> Sender:
        return _CorruptSender(link[1], self.short)


@pytest.mark.parametrize(
    ("short", "reported"),
    [
        (False, "the consumer received wrong bytes (a 1024-byte message)"),
        (True, "received 1023 bytes, expected 1024"),
    ],
    ids=["changed", "short"],
)
def test_wrong_bytes_fail_the_size_with_the_consumers_reason(
    short: bool, reported: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short message stops the consumer while the producer waits for it: the parent
    # must report the consumer's error, not wait out the producer's phase.
    monkeypatch.setattr(runner, "PHASE_TIMEOUT", 120.0)
    entry = run_transport(CorruptPipe(short), TINY, tmp_path, lambda _: None)
    assert [r["size"] for r in entry["results"]] == [KB, 64 * KB]
    first = entry["results"][0]
    assert "gbps" not in first
    assert reported in first["error"].splitlines()[0]


class _SilentSender(Sender):
    def send(self, message: np.ndarray) -> None:
        """Sends nothing: the consumer waits for ever."""


class SilentPipe(PipeTransport):
    """A pipe that loses every message, so that both processes hang."""

    name = "silent"
    label = "silent pipe"

    def sender(self, link: Any) -> Sender:
        return _SilentSender()


def test_a_hung_phase_reports_where_each_process_is_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PHASE_TIMEOUT", 3.0)
    config = BenchConfig(sizes=(KB,), repeat=1, quick=True)
    entry = run_transport(SilentPipe(), config, tmp_path, lambda _: None)
    error = entry["results"][0]["error"]
    assert error.splitlines()[0] == "no answer from the producer and the consumer within 3 s"
    consumer = error[error.index("where the consumer is:") :]
    producer = error[error.index("where the producer is:") : error.index("where the consumer")]
    # Each process's own stack, innermost call first: the consumer in the pipe's recv,
    # the producer in its phase, waiting for the window's last place.
    assert re.search(r'File ".*transports\.py", line \d+ in recv\n', consumer), consumer
    assert re.search(r'File ".*workers\.py", line \d+ in phase\n', producer), producer
    assert list(tmp_path.iterdir()) == []  # the stack files go with the pair


class Unstartable(Transport):
    """A peer whose set-up fails (as a broken Ray or iceoryx2 install would)."""

    name = "unstartable"
    label = "unstartable"

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        raise OSError("the peer's daemon is not there")

    def sender(self, link: Any) -> Sender:
        raise AssertionError("never reached")

    def receiver(self, link: Any) -> Any:
        raise AssertionError("never reached")


def test_a_peer_that_cannot_start_fails_and_the_run_goes_on(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite, "transports", lambda *_: [Unstartable(), PipeTransport()])
    code = main(["bench", "--quick", "--json", "--sizes", "1K", "64K", "--repeat", "1"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1  # a transport failed
    broken, pipe = result["transports"]
    assert broken["results"] == [
        {"size": size, "error": "could not start: OSError: the peer's daemon is not there"}
        for size in (KB, 64 * KB)
    ]
    assert [r["error"] for r in pipe["results"]] == [None, None]


def _exited_pid() -> int:
    process = mp.get_context("spawn").Process(target=int)
    process.start()
    process.join()
    assert process.pid is not None
    return process.pid


@pytest.mark.root
def test_a_killed_benchs_huge_tmpfs_is_unmounted_by_the_next_one(tmp_path: Path) -> None:
    """A bench killed by SIGKILL cannot unmount its huge-page tmpfs: the next one does,
    and leaves a live bench's mount alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    dead = tmp_path / f"{suite.HUGE_PREFIX}{_exited_pid()}-abc"
    alive = tmp_path / f"{suite.HUGE_PREFIX}{os.getpid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(folder)], check=True)
    try:
        removed = suite.unmount_stale(get_adapter(), str(tmp_path))
        assert removed == [str(dead)]
        assert not dead.exists()
        assert os.path.ismount(alive)
    finally:
        for folder in (dead, alive):
            if os.path.ismount(folder):
                subprocess.run(["umount", "-l", str(folder)], check=True)


class CountedPipe(PipeTransport):
    """A pipe that notes, in the parent, each pair of processes opened for it."""

    def __init__(self, name: str, opened: list[str]) -> None:
        self.name = self.label = name
        self.opened = opened

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        self.opened.append(self.name)
        return super().open_link(ctx, workdir)

    def __getstate__(self) -> dict[str, Any]:  # the workers need no list of the parent's
        return {"name": self.name, "label": self.label, "opened": []}


def test_transports_take_turns_round_by_round_in_pairs_of_their_own(tmp_path: Path) -> None:
    opened: list[str] = []
    config = BenchConfig(sizes=(KB, 64 * KB), repeat=2, quick=True)
    entries = runner.run_transports(
        [CountedPipe("a", opened), CountedPipe("b", opened)], config, tmp_path, lambda _: None
    )
    assert opened == ["a", "b"] * 4  # per size, per round: each in turn, a new pair each
    for entry in entries:
        assert [r["size"] for r in entry["results"]] == [KB, 64 * KB]
        assert all(r["error"] is None and r["gbps"]["min"] > 0 for r in entry["results"])


def test_each_pair_of_a_channel_transport_gets_a_new_channel_dropped_after(
    root: Path,
) -> None:
    transport = ChannelTransport("ramxchg_put", "ramxchg put", "npy")
    context = mp.get_context("spawn")
    first, second = (transport.open_link(context, root) for _ in range(2))
    assert first != second
    Channel(Path(first)).put(np.ones(4 << 20, np.uint8))  # an item, and its file, left in it
    for link in (first, second):
        transport.close_link(link)
    assert list(root.iterdir()) == []
