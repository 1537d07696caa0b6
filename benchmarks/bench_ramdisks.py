"""put/read GB/s of one array on /dev/shm, on a huge-page tmpfs and on the real disk.

Usage::

    sudo python benchmarks/bench_ramdisks.py [--size-mb 512] [--repeat 7] [--disk /var/tmp]

Side by side in one run, interleaved round by round so a noisy machine slows every
target alike; two warm-up rounds first; medians. ``put`` is `Channel.put` (write into a
hidden file + atomic publish); ``read`` maps the published item and copies it into a
preallocated array (every page touched). The huge-page tmpfs is mounted for the run
through the tmpfs adapter (root only) and unmounted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ramxchg import Channel
from ramxchg.bench.suite import huge_tmpfs
from ramxchg.disks import probe as ramdisk


@contextmanager
def _temp_root(base: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ramxchg-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _put(ch: Channel, data: np.ndarray) -> float:
    start = time.perf_counter()
    ch.put(data, "put")
    elapsed = time.perf_counter() - start
    ch.delete("put")
    return elapsed


def _read(ch: Channel, out: np.ndarray) -> float:
    start = time.perf_counter()
    with ch.get("read") as item:
        np.copyto(out, item.array)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--disk", default="/var/tmp", help="a folder on the real disk")
    args = parser.parse_args()
    nbytes = args.size_mb * 10**6
    data = np.random.default_rng(0).random(nbytes // 8)
    out = np.empty_like(data)

    with ExitStack() as stack:
        roots = {"/dev/shm (tmpfs, 4 KiB pages)": stack.enter_context(_temp_root("/dev/shm"))}
        huge, skipped = stack.enter_context(huge_tmpfs(3 * nbytes))
        if huge is not None:
            roots["tmpfs huge=within_size"] = Path(huge)
        else:
            print(f"skipping the huge-page tmpfs: {skipped}")
        roots[f"disk ({args.disk})"] = stack.enter_context(_temp_root(args.disk))
        channels = {}
        for label, root in roots.items():
            disk = ramdisk.info(root)
            print(f"{label}: {disk.fs_type} at {disk.mount_point}, huge pages {disk.huge_pages}")
            channels[label] = Channel("bench", root=root)
            channels[label].put(data, "read")
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.warmup + args.repeat):
            for label, ch in channels.items():
                for op, elapsed in (("put", _put(ch, data)), ("read", _read(ch, out))):
                    if round_ >= args.warmup:
                        times.setdefault((label, op), []).append(elapsed)
        np.testing.assert_array_equal(out, data)

    print(
        f"\n{args.size_mb} MB float64, {args.warmup} warm-up + {args.repeat} rounds, medians; "
        f"{platform.node()} kernel {platform.release()}, {os.cpu_count()} cores\n"
    )
    base = {op: statistics.median(times[(next(iter(channels)), op)]) for op in ("put", "read")}
    print("| target | put GB/s | read GB/s | put vs /dev/shm | read vs /dev/shm |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in channels:
        put = statistics.median(times[(label, "put")])
        read = statistics.median(times[(label, "read")])
        print(
            f"| {label} | {nbytes / put / 1e9:.2f} | {nbytes / read / 1e9:.2f} "
            f"| {base['put'] / put:.2f}x | {base['read'] / read:.2f}x |"
        )


if __name__ == "__main__":
    main()
