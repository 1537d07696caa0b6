"""iceoryx2 publish-subscribe (optional: ``pip install 'ramxchg[bench]'``); skipped when
iceoryx2 is missing.

What an iceoryx2 user does to move large arrays: the producer loans a slice of the
publisher's shared-memory pool (``loan_slice_uninit``), copies the array in and sends it;
the consumer receives the sample and reads it in place, then releases it to the pool. A
consumer that has nothing to receive blocks on an iceoryx2 event, which the producer
notifies after each send (iceoryx2's own pattern for a blocking subscriber); the wait is
timed, so that a sample found without its notification fails the phase instead of
hanging it.

One publish-subscribe service per message size, made when the size changes (in the
warm-up): the publisher's pool holds samples of exactly that size (``initial_max_slice_len``
with the ``Static`` allocation strategy: no reallocation), and only as many as the
streamed window needs. With one subscriber, a buffer of ``window_for(size)`` samples, one
borrowed and one loaned sample, a 512 MB service maps a 2 GB pool. Safe overflow is off:
a full buffer makes the publisher wait instead of dropping the oldest sample.

Everything iceoryx2 creates goes under a private prefix and root folder (`IceoryxLink`),
so the benchmark never touches another program's iceoryx2 files and removes all of its
own in `IceoryxTransport.close_link`, including what a killed worker left behind.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runner import window_for
from .transports import Receiver, Sender, Transport

log = logging.getLogger(__name__)

#: Where iceoryx2 keeps its shared memory on Linux (POSIX shm objects are files there).
SHM_FOLDER = "/dev/shm"
#: Names of the services, below the link's private prefix.
SERVICE = "ramxchg-bench"
#: Seconds the consumer waits for a notification before it looks for a sample anyway:
#: one found then came without its notification, which the phase reports as an error.
LOST_WAKE_UP_SECONDS = 10.0


@dataclass(frozen=True)
class IceoryxLink:
    """What both processes share: iceoryx2's file prefix and root folder, private to a link."""

    prefix: str  # every shared-memory object iceoryx2 creates is /dev/shm/<prefix>...
    root: str  # iceoryx2's root path: its node and service files, and event sockets


def _config(link: IceoryxLink) -> Any:
    """iceoryx2's configuration with the link's private prefix and root folder."""
    import iceoryx2 as iox2

    config = iox2.config.default()
    config.global_cfg.prefix = iox2.FileName.new(link.prefix)
    config.global_cfg.root_path = iox2.Path.new(link.root + "/")
    return config


def _node(link: IceoryxLink) -> Any:
    """A node of the link's configuration that leaves signals alone: the parent's
    ``terminate`` must end a stuck worker, which iceoryx2's own SIGTERM handler would not."""
    import iceoryx2 as iox2

    iox2.set_log_level_from_env_or(iox2.LogLevel.Warn)  # IOX2_LOG_LEVEL still wins
    return (
        iox2.NodeBuilder.new()
        .config(_config(link))
        .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
        .create(iox2.ServiceType.Ipc)
    )


def _messages(node: Any, nbytes: int) -> Any:
    """The publish-subscribe service for ``nbytes`` messages (opened or created)."""
    import iceoryx2 as iox2

    return (
        node.service_builder(iox2.ServiceName.new(f"{SERVICE}/{nbytes}"))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(window_for(nbytes))
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(False)
        .open_or_create()
    )


def _sent(node: Any) -> Any:
    """The event service the producer notifies after each send."""
    import iceoryx2 as iox2

    return node.service_builder(iox2.ServiceName.new(f"{SERVICE}/sent")).event().open_or_create()


def _seconds(seconds: float) -> Any:
    import iceoryx2 as iox2

    return iox2.Duration.from_secs_f64(seconds)


def _payload(sample: Any) -> np.ndarray:
    """The sample's payload in shared memory, as a uint8 array (no copy)."""
    return np.frombuffer(sample.payload().as_memory_view(), np.uint8)


class _End:
    """What both ends hold: a node, and a port (publisher or subscriber) of the service
    for the current message size."""

    def __init__(self, link: IceoryxLink) -> None:
        self.node = _node(link)
        self.nbytes = -1
        self.port: Any = None

    def _open(self, service: Any, nbytes: int) -> Any:
        raise NotImplementedError

    def _size(self, nbytes: int) -> None:
        """Switch to the service for ``nbytes`` messages (in a warm-up: sizes change there)."""
        if nbytes == self.nbytes:
            return
        if self.port is not None:
            self.port.delete()
        self.port = self._open(_messages(self.node, nbytes), nbytes)
        self.nbytes = nbytes

    def _release(self) -> None:
        if self.port is not None:
            self.port.delete()
        del self.node  # the node removes what it created


class _IceoryxSender(_End, Sender):
    def __init__(self, link: IceoryxLink) -> None:
        super().__init__(link)
        self.notifier = _sent(self.node).notifier_builder().create()

    def _open(self, service: Any, nbytes: int) -> Any:
        import iceoryx2 as iox2

        # The consumer has subscribed already (in prepare): the publisher connects to it.
        return (
            service.publisher_builder()
            .initial_max_slice_len(nbytes)
            .allocation_strategy(iox2.AllocationStrategy.Static)
            .max_loaned_samples(1)
            .create()
        )

    def send(self, message: np.ndarray) -> None:
        self._size(message.nbytes)
        sample = self.port.loan_slice_uninit(message.nbytes)
        np.copyto(_payload(sample), message.reshape(-1).view(np.uint8))
        if sample.assume_init().send() == 0:  # else the consumer would wait forever
            raise ConnectionError("iceoryx2 delivered the sample to no subscriber")
        self.notifier.notify()

    def close(self) -> None:
        self.notifier.delete()
        self._release()


class _IceoryxReceiver(_End, Receiver):
    def __init__(self, link: IceoryxLink) -> None:
        super().__init__(link)
        self.listener = _sent(self.node).listener_builder().create()
        self.sample: Any = None

    def _open(self, service: Any, nbytes: int) -> Any:
        return service.subscriber_builder().create()

    def prepare(self, nbytes: int) -> None:
        self._size(nbytes)

    def recv(self, nbytes: int) -> np.ndarray:
        sample = self.port.receive()
        while sample is None:
            # A notification sent after the receive above is kept until this wait.
            woken = self.listener.timed_wait(_seconds(LOST_WAKE_UP_SECONDS))
            sample = self.port.receive()
            # Sent as the wait timed out, its notification is on the way; else it was lost,
            # and an untimed wait would have hung.
            if sample is not None and not woken and not self.listener.timed_wait(_seconds(1)):
                raise ConnectionError(
                    f"iceoryx2 lost a notification: a sample waited {LOST_WAKE_UP_SECONDS:g} s"
                )
        self.sample = sample
        return _payload(sample)  # read in place, in the publisher's pool

    def done(self) -> None:
        if self.sample is not None:
            self.sample.delete()  # back to the publisher's pool
            self.sample = None

    def close(self) -> None:
        self.done()
        self.listener.delete()
        self._release()


class IceoryxTransport(Transport):
    """iceoryx2: loan a slice, copy the array in, send; the consumer reads it in place."""

    name = "iceoryx2"
    label = "iceoryx2"

    def skip_reason(self) -> str | None:
        try:
            import iceoryx2  # noqa: F401
        except ImportError as exc:
            return f"iceoryx2 is not installed (pip install 'ramxchg[bench]'): {exc}"
        return None

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        # Not under workdir: event sockets live in the root folder, and their paths must
        # stay under 108 bytes whatever the channel root is.
        root = tempfile.mkdtemp(prefix="ramxchg-iox2-")
        return IceoryxLink(f"rxbench{os.getpid()}{secrets.token_hex(4)}_", root)

    def sender(self, link: Any) -> Sender:
        return _IceoryxSender(link)

    def receiver(self, link: Any) -> Receiver:
        return _IceoryxReceiver(link)

    def close_link(self, link: Any) -> None:
        cleanup(link)


def leftovers(link: IceoryxLink) -> list[str]:
    """iceoryx2's files of ``link`` still in /dev/shm (Linux; elsewhere none are seen)."""
    return sorted(glob.glob(os.path.join(glob.escape(SHM_FOLDER), glob.escape(link.prefix) + "*")))


def cleanup(link: IceoryxLink) -> None:
    """Remove everything iceoryx2 made for ``link``, once both processes have exited.

    iceoryx2 removes the resources of nodes that died (a killed worker's shared memory,
    sockets and service entries); what remains is its global management object, which
    it keeps for later nodes of the same prefix: no later node comes, so it goes too.
    """
    import iceoryx2 as iox2

    try:
        _node(link).try_cleanup_dead_nodes()
    except iox2.NodeCreationFailure as exc:
        log.warning("iceoryx2 could not clean up after %s: %s", link.prefix, exc)
    for path in leftovers(link):
        if not path.endswith(".global_mgmt"):
            log.warning("iceoryx2 left %s behind; removed", path)
        os.unlink(path)
    shutil.rmtree(link.root, ignore_errors=True)


__all__ = ["IceoryxLink", "IceoryxTransport", "cleanup", "leftovers"]
