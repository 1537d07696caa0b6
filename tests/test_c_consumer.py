"""The libc-only C consumer in docs/examples/c/, written from docs/protocol.md alone,
receives what Python publishes, and follows protocol 1.1: its reader locks, its claims
(locked, and judged by other members), its acks."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest

from ramxchg import Channel
from tests.conftest import wait_for
from tests.test_protocol import check_against

SOURCE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "c" / "consume.c"
COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C compiler (cc or gcc)")


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert COMPILER is not None
    binary = tmp_path_factory.mktemp("c") / "consume"
    subprocess.run(
        [COMPILER, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, SOURCE],
        check=True,
    )
    return binary


class Running:
    """The C consumer as a child process: its output lines, and its stdin for --hold."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def line(self, timeout: float = 30.0) -> tuple[str, int | None, float]:
        """The next item it printed: name, seq (None: legacy) and sum."""
        name, seq, total = self.lines.get(timeout=timeout).split()
        return name, None if seq == "-" else int(seq), float(total)

    def release(self) -> None:
        """--hold: let it unmap (and ack) the item it holds."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()


@contextmanager
def running(consumer: Path, channel: Channel, *args: str, items: int = 0) -> Iterator[Running]:
    env = {**os.environ, "RAMXCHG_MAX_ITEMS": str(items)}
    with subprocess.Popen(
        [consumer, *args, channel.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        run = Running(proc)
        try:
            yield run
        finally:
            proc.kill()
            run._reader.join()


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.standard_normal((100, 30)),
        rng.standard_normal(1000).astype("<f4"),
        np.arange(-500, 500, dtype="<i8"),
        np.arange(1000, dtype="<i4").reshape(10, 100).T,  # Fortran order on disk
        np.arange(60000, dtype="<u2"),
        np.arange(256, dtype="<u1"),
        np.array([True, False, True, True]),
        np.zeros((0, 3)),
    ]


def _locked(path: Path, kind: int = fcntl.LOCK_EX) -> bool:
    """Does another process hold a lock on ``path`` that ``kind`` conflicts with?"""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock, if we got it
    return False


def test_c_consumer_catches_up_then_follows_in_order(root: Path, consumer: Path) -> None:
    channel = Channel("c")
    arrays = _arrays()
    early, late = arrays[:3], arrays[3:]
    expected = [channel.put(a) for a in early]
    with running(consumer, channel, items=len(arrays) + 1) as c:
        expected += [channel.put(a) for a in late]
        # A legacy file written in place by a program without ramxchg: delivered after close.
        legacy = np.arange(12.0)
        np.save(channel.path / "legacy.npy", legacy)
        assert c.proc.wait(timeout=30) == 0
    lines = [c.line() for _ in range(len(arrays) + 1)]
    assert [(name, seq) for name, seq, _ in lines] == [
        *((item.name, item.seq) for item in expected),
        ("legacy", None),
    ]
    for (_, _, total), array in zip(lines, [*arrays, legacy], strict=True):
        assert total == pytest.approx(float(array.sum(dtype=np.float64)), rel=1e-9)


def test_c_consumer_takes_a_file_with_another_file_s_sidecar_for_legacy(
    root: Path, consumer: Path
) -> None:
    """Section 3: a sidecar that records another inode or size is an orphan."""
    channel = Channel("orphan")
    channel.put(np.arange(4.0), "a")
    channel.put(np.arange(5.0), "b")
    meta = channel.path / ".ramxchg" / "meta" / "a.json"
    sidecar = json.loads(meta.read_text())
    meta.write_text(json.dumps({**sidecar, "ino": sidecar["ino"] + 1}))
    with running(consumer, channel, items=2) as c:
        assert c.proc.wait(timeout=30) == 0
    assert sorted(c.line()[:2] for _ in range(2)) == [("a", None), ("b", 2)]


def test_c_consumer_holds_a_shared_lock_on_what_it_maps(root: Path, consumer: Path) -> None:
    """Section 11, rule 2: no producer may recycle a file the C consumer maps."""
    channel = Channel("held")
    item = channel.put(np.arange(10.0))
    with running(consumer, channel, "--hold") as c:
        assert c.line()[:2] == (item.name, 1)
        assert _locked(item.path)  # a producer's LOCK_EX|LOCK_NB on it fails ...
        assert not _locked(item.path, fcntl.LOCK_SH)  # ... other readers share it
        c.release()
        wait_for(lambda: not _locked(item.path), what="the C consumer to unmap the item")


def test_c_group_member_registers_claims_with_a_lock_and_acks(root: Path, consumer: Path) -> None:
    channel = Channel("group")
    backlog = [channel.put(np.full(3, n)) for n in range(3)]
    group = channel.path / ".ramxchg" / "groups" / "g"
    with running(consumer, channel, "--group", "g", "--hold") as c:
        first = c.line()
        registration = json.loads((group / "group.json").read_text())
        check_against(registration, "group", "group.json")
        assert (registration["start_seq"], registration["created_seq"]) == (0, 3)
        assert first[:2] == (backlog[0].name, 1)

        claim_file = group / "claims" / backlog[0].name
        claim = json.loads(claim_file.read_text())
        check_against(claim, "claim", claim_file)
        assert (claim["pid"], claim["host"], claim["lock"]) == (
            c.proc.pid,
            socket.gethostname(),
            True,
        )
        assert (claim["seq"], claim["ino"]) == (1, os.lstat(backlog[0].path).st_ino)
        # The start time as every member computes it (pid reuse check of 1.0 members).
        assert abs(claim["started"] - psutil.Process(c.proc.pid).create_time()) < 0.01
        assert _locked(claim_file)  # the claim lock: held while it works on the item
        assert _locked(backlog[0].path)  # and the reader lock

        # A Python member of the group respects the claim: it gets the next item.
        with channel.subscribe(group="g") as member:
            taken = member.get(timeout=30)
            assert taken.name == backlog[1].name
            taken.ack()
            c.release()  # the C member acks the first item
            wait_for((group / "acks" / backlog[0].name).exists, what="the C ack")
            assert not claim_file.exists()
            ack = json.loads((group / "acks" / backlog[0].name).read_text())
            assert (ack["seq"], ack["lock"]) == (1, True)  # the claim, renamed
            assert c.line()[:2] == (backlog[2].name, 3)
            c.release()
            wait_for((group / "acks" / backlog[2].name).exists, what="the C ack")
        # The group's backlog is never must-ack for it: acking it deleted nothing.
        assert channel.gc()["released"] == 0
        assert channel.names() == [item.name for item in backlog]

        new = channel.put(np.ones(2))  # published after the group: it must ack this one
        assert c.line()[:2] == (new.name, 4)
        c.release()
        wait_for((group / "acks" / new.name).exists, what="the C ack")
        assert channel.gc()["released"] == 1
        assert new.name not in channel


def test_a_killed_c_member_s_claim_is_taken_back(root: Path, consumer: Path) -> None:
    """Section 11, rule 4: the kernel drops the claim lock with its holder; another C
    member (by the lock) and a Python member (by the lock or the pid) deliver it again."""
    channel = Channel("killed")
    items = [channel.put(np.full(2, n)) for n in range(2)]
    claims = channel.path / ".ramxchg" / "groups" / "g" / "claims"
    for survivor in ("c", "python"):
        with running(consumer, channel, "--group", "g", "--hold") as c:
            held = c.line()[0]
            assert _locked(claims / held)
            c.proc.send_signal(signal.SIGKILL)
            c.proc.wait()
        assert (claims / held).exists()
        assert not _locked(claims / held)
        if survivor == "c":
            with running(consumer, channel, "--group", "g", items=1) as other:
                assert other.line()[0] == held
                assert other.proc.wait(timeout=30) == 0
        else:
            with channel.subscribe(group="g") as member:
                item = member.get(timeout=30)
                assert item.name == held
                item.ack()
        assert not (claims / held).exists()
    assert sorted(os.listdir(claims.parent / "acks")) == [item.name for item in items]


def test_c_member_judges_unlocked_claims_by_pid_start_time_and_host(
    root: Path, consumer: Path
) -> None:
    """1.0 claims (no lock): a live process's claim is respected, a reused pid's is not."""
    channel = Channel("old-claims")
    channel.subscribe(group="g").close()
    alive, reused = channel.put(np.ones(2), "alive"), channel.put(np.ones(3), "reused")
    claims = channel.path / ".ramxchg" / "groups" / "g" / "claims"
    me = {
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "host": socket.gethostname(),
    }
    for item, started in ((alive, me["started"]), (reused, me["started"] - 1.0)):
        claim = {**me, "started": started, "seq": item.seq, "ino": os.lstat(item.path).st_ino}
        (claims / item.name).write_text(json.dumps(claim))
    with running(consumer, channel, "--group", "g", items=2) as c:
        assert c.line()[0] == "reused"  # "alive", published first, is another member's
        (claims / "alive").unlink()  # that member gives it back
        assert c.line()[0] == "alive"
        assert c.proc.wait(timeout=30) == 0


def test_c_consumer_without_arguments_prints_usage(consumer: Path) -> None:
    result = subprocess.run([consumer], check=False, capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage" in result.stderr
