"""Subscription latency and streaming rates across processes (the issue-3 targets).

Usage::

    python benchmarks/bench_latency.py [--items 2000] [--frames 300] [--json]

Each run is a producer process publishing into a fresh channel on the default root and
a consumer process subscribed as a durable group (acked items are deleted) unless said:

1. latency: 1 KB items, one at a time (the producer waits until the consumer has the
   previous one); latency = consumer's receive time - the item's ``published_ns``;
2. items/s: 4 KB items streamed (at most 64 in flight), from first put to last receive;
   once as a durable group (claim, ack, delete per item) and once as an anonymous
   subscriber (delivery only; the items stay);
3. GB/s: 8 MB frames streamed (at most 4 in flight), the consumer copying every byte;
   once as is and once with ``Channel(recycle=4)`` (consumed files' pages reused).

Each also reports the longest gap between two deliveries: a stall is a gap >= 0.5 s.

Last, the CPU cost per item in one process, without a second process competing for
the 2 cores: microseconds per ``put`` of a 16-byte array, and per delivery of such
pre-published items (get, ``.array``, close, ack) to an anonymous subscriber and to a
durable group (whose ack deletes the item). Medians of 5 rounds of ``--items`` items.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ramxchg import Channel, default_root

STALL_SECONDS = 0.5


def _produce(path: str, nbytes: int, count: int, window: int, semaphore: Any) -> None:
    channel = Channel(Path(path))
    message = np.full(nbytes, 7, np.uint8)
    for _ in range(window):
        semaphore.release()
    for index in range(count):
        semaphore.acquire()
        channel.put(message, attrs={"i": index})


def _consume(
    path: str, nbytes: int, count: int, semaphore: Any, results: Any, *, group: str | None
) -> None:
    buffer = np.full(nbytes, 1, np.uint8)
    latencies, arrivals = [], []
    with Channel(Path(path)).subscribe(group) as sub:
        for _ in range(count):
            item = sub.get(timeout=60)
            received = time.time_ns()
            arrivals.append(time.monotonic())
            latencies.append(received - item.published_ns)
            np.copyto(buffer, item.array.reshape(-1))
            item.close()
            item.ack()
            semaphore.release()
    results.send((latencies, arrivals))


def run(
    root: Path,
    nbytes: int,
    count: int,
    window: int,
    *,
    recycle: int = 0,
    group: str | None = "bench",
) -> dict[str, Any]:
    """One producer/consumer run; latency percentiles, rate and the longest gap.

    ``group=None``: an anonymous subscriber (no claims, no acks, nothing deleted).
    """
    ctx = mp.get_context("spawn")
    channel = Channel(f"latency-{nbytes}-{window}-{recycle}-{group}", root, recycle=recycle)
    if group is not None:
        channel.subscribe(group).close()  # the group exists before the first item
    semaphore = ctx.Semaphore(0)
    receiver, sender = ctx.Pipe(duplex=False)
    consumer = ctx.Process(
        target=_consume,
        args=(str(channel.path), nbytes, count, semaphore, sender),
        kwargs={"group": group},
    )
    consumer.start()
    start = time.monotonic()
    producer = ctx.Process(
        target=_produce, args=(str(channel.path), nbytes, count, window, semaphore)
    )
    producer.start()
    latencies_ns, arrivals = receiver.recv()
    producer.join()
    consumer.join()
    latencies = np.array(latencies_ns) / 1e3
    gaps = np.diff(np.array(arrivals)) if len(arrivals) > 1 else np.zeros(1)
    span = arrivals[-1] - arrivals[0]
    return {
        "bytes": nbytes,
        "count": count,
        "window": window,
        "p50_us": float(np.percentile(latencies, 50)),
        "p99_us": float(np.percentile(latencies, 99)),
        "max_us": float(latencies.max()),
        "items_per_s": (count - 1) / span if span > 0 else None,
        "gbps": (count - 1) * nbytes / span / 1e9 if span > 0 else None,
        "longest_gap_s": float(gaps.max()),
        "stalled": bool(gaps.max() >= STALL_SECONDS),
        "wall_s": time.monotonic() - start,
    }


def per_item_cost(root: Path, items: int, rounds: int = 5) -> dict[str, float]:
    """Microseconds per put, and per delivery (anonymous / durable group), in one process."""
    samples: dict[str, list[float]] = {"put": [], "deliver": [], "deliver+ack, group": []}
    message = np.zeros(16, np.uint8)
    for index in range(rounds + 1):  # the first round warms up
        for group, label in ((None, "deliver"), ("bench", "deliver+ack, group")):
            channel = Channel(f"cost-{index}-{group or 'anonymous'}", root)
            with channel.subscribe(group) as sub:
                start = time.perf_counter()
                for _ in range(items):
                    channel.put(message)
                if group is None:
                    samples["put"].append((time.perf_counter() - start) / items)
                start = time.perf_counter()
                for _ in range(items):
                    item = sub.get(timeout=10)
                    _ = item.array
                    item.close()
                    item.ack()
                samples[label].append((time.perf_counter() - start) / items)
            shutil.rmtree(channel.path)
    return {label: statistics.median(values[1:]) * 1e6 for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="1 KB and 4 KB items (2000)")
    parser.add_argument("--frames", type=int, default=300, help="8 MB frames (300)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=default_root()))
    try:
        results = {
            "latency_1k_lockstep": run(root, 1024, args.items, 1),
            "rate_4k_streamed": run(root, 4096, args.items, 64),
            "rate_4k_streamed_anonymous": run(root, 4096, args.items, 64, group=None),
            "rate_8m_streamed": run(root, 8 << 20, args.frames, 4),
            "rate_8m_streamed_recycle": run(root, 8 << 20, args.frames, 4, recycle=4),
        }
        cost = per_item_cost(root, args.items)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({**results, "per_item_us": cost}, indent=1))
        return
    print("| run | p50 us | p99 us | max us | items/s | GB/s | longest gap s | stalled |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        rate = f"{r['items_per_s']:.0f}" if r["items_per_s"] else "-"
        gbps = f"{r['gbps']:.3f}" if r["gbps"] else "-"
        print(
            f"| {name} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['max_us']:.0f} | {rate} "
            f"| {gbps} | {r['longest_gap_s']:.3f} | {r['stalled']} |"
        )
    costs = ", ".join(f"{label} {us:.0f} us" for label, us in cost.items())
    print(f"CPU per item, one process, 16 B: {costs}")


if __name__ == "__main__":
    main()
