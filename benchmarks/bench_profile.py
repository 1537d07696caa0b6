"""Where a stream's time goes: cProfile of a producer and a consumer process.

Usage::

    python benchmarks/bench_profile.py [--size 1M] [--count 2000] [--window 16]
        [--root /dev/shm] [--no-profile] [--lock-times] [--top 18] [--sort tottime]

A producer process puts ``count`` arrays of ``size`` bytes into a fresh channel under
``root`` (the defaults: recycling on); a consumer process takes them as a durable
group, copies every byte out, closes and acks each (so items are deleted, or recycled,
as they are consumed). At most ``window`` items are in flight (a semaphore, as in
``ramxchg bench``). Prints the consumer's items/s and GB/s, the mean time per item
(the first one left out: start-up) of each step (``put``; ``get``, ``read`` = array,
copy and close, ``ack``: inflated by cProfile unless ``--no-profile``), with
``--lock-times`` how long each process waited for the publish lock and held it per
item (by wrapping the private ``ramxchg._store.sequence.PublishLock``: a diagnostic),
then, unless ``--no-profile``, each process's functions by own time. Not a test:
compare runs of one machine, and expect cProfile to slow Python-heavy paths (small
items) down.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import pstats
import queue
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


class _Steps:
    """Nanoseconds spent in each step, summed over the items."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self._last = time.perf_counter_ns()

    def start(self) -> None:
        self._last = time.perf_counter_ns()

    def took(self, step: str) -> None:
        """The time since `start` or the last step goes to ``step``."""
        now = time.perf_counter_ns()
        self.ns[step] = self.ns.get(step, 0) + now - self._last
        self._last = now

    def per_item(self, count: int) -> str:
        return ", ".join(f"{step} {ns / count / 1e3:.0f} us" for step, ns in self.ns.items())


def _time_publish_lock(steps: _Steps) -> None:
    """Count the publish lock's wait and hold times into ``steps`` (a diagnostic)."""
    from ramxchg._store.sequence import PublishLock

    enter, leave = PublishLock.__enter__, PublishLock.__exit__

    def timed_enter(lock: PublishLock) -> int:
        waited = time.perf_counter_ns()
        fd = enter(lock)
        taken = time.perf_counter_ns()
        steps.ns["lock wait"] = steps.ns.get("lock wait", 0) + taken - waited
        lock.taken_ns = taken  # type: ignore[attr-defined]
        return fd

    def timed_exit(lock: PublishLock, *exc_info: Any) -> None:
        held = time.perf_counter_ns() - lock.taken_ns  # type: ignore[attr-defined]
        steps.ns["lock held"] = steps.ns.get("lock held", 0) + held
        leave(lock, *exc_info)

    PublishLock.__enter__ = timed_enter  # type: ignore[method-assign]
    PublishLock.__exit__ = timed_exit  # type: ignore[method-assign,assignment]


def producer(stream: Stream, out: str | None, lock_times: bool, report: Any) -> None:
    """Put ``count`` messages, one per free place in the window."""
    path, window, count, nbytes = stream
    steps, locks = _Steps(), _Steps()
    if lock_times:
        _time_publish_lock(locks)
    channel = Channel(Path(path))
    message = np.resize(np.arange(251, dtype=np.uint8), nbytes)
    profile = _profiled(out is not None)
    for index in range(count):
        window.acquire()
        steps.start()
        channel.put(message)
        steps.took("put")
        if index == 0:  # as the consumer: no start-up
            steps.ns.clear()
            locks.ns.clear()
    profile.disable()
    if out is not None:
        profile.dump_stats(out)
    report.put(("producer", steps.per_item(count - 1), locks.per_item(count - 1)))


def consumer(stream: Stream, out: str | None, lock_times: bool, ready: Any, report: Any) -> None:
    """Take, read, close and ack ``count`` items; report the rate."""
    path, window, count, nbytes = stream
    buffer = np.zeros(nbytes, np.uint8)
    steps, locks = _Steps(), _Steps()
    if lock_times:
        _time_publish_lock(locks)
    with Channel(Path(path)).subscribe(GROUP) as subscription:
        ready.set()
        profile = _profiled(out is not None)
        started = 0.0
        for index in range(count):
            steps.start()
            item = subscription.get()
            steps.took("get")
            np.copyto(buffer, item.array.reshape(-1).view(np.uint8))
            item.close()
            steps.took("read")
            item.ack()
            steps.took("ack")
            window.release()
            if index == 0:
                started = time.perf_counter()  # from the first item on: no start-up
                steps.ns.clear()
                locks.ns.clear()
        seconds = time.perf_counter() - started
        profile.disable()
    if out is not None:
        profile.dump_stats(out)
    rate = (count - 1) / seconds
    print(f"{rate:.0f} items/s, {rate * nbytes / 1e9:.3f} GB/s")
    report.put(("consumer", steps.per_item(count - 1), locks.per_item(count - 1)))


def _reports(report: Any, processes: tuple[Any, ...]) -> list[tuple[str, str, str]]:
    """Both processes' step times; fails if one of them dies without sending its own."""
    reports: list[tuple[str, str, str]] = []
    while len(reports) < len(processes):
        try:
            reports.append(report.get(timeout=1))
        except queue.Empty:
            dead = [p.name for p in processes if not p.is_alive() and p.exitcode != 0]
            if dead:
                raise SystemExit(f"{', '.join(dead)} died (see its traceback above)") from None
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--root", default="/dev/shm")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--lock-times", action="store_true")
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
        window, ready, report = ctx.Semaphore(args.window), ctx.Event(), ctx.Queue()
        stream = (str(channel.path), window, args.count, args.size)
        taker = ctx.Process(
            target=consumer, args=(stream, stats.get("consumer"), args.lock_times, ready, report)
        )
        taker.start()
        ready.wait()
        maker = ctx.Process(
            target=producer, args=(stream, stats.get("producer"), args.lock_times, report)
        )
        maker.start()
        for who, steps, locks in _reports(report, (maker, taker)):
            print(f"{who}: {steps}" + (f"; publish lock: {locks}" if locks else ""))
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
