"""put() / create()+fill / np.save side by side on the default root, and .array mapping time.

Usage: python benchmarks/bench_core.py [--repeat 7] [--sizes 1M,64M,512M]

Each size is warmed up first (first-touch page faults are very expensive on VMs),
then the three writers run interleaved, ``--repeat`` times, each sample writing at
least 64 MB (64 items of 1 MB); the table shows medians and the ratio of each to
np.save. A last line gives the fixed cost per item: microseconds per put / np.save of
a 16-byte array (medians of ``--repeat`` samples of 2,000 items). Not a test: numbers
are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ramxchg
from ramxchg.disks import parse_size

#: Bytes written per timing sample (several items for small sizes).
BATCH_BYTES = 64 << 20


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(sizes: list[int], repeat: int, root: Path) -> list[dict[str, float]]:
    ch = ramxchg.Channel("bench-core", root=root)
    rows = []
    for nbytes in sizes:
        data = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        writers = _writers(ch, data)
        # One sample writes `batch` items (64 MB at least): a single 1 MB write lasts
        # ~0.4 ms, shorter than this VM's scheduling jitter.
        batch = max(1, BATCH_BYTES // nbytes)
        times: dict[str, list[float]] = {name: [] for name in writers}
        for writer in writers.values():  # warm-up
            writer()
        _clear(ch)
        for _ in range(repeat):
            for name, writer in writers.items():
                times[name].append(timed(lambda w=writer, n=batch: [w() for _ in range(n)]))
                _clear(ch)
        item = ch.put(data, "map-me")
        map_times = []
        for _ in range(repeat):
            again = ch.get("map-me")
            map_times.append(timed(lambda again=again: again.array))
            again.close()
        _clear(ch)
        row = {"bytes": nbytes}
        for name, samples in times.items():
            row[f"{name} GB/s"] = batch * nbytes / statistics.median(samples) / 1e9
        row["put/np.save"] = row["put GB/s"] / row["np.save GB/s"]
        row["create/np.save"] = row["create GB/s"] / row["np.save GB/s"]
        row[".array ms"] = statistics.median(map_times) * 1e3
        rows.append(row)
        del item
    return rows


def fixed_cost(repeat: int, root: Path, items: int = 2000) -> dict[str, float]:
    """Microseconds per item for a 16-byte array: what writing costs besides the bytes."""
    ch = ramxchg.Channel("bench-fixed", root=root)
    writers = _writers(ch, np.zeros(16, np.uint8))
    times: dict[str, list[float]] = {"put": [], "np.save": []}
    for _ in range(repeat + 1):  # the first round warms up
        for name, samples in times.items():
            writer = writers[name]
            samples.append(timed(lambda w=writer: [w() for _ in range(items)]) / items)
            _clear(ch)
    return {name: statistics.median(samples[1:]) * 1e6 for name, samples in times.items()}


def _writers(ch: ramxchg.Channel, data: np.ndarray) -> dict[str, Callable[[], None]]:
    """The three ways of writing ``data`` into the channel's folder, each a new file."""
    counter = iter(range(10**9))

    def put() -> None:
        ch.put(data, f"p{next(counter)}")

    def create() -> None:
        with ch.create(data.shape, data.dtype, name=f"c{next(counter)}") as out:
            out[...] = data

    def save() -> None:
        np.save(ch.path / f"s{next(counter)}.npy", data)

    return {"put": put, "create": create, "np.save": save}


def _clear(ch: ramxchg.Channel) -> None:
    for name in ch.names():
        ch.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", default="1M,64M,512M")
    parser.add_argument("--root", type=Path, default=None, help="default: ramxchg.default_root()")
    args = parser.parse_args()
    root = args.root or ramxchg.default_root()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.platform()}")
    print(f"root: {root}; repeat {args.repeat}, medians")
    scratch = Path(tempfile.mkdtemp(prefix="bench-core-", dir=root))
    try:
        rows = run(sizes, args.repeat, scratch)
        fixed = fixed_cost(args.repeat, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    header = [
        "size",
        "put GB/s",
        "create GB/s",
        "np.save GB/s",
        "put/np.save",
        "create/np.save",
        ".array ms",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        size = f"{row['bytes'] / (1 << 20):g} MB"
        cells = [size] + [f"{row[h]:.2f}" if "ms" not in h else f"{row[h]:.3f}" for h in header[1:]]
        print("| " + " | ".join(cells) + " |")
    print(
        f"fixed cost per item (16 B): put {fixed['put']:.1f} us, np.save {fixed['np.save']:.1f} us"
    )


if __name__ == "__main__":
    main()
