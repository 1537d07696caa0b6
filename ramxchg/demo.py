"""``ramxchg demo``: a camera-like producer process streaming frames to a consumer process.

The producer publishes frames into a fresh, uniquely named channel; the consumer
subscribes as a durable group (so every acked frame is deleted at once and the RAM disk
does not fill), verifies each frame and reduces it. The channel is bounded by
``max_items`` so a slow consumer makes the producer wait instead of filling the disk.
The channel folder is removed at the end, also after an error or Ctrl-C.

What is verified for every frame (``verify_frame``):

- shape and dtype are the ones published;
- the frame number is written into the first and the last 8 bytes of the frame, and
  both equal the number in the frame's attrs (a stale, swapped or truncated frame fails);
- the 64-bit wrap-around sum of *every* 8-byte word of the frame equals the producer's
  sum in attrs (any change to any single byte, or to any one word, is detected; the sum
  reads every byte, at memory speed, where crc32 of 8 MB costs ~2.6 ms on this VM);
- the frame numbers received are exactly 1..N: none lost, none delivered twice.

The reduction is the mean of every 8th row (what a live viewer would show).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import Channel, ChannelFull, RamxchgError, default_root

log = logging.getLogger(__name__)

#: Consumer group of the demo: durable, so acked frames are deleted at once.
GROUP = "demo"
#: Frames the channel may hold before the producer waits (backpressure).
MAX_ITEMS = 8
#: Distinct base frames the producer cycles through (frames differ, not just counters).
BASE_FRAMES = 4
#: How long the consumer may take to drain after the producer stopped.
DRAIN_SECONDS = 30.0
#: After Ctrl-C, how long the consumer may take to drain and report (a second one: at once).
INTERRUPTED_DRAIN_SECONDS = 5.0
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class DemoConfig:
    """What ``ramxchg demo`` runs: frame shape and dtype, duration, rate cap, root, format."""

    seconds: float = 10.0
    shape: tuple[int, ...] = (2048, 2048)
    dtype: str = "uint16"
    rate_gbps: float | None = None
    root: str | None = None
    format: str = "npy"

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class DemoSummary:
    """The outcome of a demo run (``--json`` prints it as a dict)."""

    channel: str
    format: str
    shape: list[int]
    dtype: str
    frame_bytes: int
    seconds: float
    published: int
    received: int
    lost: int
    duplicates: int
    corrupt: int
    gbps: float
    frames_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    peak_ram_disk_bytes: int
    mean_of_means: float | None
    left_behind: bool
    errors: list[str] = field(default_factory=list)
    #: stopped by Ctrl-C (or SIGTERM): the counts are those of the frames streamed until then
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when frames flowed and none was lost, duplicated or corrupt."""
        return (
            self.received > 0
            and self.lost == 0
            and self.duplicates == 0
            and self.corrupt == 0
            and not self.errors
            and not self.left_behind
            and not self.interrupted
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# -- frames -----------------------------------------------------------------------------------


def make_bases(
    shape: tuple[int, ...], dtype: str, count: int = BASE_FRAMES
) -> list[tuple[np.ndarray, int]]:
    """``count`` random frames and the wrap-around sum of their words 1..n-2 (the middle)."""
    rng = np.random.default_rng(7)
    bases = []
    for _ in range(count):
        frame = np.ascontiguousarray(rng.integers(0, 4096, size=shape).astype(dtype))
        words = frame.reshape(-1).view(np.uint8).view(np.uint64)
        middle = int(np.add.reduce(words[1:-1], dtype=np.uint64))
        bases.append((frame, middle))
    return bases


def stamp(frame: np.ndarray, middle_sum: int, number: int) -> int:
    """Write ``number`` into the first and last word of ``frame``; return the frame's sum."""
    words = frame.reshape(-1).view(np.uint8).view(np.uint64)
    words[0] = number
    words[-1] = number
    return (middle_sum + 2 * number) & _MASK


def verify_frame(
    array: np.ndarray, attrs: dict[str, Any], shape: tuple[int, ...], dtype: str
) -> str | None:
    """None when the frame is intact, else what is wrong with it (see the module doc)."""
    number = attrs.get("frame")
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        return f"frame {number}: shape/dtype {array.shape} {array.dtype}, expected {shape} {dtype}"
    words = array.reshape(-1).view(np.uint8).view(np.uint64)
    if int(words[0]) != number or int(words[-1]) != number:
        return f"frame {number}: counters in the frame say {int(words[0])}/{int(words[-1])}"
    total = int(np.add.reduce(words, dtype=np.uint64))
    if total != attrs.get("sum"):
        return f"frame {number}: checksum {total} != {attrs.get('sum')} published"
    return None


def check_config(config: DemoConfig) -> None:
    """ValueError for settings the demo cannot run with."""
    if config.frame_bytes < 16 or config.frame_bytes % 8:
        raise ValueError(
            f"a frame of {config.shape} {config.dtype} is {config.frame_bytes} bytes; the demo "
            "needs a multiple of 8 bytes and at least 16 (it stamps and sums 8-byte words)"
        )
    if config.seconds <= 0:
        raise ValueError(f"--seconds must be positive, not {config.seconds}")
    if config.rate_gbps is not None and config.rate_gbps <= 0:
        raise ValueError(f"--rate must be positive, not {config.rate_gbps}")


# -- the two processes ------------------------------------------------------------------------


@dataclass
class _Shared:
    """Events and counters the parent and both processes share (pickled at spawn)."""

    stop: Any  # the parent tells the producer to stop
    done: Any  # the producer has stopped
    produced: Any  # frames published so far
    consumed: Any  # frames received so far
    started: Any  # time.monotonic() of the producer's first frame
    errors: Any  # producer errors


def _producer(path: str, config: DemoConfig, shared: _Shared) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    try:
        channel = Channel(Path(path))
        bases = make_bases(config.shape, config.dtype)
        start = time.perf_counter()
        shared.started.value = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        number = 0
        while not shared.stop.is_set():
            frame, middle = bases[(number + 1) % len(bases)]
            checksum = stamp(frame, middle, number + 1)
            try:
                channel.put(frame, attrs={"frame": number + 1, "sum": checksum}, timeout=0.25)
            except ChannelFull:
                continue  # the consumer is behind: try again unless told to stop
            number += 1
            shared.produced.value = number
            if config.rate_gbps:
                due = start + number * config.frame_bytes / (config.rate_gbps * 1e9)
                while not shared.stop.is_set() and time.perf_counter() < due:
                    time.sleep(min(0.01, max(due - time.perf_counter(), 0.0)))
    except (RamxchgError, OSError, ValueError) as exc:
        shared.errors.put(f"producer: {exc}")
    finally:
        shared.done.set()


def _consumer(path: str, config: DemoConfig, shared: _Shared, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    numbers: list[int] = []
    latencies: list[int] = []
    problems: list[str] = []
    means: list[float] = []
    last = 0.0
    try:
        channel = Channel(Path(path))
        with channel.subscribe(GROUP) as sub:
            drain_deadline: float | None = None
            while True:
                if shared.done.is_set():
                    if len(numbers) >= shared.produced.value:
                        break
                    drain_deadline = drain_deadline or time.monotonic() + DRAIN_SECONDS
                    if time.monotonic() > drain_deadline:
                        break
                try:
                    item = sub.get(timeout=0.1)
                except TimeoutError:
                    continue
                received_ns = time.time_ns()
                last = time.monotonic()
                with item:
                    array = item.array
                    attrs = item.attrs
                    problem = verify_frame(array, attrs, config.shape, config.dtype)
                    if problem:
                        problems.append(problem)
                    means.append(float(array[::8].mean()))
                    latencies.append(received_ns - item.published_ns)
                    numbers.append(int(attrs.get("frame", -1)))
                    del array
                item.ack()
                shared.consumed.value = len(numbers)
    except (RamxchgError, OSError, ValueError) as exc:
        problems.append(f"consumer: {exc}")
    results.send(
        {
            "numbers": numbers,
            "latencies": latencies,
            "problems": problems,
            "means": means,
            "last": last,
        }
    )
    results.close()


# -- the run ----------------------------------------------------------------------------------


Progress = Callable[[float, int, int], None]


def run_demo(config: DemoConfig, progress: Progress | None = None) -> DemoSummary:
    """Run the demo; ``progress(elapsed_s, frames_received, bytes_received)`` ticks ~10x/s.

    The channel is created in ``config.root`` (the default root when None) and removed at
    the end, also on errors and KeyboardInterrupt. The first KeyboardInterrupt once both
    processes run stops the stream and returns the summary so far (``interrupted``).
    """
    check_config(config)
    root = Path(config.root) if config.root else default_root()
    name = f"demo-{os.getpid()}-{os.urandom(3).hex()}"
    ctx = mp.get_context("spawn")
    shared = _Shared(
        stop=ctx.Event(),
        done=ctx.Event(),
        produced=ctx.Value("q", 0),
        consumed=ctx.Value("q", 0),
        started=ctx.Value("d", 0.0),
        errors=ctx.SimpleQueue(),
    )
    receiver, sender = ctx.Pipe(duplex=False)
    processes = []
    path = root / name
    try:
        # Recycling is safe here: the consumer is done with each frame before it acks.
        channel = Channel(name, root, format=config.format, max_items=MAX_ITEMS, recycle=MAX_ITEMS)
        channel.subscribe(GROUP).close()  # register the group before the first frame
        consumer = ctx.Process(
            target=_consumer,
            args=(str(channel.path), config, shared, sender),
            name="ramxchg-demo-consumer",
        )
        producer = ctx.Process(
            target=_producer,
            args=(str(channel.path), config, shared),
            name="ramxchg-demo-producer",
        )
        processes = [consumer, producer]
        for process in processes:
            process.start()
        sender.close()
        result, peak, interrupted = _stream(
            channel, config, shared=shared, receiver=receiver, consumer=consumer, progress=progress
        )
        # Throughput: from the producer's first frame to the consumer's last one.
        elapsed = max(result.get("last", 0.0) - shared.started.value, 1e-9)
        for process in processes:
            process.join(10)
        problems = list(result["problems"])
        while not shared.errors.empty():
            problems.append(shared.errors.get())
    finally:
        shared.stop.set()
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(5)
        receiver.close()
        sender.close()
        shutil.rmtree(path, ignore_errors=True)
    summary = _summarise(
        config,
        channel,
        published=shared.produced.value,
        result=result,
        problems=problems,
        elapsed=elapsed,
        peak=peak,
    )
    summary.interrupted = interrupted
    return summary


def _stream(
    channel: Channel,
    config: DemoConfig,
    *,
    shared: _Shared,
    receiver: Any,
    consumer: Any,
    progress: Progress | None,
) -> tuple[dict[str, Any], int, bool]:
    """Run the clock until the consumer reports: (its report, the peak RAM-disk use, whether
    a KeyboardInterrupt cut the run short)."""
    peak = 0
    try:
        while True:
            now = time.monotonic()
            start = shared.started.value or now  # the clock runs once the producer is ready
            if now - start >= config.seconds:
                shared.stop.set()
            status = channel.status()
            peak = max(peak, status.bytes + status.writing_bytes)
            if progress is not None:
                count = shared.consumed.value
                progress(min(now - start, config.seconds), count, count * config.frame_bytes)
            result = _result(receiver, consumer, 0.1)
            if result is not None:
                return result, peak, False
    except KeyboardInterrupt:  # stop streaming; what was published is still counted
        shared.stop.set()
        result = _result(receiver, consumer, INTERRUPTED_DRAIN_SECONDS)
        return result or _no_result("interrupted before the consumer reported"), peak, True


def _result(receiver: Any, consumer: Any, timeout: float) -> dict[str, Any] | None:
    """The consumer's report when it comes within ``timeout`` s (a stand-in if it died)."""
    if receiver.poll(timeout):
        report: dict[str, Any] = receiver.recv()
        return report
    if not consumer.is_alive():
        return _no_result(f"consumer died (exit code {consumer.exitcode})")
    return None


def _no_result(problem: str) -> dict[str, Any]:
    return {"numbers": [], "latencies": [], "means": [], "problems": [problem]}


def _summarise(
    config: DemoConfig,
    channel: Channel,
    *,
    published: int,
    result: dict[str, Any],
    problems: list[str],
    elapsed: float,
    peak: int,
) -> DemoSummary:
    numbers = result["numbers"]
    unique = set(numbers)
    lost = len(set(range(1, published + 1)) - unique)
    corrupt = [p for p in problems if p.startswith("frame ")]
    other = [p for p in problems if not p.startswith("frame ")]
    latencies = np.array(result["latencies"], dtype=np.float64) / 1e6
    percentile = (
        (lambda q: float(np.percentile(latencies, q))) if latencies.size else (lambda q: None)
    )
    means = result["means"]
    return DemoSummary(
        channel=str(channel.path),
        format=config.format,
        shape=list(config.shape),
        dtype=config.dtype,
        frame_bytes=config.frame_bytes,
        seconds=round(elapsed, 3),
        published=published,
        received=len(numbers),
        lost=lost,
        duplicates=len(numbers) - len(unique),
        corrupt=len(corrupt),
        gbps=len(numbers) * config.frame_bytes / elapsed / 1e9,
        frames_per_second=len(numbers) / elapsed,
        latency_p50_ms=percentile(50),
        latency_p99_ms=percentile(99),
        latency_max_ms=float(latencies.max()) if latencies.size else None,
        peak_ram_disk_bytes=peak,
        mean_of_means=float(np.mean(means)) if means else None,
        left_behind=channel.path.exists(),
        errors=(corrupt[:10] + other)[:20],
    )
