"""Run every transport at every size, side by side, and collect medians and ranges."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from .. import default_root
from ..disks import format_size
from .transports import Transport
from .workers import consumer_main, producer_main

log = logging.getLogger(__name__)

KB, MB = 1 << 10, 1 << 20
FULL_SIZES = (KB, 64 * KB, MB, 64 * MB, 512 * MB)
QUICK_SIZES = (KB, 64 * KB, MB)
#: Bytes in flight while streaming big messages.
GB_IN_FLIGHT = 1 << 30
#: Seconds a phase may take before the transport is given up at that size.
PHASE_TIMEOUT = 300.0
#: Seconds the consumer may take to get ready for a phase (connect, map, subscribe).
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class BenchConfig:
    """What to run: sizes in bytes, repetitions after warm-up, and which transports."""

    sizes: tuple[int, ...] = FULL_SIZES
    repeat: int = 3
    quick: bool = False
    only: tuple[str, ...] = ()


def counts_for(nbytes: int, quick: bool) -> tuple[int, int, int]:
    """(streamed, lock-step, warm-up) messages per repetition at one size."""
    if quick:
        return (200, 100, 20) if nbytes <= MB else (4, 2, 1)
    if nbytes <= 64 * KB:
        return 2000, 1000, 200
    if nbytes <= MB:
        return 300, 200, 30
    if nbytes <= 64 * MB:
        return 12, 6, 2
    return 3, 2, 1


def window_for(nbytes: int) -> int:
    """Messages in flight while streaming: deep for small ones, 1 GB at most for big ones."""
    return int(min(16, max(2, GB_IN_FLIGHT // nbytes)))


def memcpy_gbps(nbytes: int = 256 * MB, repeat: int = 7) -> float:
    """Single-thread memcpy bandwidth (GB/s, bytes copied per second), both buffers faulted."""
    source = np.full(nbytes, 3, np.uint8)
    target = np.full(nbytes, 1, np.uint8)
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    return nbytes / statistics.median(times[1:]) / 1e9


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


class _Pair:
    """A producer and a consumer process of one transport, kept for all sizes."""

    def __init__(self, transport: Transport, workdir: Path) -> None:
        ctx = mp.get_context("spawn")
        self.transport = transport
        self.link = transport.open_link(ctx, workdir)
        self.semaphore = semaphore = ctx.Semaphore(0)  # kept: children open it by name
        self.producer_ctl, producer_end = ctx.Pipe()
        self.consumer_ctl, consumer_end = ctx.Pipe()
        self.processes = [
            ctx.Process(target=consumer_main, args=(transport, self.link, consumer_end, semaphore)),
            ctx.Process(target=producer_main, args=(transport, self.link, producer_end, semaphore)),
        ]
        try:
            for process in self.processes:
                process.daemon = True
                process.start()
        except BaseException:
            self.close()  # what started, and the link
            raise
        finally:
            producer_end.close()
            consumer_end.close()

    def phase(self, nbytes: int, count: int, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Run one phase; (send times, done times) in ns.

        Waits on both processes at once: when one fails, the other may wait for it
        forever, so the first error ends the phase.
        """
        _command(self.consumer_ctl, ("run", nbytes, count, window))
        _answer(self.consumer_ctl, "ready", READY_TIMEOUT)
        _command(self.producer_ctl, ("run", nbytes, count, window))
        pending = {self.producer_ctl: "producer", self.consumer_ctl: "consumer"}
        answers: dict[str, np.ndarray] = {}
        deadline = time.monotonic() + PHASE_TIMEOUT
        while pending:
            ready = wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = " and ".join(pending.values())
                raise PhaseError(f"no answer from the {late} within {PHASE_TIMEOUT:g} s")
            for control in ready:
                answers[pending.pop(control)] = _answer(control, "ok", 0.0)
        return answers["producer"], answers["consumer"]

    def close(self) -> None:
        for control in (self.producer_ctl, self.consumer_ctl):
            try:
                control.send(("stop",))
            except OSError as exc:  # the process is gone already
                log.debug("stop: %s", exc)
        for process in self.processes:
            if process.pid is None:  # never started
                continue
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for control in (self.producer_ctl, self.consumer_ctl):
            control.close()
        self.transport.close_link(self.link)


class PhaseError(RuntimeError):
    """A producer or consumer failed or timed out during a phase."""


def _command(control: Any, command: tuple[Any, ...]) -> None:
    try:
        control.send(command)
    except OSError as exc:  # the process is gone
        raise PhaseError(f"the process died ({exc!r})") from exc


def _answer(control: Any, kind: str, timeout: float) -> Any:
    if not control.poll(timeout):
        raise PhaseError(f"no answer within {timeout:g} s")
    try:
        answer = control.recv()
    except (EOFError, OSError) as exc:
        raise PhaseError(f"the process died ({exc!r})") from exc
    if answer[0] != kind:
        raise PhaseError(str(answer[1]) if len(answer) > 1 else str(answer))
    return answer[1] if len(answer) > 1 else None


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(pair: _Pair, nbytes: int, config: BenchConfig) -> dict[str, Any]:
    """Warm up, then ``repeat`` times: a streamed phase (GB/s) and a lock-step one (latency)."""
    streamed, lockstep, warmup = counts_for(nbytes, config.quick)
    window = window_for(nbytes)
    # At least as many as the streamed phase has in flight: a transport that reuses its
    # buffers (iceoryx2's samples, Ray's store, recycled files) gets all of them first.
    pair.phase(nbytes, max(warmup, min(window, streamed)), window)
    gbps, p50, p99, worst = [], [], [], []
    for _ in range(config.repeat):
        sent, done = pair.phase(nbytes, streamed, window)
        gbps.append(streamed * nbytes / ((done[-1] - sent[0]) / 1e9) / 1e9)
        sent, done = pair.phase(nbytes, lockstep, 1)
        latency_us = (done - sent) / 1e3
        p50.append(float(np.percentile(latency_us, 50)))
        p99.append(float(np.percentile(latency_us, 99)))
        worst.append(float(latency_us.max()))
    return {
        "size": nbytes,
        "streamed": streamed,
        "lockstep": lockstep,
        "window": window,
        "gbps": _spread(gbps),
        "p50_us": _spread(p50),
        "p99_us": _spread(p99),
        "max_us": max(worst),
        "error": None,
    }


def run_transport(
    transport: Transport, config: BenchConfig, workdir: Path, tick: Callable[[str], None]
) -> dict[str, Any]:
    """Every size for one transport: {name, label, skipped, results: [...]}."""
    entry: dict[str, Any] = {"name": transport.name, "label": transport.label}
    entry["skipped"] = transport.skip_reason()
    entry["results"] = []
    if entry["skipped"]:
        return entry
    pair: _Pair | None = None
    try:
        for nbytes in config.sizes:
            tick(f"{transport.label} {format_size(nbytes)}")
            try:
                pair = pair or _Pair(transport, workdir)
            except Exception as exc:  # a peer that cannot start fails, the run goes on
                log.warning("%s could not start: %s", transport.name, exc, exc_info=True)
                error = f"could not start: {type(exc).__name__}: {exc}"
                done = {result["size"] for result in entry["results"]}
                entry["results"] += [
                    {"size": size, "error": error} for size in config.sizes if size not in done
                ]
                break
            try:
                entry["results"].append(measure(pair, nbytes, config))
            except PhaseError as exc:
                log.warning("%s at %d bytes failed: %s", transport.name, nbytes, exc)
                entry["results"].append({"size": nbytes, "error": str(exc)})
                _close(pair)
                pair = None  # a fresh pair for the next size
    finally:
        if pair is not None:
            _close(pair)
    return entry


def _close(pair: _Pair) -> None:
    """Stop the pair's processes and clean up; a failure is logged, the run goes on."""
    try:
        pair.close()
    except Exception:  # e.g. a peer whose own shutdown fails: the numbers still stand
        log.warning("cleaning up after %s failed", pair.transport.name, exc_info=True)


@contextmanager
def work_folder() -> Iterator[Path]:
    """A private folder on the default root for the benchmark's channels."""
    folder = Path(tempfile.mkdtemp(prefix="bench-", dir=default_root()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
