"""HDF5 items beside .npy items and beside plain h5py, side by side in one run.

Usage::

    python benchmarks/bench_hdf5.py [--sizes-mb 64 512] [--repeat 7]

Prints a markdown table of medians: put, create+fill and read (map) GB/s for
ramxchg HDF5 and .npy items, and write/read GB/s for plain h5py (``create_dataset``
with data, ``dataset[()]``), all on the same tmpfs. Each measurement is warmed up
first and the operations are interleaved, so a noisy machine slows all alike.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ramxchg import Channel, default_root


def _timed(run: Callable[[], object], cleanup: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    cleanup()
    return elapsed


def _cases(ch: Channel, folder: Path, data: np.ndarray) -> dict[str, Callable[[], float]]:
    """name -> one timed run (cleaning up after itself)."""
    plain = folder / "plain.h5"
    with h5py.File(folder / "plain_read.h5", "w") as h5file:
        h5file["data"] = data
    ch.put(data, "npy_read", format="npy")
    ch.put(data, "h5_read", format="hdf5")

    def put(fmt: str) -> float:
        return _timed(lambda: ch.put(data, "p", format=fmt), lambda: ch.delete("p"))

    def create_fill(fmt: str) -> float:
        def run() -> None:
            with ch.create(data.shape, data.dtype, "c", format=fmt) as array:
                array[...] = data

        return _timed(run, lambda: ch.delete("c"))

    def read_map(name: str) -> float:
        def run() -> None:
            ch.get(name).array  # noqa: B018

        return _timed(run, lambda: None)

    def h5py_write() -> float:
        def run() -> None:
            with h5py.File(plain, "w") as h5file:
                h5file.create_dataset("data", data=data)

        return _timed(run, plain.unlink)

    def h5py_read() -> float:
        def run() -> None:
            with h5py.File(folder / "plain_read.h5", "r", locking=False) as h5file:
                h5file["data"][()]

        return _timed(run, lambda: None)

    return {
        "npy put": lambda: put("npy"),
        "hdf5 put": lambda: put("hdf5"),
        "npy create+fill": lambda: create_fill("npy"),
        "hdf5 create+fill": lambda: create_fill("hdf5"),
        "h5py write": h5py_write,
        "npy read (map)": lambda: read_map("npy_read"),
        "hdf5 read (map)": lambda: read_map("h5_read"),
        "h5py read (copy)": h5py_read,
    }


def run(sizes_mb: list[int], repeat: int) -> str:
    """Measure and return the markdown table."""
    folder = Path(tempfile.mkdtemp(prefix="ramxchg-bench-", dir=default_root()))
    rows = []
    try:
        for size_mb in sizes_mb:
            data = np.random.default_rng(0).random(size_mb * (1 << 20) // 8)
            ch = Channel(f"bench{size_mb}", root=folder)
            cases = _cases(ch, folder, data)
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(2):  # warm-up: page cache, allocator, imports
                for case in cases.values():
                    case()
            for _ in range(repeat):
                for name, case in cases.items():
                    times[name].append(case())
            medians = {name: statistics.median(ts) for name, ts in times.items()}
            for name, median in medians.items():
                rows.append((size_mb, name, data.nbytes / median / 1e9, median * 1e3))
            rows.append(
                (size_mb, "ratio hdf5 put / npy put", medians["hdf5 put"] / medians["npy put"], 0)
            )
            shutil.rmtree(ch.path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = ["| size | operation | GB/s | median ms |", "| ---: | --- | ---: | ---: |"]
    for size_mb, name, rate, ms in rows:
        if name.startswith("ratio"):
            lines.append(f"| {size_mb} MB | **{name}** | **{rate:.2f}x** | |")
        else:
            lines.append(f"| {size_mb} MB | {name} | {rate:.2f} | {ms:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.platform()} h5py {h5py.version.version}")
    print(f"HDF5 {h5py.version.hdf5_version}, numpy {np.__version__}, repeat {args.repeat}\n")
    print(run(args.sizes_mb, args.repeat))


if __name__ == "__main__":
    main()
