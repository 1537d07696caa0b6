"""Transports through files: ramxchg channels (put, create, HDF5), .npy files on a real
disk, and Arrow IPC files on a RAM disk."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from .. import Channel, Item
from ..disks.probe import info
from .transports import Receiver, Sender, Transport

#: The durable group the benchmark's consumer reads as: acked items are deleted at once.
GROUP = "bench"


class _ChannelSender(Sender):
    def __init__(self, path: str, mode: str) -> None:
        self.channel = Channel(Path(path))
        self.mode = mode

    def send(self, message: np.ndarray) -> None:
        if self.mode == "create":
            with self.channel.create(message.shape, np.uint8) as array:
                np.copyto(array, message)
        else:
            self.channel.put(message, format=self.mode)


class _ChannelReceiver(Receiver):
    def __init__(self, path: str) -> None:
        self.subscription = Channel(Path(path)).subscribe(GROUP)
        self.item: Item | None = None

    def recv(self, nbytes: int) -> np.ndarray:
        self.item = self.subscription.get()
        return self.item.array.reshape(-1)

    def done(self) -> None:
        if self.item is not None:
            self.item.close()
            self.item.ack()
            self.item = None

    def close(self) -> None:
        self.subscription.close()


class ChannelTransport(Transport):
    """A ramxchg channel: ``put`` (npy or hdf5) or ``create`` filled in place.

    The consumer subscribes as a durable group and acks, so each item is deleted (or,
    recycled, reused) once read: what a streaming user does. ``root`` None is the
    default root; ``recycle`` None is the channel's default.
    """

    def __init__(
        self,
        name: str,
        label: str,
        mode: str,
        root: str | None = None,
        *,
        skip: str | None = None,
        recycle: int | None = None,
    ) -> None:
        self.name = name
        self.recycle = recycle
        self.label = label
        self.mode = mode
        self.root = root
        self.skip = skip

    def skip_reason(self) -> str | None:
        if self.skip:
            return self.skip
        if self.root is not None and not os.path.isdir(self.root):
            return f"{self.root} is not there"
        return None

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        root = Path(self.root) if self.root is not None else workdir
        name = f"bench-{self.name}-{os.getpid()}-{secrets.token_hex(4)}"  # one per pair
        channel = Channel(name, root, recycle=self.recycle)
        channel.subscribe(GROUP).close()  # register the group before the first item
        return str(channel.path)

    def close_link(self, link: Any) -> None:
        Channel(Path(link)).drop()  # its pool too: the next pair starts as cold as this one

    def sender(self, link: Any) -> Sender:
        return _ChannelSender(link, self.mode)

    def receiver(self, link: Any) -> Receiver:
        return _ChannelReceiver(link)


# -- one file per message: np.save on the real disk, an Arrow IPC file on /dev/shm ------------


class _FileSender(Sender):
    def __init__(self, transport: FileTransport, folder: str, conn: Any) -> None:
        self.transport = transport
        self.folder = folder
        self.conn = conn
        self.count = 0

    def send(self, message: np.ndarray) -> None:
        self.count += 1
        suffix = self.transport.suffix
        final = os.path.join(self.folder, f"{self.count}{suffix}")
        tmp = os.path.join(self.folder, f".{self.count}.tmp{suffix}")
        self.transport.save(tmp, message)
        os.replace(tmp, final)  # the consumer never sees a half-written file
        self.conn.send(final)


class _FileReceiver(Receiver):
    def __init__(self, transport: FileTransport, conn: Any) -> None:
        self.transport = transport
        self.conn = conn
        self.path: str | None = None
        self.opened: Any = None

    def recv(self, nbytes: int) -> np.ndarray:
        self.path = self.conn.recv()
        message, self.opened = self.transport.load(self.path)
        return message

    def done(self) -> None:
        if self.opened is not None:
            self.opened.close()
            self.opened = None
        if self.path is not None:
            os.unlink(self.path)
            self.path = None


class FileTransport(Transport):
    """One file per message in a private folder made under ``folder``: written under a
    temporary name and renamed, its name sent by pipe; the consumer deletes it once read.

    No fsync: the data lives in the page cache (or the RAM disk), as it would for a user
    doing this.
    """

    #: what the files' names end with
    suffix: str

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def skip_reason(self) -> str | None:
        if not os.path.isdir(self.folder):
            return f"{self.folder} is not there"
        return None

    @abstractmethod
    def save(self, path: str, message: np.ndarray) -> None:
        """Write ``message`` to a new file at ``path`` (in the producer)."""

    @abstractmethod
    def load(self, path: str) -> tuple[np.ndarray, Any]:
        """The message in the file at ``path`` and what to ``close`` once it is read
        (None: nothing), in the consumer."""

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        folder = Path(self.folder) / f"ramxchg-bench-{self.name}-{os.getpid()}"
        folder.mkdir(mode=0o700)
        return (str(folder), ctx.Pipe(duplex=False))

    def sender(self, link: Any) -> Sender:
        return _FileSender(self, link[0], link[1][1])

    def receiver(self, link: Any) -> Receiver:
        return _FileReceiver(self, link[1][0])

    def close_link(self, link: Any) -> None:
        shutil.rmtree(link[0])


class NpyDiskTransport(FileTransport):
    """``np.save`` into a folder on the real disk, ``np.load`` back (a copy in memory)."""

    name = "npy_disk"
    label = "np.save/load disk"
    suffix = ".npy"

    def skip_reason(self) -> str | None:
        reason = super().skip_reason()
        if reason is None and info(self.folder).ram_backed:
            return f"{self.folder} is RAM-backed, not a real disk"
        return reason

    def save(self, path: str, message: np.ndarray) -> None:
        np.save(path, message)

    def load(self, path: str) -> tuple[np.ndarray, Any]:
        return np.load(path), None


class ArrowTransport(FileTransport):
    """An Arrow IPC tensor file on a RAM disk (optional: ``pip install 'ramxchg[bench]'``).

    The producer writes the array as an Arrow tensor (``pyarrow.ipc.write_tensor``); the
    consumer maps the file (``pyarrow.memory_map``) and reads the tensor in place.
    """

    name = "arrow_shm"
    label = "Arrow IPC file, /dev/shm"
    suffix = ".arrow"

    def skip_reason(self) -> str | None:
        if importlib.util.find_spec("pyarrow") is None:
            return "pyarrow is not installed (pip install 'ramxchg[bench]')"
        reason = super().skip_reason()
        if reason is None and not info(self.folder).ram_backed:
            return f"{self.folder} is not RAM-backed"
        return reason

    def save(self, path: str, message: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.ipc

        with pa.OSFile(path, "wb") as sink:
            pyarrow.ipc.write_tensor(pa.Tensor.from_numpy(message), sink)

    def load(self, path: str) -> tuple[np.ndarray, Any]:
        import pyarrow as pa
        import pyarrow.ipc

        source = pa.memory_map(path)  # read-only; the tensor's buffer is the mapping
        try:
            message: np.ndarray = pyarrow.ipc.read_tensor(source).to_numpy()
        except BaseException:
            source.close()
            raise
        return message, source  # the array keeps the mapping alive past close()
