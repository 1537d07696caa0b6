"""Writers hold a lock (issue #13, protocol 1.1 rules 1 and 5): a temporary file is a dead
producer's leftover exactly when its lock can be taken; normal use reclaims it."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from ramxchg import Channel
from ramxchg._store import tmpfiles as _tmpfiles
from tests.conftest import mounted_tmpfs, tmp_files, wait_for

SPAWN = mp.get_context("spawn")
MiB = 1 << 20


def _tmp(ch: Channel) -> Path:
    return ch.path / ".ramxchg" / "tmp"


def _age(path: Path, seconds: float = 60.0) -> None:
    """Make a file look written ``seconds`` ago (a slow producer), past any grace period."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _hold_create(root: str, name: str, nbytes: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    """A producer that allocates an item and is still filling it when it is killed."""
    ch = Channel(name, root=root)
    with ch.create((nbytes,), np.uint8) as target:
        target[:] = 1
        ready.set()
        time.sleep(3600)  # the test kills us here


def _killed_in_create(root: Path, name: str, nbytes: int) -> tuple[int, list[Path]]:
    """SIGKILL a producer inside ``create()``: its pid and the temporary files it left."""
    ready = SPAWN.Event()
    proc = SPAWN.Process(target=_hold_create, args=(str(root), name, nbytes, ready))
    proc.start()
    assert ready.wait(60), "the producer never got into create()"
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    left = [p for p in (root / name / ".ramxchg" / "tmp").iterdir() if f".{proc.pid}." in p.name]
    assert left, "the killed producer left no temporary file: the test proves nothing"
    return proc.pid, left  # type: ignore[return-value]


def _put_forever(root: str, nbytes: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    ch = Channel("heal", root=root, keep_last=1)
    array = np.ones(nbytes, np.uint8)
    ready.set()
    while True:
        ch.put(array)


def _killed_in_put(root: Path, nbytes: int) -> list[Path]:
    """SIGKILL a producer in the middle of a ``put`` of ``nbytes``: what it left in tmp."""
    tmp = root / "heal" / ".ramxchg" / "tmp"
    for _ in range(20):  # a kill may land between two puts: try again
        ready = SPAWN.Event()
        proc = SPAWN.Process(target=_put_forever, args=(str(root), nbytes, ready))
        proc.start()
        assert ready.wait(60)
        mine = f".{proc.pid}."
        wait_for(lambda m=mine: any(m in n for n in os.listdir(tmp)), 60, "a put in progress")
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(30)
        left = [p for p in tmp.iterdir() if mine in p.name]
        if left:
            return left
    pytest.fail("20 kills never landed in the middle of a put")


def test_a_producer_killed_mid_put_leaves_nothing_after_ordinary_use(root: Path) -> None:
    """Fails on 1e11b05: only an explicit gc freed it, and only once 5 s old."""
    ch = Channel("heal", keep_last=1)
    left = _killed_in_put(root, 192 * MiB)
    with ch.subscribe() as sub:

        def ordinary_use() -> bool:
            ch.put(np.arange(10))
            with contextlib.suppress(TimeoutError):
                sub.get(timeout=0.05).close()
            return not any(path.exists() for path in left)

        wait_for(ordinary_use, 30, "the killed producer's temporary file to go (no gc)")
    assert tmp_files(ch) == []


def test_a_live_producers_file_is_never_collected_however_old(root: Path) -> None:
    ch = Channel("live")
    with ch.create((1000,), np.uint8, name="slow") as target:
        target[:] = 5
        [mine] = tmp_files(ch)
        _age(mine)  # a create() held open for a minute
        assert ch.gc()["tmp_files"] == 0
        for _ in range(3):
            ch.put(np.arange(3))  # producers sweep too
        assert mine.exists()
    np.testing.assert_array_equal(ch.get("slow").array, 5)
    assert tmp_files(ch) == []


def test_dead_producers_files_go_at_once_unmarked_ones_by_pid_and_age(root: Path) -> None:
    ch = Channel("dead")
    tmp = _tmp(ch)
    dead_pid = _dead_pid()
    fresh_dead_locking = tmp / f"a.{dead_pid}.0a1b2c.lk.npy"  # the marker: judged by its lock
    old_live_foreign = tmp / f"b.{os.getpid()}.0a1b2c.npy"  # 1.0: pid + age
    fresh_dead_foreign = tmp / f"c.{dead_pid}.0a1b2c.npy"
    old_dead_foreign = tmp / f"d.{dead_pid}.0a1b2c.h5"
    old_unparsable = tmp / "whatever"
    for path in (fresh_dead_locking, old_live_foreign, fresh_dead_foreign, old_dead_foreign):
        path.write_bytes(b"x")
    old_unparsable.write_bytes(b"x")
    for path in (old_live_foreign, old_dead_foreign, old_unparsable):
        _age(path)
    held = tmp / f"e.{dead_pid}.0a1b2c.lk.h5"  # a dead pid, but its lock is held: alive
    held.write_bytes(b"x")
    _age(held)
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert ch.gc()["tmp_files"] == 3
        assert sorted(p.name for p in tmp.iterdir()) == sorted(
            p.name for p in (old_live_foreign, fresh_dead_foreign, held)
        )
    finally:
        os.close(fd)
    assert ch.gc()["tmp_files"] == 1  # its holder is gone
    assert not held.exists()


def test_a_sidecar_being_written_is_collected_only_under_the_publish_lock(root: Path) -> None:
    ch = Channel("sidecar")
    orphan = _tmp(ch) / f"auto.{os.getpid()}.0a1b2c.lk.json"
    orphan.write_bytes(b"{}")
    counts: list[dict[str, int]] = []
    with ch._store.counter.lock():  # a producer publishing: its sidecar may be this one
        sweeper = threading.Thread(target=lambda: counts.append(ch.gc()))
        sweeper.start()
        sweeper.join(0.5)  # the collector must wait for the lock, not decide without it
        assert orphan.exists()
    sweeper.join(30)
    assert counts
    assert counts[0]["tmp_files"] == 1
    assert not orphan.exists()


def test_a_file_collected_between_create_and_lock_is_started_over(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = Channel("race")
    real = _tmpfiles.try_lock
    raced: list[str] = []

    def collector_first(fd: int, *, shared: bool = False) -> bool:
        if not raced and not shared:  # a collector locked and removed it just now
            [victim] = tmp_files(ch)
            raced.append(victim.name)
            victim.unlink()
        return real(fd, shared=shared)

    monkeypatch.setattr(_tmpfiles, "try_lock", collector_first)
    item = ch.put(np.arange(5))
    assert raced, "the race was not staged"
    np.testing.assert_array_equal(item.array, np.arange(5))
    assert tmp_files(ch) == []


def _dead_pid() -> int:
    """A pid no process has now."""
    for pid in range(30000, 2, -1):
        if not psutil.pid_exists(pid):
            return pid
    raise AssertionError("no free pid")


@contextlib.contextmanager
def _process_with_pid(pid: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process given exactly ``pid``, by setting the kernel's last pid (root only)."""
    for _ in range(200):  # other work on the machine may take the pid first
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "600"])
        if proc.pid == pid:
            break
        proc.kill()
        proc.wait()
    else:
        pytest.skip(f"could not start a process with pid {pid}")
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.root
def test_pid_reuse_does_not_keep_a_dead_producers_file(root: Path) -> None:
    """Fails on 1e11b05: gc went by the pid, alive again in an unrelated process."""
    ch = Channel("reuse")
    pid, left = _killed_in_create(root, "reuse", MiB)
    for path in left:
        _age(path)  # past the 5 s of the pid rule too
    with _process_with_pid(pid):
        assert psutil.pid_exists(pid)
        assert ch.gc()["tmp_files"] == len(left)
    assert tmp_files(ch) == []


#: Runs as pid 1 of a new pid namespace: start the producer with pid argv[2], relay its
#: output and input.
_NAMESPACE_INIT = """
import subprocess, sys
with open("/proc/sys/kernel/ns_last_pid", "w") as last:
    last.write(str(int(sys.argv[2]) - 1))
sys.exit(subprocess.call([sys.executable, "-c", sys.argv[3], sys.argv[1]]))
"""

#: The producer in that namespace: a slow create(), held open until told to finish.
_SLOW_PRODUCER = """
import os, sys
import numpy as np
from ramxchg import Channel
from ramxchg._store import tmpfiles as _tmpfiles
ch = Channel("pidns", root=sys.argv[1])
with ch.create((4 << 20,), np.uint8, name="slow") as target:
    target[:] = 7
    print(os.getpid(), flush=True)
    sys.stdin.readline()
print("published", flush=True)
"""


@pytest.mark.root
def test_a_live_producer_in_another_pid_namespace_is_never_collected(root: Path) -> None:
    """Fails on 1e11b05: its pid does not exist here, so gc deleted its file mid-create."""
    ch = Channel("pidns")
    pid = _dead_pid()
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c"]
    command += [_NAMESPACE_INIT, str(root), str(pid), _SLOW_PRODUCER]
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        pytest.skip("needs unshare (util-linux)")
    with proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.skip(f"cannot make a pid namespace here (exit {proc.wait(30)})")
        assert int(line) == pid  # its pid in its namespace: none of ours
        [theirs] = tmp_files(ch)
        assert f".{pid}." in theirs.name
        _age(theirs)  # a create() that has been going on for a minute
        assert not psutil.pid_exists(pid)
        assert ch.gc()["tmp_files"] == 0
        for _ in range(3):
            ch.put(np.arange(3))  # the sweeps of ordinary use
        assert theirs.exists()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "published\n"
    assert proc.returncode == 0
    np.testing.assert_array_equal(ch.get("slow").array, 7)
    assert tmp_files(ch) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (root only)."""
    with mounted_tmpfs(tmp_path / "small", 32 * MiB) as mountpoint:
        yield mountpoint


@pytest.mark.root
@pytest.mark.parametrize("nbytes", [12 * MiB, 20 * MiB], ids=["write-fails", "early-check"])
def test_a_put_on_a_full_disk_first_collects_a_dead_producers_file(
    small_disk: Path, nbytes: int
) -> None:
    """Fails on 1e11b05: RamDiskFull, with the dead producer's 20 MiB still there."""
    ch = Channel("full", root=small_disk)
    _killed_in_create(small_disk, "full", 20 * MiB)
    item = ch.put(np.full(nbytes, 3, np.uint8))
    assert int(item.array[-1]) == 3
    assert tmp_files(ch) == []


@pytest.mark.root
def test_a_put_on_a_full_disk_first_empties_the_pool(small_disk: Path) -> None:
    ch = Channel("pooled", root=small_disk, keep_last=1)
    for value in (1, 2):
        ch.put(np.full(6 * MiB, value, np.uint8))  # keep_last=1: the first goes to the pool
    pool = ch.path / ".ramxchg" / "pool"
    assert len(os.listdir(pool)) == 1, "nothing was pooled: the test proves nothing"
    item = ch.put(np.full(20 * MiB, 3, np.uint8))  # needs the pooled file's room
    assert int(item.array[-1]) == 3
