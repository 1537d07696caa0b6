"""The set of transports ``ramxchg bench`` compares, and the huge-page tmpfs."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from .. import RamDiskError
from ..disks import DiskSpec, get_adapter
from ..disks.probe import info
from .ratios import add_ratios
from .runner import BenchConfig, machine, memcpy_gbps, run_transports, window_for, work_folder
from .transports import PipeTransport, QueueTransport, SharedMemoryTransport, Transport
from .transports_files import ArrowTransport, ChannelTransport, NpyDiskTransport
from .transports_iceoryx2 import IceoryxTransport
from .transports_ray import RayTransport

log = logging.getLogger(__name__)

#: Where np.save/np.load runs: a folder on the real disk (checked not to be tmpfs).
DISK_FOLDER = "/var/tmp"
#: Where the Arrow IPC files go: the RAM disk every Linux has (checked to be RAM).
SHM_FOLDER = "/dev/shm"
#: Size limit of the huge-page tmpfs (a limit: memory is used only by what is stored).
HUGE_TMPFS_BYTES = 4 << 30
#: The huge-page tmpfs folder's name: this prefix, the benchmark's pid, "-", random.
HUGE_PREFIX = "ramxchg-bench-huge-"
#: JSON format version of `run_bench`'s result (2: ramxchg's rows are the defaults,
#: recycling on; the ``recycle=0`` rows, iceoryx2, Arrow and ``vs_peers`` are new).
VERSION = 2


#: The channel transports that run on a huge-page tmpfs: (name, label, mode).
HUGE_TRANSPORTS = (
    ("ramxchg_put_huge", "ramxchg put, huge tmpfs", "npy"),
    ("ramxchg_create_huge", "ramxchg create, huge tmpfs", "create"),
)


def transports(
    huge_root: str | None, huge_skip: str | None, sizes: tuple[int, ...] = ()
) -> list[Transport]:
    """Every transport, in the order the table shows them, for a run of ``sizes``."""
    found: list[Transport] = [
        ChannelTransport("ramxchg_put", "ramxchg put", "npy"),
        ChannelTransport("ramxchg_create", "ramxchg create", "create"),
        ChannelTransport("ramxchg_put_norecycle", "ramxchg put, recycle=0", "npy", recycle=0),
        ChannelTransport(
            "ramxchg_create_norecycle", "ramxchg create, recycle=0", "create", recycle=0
        ),
        ChannelTransport("ramxchg_hdf5", "ramxchg hdf5 put", "hdf5"),
        QueueTransport(),
        PipeTransport(),
        SharedMemoryTransport(),
        NpyDiskTransport(DISK_FOLDER),
        RayTransport(max((window_for(n) * n for n in sizes), default=0)),
        IceoryxTransport(),
        ArrowTransport(SHM_FOLDER),
    ]
    for name, label, mode in HUGE_TRANSPORTS:
        found.append(ChannelTransport(name, label, mode, huge_root, skip=huge_skip))
    return found


#: Every transport's name, in table order (``--only`` takes these).
TRANSPORT_NAMES = tuple(transport.name for transport in transports(None, None))


@contextmanager
def huge_tmpfs(size: int = HUGE_TMPFS_BYTES) -> Iterator[tuple[str | None, str | None]]:
    """Mount a ``huge=within_size`` tmpfs in a temp folder: (path, None) or (None, reason).

    ``size`` is a limit: memory is used only by what is stored. Mounts that killed
    benchmarks left behind are removed first (`unmount_stale`).
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        yield None, "needs root (mounts a huge=within_size tmpfs)"
        return
    adapter = get_adapter()
    unmount_stale(adapter)
    path = tempfile.mkdtemp(prefix=f"{HUGE_PREFIX}{os.getpid()}-")
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


def unmount_stale(adapter: Any, folder: str | None = None) -> list[str]:
    """Unmount and remove the huge-page tmpfs folders of benchmarks that died (killed
    before they could unmount theirs); returns their paths.

    A folder is named after the pid of the benchmark that made it; one whose process is
    alive is left alone (a pid reused since only delays the clean-up).
    """
    removed = []
    pattern = os.path.join(glob.escape(folder or tempfile.gettempdir()), HUGE_PREFIX + "*-*")
    for path in glob.glob(pattern):
        pid = os.path.basename(path)[len(HUGE_PREFIX) :].split("-")[0]
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        try:
            adapter.unmount(path, force=True, missing_ok=True)
            os.rmdir(path)
        except (RamDiskError, OSError) as exc:  # not ours to remove: leave it, say so
            log.warning("left %s of a dead benchmark alone: %s", path, exc)
            continue
        log.info("unmounted %s, left by a benchmark that died", path)
        removed.append(path)
    return removed


def run_bench(config: BenchConfig, tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the benchmark; the result is the ``--json`` document (see `ramxchg.bench`)."""
    started = time.monotonic()
    tick("memcpy")
    memcpy = memcpy_gbps(64 << 20 if config.quick else 256 << 20)
    # Mount the huge-page tmpfs (root, 4 GB limit) only when one of its transports runs.
    wants_huge = not config.only or any(name in config.only for name, _, _ in HUGE_TRANSPORTS)
    huge = huge_tmpfs() if wants_huge else contextlib.nullcontext((None, "not selected"))
    with work_folder() as workdir, huge as (huge_root, huge_skip):
        chosen = [
            transport
            for transport in transports(huge_root, huge_skip, tuple(config.sizes))
            if not config.only or transport.name in config.only
        ]
        entries = run_transports(chosen, config, workdir, tick)
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
