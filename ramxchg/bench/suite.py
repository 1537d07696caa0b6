"""The set of transports ``ramxchg bench`` compares, the huge-page tmpfs, and the ratios."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import RamDiskError
from ..disks import DiskSpec, get_adapter
from ..ramdisk import info
from .runner import BenchConfig, machine, memcpy_gbps, run_transport, work_folder
from .transports import PipeTransport, QueueTransport, SharedMemoryTransport, Transport
from .transports_files import ChannelTransport, NpyDiskTransport
from .transports_ray import RayTransport

log = logging.getLogger(__name__)

#: Where np.save/np.load runs: a folder on the real disk (checked not to be tmpfs).
DISK_FOLDER = "/var/tmp"
#: Size limit of the huge-page tmpfs (a limit: memory is used only by what is stored).
HUGE_TMPFS_BYTES = 4 << 30
#: Pool size of the recycling variants (Channel(recycle=...)).
RECYCLE = 4
#: JSON format version of `run_bench`'s result.
VERSION = 1


#: The channel transports that run on a huge-page tmpfs: (name, label, mode).
HUGE_TRANSPORTS = (
    ("ramxchg_put_huge", "ramxchg put, huge tmpfs", "npy"),
    ("ramxchg_create_huge", "ramxchg create, huge tmpfs", "create"),
)


def transports(huge_root: str | None, huge_skip: str | None) -> list[Transport]:
    """Every transport, in the order the table shows them."""
    found: list[Transport] = [
        ChannelTransport("ramxchg_put", "ramxchg put", "npy"),
        ChannelTransport("ramxchg_create", "ramxchg create", "create"),
        ChannelTransport("ramxchg_put_recycle", "ramxchg put, recycle", "npy", recycle=RECYCLE),
        ChannelTransport(
            "ramxchg_create_recycle", "ramxchg create, recycle", "create", recycle=RECYCLE
        ),
        ChannelTransport("ramxchg_hdf5", "ramxchg hdf5 put", "hdf5"),
        QueueTransport(),
        PipeTransport(),
        SharedMemoryTransport(),
        NpyDiskTransport(DISK_FOLDER),
        RayTransport(),
    ]
    for name, label, mode in HUGE_TRANSPORTS:
        found.append(ChannelTransport(name, label, mode, huge_root, skip=huge_skip))
    return found


#: Every transport's name, in table order (``--only`` takes these).
TRANSPORT_NAMES = tuple(transport.name for transport in transports(None, None))


@contextmanager
def huge_tmpfs(size: int = HUGE_TMPFS_BYTES) -> Iterator[tuple[str | None, str | None]]:
    """Mount a ``huge=within_size`` tmpfs in a temp folder: (path, None) or (None, reason).

    ``size`` is a limit: memory is used only by what is stored.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        yield None, "needs root (mounts a huge=within_size tmpfs)"
        return
    adapter = get_adapter()
    path = tempfile.mkdtemp(prefix="ramxchg-bench-huge-")
    try:
        adapter.mount(DiskSpec(path, size, mode=0o700, huge=True))
    except RamDiskError as exc:
        os.rmdir(path)
        yield None, f"could not mount a huge-page tmpfs: {exc}"
        return
    try:
        policy = info(path).huge_pages
        if policy != "within_size":
            yield None, f"the tmpfs got huge pages policy {policy!r}, not within_size"
        else:
            yield path, None
    finally:
        adapter.unmount(path, force=True)
        with contextlib.suppress(OSError):
            os.rmdir(path)


def add_ratios(entries: list[dict[str, Any]], memcpy: float) -> None:
    """Add ``ratio_memcpy`` and ``ratio_queue`` to every result (GB/s ratios; for
    latency, ``latency_vs_queue`` = p50 / Queue's p50: below 1 is faster than Queue)."""
    queue = next((e for e in entries if e["name"] == "queue"), None)
    by_size = {r["size"]: r for r in queue["results"] if not r.get("error")} if queue else {}
    for entry in entries:
        for result in entry["results"]:
            if result.get("error"):
                continue
            gbps = result["gbps"]["median"]
            result["ratio_memcpy"] = gbps / memcpy
            reference = by_size.get(result["size"])
            result["ratio_queue"] = gbps / reference["gbps"]["median"] if reference else None
            result["latency_vs_queue"] = (
                result["p50_us"]["median"] / reference["p50_us"]["median"] if reference else None
            )


def run_bench(config: BenchConfig, tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the benchmark; the result is the ``--json`` document (see `ramxchg.bench`)."""
    started = time.monotonic()
    tick("memcpy")
    memcpy = memcpy_gbps(64 << 20 if config.quick else 256 << 20)
    entries = []
    # Mount the huge-page tmpfs (root, 4 GB limit) only when one of its transports runs.
    wants_huge = not config.only or any(name in config.only for name, _, _ in HUGE_TRANSPORTS)
    huge = huge_tmpfs() if wants_huge else contextlib.nullcontext((None, "not selected"))
    with work_folder() as workdir, huge as (huge_root, huge_skip):
        for transport in transports(huge_root, huge_skip):
            if config.only and transport.name not in config.only:
                continue
            entries.append(run_transport(transport, config, workdir, tick))
    add_ratios(entries, memcpy)
    return {
        "version": VERSION,
        "machine": machine(),
        "config": {"sizes": list(config.sizes), "repeat": config.repeat, "quick": config.quick},
        "memcpy_gbps": memcpy,
        "disk_folder": DISK_FOLDER,
        "seconds": time.monotonic() - started,
        "transports": entries,
    }
