"""The producer and consumer processes of one transport, driven by the parent.

Each process gets commands over its control pipe: ``("run", nbytes, count, window)``
runs one phase and answers with the send (producer) or done (consumer) times as an int64
array of ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC: one clock for every process
on Linux); ``("stop",)`` ends the process. Errors are answered as ``("error", text)``.

Flow control is one semaphore: the producer releases it ``window`` times at the start
of a phase and takes it before each send; the consumer gives it back after reading
each message; at the end the producer takes it ``window`` times more, i.e. waits until
the consumer has read everything. ``window=1`` is lock-step (pure latency).
"""

from __future__ import annotations

import signal
import time
import traceback
from typing import Any

import numpy as np

from .transports import Transport


def _serve(control: Any, phase: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    while True:
        command = control.recv()
        if command[0] == "stop":
            return
        try:
            control.send(("ok", phase(*command[1:])))
        except Exception as exc:  # reported to the parent, which records it per size
            control.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
            return


def producer_main(transport: Transport, link: Any, control: Any, semaphore: Any) -> None:
    """Send ``count`` copies of an ``nbytes`` message per phase; report send times."""
    sender = None
    messages: dict[int, np.ndarray] = {}

    def phase(nbytes: int, count: int, window: int) -> np.ndarray:
        nonlocal sender
        sender = sender or transport.sender(link)
        if nbytes not in messages:
            messages.clear()  # one message size in memory at a time (512 MB)
            messages[nbytes] = np.full(nbytes, 7, np.uint8)  # written: pages faulted in
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
        _serve(control, phase)
    finally:
        if sender is not None:
            sender.close()


def consumer_main(transport: Transport, link: Any, control: Any, semaphore: Any) -> None:
    """Receive ``count`` messages per phase, copying every byte into a reused buffer."""
    receiver = None
    buffer = np.empty(0, np.uint8)

    def phase(nbytes: int, count: int, window: int) -> np.ndarray:
        nonlocal receiver, buffer
        receiver = receiver or transport.receiver(link)
        if buffer.size != nbytes:
            buffer = np.empty(0, np.uint8)
            buffer = np.full(nbytes, 1, np.uint8)  # written: pages faulted in
        times = np.zeros(count, np.int64)
        control.send(("ready",))
        for index in range(count):
            view = receiver.recv(nbytes)
            np.copyto(buffer, view.reshape(-1).view(np.uint8))  # read every byte
            del view
            receiver.done()
            times[index] = time.perf_counter_ns()
            semaphore.release()
        return times

    try:
        _serve(control, phase)
    finally:
        if receiver is not None:
            receiver.close()
