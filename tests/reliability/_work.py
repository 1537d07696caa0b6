"""Code shared by the scenarios: random items with checksums, and resource counts.

Functions here run in child processes started with the 'spawn' context, so they live
in an importable module and take only picklable arguments.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from typing import Any

import numpy as np

from ramxchg import Channel, Item

DTYPES = ["u1", "<i2", "<u4", "<f4", "<f8", "<c8", "?", "<i8", "S3", [("a", "<i4"), ("b", "<f8")]]


def warm_up() -> None:
    """Import what ramxchg imports lazily (h5py runs ``uname -p`` on import), so an audit
    attached afterwards sees the steady state, not the interpreter loading libraries."""
    import h5py  # noqa: F401


def logged_warnings() -> list[str]:
    """A list that collects, from now on, every warning ramxchg logs in this process."""
    found: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                found.append(record.getMessage())

    logging.getLogger("ramxchg").addHandler(Spy())
    return found


def checksum(array: np.ndarray) -> int:
    """CRC32 of the array's bytes in C order."""
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def random_array(rng: np.random.Generator, max_bytes: int) -> np.ndarray:
    """An array of a random dtype and a log-uniform size from 1 byte to ``max_bytes``."""
    nbytes = int(math.exp(rng.uniform(0, math.log(max_bytes))))
    dtype = np.dtype(DTYPES[int(rng.integers(len(DTYPES)))])
    count = max(1, nbytes // dtype.itemsize)
    raw = rng.integers(0, 256, size=count * dtype.itemsize, dtype=np.uint8)
    if dtype.kind == "b":
        raw &= 1  # numpy bools must be 0 or 1
    return raw.view(dtype)


def publish_random(ch: Channel, rng: np.random.Generator, max_bytes: int, **extra: Any) -> None:
    """Publish one random array, by ``put`` or ``create`` and as .npy or HDF5 at random.

    ``extra`` goes into the attrs (e.g. an ``id`` the consumers report back).
    """
    array = random_array(rng, max_bytes)
    fmt = "hdf5" if rng.random() < 0.3 else "npy"
    attrs = {"crc": checksum(array), "n": int(array.size), **extra}
    if rng.random() < 0.5:
        ch.put(array, attrs=attrs, format=fmt)
        return
    with ch.create(array.shape, array.dtype, attrs=attrs, format=fmt) as target:
        target[...] = array


def intact(item: Item) -> bool:
    """True when the item's data matches the checksum its producer stored with it."""
    attrs = item.attrs
    array = item.array
    return int(array.size) == attrs["n"] and checksum(array) == attrs["crc"]


def resources() -> tuple[int, int]:
    """(open file descriptors, memory mappings) of this process."""
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as maps:
        return fds, sum(1 for _ in maps)
