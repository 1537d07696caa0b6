"""The transport interface of the benchmark, and Python's own transports.

A transport moves one message (a contiguous uint8 array) from a producer process to a
consumer process. The parent makes a *link* (whatever both sides share: a queue, a
pipe, a channel folder) with `Transport.open_link`; the producer wraps it in a
`Sender`, the consumer in a `Receiver`. Before each phase the consumer calls
``Receiver.prepare`` (the producer starts sending only after it returns);
``Receiver.recv`` returns a view of the message; the consumer reads every byte of it,
drops the view and calls ``done``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Sender(ABC):
    """The producer's end: ``send`` one message."""

    @abstractmethod
    def send(self, message: np.ndarray) -> None:
        """Hand ``message`` to the consumer (the caller keeps and reuses it)."""

    def close(self) -> None:
        """Release what the sender holds."""
        return None  # nothing to release by default


class Receiver(ABC):
    """The consumer's end: ``recv`` one message as a readable view, then ``done``."""

    def prepare(self, nbytes: int) -> None:
        """Get ready for ``nbytes`` messages (before the producer starts sending them)."""
        return None  # nothing to prepare by default

    @abstractmethod
    def recv(self, nbytes: int) -> np.ndarray:
        """The next message (``nbytes`` long), as a uint8 view valid until `done`."""

    def done(self) -> None:
        """The consumer has read the message and dropped its view."""
        return None  # nothing to release by default

    def close(self) -> None:
        """Release what the receiver holds."""
        return None  # nothing to release by default


class Transport(ABC):
    """One way of moving arrays between processes, as the benchmark runs it."""

    #: key used on the command line and in the JSON
    name: str
    #: what the table shows
    label: str

    def skip_reason(self) -> str | None:
        """Why this transport cannot run here (None: it can)."""
        return None

    @abstractmethod
    def open_link(self, ctx: Any, workdir: Path) -> Any:
        """Make what both processes share (picklable at spawn); ``workdir`` is private."""

    @abstractmethod
    def sender(self, link: Any) -> Sender:
        """The producer's end (called in the producer process)."""

    @abstractmethod
    def receiver(self, link: Any) -> Receiver:
        """The consumer's end (called in the consumer process)."""

    def close_link(self, link: Any) -> None:
        """Clean up after both processes have exited (called in the parent)."""
        return None  # nothing to release by default


# -- multiprocessing.Queue ---------------------------------------------------------------------


class _QueueSender(Sender):
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def send(self, message: np.ndarray) -> None:
        self.queue.put(message)  # pickled by the queue's feeder thread

    def close(self) -> None:
        self.queue.close()
        self.queue.join_thread()


class _QueueReceiver(Receiver):
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def recv(self, nbytes: int) -> np.ndarray:
        message: np.ndarray = self.queue.get()
        return message


class QueueTransport(Transport):
    """``multiprocessing.Queue``: the array is pickled through a pipe."""

    name = "queue"
    label = "mp.Queue"

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        return ctx.Queue()

    def sender(self, link: Any) -> Sender:
        return _QueueSender(link)

    def receiver(self, link: Any) -> Receiver:
        return _QueueReceiver(link)


# -- multiprocessing.Pipe ----------------------------------------------------------------------


class _PipeSender(Sender):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, message: np.ndarray) -> None:
        self.conn.send_bytes(memoryview(message).cast("B"))


class _PipeReceiver(Receiver):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.buffer = np.empty(0, np.uint8)

    def recv(self, nbytes: int) -> np.ndarray:
        if self.buffer.size < nbytes:
            self.buffer = np.empty(nbytes, np.uint8)
        got = self.conn.recv_bytes_into(self.buffer)  # into a reused buffer: no allocation
        return self.buffer[:got]


class PipeTransport(Transport):
    """``multiprocessing.Pipe``: ``send_bytes`` / ``recv_bytes_into`` a reused buffer."""

    name = "pipe"
    label = "mp.Pipe bytes"

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        return ctx.Pipe(duplex=False)

    def sender(self, link: Any) -> Sender:
        return _PipeSender(link[1])

    def receiver(self, link: Any) -> Receiver:
        return _PipeReceiver(link[0])


# -- multiprocessing.shared_memory -------------------------------------------------------------


class _ShmSender(Sender):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, message: np.ndarray) -> None:
        segment = shared_memory.SharedMemory(create=True, size=max(message.nbytes, 1))
        np.copyto(np.ndarray(message.shape, np.uint8, segment.buf), message)
        self.conn.send(segment.name)
        segment.close()  # the consumer unlinks it once read


class _ShmReceiver(Receiver):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.segment: shared_memory.SharedMemory | None = None

    def recv(self, nbytes: int) -> np.ndarray:
        self.segment = shared_memory.SharedMemory(name=self.conn.recv())
        return np.ndarray((nbytes,), np.uint8, self.segment.buf)

    def done(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment.unlink()
            self.segment = None


class SharedMemoryTransport(Transport):
    """``multiprocessing.shared_memory``: a new segment per message, its name sent by pipe."""

    name = "shared_memory"
    label = "mp.shared_memory"

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        return ctx.Pipe(duplex=False)

    def sender(self, link: Any) -> Sender:
        return _ShmSender(link[1])

    def receiver(self, link: Any) -> Receiver:
        return _ShmReceiver(link[0])
