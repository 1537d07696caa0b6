"""Where a stream's time goes: cProfile of a producer and a consumer process.

Usage::

    python benchmarks/bench_profile.py [--size 1M] [--count 2000] [--window 16]
        [--root /dev/shm] [--no-profile] [--top 18] [--sort tottime]

A producer process puts ``count`` arrays of ``size`` bytes into a fresh channel under
``root`` (the defaults: recycling on); a consumer process takes them as a durable
group, copies every byte out, closes and acks each (so items are deleted, or recycled,
as they are consumed). At most ``window`` items are in flight (a semaphore, as in
``ramxchg bench``). Prints the consumer's items/s and GB/s, then, unless
``--no-profile``, each process's functions by own time. Not a test: compare runs of one
machine, and expect cProfile to slow Python-heavy paths (small items) down.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ramxchg import Channel
from ramxchg.disks import parse_size

GROUP = "profile"
#: What both processes get: the channel's path, the window semaphore, count and size.
Stream = tuple[str, Any, int, int]


def _profiled(enabled: bool) -> cProfile.Profile:
    profile = cProfile.Profile()
    if enabled:
        profile.enable()
    return profile


def producer(stream: Stream, out: str | None) -> None:
    """Put ``count`` messages, one per free place in the window."""
    path, window, count, nbytes = stream
    channel = Channel(Path(path))
    message = np.resize(np.arange(251, dtype=np.uint8), nbytes)
    profile = _profiled(out is not None)
    for _ in range(count):
        window.acquire()
        channel.put(message)
    profile.disable()
    if out is not None:
        profile.dump_stats(out)


def consumer(stream: Stream, out: str | None, ready: Any) -> None:
    """Take, read, close and ack ``count`` items; print the rate."""
    path, window, count, nbytes = stream
    buffer = np.zeros(nbytes, np.uint8)
    with Channel(Path(path)).subscribe(GROUP) as subscription:
        ready.set()
        profile = _profiled(out is not None)
        started = 0.0
        for index in range(count):
            item = subscription.get()
            np.copyto(buffer, item.array.reshape(-1).view(np.uint8))
            item.close()
            item.ack()
            window.release()
            if index == 0:
                started = time.perf_counter()  # from the first item on: no start-up
        seconds = time.perf_counter() - started
        profile.disable()
    if out is not None:
        profile.dump_stats(out)
    rate = (count - 1) / seconds
    print(f"{rate:.0f} items/s, {rate * nbytes / 1e9:.3f} GB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--root", default="/dev/shm")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument(
        "--sort",
        default="tottime",
        choices=("tottime", "cumulative", "ncalls"),
        help="order of the functions printed (pstats' sort keys)",
    )
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    root = tempfile.mkdtemp(prefix="ramxchg-profile-", dir=args.root)
    stats = (
        {} if args.no_profile else {who: f"{root}.{who}.prof" for who in ("producer", "consumer")}
    )
    try:
        channel = Channel("profile", root)
        channel.subscribe(GROUP).close()  # the group is registered before the first item
        window, ready = ctx.Semaphore(args.window), ctx.Event()
        stream = (str(channel.path), window, args.count, args.size)
        taker = ctx.Process(target=consumer, args=(stream, stats.get("consumer"), ready))
        taker.start()
        ready.wait()
        maker = ctx.Process(target=producer, args=(stream, stats.get("producer")))
        maker.start()
        maker.join()
        taker.join()
        for who, out in stats.items():
            print(f"===== {who}")
            pstats.Stats(out).sort_stats(args.sort).print_stats(args.top)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for out in stats.values():
            if os.path.exists(out):
                os.unlink(out)


if __name__ == "__main__":
    main()
