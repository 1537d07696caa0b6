"""Bridge throughput between two Ray nodes, side by side with Ray alone (issue #16).

Usage::

    python benchmarks/bench_bridge.py [--sizes 1M 64M 512M] [--repeat 3] [--round-bytes 4G] [--json]

Starts a two-node Ray cluster on this machine (``ray.cluster_utils``; each node has
its own object store of ``--store`` bytes, so every object is copied from one store
to the other) and joins it as a driver, which Ray attaches to the head node ("the
source host"). For each size, alternately:

- **Ray alone**: ``ray.put`` of an in-memory array on the head node, passed to an actor
  on the second node that takes it (``ray.get``, zero-copy) and returns its size;
- **Ray + file write**: the same, the actor writing each array into a new file on the
  second root (the one copy the bridge makes there, without its bookkeeping);
- **bridge**: the same number of items pre-published in a source channel (not
  timed), copied by a `Bridge` into a channel on the second node (the receiver maps
  nothing of the source: it writes the bytes Ray brought into a new item file), where
  they stay;
- **bridge, taken at the destination**: one bridge that runs for good through every
  round (`Stream`), fed by a producer process that ``put``s an in-memory array into
  the source channel, with a consumer on the second node (`Taker`) that takes each
  item as a durable group (maps it, as Ray alone's actor maps its object) and acks
  it: a stream in its steady state, where both ends recycle their files (kept mapped:
  the producer's ``put``, the bridge's read and the receiver's write each touch pages
  already mapped) instead of allocating new ones for every item. Timed from the
  producer's first ``put``; an untimed batch runs right before each timed one.

All move the same batch per round (``--round-bytes``, 3 to 200 items) with the same
number of items in flight (4, or fewer so that they stay under 1 GB). Ray alone and the
stream each get an untimed batch per size before the rounds. GB/s is timed from the
first ``ray.put`` to the last confirmation. Medians of ``--repeat`` rounds. Channels
live on two roots under /dev/shm, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramxchg import Channel
from ramxchg.bridge import Bridge
from ramxchg.disks import parse_size

#: Bytes moved per round for each size by default (items = this / size, 3 to 200):
#: 64 items at 64 MB, 8 at 512 MB, so that a round times a stream rather than a
#: pipeline filling and draining (3 items of 512 MB with 2 in flight mostly did).
ROUND_BYTES = 4 << 30
#: At most this many bytes in flight.
WINDOW_BYTES = 1 << 30


@dataclass(frozen=True)
class Batch:
    """What every row moves per round: ``count`` items of ``size`` bytes, ``window`` of
    them in flight."""

    size: int
    count: int
    window: int

    @classmethod
    def of(cls, size: int, round_bytes: int = ROUND_BYTES) -> Batch:
        """The batch for items of ``size`` bytes: ``round_bytes`` of them (3 to 200
        items), up to 4 in flight, fewer so that they stay under `WINDOW_BYTES`."""
        count = max(3, min(200, round_bytes // size))
        return cls(size, count, max(1, min(4, WINDOW_BYTES // size)))


class Sink:
    """The Ray-alone receiver: takes an array (zero-copy) and answers its size; with a
    folder, first writes it into a new file there (the bridge's one copy, without its
    bookkeeping)."""

    def __init__(self) -> None:
        self.written = 0

    def take(self, array: np.ndarray, folder: str | None = None) -> int:
        if folder is not None:
            self.written += 1
            with open(os.path.join(folder, f"{self.written}.bin"), "wb") as file:
                file.write(memoryview(array))
        return int(array.nbytes)


def ray_alone(ray: Any, sink: Any, batch: Batch, folder: Path | None = None) -> float:
    """GB/s of ``ray.put`` + a remote ``ray.get`` (+ a file write into ``folder``), with
    the bridge's window."""
    count, window, size = batch.count, batch.window, batch.size
    message = np.full(size, 7, np.uint8)
    target = str(folder) if folder is not None else None
    pending: deque[Any] = deque()
    started = time.perf_counter()
    for _ in range(count):
        if len(pending) >= window:
            ray.get(pending.popleft())
        pending.append(sink.take.remote(ray.put(message), target))
    ray.get(list(pending))
    seconds = time.perf_counter() - started
    if folder is not None:
        shutil.rmtree(folder)
        folder.mkdir()
    return count * size / seconds / 1e9


class Taker:
    """A consumer at the destination (an actor on the second node): takes each item of a
    channel as a durable group (maps it, as ``ray.get`` does) and acks it, so the
    destination's files are recycled, as in a stream that runs for good."""

    def start(self, name: str, root: str, count: int) -> None:
        """Register the group on channel ``name`` under ``root``, then take ``count``
        items in a thread."""
        subscription = Channel(name, root=root).subscribe(group="bench")
        self.thread = threading.Thread(target=self._take, args=(subscription, count))
        self.thread.start()

    def _take(self, subscription: Any, count: int) -> None:
        with subscription:
            for _ in range(count):
                item = subscription.get(timeout=600)
                assert item.array.nbytes > 0
                item.close()
                item.ack()

    def join(self) -> None:
        """Wait until every item was taken."""
        self.thread.join()


def bridged(ray: Any, node: str, roots: tuple[Path, Path], batch: Batch, round_no: int) -> float:
    """GB/s of a new bridge copying pre-published items to the other node, where they stay."""
    count, window, size = batch.count, batch.window, batch.size
    name = f"bench-{size}-{round_no}-kept"
    source = Channel(name, root=roots[0])
    message = np.full(size, 7, np.uint8)
    for _ in range(count):
        source.put(message)
    times: dict[str, float] = {}
    done = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "sent":
            times.setdefault("first", time.perf_counter())
        elif event["event"] == "delivered" and event["name"] == f"{count:012d}":
            times["last"] = time.perf_counter()
            done.set()

    bridge = Bridge(source, name, node=node, dest_root=roots[1], window=window, on_event=on_event)
    with bridge:
        if not done.wait(600) or bridge.error is not None:
            raise RuntimeError(f"the bridge did not finish: {bridge.error}")
    shutil.rmtree(source.path)
    shutil.rmtree(roots[1] / name)
    return count * size / (times["last"] - times["first"]) / 1e9


def _produce(path: str, size: int, conn: Any) -> None:
    """A producer process on the source host: ``put``s ``count`` items of ``size`` bytes
    each time it is sent a count, then answers; a count of 0 ends it."""
    channel = Channel(Path(path))
    message = np.full(size, 7, np.uint8)
    for count in iter(conn.recv, 0):
        for _ in range(count):
            channel.put(message)
        conn.send(count)


class Stream:
    """One bridge that runs for good between a producer process on the source host and
    ``taker`` on the other node: the steady state of a stream, where both ends recycle
    their files. An untimed first batch warms it up.

    `round` times one batch, from the producer's first ``put`` of an in-memory array to
    the last item delivered (as Ray alone is timed from its first ``ray.put``). Right
    before it, an untimed batch runs through: between rounds the other rows run for
    longer than a pool keeps a file no one takes (`POOL_IDLE_SECONDS`), which a stream
    that runs for good never idles.
    """

    def __init__(
        self,
        ray: Any,
        node: str,
        roots: tuple[Path, Path],
        batch: Batch,
        *,
        rounds: int,
        taker: Any,
    ) -> None:
        self.count, window, size = batch.count, batch.window, batch.size
        self.size = size
        self.name = f"bench-{size}-stream"
        self.roots = roots
        self.source = Channel(self.name, root=roots[0])
        self.taker = taker
        self.ray = ray
        ray.get(taker.start.remote(self.name, str(roots[1]), self.count * (2 * rounds + 1)))
        self.delivered = 0
        self.last = 0.0
        self.arrived = threading.Condition()
        self.bridge = Bridge(
            self.source,
            self.name,
            node=node,
            dest_root=roots[1],
            window=window,
            on_event=self._on_event,
        )
        self.bridge.start()
        context = multiprocessing.get_context("spawn")
        self.orders, theirs = context.Pipe()
        self.producer = context.Process(
            target=_produce, args=(str(self.source.path), size, theirs), daemon=True
        )
        self.producer.start()
        self._batch()  # warm-up

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["event"] == "delivered":
            with self.arrived:
                self.delivered += 1
                self.last = time.perf_counter()
                self.arrived.notify_all()

    def _batch(self) -> float:
        """Have the producer put a batch, wait until the bridge delivered it: seconds."""
        target = self.delivered + self.count
        started = time.perf_counter()
        self.orders.send(self.count)
        with self.arrived:
            if not self.arrived.wait_for(
                lambda: self.delivered >= target or self.bridge.error, 600
            ):
                raise RuntimeError("the bridge did not finish the batch")
        if self.bridge.error is not None:
            raise RuntimeError(f"the bridge failed: {self.bridge.error}")
        self.orders.recv()
        return self.last - started

    def round(self) -> float:
        """GB/s of one batch, right after an untimed one."""
        self._batch()
        return self.count * self.size / self._batch() / 1e9

    def close(self) -> None:
        """Stop the producer and the bridge, wait for the taker, remove both channels."""
        self.orders.send(0)
        self.producer.join(60)
        self.bridge.stop()
        self.ray.get(self.taker.join.remote())
        shutil.rmtree(self.source.path)
        shutil.rmtree(self.roots[1] / self.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[parse_size(s) for s in ("1M", "64M", "512M")],
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", type=parse_size, default=parse_size("2G"))
    parser.add_argument(
        "--round-bytes",
        type=parse_size,
        default=ROUND_BYTES,
        help="bytes per round and size (3 to 200 items; default 4G): more items weigh "
        "a pipeline's fill and drain less",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    temp = Path(tempfile.mkdtemp(prefix="rxb-"))  # short: Ray's sockets live there
    (temp / "ray").mkdir()
    os.environ.update(RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0")
    roots = tuple(Path(tempfile.mkdtemp(prefix="rxb-host-", dir="/dev/shm")) for _ in range(2))
    node_args = {"num_cpus": 0, "object_store_memory": args.store}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node_args, "include_dashboard": False, "temp_dir": str(temp / "ray")},
    )
    results: list[dict[str, Any]] = []
    try:
        dest = cluster.add_node(**node_args, resources={"dest-host": 1})
        cluster.wait_for_nodes(timeout=120)
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        assert ray.get_runtime_context().get_node_id() != dest.node_id
        on_dest = {
            "num_cpus": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(dest.node_id, soft=False),
        }
        sink = ray.remote(Sink).options(**on_dest).remote()
        taker = ray.remote(Taker).options(**on_dest).remote()
        ray.get(sink.take.remote(np.zeros(1, np.uint8)))
        files = roots[1] / "ray-files"
        files.mkdir()
        for size in args.sizes:
            batch = Batch.of(size, args.round_bytes)
            alone, written, bridge, taken = [], [], [], []
            stream = Stream(
                ray, "resource:dest-host", roots, batch, rounds=args.repeat, taker=taker
            )
            ray_alone(ray, sink, batch)  # warm-up, as the stream's first batch
            for round_no in range(args.repeat):
                alone.append(ray_alone(ray, sink, batch))
                written.append(ray_alone(ray, sink, batch, files))
                bridge.append(bridged(ray, "resource:dest-host", roots, batch, round_no))
                taken.append(stream.round())
            stream.close()
            count, window = batch.count, batch.window
            results.append(
                {
                    "size": size,
                    "items": count,
                    "window": window,
                    "ray_gbps": alone,
                    "ray_write_gbps": written,
                    "bridge_gbps": bridge,
                    "bridge_taken_gbps": taken,
                    "ratio": statistics.median(bridge) / statistics.median(alone),
                    "ratio_taken": statistics.median(taken) / statistics.median(alone),
                }
            )
            if not args.json:
                print(
                    f"{size >> 20:5d} MB x{count:4d} (window {window}): Ray alone "
                    f"{statistics.median(alone):.3f} GB/s ({min(alone):.3f}-{max(alone):.3f}), "
                    f"Ray + file write {statistics.median(written):.3f} GB/s, "
                    f"bridge {statistics.median(bridge):.3f} GB/s "
                    f"({min(bridge):.3f}-{max(bridge):.3f}): "
                    f"{results[-1]['ratio']:.2f}x; taken at the destination "
                    f"{statistics.median(taken):.3f} GB/s: {results[-1]['ratio_taken']:.2f}x",
                    flush=True,
                )
    finally:
        ray.shutdown()
        cluster.shutdown()
        for folder in (temp, *roots):
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        json.dump({"repeat": args.repeat, "results": results}, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
