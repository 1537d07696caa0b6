"""What an item in a new file costs: ``put`` against ``create`` filled in place.

Usage: python benchmarks/bench_newfile.py [--root /dev/shm] [--sizes 64M 512M] [--repeat 7]

Recycled files carry a stream's items once the pool has enough of them (see
ramxchg/_store/pool.py); until then, and whenever more items are in flight than ever
before, a producer makes a new file. ``put`` writes a new file with ``writev``: the
kernel allocates each page and copies into it, with no page mapped anywhere. ``create``
lends the file's pages to be filled in place, so they must be allocated *and* mapped
into the producer before the block runs (a page first touched through a mapping is
zeroed and faulted in; populated up front so a full disk fails with ENOSPC, not
SIGBUS). This times, in one process (median of ``--repeat``, rounds interleaved):

- ``put``: ``Channel.put`` of an existing array, with ``recycle=0`` (a new file each time)
  and the item deleted after;
- ``create``: ``Channel.create`` + ``np.copyto`` from the same array, likewise;
- the three ways to get a new file's pages mapped writable, each followed by the copy:
  ``writev`` (no mapping: what ``put`` does), ``populate`` (``ftruncate`` +
  ``MADV_POPULATE_WRITE``) and ``fallocate + populate`` (what ``create`` does since
  this script was written).

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

from ramxchg import Channel
from ramxchg.disks import format_size, parse_size

_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _writev(fd: int, message: np.ndarray) -> None:
    os.writev(fd, [memoryview(message)])


def _mapped(fd: int, message: np.ndarray, *, fallocate: bool) -> None:
    os.ftruncate(fd, message.nbytes)
    if fallocate:
        os.posix_fallocate(fd, 0, message.nbytes)
    with mmap.mmap(fd, message.nbytes) as mapping:
        mapping.madvise(_MADV_POPULATE_WRITE)
        np.copyto(np.frombuffer(mapping, np.uint8), message)


#: name -> how to get ``message`` into the new file ``fd``
RAW_WAYS: dict[str, Callable[[int, np.ndarray], None]] = {
    "writev": _writev,
    "populate": lambda fd, message: _mapped(fd, message, fallocate=False),
    "fallocate + populate": lambda fd, message: _mapped(fd, message, fallocate=True),
}


def measure(root: str, nbytes: int, repeat: int) -> dict[str, float]:
    """Median ms per new file for each way, rounds interleaved after one warm-up round."""
    message = np.resize(np.arange(251, dtype=np.uint8), nbytes)
    folder = tempfile.mkdtemp(prefix="bench-newfile-", dir=root)
    channel = Channel("newfile", folder, recycle=0)

    def put() -> None:
        channel.delete(channel.put(message).name)

    def create() -> None:
        with channel.create(message.shape, np.uint8, name="x") as array:
            np.copyto(array, message)
        channel.delete("x")

    def raw(way: Callable[[int, np.ndarray], None]) -> Callable[[], None]:
        def run() -> None:
            path = os.path.join(folder, "raw")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                way(fd, message)
            finally:
                os.close(fd)
                os.unlink(path)

        return run

    runs = {"put": put, "create": create} | {name: raw(way) for name, way in RAW_WAYS.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for round_no in range(repeat + 1):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if round_no:  # the first round warms up
                    times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        channel.drop()
        os.rmdir(folder)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/dev/shm")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[64 << 20, 512 << 20])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("size\tway\tms per new file\tx put")
    for nbytes in args.sizes:
        medians = measure(args.root, nbytes, args.repeat)
        for name, ms in medians.items():
            print(f"{format_size(nbytes)}\t{name}\t{ms:.1f}\t{ms / medians['put']:.2f}")


if __name__ == "__main__":
    main()
