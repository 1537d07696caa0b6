"""Why large items start their data mid-page: copy speed against the offset of the data.

Usage: python benchmarks/bench_aliasing.py [--sizes 64M 512M] [--repeat 7]

A file on /dev/shm, mapped shared and pre-faulted, stands in for an item. For each data
offset within the file, one process times (median of ``--repeat``) a ``np.copyto`` from
an ordinary numpy array into the mapping (what ``put`` does into a recycled file) and
from the mapping into an ordinary array (what a consumer that reads every byte does).
numpy's large arrays come from malloc, 16 bytes past a page boundary. When a copy's
destination is a little ahead of its source modulo 4 KiB, loads alias earlier stores
(4K aliasing) and glibc's large-copy loop slows down; offset 128 (a plain 64-aligned
.npy header) and offset 0 or 4096 (page-aligned data) each hit it in one direction.
Not a test: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

from ramxchg.disks import format_size, parse_size

OFFSETS = (0, 64, 128, 1024, 2048, 4096)


def median_seconds(run: Callable[[], None], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``run``, after one to warm up."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(nbytes: int, repeat: int) -> list[tuple[int, float, float]]:
    """(offset, write ms, read ms) for each offset in `OFFSETS`."""
    source = np.full(nbytes, 3, np.uint8)
    target = np.zeros(nbytes, np.uint8)
    span = nbytes + OFFSETS[-1]
    with tempfile.TemporaryFile(dir="/dev/shm") as file:
        os.ftruncate(file.fileno(), span)
        mapping = mmap.mmap(file.fileno(), span)
        whole = np.frombuffer(mapping, np.uint8)
        whole[:] = 0  # pages allocated and mapped before timing
        rows = []
        for offset in OFFSETS:
            data = whole[offset : offset + nbytes]
            write = median_seconds(lambda data=data: np.copyto(data, source), repeat) * 1e3
            read = median_seconds(lambda data=data: np.copyto(target, data), repeat) * 1e3
            rows.append((offset, write, read))
        del whole, data
        mapping.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[64 << 20, 512 << 20])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("size\tdata offset\twrite ms\tread ms")
    for nbytes in args.sizes:
        for offset, write, read in measure(nbytes, args.repeat):
            print(f"{format_size(nbytes)}\t{offset}\t{write:.1f}\t{read:.1f}")


if __name__ == "__main__":
    main()
