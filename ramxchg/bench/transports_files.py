"""Transports through files: ramxchg channels (put, create, HDF5) and .npy on a real disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import Channel, Item
from ..ramdisk import info
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

    The consumer subscribes as a durable group and acks, so each item is deleted once
    read (what a streaming user does). ``root`` None is the default root.
    """

    def __init__(
        self,
        name: str,
        label: str,
        mode: str,
        root: str | None = None,
        *,
        skip: str | None = None,
        recycle: int = 0,
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
        channel = Channel(f"bench-{self.name}-{os.getpid()}", root, recycle=self.recycle)
        channel.subscribe(GROUP).close()  # register the group before the first item
        return str(channel.path)

    def sender(self, link: Any) -> Sender:
        return _ChannelSender(link, self.mode)

    def receiver(self, link: Any) -> Receiver:
        return _ChannelReceiver(link)


# -- np.save / np.load on the real disk -------------------------------------------------------


class _NpySender(Sender):
    def __init__(self, folder: str, conn: Any) -> None:
        self.folder = folder
        self.conn = conn
        self.count = 0

    def send(self, message: np.ndarray) -> None:
        self.count += 1
        final = os.path.join(self.folder, f"{self.count}.npy")
        tmp = os.path.join(self.folder, f".{self.count}.tmp.npy")
        np.save(tmp, message)
        os.replace(tmp, final)  # the consumer never sees a half-written file
        self.conn.send(final)


class _NpyReceiver(Receiver):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.path: str | None = None

    def recv(self, nbytes: int) -> np.ndarray:
        self.path = self.conn.recv()
        loaded: np.ndarray = np.load(self.path)
        return loaded

    def done(self) -> None:
        if self.path is not None:
            os.unlink(self.path)
            self.path = None


class NpyDiskTransport(Transport):
    """``np.save`` into a folder on the real disk, name sent by pipe, ``np.load`` back.

    No fsync: the data lives in the page cache, as it would for a user doing this.
    """

    name = "npy_disk"
    label = "np.save/load disk"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def skip_reason(self) -> str | None:
        if not os.path.isdir(self.folder):
            return f"{self.folder} is not there"
        if info(self.folder).ram_backed:
            return f"{self.folder} is RAM-backed, not a real disk"
        return None

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        folder = Path(self.folder) / f"ramxchg-bench-{os.getpid()}"
        folder.mkdir(mode=0o700)
        return (str(folder), ctx.Pipe(duplex=False))

    def sender(self, link: Any) -> Sender:
        return _NpySender(link[0], link[1][1])

    def receiver(self, link: Any) -> Receiver:
        return _NpyReceiver(link[1][0])

    def close_link(self, link: Any) -> None:
        folder = Path(link[0])
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
