"""The producer and consumer processes of one transport, driven by the parent.

Each process gets commands over its control pipe: ``("run", nbytes, count, window)``
runs one phase and answers with the send (producer) or done (consumer) times as an int64
array of ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC: one clock for every process
on Linux); ``("stop",)`` ends the process. Errors are answered as ``("error", text)``.
On SIGUSR1 (POSIX) a process writes its threads' Python stacks to its stack file: what
the parent reports of a process that gave no answer in time.

Flow control is one semaphore: the producer releases it ``window`` times at the start
of a phase and takes it before each send; the consumer gives it back after reading
each message; at the end the producer takes it ``window`` times more, i.e. waits until
the consumer has read everything. ``window=1`` is lock-step (pure latency).

Every message is `message_for` its size (a pattern with a prime period); after each
phase, outside the timed loop, the consumer checks that the last message it copied is
that pattern byte for byte (a CRC-32 of its copy), so a transport that delivers wrong,
shifted, truncated or stale bytes fails the phase instead of being timed.
"""

from __future__ import annotations

import faulthandler
import signal
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .transports import Transport

#: Period of the message pattern: a prime, so a shifted copy never matches.
PATTERN_PERIOD = 251


def message_for(nbytes: int) -> np.ndarray:
    """The message the producer sends at ``nbytes``: bytes 0..250, repeated (and written,
    so its pages are faulted in before any phase)."""
    return np.resize(np.arange(PATTERN_PERIOD, dtype=np.uint8), nbytes)


def _serve(control: Any, phase: Any, stack: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if hasattr(signal, "SIGUSR1"):  # where this process is stuck, when the parent asks
        stack_file = stack.open("w")  # open while the process lives
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    while True:
        command = control.recv()
        if command[0] == "stop":
            return
        try:
            control.send(("ok", phase(*command[1:])))
        except Exception as exc:  # reported to the parent, which records it per size
            control.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
            return


def producer_main(
    transport: Transport, link: Any, control: Any, semaphore: Any, stack: Path
) -> None:
    """Send ``count`` copies of an ``nbytes`` message per phase; report send times."""
    sender = None
    messages: dict[int, np.ndarray] = {}

    def phase(nbytes: int, count: int, window: int) -> np.ndarray:
        nonlocal sender
        sender = sender or transport.sender(link)
        if nbytes not in messages:
            messages.clear()  # one message size in memory at a time (512 MB)
            messages[nbytes] = message_for(nbytes)
        message = messages[nbytes]
        times = np.zeros(count, np.int64)
        for _ in range(window):
            semaphore.release()
        for index in range(count):
            semaphore.acquire()
            times[index] = time.perf_counter_ns()
            sender.send(message)
        for _ in range(window):
            semaphore.acquire()
        return times

    try:
        _serve(control, phase, stack)
    finally:
        if sender is not None:
            sender.close()


def consumer_main(
    transport: Transport, link: Any, control: Any, semaphore: Any, stack: Path
) -> None:
    """Receive ``count`` messages per phase, copying every byte into a reused buffer."""
    receiver = None
    buffer = np.empty(0, np.uint8)
    expected = 0  # CRC-32 of message_for(buffer.size)

    def phase(nbytes: int, count: int, window: int) -> np.ndarray:
        nonlocal receiver, buffer, expected
        receiver = receiver or transport.receiver(link)
        if buffer.size != nbytes:
            buffer = np.empty(0, np.uint8)
            buffer = np.empty(nbytes, np.uint8)
            expected = zlib.crc32(message_for(nbytes))
        buffer.fill(0)  # pages faulted in, and no byte of an earlier phase passes the check
        receiver.prepare(nbytes)
        times = np.zeros(count, np.int64)
        control.send(("ready",))
        for index in range(count):
            view = receiver.recv(nbytes)
            if view.nbytes != nbytes:  # copyto would broadcast a short message silently
                raise ValueError(f"received {view.nbytes} bytes, expected {nbytes}")
            np.copyto(buffer, view.reshape(-1).view(np.uint8))  # read every byte
            del view
            receiver.done()
            times[index] = time.perf_counter_ns()
            semaphore.release()
        if zlib.crc32(buffer) != expected:
            raise ValueError(f"the consumer received wrong bytes (a {nbytes}-byte message)")
        return times

    try:
        _serve(control, phase, stack)
    finally:
        if receiver is not None:
            receiver.close()
