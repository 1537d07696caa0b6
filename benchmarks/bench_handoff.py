"""Where the time of one hand-off goes: producer and consumer time per message, side by side.

Usage: python benchmarks/bench_handoff.py [--sizes 1M 64M 512M] [--modes put create slots iox]

One producer process, one consumer process (spawn), lock-step over a pipe. Per message:
the producer's time to publish (``put``; ``create`` filled with one ``np.copyto``; a
copy into one of 3 reused, pre-faulted shared mappings, ``slots``; an iceoryx2 slice
loaned, filled and sent, ``iox``), and the consumer's time to open it, copy every byte
into a buffer and let it go (ramxchg: ``get``, read, close, ``delete`` into the pool).
Three warm-up messages, then medians. Items go to a channel under /dev/shm with the
default settings (``recycle=4``). Not a test: numbers are noisy on a shared machine, so
compare rows of one run (ratios), not runs.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import multiprocessing as mp
import os
import shutil
import statistics
import time
from typing import Any

import numpy as np

import ramxchg
from ramxchg.disks import format_size, parse_size

SLOTS = 3
_MADV_POPULATE_WRITE = 23


class _Channel:
    def __init__(self, nbytes: int, root: str) -> None:
        self.channel = ramxchg.Channel(f"c{nbytes}", root)
        self.count = 0

    def send(self, message: np.ndarray, mode: str) -> str:
        self.count += 1
        name = f"m{self.count}"
        if mode == "put":
            self.channel.put(message, name)
        else:
            with self.channel.create(message.shape, message.dtype, name) as array:
                np.copyto(array, message)
            del array
        return name

    def recv(self, name: str, buffer: np.ndarray) -> None:
        with self.channel.get(name) as item:
            np.copyto(buffer, item.array)
        self.channel.delete(name)


class _Slots:
    """The floor: shared files mapped once, pre-faulted, reused round-robin."""

    def __init__(self, nbytes: int, root: str, *, writer: bool) -> None:
        self.arrays = []
        for index in range(SLOTS):
            path = os.path.join(root, f"slot{index}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT if writer else os.O_RDONLY, 0o600)
            if writer:
                os.ftruncate(fd, nbytes)
            mapping = mmap.mmap(
                fd, nbytes, access=mmap.ACCESS_WRITE if writer else mmap.ACCESS_READ
            )
            os.close(fd)
            if writer:
                mapping.madvise(_MADV_POPULATE_WRITE)
            self.arrays.append(np.frombuffer(mapping, np.uint8))
        self.next = 0

    def send(self, message: np.ndarray, mode: str) -> int:
        self.next = (self.next + 1) % SLOTS
        np.copyto(self.arrays[self.next], message)
        return self.next

    def recv(self, index: int, buffer: np.ndarray) -> None:
        np.copyto(buffer, self.arrays[index])


class _Iceoryx:
    def __init__(self, nbytes: int, tag: str, *, writer: bool) -> None:
        import iceoryx2 as iox

        self.node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
        self.service = (
            self.node.service_builder(iox.ServiceName.new(f"bench-handoff/{tag}/{nbytes}"))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .open_or_create()
        )
        if writer:
            self.port = self.service.publisher_builder().initial_max_slice_len(nbytes).create()
        else:
            self.port = self.service.subscriber_builder().create()

    def send(self, message: np.ndarray, mode: str) -> int:
        sample = self.port.loan_slice_uninit(message.nbytes)
        np.copyto(np.frombuffer(sample.payload().as_memory_view(), np.uint8), message)
        sample.assume_init().send()
        return 0

    def recv(self, token: int, buffer: np.ndarray) -> None:
        sample = None
        while sample is None:
            sample = self.port.receive()
        np.copyto(buffer, np.frombuffer(sample.payload().as_memory_view(), np.uint8))
        del sample


def _root(tag: str) -> str:
    """The folder of one run (``tag``: the producer's pid), on /dev/shm."""
    return f"/dev/shm/bench-handoff-{tag}"


def _end(mode: str, nbytes: int, tag: str, *, writer: bool) -> Any:
    if mode == "slots":
        return _Slots(nbytes, _root(tag), writer=writer)
    if mode == "iox":
        return _Iceoryx(nbytes, tag, writer=writer)
    return _Channel(nbytes, _root(tag))


def _consumer(conn: Any, mode: str, nbytes: int, tag: str) -> None:
    end = _end(mode, nbytes, tag, writer=False)
    buffer = np.full(nbytes, 1, np.uint8)  # written: its pages are faulted in
    conn.send("ready")
    while (token := conn.recv()) is not None:
        start = time.perf_counter_ns()
        end.recv(token, buffer)
        conn.send(time.perf_counter_ns() - start)


def run(mode: str, nbytes: int, count: int) -> tuple[float, float]:
    """Median producer and consumer ms per message."""
    tag = str(os.getpid())
    producer = _end(mode, nbytes, tag, writer=True) if mode in ("slots", "iox") else None
    ours, theirs = mp.get_context("spawn").Pipe()
    consumer = mp.get_context("spawn").Process(target=_consumer, args=(theirs, mode, nbytes, tag))
    consumer.start()
    assert ours.recv() == "ready"
    producer = producer or _end(mode, nbytes, tag, writer=True)
    message = np.full(nbytes, 7, np.uint8)
    sent, read = [], []
    for index in range(count + 3):
        start = time.perf_counter_ns()
        token = producer.send(message, mode)
        took = time.perf_counter_ns() - start
        ours.send(token)
        if index >= 3:
            sent.append(took)
            read.append(ours.recv())
        else:
            ours.recv()
    ours.send(None)
    consumer.join()
    return statistics.median(sent) / 1e6, statistics.median(read) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "64M", "512M"])
    parser.add_argument("--modes", nargs="+", default=["put", "create", "slots", "iox"])
    args = parser.parse_args()
    os.makedirs(_root(str(os.getpid())))
    try:
        print(f"{'size':>7} {'mode':>7} {'producer ms':>12} {'consumer ms':>12} {'GB/s':>6}")
        for size in args.sizes:
            nbytes = parse_size(size)
            count = 200 if nbytes <= 1 << 20 else 20 if nbytes <= 64 << 20 else 6
            for mode in args.modes:
                sent, read = run(mode, nbytes, count)
                rate = nbytes / ((sent + read) / 1e3) / 1e9
                print(f"{format_size(nbytes):>7} {mode:>7} {sent:12.3f} {read:12.3f} {rate:6.2f}")
    finally:
        shutil.rmtree(_root(str(os.getpid())), ignore_errors=True)


if __name__ == "__main__":
    main()
