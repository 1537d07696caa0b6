"""The ceiling of a hand-off in which the producer copies in and the consumer copies out.

Usage: python benchmarks/bench_bandwidth.py [--size 512M] [--repeat 7]

``ramxchg bench`` times a producer that copies each message into the transport and a
consumer that copies every byte out: two copies per message, running at the same time
on different cores. Where one core's memcpy already takes the machine's memory
bandwidth, two copies at once each run at about half speed, and no transport can stream
faster than one memcpy's rate divided by two. This measures, in one process (numpy
releases the GIL while it copies):

- ``memcpy``: one thread copying ``size`` bytes (what ``ramxchg bench`` reports as memcpy);
- ``two at once``: two threads each copying ``size`` bytes between their own buffers;
- ``split in two``: one copy of ``size`` bytes split between two threads.

and prints GB/s (bytes copied per second, per copy) and the ceiling of a two-copy
hand-off, ``size / (wall time of two at once)``, as a share of memcpy. Not a test.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from bench_aliasing import median_seconds  # a sibling script: run from any folder

from ramxchg.disks import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    nbytes = args.size
    sources = [np.full(nbytes, 3, np.uint8) for _ in range(2)]
    targets = [np.zeros(nbytes, np.uint8) for _ in range(2)]
    half = nbytes // 2
    with ThreadPoolExecutor(2) as threads:

        def both(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
            for done in [threads.submit(np.copyto, target, source) for target, source in pairs]:
                done.result()

        one = median_seconds(lambda: np.copyto(targets[0], sources[0]), args.repeat)
        two = median_seconds(lambda: both(list(zip(targets, sources, strict=True))), args.repeat)
        split = median_seconds(
            lambda: both(
                [
                    (targets[0][:half], sources[0][:half]),
                    (targets[0][half:], sources[0][half:]),
                ]
            ),
            args.repeat,
        )
    memcpy = nbytes / one / 1e9
    print(f"memcpy, one thread:     {memcpy:6.2f} GB/s")
    print(f"two copies at once:     {nbytes / two / 1e9:6.2f} GB/s each")
    print(f"one copy split in two:  {nbytes / split / 1e9:6.2f} GB/s")
    print(f"two-copy hand-off ceiling: {nbytes / two / 1e9:.2f} GB/s = {one / two:.2f}x memcpy")


if __name__ == "__main__":
    main()
