"""The floor of a file-per-item hand-off in Python, and what each safety step costs.

Usage::

    python benchmarks/bench_floor.py [--sizes 1M 64K] [--repeat 3] [--json]

``ramxchg bench``'s harness (the same processes, window, byte check and timing), with
ramxchg's ``put`` row and np.save/np.load on the real disk side by side with a ladder of
hand-offs that are *not* ramxchg: each does what a file-per-item design cannot do
without, plus one more of the things ramxchg does for safety, and nothing else.

- ``floor``: recycled files only. The producer copies the message into a file it keeps
  mapped and renames it into the channel folder; the consumer, woken by inotify, reads
  it through a mapping it keeps and renames it back into the pool. No header, no
  metadata, no locks, no crash recovery: ~2 system calls per item on each side.
- ``+ sidecar``: the producer also writes each item's metadata file (the sidecar:
  create, write, rename into place), the consumer reads it and deletes it.
- ``+ claim/ack``: the consumer also claims the item (a file created exclusively) and
  acks it (that file renamed), as a durable group does, and the ack is removed with
  the item.
- ``+ reader/writer locks``: protocol 1.1's file locks as well. The producer holds a
  pooled file's exclusive lock while it writes it; the consumer holds a shared lock
  on the item file while it reads it (open, lock, close).
- ``+ publish lock``: the producer publishes under the publish lock (open the counter
  file, lock it, read and write the number, close) and the consumer acks under it.

ramxchg's row pays for these and the rest: the sequence number in names and sidecars,
the ``.npy`` header, name checks, the checks that guard the reuse of a name and of a
file, the bounds on the pool, and the Python around them. The distance from each step
to the next is what that step costs.
Not a test: compare rows of one run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import mmap
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ramxchg.bench.runner import BenchConfig, memcpy_gbps, run_transports, work_folder
from ramxchg.bench.suite import DISK_FOLDER
from ramxchg.bench.transports import Receiver, Sender, Transport
from ramxchg.bench.transports_files import ChannelTransport, NpyDiskTransport
from ramxchg.disks import format_size, parse_size

#: Steps of the ladder, in order: each does what the one before does, and one thing more.
STEPS = ("floor", "sidecar", "claim", "file_locks", "publish_lock")
_EVENT = struct.Struct("iIII")  # struct inotify_event, before its name


class _FloorSender(Sender):
    def __init__(self, folder: str, step: int) -> None:
        self.folder, self.step = folder, step
        self.pool = os.path.join(folder, "pool")
        self.maps: dict[str, np.ndarray] = {}  # file id -> the producer's mapping
        self.fds: dict[str, int] = {}  # file id -> a descriptor to lock it by
        self.free: list[str] = []
        self.seq = 0

    def _file(self, nbytes: int) -> str:
        """A pooled file's id (listed again when the last listing is used up) or a new one."""
        if not self.free:
            listed = os.listdir(self.pool)
            self.free = [f for f in listed if f in self.maps and self.maps[f].size == nbytes]
        if self.free:
            return self.free.pop()
        ident = f"f{len(self.maps)}"
        fd = os.open(os.path.join(self.pool, ident), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.posix_fallocate(fd, 0, nbytes)
        self.maps[ident] = np.frombuffer(mmap.mmap(fd, nbytes), np.uint8)
        self.fds[ident] = fd
        return ident

    def send(self, message: np.ndarray) -> None:
        ident = self._file(message.nbytes)
        if self.step >= 3:
            fcntl.flock(self.fds[ident], fcntl.LOCK_EX | fcntl.LOCK_NB)
        np.copyto(self.maps[ident], message.reshape(-1))
        if self.step >= 4:
            publish_lock = _lock_counter(self.folder, count=True)
        self.seq += 1
        name = f"{self.seq:012d}.{ident}"
        if self.step >= 1:  # the sidecar goes first: an item never appears without it
            tmp = os.path.join(self.folder, "meta", f".{name}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, json.dumps({"seq": self.seq, "size": message.nbytes}).encode())
            os.close(fd)
            os.rename(tmp, os.path.join(self.folder, "meta", name))
        if self.step >= 3:  # written: readers may lock it as soon as it is published
            fcntl.flock(self.fds[ident], fcntl.LOCK_UN)
        os.rename(os.path.join(self.pool, ident), os.path.join(self.folder, name))
        if self.step >= 4:
            os.close(publish_lock)


def _lock_counter(folder: str, *, count: bool = False) -> int:
    """The publish lock: the counter file, open and locked (and its number moved on)."""
    fd = os.open(os.path.join(folder, "seq"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if count:
        number = int(os.pread(fd, 32, 0) or b"0") + 1
        os.pwrite(fd, b"%020d" % number, 0)
    return fd


class _FloorReceiver(Receiver):
    def __init__(self, folder: str, step: int) -> None:
        from watchdog.observers import inotify_c

        self.folder, self.step = folder, step
        self.fd = inotify_c.inotify_init()
        moved_in = inotify_c.InotifyConstants.IN_MOVED_TO
        if self.fd < 0 or inotify_c.inotify_add_watch(self.fd, os.fsencode(folder), moved_in) < 0:
            raise OSError(f"cannot watch {folder} with inotify")
        self.names: list[str] = []
        self.maps: dict[str, np.ndarray] = {}  # file id -> the consumer's mapping
        self.current = ""
        self.reader = -1

    def _wait(self) -> None:
        buffer = os.read(self.fd, 65536)
        offset = 0
        while offset < len(buffer):
            _, _, _, length = _EVENT.unpack_from(buffer, offset)
            start = offset + _EVENT.size
            self.names.append(buffer[start : start + length].rstrip(b"\0").decode())
            offset = start + length
        self.names.sort(reverse=True)  # pop() takes the oldest

    def recv(self, nbytes: int) -> np.ndarray:
        while not self.names:
            self._wait()
        self.current = name = self.names.pop()
        if self.step >= 1:
            with open(os.path.join(self.folder, "meta", name), "rb") as sidecar:
                json.loads(sidecar.read())
        if self.step >= 2:
            claim = os.path.join(self.folder, "claims", name)
            os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        if self.step >= 3:
            self.reader = os.open(os.path.join(self.folder, name), os.O_RDONLY)
            fcntl.flock(self.reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
        pooled = _pooled_name(name)
        view = self.maps.get(pooled)
        if view is None or view.size != nbytes:
            fd = os.open(os.path.join(self.folder, name), os.O_RDONLY)
            try:
                view = np.frombuffer(mmap.mmap(fd, nbytes, prot=mmap.PROT_READ), np.uint8)
            finally:
                os.close(fd)
            self.maps[pooled] = view
        return view

    def done(self) -> None:
        name = self.current
        if self.step >= 3:
            os.close(self.reader)  # the reader lock goes with it
        if self.step >= 4:
            publish_lock = _lock_counter(self.folder)
        if self.step >= 2:
            ack = os.path.join(self.folder, "acks", name)
            os.rename(os.path.join(self.folder, "claims", name), ack)
        os.rename(
            os.path.join(self.folder, name), os.path.join(self.folder, "pool", _pooled_name(name))
        )
        if self.step >= 1:
            os.unlink(os.path.join(self.folder, "meta", name))
        if self.step >= 2:
            os.unlink(ack)
        if self.step >= 4:
            os.close(publish_lock)

    def close(self) -> None:
        os.close(self.fd)


def _pooled_name(name: str) -> str:
    """The pooled file's name (its id) in an item's name ``<seq>.<id>``."""
    return name.partition(".")[2]


class FloorTransport(Transport):
    """One step of the ladder (see the module's docstring) in a folder under the workdir."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.name = f"ladder_{STEPS[step]}"
        self.label = (
            "floor: rename in, rename back",
            "+ sidecar",
            "+ claim/ack",
            "+ reader/writer locks",
            "+ publish lock",
        )[step]

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        folder = tempfile.mkdtemp(prefix=f"{self.name}-", dir=workdir)  # one per pair
        for sub in ("pool", "meta", "claims", "acks"):
            os.mkdir(os.path.join(folder, sub))
        return folder

    def close_link(self, link: Any) -> None:
        shutil.rmtree(link)  # the next pair starts as cold as this one

    def sender(self, link: Any) -> Sender:
        return _FloorSender(link, self.step)

    def receiver(self, link: Any) -> Receiver:
        return _FloorReceiver(link, self.step)


def main() -> None:
    """Run the ladder beside ``put`` and the disk; print a markdown table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size("1M")])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    transports: list[Transport] = [
        ChannelTransport("ramxchg_put", "ramxchg put", "npy"),
        *(FloorTransport(step) for step in range(len(STEPS))),
        NpyDiskTransport(DISK_FOLDER),
    ]
    config = BenchConfig(sizes=tuple(args.sizes), repeat=args.repeat)
    memcpy = memcpy_gbps()
    with work_folder() as workdir:
        entries = run_transports(transports, config, workdir, lambda _: None)
    if args.json:
        print(json.dumps({"memcpy_gbps": memcpy, "transports": entries}, indent=1))
    else:
        print(markdown(entries, memcpy))


def markdown(entries: list[dict[str, Any]], memcpy: float) -> str:
    """GB/s per row and size, median (min-max), and its ratio to the disk's and to put's."""
    by_name = {e["name"]: {r["size"]: r for r in e["results"]} for e in entries}
    lines = [
        f"memcpy {memcpy:.1f} GB/s",
        "",
        "| hand-off | size | GB/s | / np.save+np.load | / ramxchg put |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        for size, result in by_name[entry["name"]].items():
            if result.get("error"):
                error = result["error"].splitlines()[0]
                lines.append(f"| {entry['label']} | {format_size(size)} | {error} | | |")
                continue
            gbps = result["gbps"]
            ratios = [
                _ratio(gbps["median"], by_name.get(name, {}).get(size))
                for name in ("npy_disk", "ramxchg_put")
            ]
            lines.append(
                f"| {entry['label']} | {format_size(size)} | {gbps['median']:.2f} "
                f"({gbps['min']:.2f}-{gbps['max']:.2f}) | {ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def _ratio(gbps: float, reference: dict[str, Any] | None) -> str:
    if reference is None or reference.get("error"):
        return "-"
    return f"{gbps / reference['gbps']['median']:.2f}x"


if __name__ == "__main__":
    main()
