"""Run every transport at every size, side by side, and collect medians and ranges."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
#: Seconds a timed-out process has to write where it is stuck.
STACK_TIMEOUT = 5.0
#: Seconds the processes of a pair have to stop when asked, before they are terminated.
STOP_TIMEOUT = 10.0


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
    # Large messages: enough of them that the pipeline's filling and draining (the
    # first message's and the last's latency) is a small part of the phase: with N
    # messages and two copies overlapped, a phase lasts about N + 1 copies.
    if nbytes <= 64 * MB:
        return 32, 6, 2
    return 24, 2, 1


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
        mains = {
            "consumer": (consumer_main, consumer_end),
            "producer": (producer_main, producer_end),
        }
        token = f"{transport.name}-{os.getpid()}-{secrets.token_hex(4)}"
        self.stacks = {role: workdir / f"stack-{role}-{token}" for role in mains}
        self.processes = {
            role: ctx.Process(
                target=main, args=(transport, self.link, end, semaphore, self.stacks[role])
            )
            for role, (main, end) in mains.items()
        }
        try:
            for process in self.processes.values():
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
                late = list(pending.values())
                raise PhaseError(
                    f"no answer from {' and '.join(f'the {role}' for role in late)}"
                    f" within {PHASE_TIMEOUT:g} s"
                    + "".join(f"\nwhere the {role} is:\n{self.stack_of(role)}" for role in late)
                )
            for control in ready:
                answers[pending.pop(control)] = _answer(control, "ok", 0.0)
        return answers["producer"], answers["consumer"]

    def stack_of(self, role: str) -> str:
        """Where the process of ``role`` is: its threads' Python stacks, which it writes
        to its stack file on SIGUSR1 (faulthandler; POSIX only)."""
        process, path = self.processes[role], self.stacks[role]
        if not hasattr(signal, "SIGUSR1"):
            return "not known on this OS"
        if not process.is_alive():
            return f"exited ({process.exitcode})"
        os.kill(process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + STACK_TIMEOUT
        while not (path.exists() and path.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # written at once, by the signal handler: let it finish
        text = path.read_text(errors="replace").rstrip() if path.exists() else ""
        return text or f"no stack written within {STACK_TIMEOUT:g} s"

    def close(self) -> None:
        for control in (self.producer_ctl, self.consumer_ctl):
            try:
                control.send(("stop",))
            except OSError as exc:  # the process is gone already
                log.debug("stop: %s", exc)
        started = [p for p in self.processes.values() if p.pid is not None]
        deadline = time.monotonic() + STOP_TIMEOUT  # for both: a hung pair waits it once
        for process in started:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in started:
            if process.is_alive():
                process.terminate()
                process.join(5)
        for control in (self.producer_ctl, self.consumer_ctl):
            control.close()
        for path in self.stacks.values():
            path.unlink(missing_ok=True)
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


def warm_up(pair: _Pair, nbytes: int, config: BenchConfig) -> None:
    """An untimed streamed phase of twice the window and one more messages, so that a
    transport that reuses its buffers (iceoryx2's samples, Ray's store, recycled files)
    has all of them before it is timed: a recycling producer ``window`` ahead has up to
    that many published, one being written and the consumer's still being read (with
    ``window + 1`` messages, a 512 MB phase still made a file: 7.2-7.3 against
    7.9-8.8 GB/s)."""
    streamed, _, warmup = counts_for(nbytes, config.quick)
    window = window_for(nbytes)
    pair.phase(nbytes, max(warmup, min(2 * window + 1, streamed)), window)


@dataclass
class _Rounds:
    """One transport's rounds at one size: GB/s of its streamed phases, latencies (us)
    of its lock-step phases."""

    gbps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)

    def run(self, pair: _Pair, nbytes: int, config: BenchConfig) -> None:
        """One round: a streamed phase and a lock-step one."""
        streamed, lockstep, _ = counts_for(nbytes, config.quick)
        sent, done = pair.phase(nbytes, streamed, window_for(nbytes))
        self.gbps.append(streamed * nbytes / ((done[-1] - sent[0]) / 1e9) / 1e9)
        sent, done = pair.phase(nbytes, lockstep, 1)
        latency_us = (done - sent) / 1e3
        self.p50.append(float(np.percentile(latency_us, 50)))
        self.p99.append(float(np.percentile(latency_us, 99)))
        self.worst.append(float(latency_us.max()))

    def result(self, nbytes: int, config: BenchConfig) -> dict[str, Any]:
        streamed, lockstep, _ = counts_for(nbytes, config.quick)
        return {
            "size": nbytes,
            "streamed": streamed,
            "lockstep": lockstep,
            "window": window_for(nbytes),
            "gbps": _spread(self.gbps),
            "p50_us": _spread(self.p50),
            "p99_us": _spread(self.p99),
            "max_us": max(self.worst),
            "error": None,
        }


def run_transports(
    transports: list[Transport],
    config: BenchConfig,
    workdir: Path,
    tick: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every size for every transport, one entry each: {name, label, skipped, results}.

    Side by side in time: at each size, round after round, each transport runs one
    round in turn, each time in a pair of processes of its own, warmed up first and
    closed after the round (one transport's memory at a time, even at 512 MB). A
    machine that slows down for a while then slows every transport's round of that
    moment, not one transport's whole row. A transport that cannot start is given up
    for the sizes left; one that fails at a size, for the rest of that size.
    """
    entries = [
        {"name": t.name, "label": t.label, "skipped": t.skip_reason(), "results": []}
        for t in transports
    ]
    running = [(t, e) for t, e in zip(transports, entries, strict=True) if not e["skipped"]]
    for nbytes in config.sizes:
        rounds = {t.name: _Rounds() for t, _ in running}
        failed: dict[str, str] = {}
        for round_no in range(config.repeat):
            for transport, _ in running:
                if transport.name in failed:
                    continue
                tick(f"{transport.label} {format_size(nbytes)} ({round_no + 1}/{config.repeat})")
                error = _round(transport, nbytes, config, workdir, rounds[transport.name])
                if error is not None:
                    failed[transport.name] = error
        for transport, entry in running:
            error = failed.get(transport.name)
            entry["results"].append(
                {"size": nbytes, "error": error}
                if error is not None
                else rounds[transport.name].result(nbytes, config)
            )
        running = [(t, e) for t, e in running if not failed.get(t.name, "").startswith(_NO_START)]
    for entry in entries:  # the sizes left when a transport could not start
        done = {result["size"] for result in entry["results"]}
        if done and not entry["skipped"]:
            error = entry["results"][-1]["error"]
            entry["results"] += [
                {"size": size, "error": error} for size in config.sizes if size not in done
            ]
    return entries


def run_transport(
    transport: Transport, config: BenchConfig, workdir: Path, tick: Callable[[str], None]
) -> dict[str, Any]:
    """`run_transports` for one transport."""
    return run_transports([transport], config, workdir, tick)[0]


#: How the error of a transport that could not start begins.
_NO_START = "could not start: "


def _round(
    transport: Transport, nbytes: int, config: BenchConfig, workdir: Path, rounds: _Rounds
) -> str | None:
    """One round of ``transport`` in a new pair: warm-up, then `_Rounds.run`; the error
    that ended it, if any."""
    try:
        pair = _Pair(transport, workdir)
    except Exception as exc:  # a peer that cannot start fails, the run goes on
        log.warning("%s could not start: %s", transport.name, exc, exc_info=True)
        return f"{_NO_START}{type(exc).__name__}: {exc}"
    try:
        warm_up(pair, nbytes, config)
        rounds.run(pair, nbytes, config)
    except PhaseError as exc:
        log.warning("%s at %d bytes failed: %s", transport.name, nbytes, exc)
        return str(exc)
    finally:
        _close(pair)
    return None


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
