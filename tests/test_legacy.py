"""Legacy producers: files written in place are delivered only when complete."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, Item
from ramxchg._delivery.foreign import LegacyGate
from ramxchg._delivery.subscription import Subscription
from ramxchg._delivery.writers import FileKey, WriterScan
from ramxchg._store.layout import ChannelLayout
from ramxchg._store.scan import Entry

BIG = 256 << 20  # bytes of array data per legacy file
SPAWN = mp.get_context("spawn")


def _checksum(array: np.ndarray) -> int:
    """Exact and order-sensitive enough: a half-written array never matches."""
    words = np.ascontiguousarray(array).reshape(-1).view(np.uint64)
    weights = np.arange(1, words.size + 1, dtype=np.uint64)
    return int(np.bitwise_xor.reduce(words * weights)) ^ int(words.sum())


def _np_save(path: str, seed: int, out: mp.Queue, stall: float = 0.0) -> None:  # type: ignore[type-arg]
    array = np.arange(BIG // 8, dtype=np.float64) * (seed + 1)
    out.put(_checksum(array))
    if not stall:
        np.save(path, array)
        return
    with open(path, "wb") as f:  # like np.save, with a pause half-way (a slow writer)
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": array.shape}
        )
        half = array.size // 2
        f.write(array[:half].tobytes())
        f.flush()
        time.sleep(stall)  # a stalled producer, not synchronisation
        f.write(array[half:].tobytes())


def _h5py_write(path: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import h5py

    array = np.arange(8 << 20, dtype="<i8").reshape(1024, -1)
    out.put(_checksum(array))
    with h5py.File(path, "w") as f:
        f.create_dataset("frame", data=array)
        f.attrs["camera"] = "legacy"


def _take(subscription: Subscription, name: str, timeout: float = 60.0) -> Item:
    item = subscription.get(timeout=timeout)
    assert item.name == name
    assert item.seq is None  # no sidecar: a legacy file
    return item


@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_np_save_writer_is_never_delivered_half_written(root: Path, watch: str) -> None:
    _np_save_runs(watch, int(os.environ.get("RAMXCHG_LEGACY_RUNS", "5")))


@pytest.mark.slow
@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_np_save_writer_many_runs(root: Path, watch: str) -> None:
    _np_save_runs(watch, 40)


def _np_save_runs(watch: str, runs: int) -> None:
    """Each run: a spawned process np.saves 256 MB to the final name; we check the sum."""
    channel = Channel("legacy")
    out: mp.Queue = SPAWN.Queue()  # type: ignore[type-arg]
    with channel.subscribe(watch=watch) as subscription:
        for run in range(runs):
            name = f"run{run}"
            writer = SPAWN.Process(
                target=_np_save, args=(str(channel.path / f"{name}.npy"), run, out)
            )
            writer.start()
            item = _take(subscription, name)
            with item:
                assert item.array.nbytes == BIG
                assert _checksum(item.array) == out.get(timeout=60), f"{name} half-written"
            writer.join(60)
            assert writer.exitcode == 0
            channel.delete(name)
    out.close()
    out.join_thread()


def test_stalled_writer_waits_neither_delivered_nor_quarantined(root: Path) -> None:
    """No close event (polling) and a writer pausing past the settle interval."""
    channel = Channel("stall")
    out: mp.Queue = SPAWN.Queue()  # type: ignore[type-arg]
    subscription = channel.subscribe(watch="polling", settle=0.2, quarantine_after=30)
    with subscription:
        writer = SPAWN.Process(target=_np_save, args=(str(channel.path / "slow.npy"), 3, out, 1.0))
        writer.start()
        item = _take(subscription, "slow")
        with item:
            assert _checksum(item.array) == out.get(timeout=60)
        writer.join(60)
    assert not channel._layout.quarantine.exists()
    out.close()
    out.join_thread()


def test_h5py_writer_is_delivered_complete(root: Path) -> None:
    channel = Channel("h5")
    out: mp.Queue = SPAWN.Queue()  # type: ignore[type-arg]
    with channel.subscribe() as subscription:
        writer = SPAWN.Process(target=_h5py_write, args=(str(channel.path / "scan.h5"), out))
        writer.start()
        item = _take(subscription, "scan")
        with item:
            assert _checksum(item.arrays["frame"]) == out.get(timeout=60)
            assert item.attrs["camera"] == "legacy"
        writer.join(60)
    out.close()
    out.join_thread()


def test_cp_of_a_big_file_is_delivered_complete(root: Path) -> None:
    if shutil.which("cp") is None:
        pytest.skip("needs cp")
    source = root / "outside.npy"
    array = np.arange(BIG // 8, dtype=np.float64)[::-1]
    np.save(source, array)
    expected = _checksum(array)
    del array
    channel = Channel("copied")
    with (
        channel.subscribe() as subscription,
        subprocess.Popen(["cp", source, channel.path / "copy.npy"]) as cp,
    ):
        item = _take(subscription, "copy")
        with item:
            assert _checksum(item.array) == expected
        assert cp.wait(60) == 0


@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_garbage_is_quarantined_with_a_reason(root: Path, watch: str) -> None:
    channel = Channel("garbage")
    subscription = channel.subscribe(watch=watch, settle=0.05, quarantine_after=0.3)
    with subscription:
        (channel.path / "junk.npy").write_bytes(b"not numpy at all")
        moved = channel._layout.quarantine / "junk.npy"
        deadline = time.monotonic() + 10
        while not moved.with_name("junk.npy.reason.json").exists():
            with pytest.raises(TimeoutError):
                subscription.get(timeout=0.05)  # never delivered, never crashes
            assert time.monotonic() < deadline, "junk.npy was not quarantined"
        channel.put(np.ones(3), name="good")
        assert subscription.get(timeout=10).name == "good"
    assert not (channel.path / "junk.npy").exists()
    assert moved.read_bytes() == b"not numpy at all"
    reason = json.loads(moved.with_name("junk.npy.reason.json").read_text())
    assert reason["version"] == 1
    assert reason["file"] == "junk.npy"
    assert "no numpy magic" in reason["reason"]
    assert reason["size"] == 16
    assert reason["closed_event"] is (watch == "auto")


# -- the gate's rule, with a fake clock -------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Probe:
    """find_writers' stand-in: the files being written, and whether every process was seen."""

    def __init__(self) -> None:
        self.writing: set[FileKey] = set()
        self.complete = True
        self.calls = 0

    def __call__(self, keys: set[FileKey]) -> WriterScan:
        self.calls += 1
        return WriterScan(frozenset(self.writing & keys), self.complete)


def _gate(
    tmp_path: Path, verdicts: dict[str, str | None], probe: _Probe | None = None
) -> tuple[LegacyGate, _Clock]:
    clock = _Clock()
    gate = LegacyGate(
        ChannelLayout(tmp_path),
        settle=0.5,
        quarantine_after=2.0,
        clock=clock,
        check=lambda path: verdicts[path.name],
        probe=probe or _Probe(),
    )
    return gate, clock


def _key(path: Path) -> FileKey:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _entry(tmp_path: Path, filename: str, data: bytes = b"x") -> Entry:
    path = tmp_path / filename
    path.write_bytes(data)
    info = os.lstat(path)
    return Entry(path.stem, path, None, info.st_mtime_ns, info.st_size)


def test_gate_closed_file_with_good_header_is_ready_at_once(tmp_path: Path) -> None:
    gate, _ = _gate(tmp_path, {"a.npy": None})
    gate.closed({"a.npy"})  # the close event may arrive before the file is offered
    gate.offer(_entry(tmp_path, "a.npy"))
    assert [e.name for e in gate.ready()] == ["a"]
    assert len(gate) == 0


def test_gate_settles_without_close_event(tmp_path: Path) -> None:
    gate, clock = _gate(tmp_path, {"a.npy": None})
    gate.offer(_entry(tmp_path, "a.npy"))
    assert gate.ready() == []
    clock.now += 0.4
    (tmp_path / "a.npy").write_bytes(b"xy")  # still growing: the clock restarts
    assert gate.ready() == []
    clock.now += 0.4
    assert gate.ready() == []
    clock.now += 0.2
    ready = gate.ready()
    assert [e.size for e in ready] == [2]


def test_gate_keeps_incomplete_files_until_quarantine_after(tmp_path: Path) -> None:
    gate, clock = _gate(tmp_path, {"a.npy": "truncated", "b.npy": "truncated"})
    gate.offer(_entry(tmp_path, "a.npy"))
    gate.offer(_entry(tmp_path, "b.npy"))
    gate.closed({"b.npy"})
    clock.now += 0.6
    assert gate.ready() == []
    assert sorted(os.listdir(tmp_path / ".ramxchg" / "quarantine")) == [
        "b.npy",
        "b.npy.reason.json",
    ]
    assert "a.npy" in gate
    clock.now += 1.3
    assert gate.ready() == []
    assert "a.npy" in gate
    clock.now += 0.2
    assert gate.ready() == []
    assert len(gate) == 0
    assert (tmp_path / ".ramxchg" / "quarantine" / "a.npy").exists()


def test_gate_drops_files_that_vanish(tmp_path: Path) -> None:
    gate, clock = _gate(tmp_path, {"a.npy": None})
    gate.offer(_entry(tmp_path, "a.npy"))
    (tmp_path / "a.npy").unlink()
    clock.now += 1
    assert gate.ready() == []
    assert len(gate) == 0


def test_gate_never_delivers_a_file_still_being_written(tmp_path: Path) -> None:
    probe = _Probe()
    gate, clock = _gate(tmp_path, {"a.npy": None}, probe)
    gate.offer(_entry(tmp_path, "a.npy"))
    probe.writing.add(_key(tmp_path / "a.npy"))  # open for writing, or mapped writable
    gate.closed({"a.npy"})  # the close event of an open_memmap writer's header
    assert gate.ready() == []
    clock.now += 10
    assert gate.ready() == []  # unchanged for long: still not settled
    probe.writing.clear()
    assert [e.name for e in gate.ready()] == ["a"]  # closed, and nobody writes it


def test_gate_settles_only_after_the_writer_is_gone(tmp_path: Path) -> None:
    probe = _Probe()
    gate, clock = _gate(tmp_path, {"a.npy": None}, probe)
    gate.offer(_entry(tmp_path, "a.npy"))
    probe.writing.add(_key(tmp_path / "a.npy"))
    clock.now += 0.6
    assert gate.ready() == []  # an h5py writer that flushed and pauses
    probe.writing.clear()
    clock.now += 0.4
    assert gate.ready() == []  # settled counts from the writer's last sighting
    clock.now += 0.2
    assert [e.name for e in gate.ready()] == ["a"]


def test_gate_trusts_a_close_event_only_when_every_process_was_seen(tmp_path: Path) -> None:
    probe = _Probe()
    probe.complete = False  # e.g. other users' processes, when not root
    gate, clock = _gate(tmp_path, {"a.npy": None}, probe)
    gate.closed({"a.npy"})
    gate.offer(_entry(tmp_path, "a.npy"))
    assert gate.ready() == []
    clock.now += 0.5
    assert [e.name for e in gate.ready()] == ["a"]  # the settle rule, as elsewhere


def test_gate_never_quarantines_a_file_still_being_written(tmp_path: Path) -> None:
    probe = _Probe()
    gate, clock = _gate(tmp_path, {"a.npy": "truncated"}, probe)
    gate.offer(_entry(tmp_path, "a.npy"))
    gate.closed({"a.npy"})
    probe.writing.add(_key(tmp_path / "a.npy"))
    clock.now += 10
    assert gate.ready() == []
    assert "a.npy" in gate
    assert not (tmp_path / ".ramxchg" / "quarantine").exists()


def test_gate_reads_proc_only_for_files_about_to_be_decided(tmp_path: Path) -> None:
    probe = _Probe()
    gate, clock = _gate(tmp_path, {"a.npy": None, "b.npy": "truncated"}, probe)
    gate.offer(_entry(tmp_path, "a.npy"))
    gate.offer(_entry(tmp_path, "b.npy"))
    gate.closed({"b.npy"})
    clock.now += 0.1
    assert gate.ready() == []  # a: not settled yet; b: malformed, closed only 0.1 s ago
    assert probe.calls == 0
    clock.now += 0.5
    assert [e.name for e in gate.ready()] == ["a"]
    assert probe.calls == 1  # one look at /proc for both files
