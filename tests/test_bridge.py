"""``ramxchg bridge`` on a real two-node Ray cluster started on this machine.

Two channel roots stand for the two hosts; each Ray node has its own object store, so
every item crosses from one store to the other. The bridge runs as its own process
(``ramxchg bridge --json``), to be stopped by SIGINT or killed by SIGKILL.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

#: Each node's object store: a 96 MB item and the window's small ones fit with room.
STORE_BYTES = 1 << 30
BIG = 96 << 20
#: The bridge is stopped with SIGINT; it must be gone within this.
STOP_SECONDS = 30


@dataclass
class RayCluster:
    address: str
    ip: str
    head: str  # node id: where the bridge's driver attaches ("the source host")
    dest: str  # node id of the node with the custom resource "dest-host"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """Two Ray nodes, each with its own object store; all their files in one temp folder."""
    pytest.importorskip("ray", reason="needs Ray: pip install 'ramxchg[ray]'")
    from ray.cluster_utils import Cluster

    # Short: Ray's Unix sockets live under it (108-byte limit).
    temp = Path(tempfile.mkdtemp(prefix="rxb-"))
    (temp / "ray").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(temp))  # also where Ray notes the cluster's address
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        node_args = {"num_cpus": 0, "object_store_memory": STORE_BYTES}
        cluster = Cluster(
            initialize_head=True,
            head_node_args={**node_args, "include_dashboard": False, "temp_dir": str(temp / "ray")},
        )
        try:
            dest = cluster.add_node(**node_args, resources={"dest-host": 1})
            cluster.wait_for_nodes(timeout=120)  # a loaded 2-core machine is slow to start them
            yield RayCluster(
                cluster.address, dest.node_ip_address, cluster.head_node.node_id, dest.node_id
            )
        finally:
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def hosts() -> Iterator[tuple[Path, Path]]:
    """Two channel roots on tmpfs: the source host's and the destination host's."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    roots = tuple(Path(tempfile.mkdtemp(prefix="rxb-host-", dir=base)) for _ in range(2))
    yield roots  # type: ignore[misc]
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


class BridgeProcess:
    """``ramxchg bridge --json`` in its own process, its events read by a thread."""

    def __init__(self, cluster: RayCluster, source_root: Path, dest_root: Path, *args: str):
        argv = [sys.executable, "-m", "ramxchg", "bridge", "cam", "cam", "--json"]
        argv += ["--node", "resource:dest-host", "--address", cluster.address]
        argv += ["--root", str(source_root), "--dest-root", str(dest_root), *args]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        # stderr to a file: a pipe nobody reads while the test waits could fill and block.
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in _close)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._errors, text=True, env=env
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next_event(self, kind: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        """The next event of ``kind`` (with these field values); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._take(deadline, f"{kind} {fields}")
            if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event

    def wait_until(self, done: Any, timeout: float = 120, what: str = "") -> None:
        """Read events until ``done(events so far)``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            self._take(deadline, what)

    def wait_for_events(self, *labels: str, timeout: float = 120) -> None:
        """Read events until each of ``labels`` (``"<event> <item name>"``) has been seen."""
        self.wait_until(
            lambda events: set(labels) <= {f"{e['event']} {e.get('name')}" for e in events},
            timeout,
            str(labels),
        )

    def _take(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            self.kill()
            pytest.fail(f"no event {what} in time; events {self.seen}; stderr: {self.stderr()}")
        self.seen.append(event)
        return event

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        self._close()
        return self._stderr

    def interrupt(self) -> int:
        """SIGINT; the exit status, which must come within `STOP_SECONDS`."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the bridge did not stop within {STOP_SECONDS} s of SIGINT")
        self._close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        """Once it exited: the rest of its output read, the pipes closed."""
        if self.proc.stdout is None or self.proc.stdout.closed:
            return
        self._reader.join()
        self.proc.stdout.close()
        self._errors.seek(0)
        self._stderr = self._errors.read()
        self._errors.close()


def _publish_mixed(channel: Channel) -> None:
    """30 items: dtypes, 0-d and empty arrays, attrs, names, HDF5, legacy files, 96 MB."""
    arrays: list[Any] = [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.linspace(0, 1, 7, dtype=np.float32),
        np.array([1.5, -2.25], dtype=np.float16),
        np.arange(-5, 5, dtype=np.int8),
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian
        np.array([1 + 2j, 3 - 4j]),
        np.array([True, False, True]),
        np.array([b"ab", b"cde"], dtype="S5"),
        np.array([(1.0, 2), (3.5, -4)], dtype=[("x", "<f4"), ("n", "<i2")]),
        np.array("2024-01-02T03:04:05", dtype="datetime64[ns]"),
        np.array(3.25),  # 0-d
        np.array(7, dtype=np.uint16),  # 0-d
        np.zeros(0),  # empty
        np.zeros((3, 0), dtype=np.int32),  # empty, 2-d
        np.asfortranarray(np.arange(20, dtype=np.int64).reshape(4, 5)),
        np.random.default_rng(1).random((64, 64)),
        np.arange(BIG // 4, dtype=np.uint32),  # 96 MB
    ]
    for index, array in enumerate(arrays):
        name = f"frame-{index}" if index % 2 else None  # explicit and automatic names
        channel.put(array, name, attrs={"index": index, "unit": "µs", "tags": ["a", None]})
    channel.put(np.ones(3), attrs={})
    channel.put(
        {"image": np.eye(4, dtype=np.uint8), "meta/mask": np.array([True]), "zero": np.array(1.0)},
        "scan",
        format="hdf5",
        attrs={"run": 7, "nested": {"a": [1, 2.5]}, "ok": True},
    )
    channel.put({"empty": np.zeros((0, 2))}, format="hdf5", attrs={"note": "empty"})
    for index in range(8):
        channel.put(np.full(index + 1, index, dtype=np.int16), f"tail-{index}")
    # Two legacy files written in place by other programs (no sidecar).
    np.save(channel.path / "legacy.npy", np.arange(5, dtype=np.uint64))
    with h5py.File(channel.path / "legacy-h5.h5", "w") as h5:
        h5.attrs["instrument"] = "xrd"
        dataset = h5.create_dataset("counts", data=np.arange(100), chunks=(10,), compression="gzip")
        dataset.attrs["units"] = "photons"


def _check_identical(source: Channel, dest: Channel, name: str, source_bytes: bytes) -> None:
    copy = dest.get(name)
    with copy:
        assert copy.path.read_bytes() == source_bytes, name  # bit-identical file
        original = source.get(name)
        with original:
            assert copy.attrs == original.attrs, name
            assert copy.dataset_attrs == original.dataset_attrs, name
            for key, array in original.arrays.items():
                assert copy.arrays[key].dtype == array.dtype
                assert copy.arrays[key].tobytes() == array.tobytes()
        origin = copy.origin
        assert origin is not None
        assert origin["channel"] == str(source.path)
        assert (origin["name"], origin["seq"]) == (name, original.seq)
        assert "origin" not in copy.attrs  # provenance stays out of the user's attrs


def test_mixed_items_arrive_bit_identical(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    source_root, dest_root = hosts
    source = Channel("cam", root=source_root)
    _publish_mixed(source)
    names = source.names()
    assert len(names) == 30
    files = {name: source.get(name).path.read_bytes() for name in names}

    bridge = BridgeProcess(ray_cluster, source_root, dest_root)
    started = bridge.next_event("started")
    # Two object stores: the bridge's driver on one node, the receiver on the other.
    assert started["dest_node"] == ray_cluster.dest
    assert started["source_node"] == ray_cluster.head
    assert started["group"] == "bridge-cam"
    delivered = [bridge.next_event("delivered")["name"] for _ in names]
    assert bridge.interrupt() == 0
    stopped = bridge.next_event("stopped", timeout=5)  # printed before it exited
    assert (stopped["items"], stopped["published"], stopped["error"]) == (30, 30, None)

    dest = Channel("cam", root=dest_root, create=False)
    assert delivered == names  # in the source's order
    assert dest.names() == names
    for name in names:
        _check_identical(source, dest, name, files[name])
    assert [g.backlog for g in source.groups() if g.name == "bridge-cam"] == [0]


def test_sigkill_mid_stream_then_restart_delivers_every_item_once(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    source_root, dest_root = hosts
    source = Channel("cam", root=source_root)
    # The destination takes 3 items at a time: the bridge is held back (backpressure)
    # with the big item in flight when it is killed.
    dest = Channel("cam", root=dest_root, max_items=3)
    dest.subscribe(group="consumer").close()  # registered: holds what it has not acked
    before = [source.put(np.full(1000, i), f"a{i}").name for i in range(5)]
    before.append(source.put(np.arange(BIG // 8, dtype=np.int64), "big").name)
    before += [source.put(np.full(10, i), f"b{i}").name for i in range(3)]

    bridge = BridgeProcess(ray_cluster, source_root, dest_root, "--window", "4")
    # The destination full, the big item in flight:
    bridge.wait_for_events("sent big", "delivered a0", "delivered a1", "delivered a2")
    bridge.kill()  # SIGKILL: no chance to clean up or release anything

    during = [source.put(np.full(100, i), f"c{i}").name for i in range(4)]
    expected = before + during
    contents = {name: source.get(name).path.read_bytes() for name in expected}

    received: list[str] = []
    stop = threading.Event()

    def consume() -> None:
        with dest.subscribe(group="consumer") as sub:
            while not stop.is_set():
                try:
                    item = sub.get(timeout=0.1)
                except TimeoutError:
                    continue
                with item:
                    assert item.path.read_bytes() == contents[item.name], item.name
                received.append(item.name)
                item.ack()  # deleted at the destination: only the ledger remembers it

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        restarted = BridgeProcess(ray_cluster, source_root, dest_root, "--window", "4")
        restarted.next_event("started")
        wait_for(lambda: set(received) == set(expected), 120, "every item at the destination")
        assert restarted.interrupt() == 0
        wait_for(lambda: len(dest) == 0, 10, "the consumer to take what is left")
    finally:
        stop.set()
        consumer.join()
    assert sorted(received) == sorted(expected)  # every item, each exactly once
    assert [g.backlog for g in source.groups() if g.name == "bridge-cam"] == [0]


def test_a_node_ip_shared_by_two_nodes_is_refused(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    argv = ["bridge", "cam", "cam", "--node", ray_cluster.ip, "--address", ray_cluster.address]
    result = subprocess.run(
        [sys.executable, "-m", "ramxchg", *argv, "--root", str(hosts[0])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "2 Ray nodes have IP address" in result.stderr
    assert ray_cluster.head in result.stderr
    assert ray_cluster.dest in result.stderr


def test_stopping_while_the_destination_is_full_releases_the_items_in_flight(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    source_root, dest_root = hosts
    source = Channel("cam", root=source_root)
    Channel("cam", root=dest_root, max_items=1)
    for index in range(3):
        source.put(np.full(10, index), f"i{index}")

    bridge = BridgeProcess(ray_cluster, source_root, dest_root)
    bridge.wait_for_events("delivered i0", "sent i2")  # i1 waits for room at the destination
    assert bridge.interrupt() == 0
    stopped = bridge.next_event("stopped", timeout=5)
    assert (stopped["items"], stopped["released"], stopped["error"]) == (1, 2, None)
    assert [g.backlog for g in source.groups() if g.name == "bridge-cam"] == [2]

    again = BridgeProcess(ray_cluster, source_root, dest_root)
    again.next_event("sent", name="i2")  # both released items are sent again
    again.proc.send_signal(signal.SIGINT)
    again.next_event("stopping", in_flight=2)  # waits for them (they cannot land) ...
    assert again.interrupt() == 130  # ... until a second Ctrl-C
    assert Channel("cam", root=dest_root).names() == ["i0"]
    assert [g.backlog for g in source.groups() if g.name == "bridge-cam"] == [2]


def test_two_bridges_fan_one_source_out_to_two_nodes(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    source_root, dest_root = hosts
    other_root = Path(tempfile.mkdtemp(prefix="rxb-host-", dir=dest_root.parent))
    source = Channel("cam", root=source_root)
    for group in ("to-dest", "to-head"):  # before the producer: both groups hold its items
        source.subscribe(group=group).close()
    names = [source.put(np.full(100, i)).name for i in range(5)]
    bridges = [
        BridgeProcess(ray_cluster, source_root, dest_root, "--group", "to-dest"),
        # The later --node wins: this one publishes on the head node.
        BridgeProcess(
            ray_cluster, source_root, other_root, "--group", "to-head", "--node", ray_cluster.head
        ),
    ]
    try:
        for bridge in bridges:
            bridge.wait_for_events(*(f"delivered {name}" for name in names))
            assert bridge.interrupt() == 0
        assert bridges[1].seen[0]["dest_node"] == ray_cluster.head
        for root in (dest_root, other_root):
            assert Channel("cam", root=root, create=False).names() == names
        assert {g.name: g.backlog for g in source.groups()} == {"to-dest": 0, "to-head": 0}
        assert len(source) == 0  # acked by both groups, so deleted
    finally:
        shutil.rmtree(other_root)


def test_an_item_the_destination_refuses_becomes_a_dead_letter(
    ray_cluster: RayCluster, hosts: tuple[Path, Path]
) -> None:
    source_root, dest_root = hosts
    source = Channel("cam", root=source_root)
    source.subscribe(group="bridge-cam").close()
    names = [source.put(np.arange(1000), f"i{index}").name for index in range(3)]
    # Damaged after it was published, its size kept (a sidecar records its file's size: a
    # truncated item would be taken for another program's file, and quarantined at home)
    fd = os.open(source.get("i1").path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"NOTNPY", 0)
    finally:
        os.close(fd)

    bridge = BridgeProcess(ray_cluster, source_root, dest_root)
    bridge.wait_for_events("delivered i0", "dead i1", "delivered i2")
    assert bridge.interrupt() == 0
    assert Channel("cam", root=dest_root, create=False).names() == ["i0", "i2"]
    assert source.names() == []  # i0 and i2 acked, i1 set aside
    dead = source.path / ".ramxchg" / "dead"
    assert (dead / "i1.npy").read_bytes()[:6] == b"NOTNPY"
    reason = json.loads((dead / "i1.npy.reason.json").read_text())
    assert "destination refused it" in reason["reason"]
    assert names == ["i0", "i1", "i2"]
