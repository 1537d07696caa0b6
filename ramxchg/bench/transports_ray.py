"""Ray's object store (optional: ``pip install ramxchg[ray]``); skipped when Ray is missing.

The parent starts a private local Ray instance (no CPUs: nothing runs as a Ray task,
so Ray starts no worker processes; its GCS, raylet and five helper processes remain)
with a temp folder of its own, removed with the instance. The producer and consumer
connect to it as two more drivers. The producer ``ray.put``\\ s each message (one copy
into the shared-memory object store) and sends the ObjectRef's parts over a pipe; the
consumer ``ray.get``\\ s a read-only numpy view of the stored object (zero-copy), reads
it, and acknowledges on the same pipe.

Why the refs' parts and not the ref: plain pickle drops an ObjectRef's owner (the
consumer's ``ray.get`` then never finds the object), and ``ray.cloudpickle`` pins the
object for the producer's lifetime (every message stays in the store until it spills).
So the producer sends what Ray's own pickler sends, without the pin, and keeps the ref
alive until the consumer's acknowledgement; the object is freed when it drops it.
`_ref_parts`, `_ref_from_parts` and `_reload_ray_config` reach into Ray's private
modules (checked with Ray 2.60); they are the places to look when a Ray upgrade breaks.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .transports import Receiver, Sender, Transport

log = logging.getLogger(__name__)

#: Object store bounds: Ray's least, and two 512 MB messages in flight (the streamed
#: window) with as much again for objects whose release is on its way to the store.
MIN_STORE_BYTES, MAX_STORE_BYTES = 256 << 20, 2 << 30


@dataclass(frozen=True)
class RayLink:
    """What the parent shares with both processes: the Ray address and one duplex pipe."""

    address: str
    temp_dir: str
    producer_end: Any  # sends refs' parts, receives acknowledgements
    consumer_end: Any  # receives refs' parts, sends acknowledgements
    environ: dict[str, str]  # the RAY_* variables before open_link


@functools.cache
def _token() -> str:
    """This process's Ray token (one per process: Ray caches the first it reads)."""
    return secrets.token_hex(32)


def _ray_environ() -> dict[str, str]:
    """Ray's variables in this process's environment."""
    return {name: value for name, value in os.environ.items() if name.startswith("RAY_")}


def _set_environ() -> dict[str, str]:
    """Ray's environment while the link is open (spawned processes inherit it); the
    ``RAY_*`` variables as they were.

    Token authentication with an in-memory token: left alone, Ray 2.60 enables it
    anyway, warns on stderr and writes a token to ``~/.ray/auth_token`` that outlives
    the benchmark. No usage statistics. What the user set wins.
    """
    before = _ray_environ()
    if "RAY_AUTH_MODE" not in before:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_token())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _reload_ray_config()
    return before


def _restore_environ(before: dict[str, str]) -> None:
    """Put the ``RAY_*`` variables back as they were (``ray.init`` adds some too)."""
    for name in _ray_environ().keys() - before.keys():
        del os.environ[name]
    os.environ.update(before)
    _reload_ray_config()


def _reload_ray_config() -> None:
    """Make this process's Ray see the environment again (read once, at import)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication reads nothing to reload
        return
    Config.initialize("")  # what Ray's own _enable_token_auth does
    AuthenticationTokenLoader.instance().reset_cache()


def _connect(address: str) -> Any:
    """Join the parent's Ray instance as a driver; the `ray` module."""
    import ray

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def _ref_parts(ref: Any) -> tuple[Any, ...]:
    """An ObjectRef as Ray's own pickler sends it, without pinning the object.

    Ray's reducer (``ray._private.serialization``) pins an out-of-band pickled ref for
    the rest of the producer's life; here the sender's `deque` holds it instead.
    """
    import ray

    core_worker = ray._private.worker.global_worker.core_worker
    _, owner_address, status = core_worker.serialize_object_ref(ref)
    return ref.binary(), ref.call_site(), owner_address, status, ref.tensor_transport()


def _ref_from_parts(parts: tuple[Any, ...]) -> Any:
    """The ObjectRef `_ref_parts` took apart, registered with its owner as Ray does."""
    from ray._private.serialization import _object_ref_deserializer

    return _object_ref_deserializer(*parts)


class _RaySender(Sender):
    def __init__(self, link: RayLink) -> None:
        self.ray = _connect(link.address)
        self.conn = link.producer_end
        self.unread: deque[Any] = deque()  # refs sent and not yet acknowledged, oldest first

    def send(self, message: np.ndarray) -> None:
        # Acknowledgements come in send order: each one frees the oldest object.
        while self.conn.poll():
            self.conn.recv_bytes()
            self.unread.popleft()
        ref = self.ray.put(message)
        self.unread.append(ref)
        self.conn.send(_ref_parts(ref))

    def close(self) -> None:
        self.unread.clear()
        self.ray.shutdown()


class _RayReceiver(Receiver):
    def __init__(self, link: RayLink) -> None:
        self.ray = _connect(link.address)
        self.conn = link.consumer_end

    def recv(self, nbytes: int) -> np.ndarray:
        ref = _ref_from_parts(self.conn.recv())
        message: np.ndarray = self.ray.get(ref)  # read-only, backed by the object store
        if message.nbytes != nbytes:
            raise ValueError(f"Ray returned {message.nbytes} bytes, expected {nbytes}")
        return message

    def done(self) -> None:
        self.conn.send_bytes(b"")  # the view is dropped: the producer may free the object

    def close(self) -> None:
        self.ray.shutdown()


class RayTransport(Transport):
    """``ray.put`` in the producer, the ObjectRef sent by pipe, ``ray.get`` in the consumer."""

    name = "ray"
    label = "Ray object store"

    def __init__(self, in_flight: int = MAX_STORE_BYTES // 2) -> None:
        """``in_flight``: the most bytes a phase of the run has in flight. The store
        holds twice that, within bounds, all of it faulted in as Ray starts: a store
        larger than the run needs made Ray's start (30 s at most, Ray's own limit) fail
        on a VM slow at fresh memory."""
        self.store_bytes = min(MAX_STORE_BYTES, max(MIN_STORE_BYTES, 2 * in_flight))

    def skip_reason(self) -> str | None:
        if importlib.util.find_spec("ray") is None:
            return "ray is not installed (pip install 'ramxchg[ray]')"
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return "Ray is already initialized in this process (the benchmark starts its own)"
        return None

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        import ray

        # Not under workdir: Ray's Unix sockets live in the temp folder, and their paths
        # must stay under 108 bytes whatever the channel root is.
        temp_dir = tempfile.mkdtemp(prefix="ramxchg-ray-")
        environ = _set_environ()
        try:
            started = ray.init(
                # Drivers connect over loopback. Ray's servers still listen on every
                # interface: the token (see _set_environ) is what keeps others out.
                _node_ip_address="127.0.0.1",
                num_cpus=0,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                object_store_memory=self.store_bytes,
                _temp_dir=temp_dir,
                # Fault the store's pages in now, not in the first measured phases.
                _system_config={"preallocate_plasma_memory": True},
            )
        except BaseException:
            ray.shutdown()  # whatever half-started
            shutil.rmtree(temp_dir, ignore_errors=True)
            _restore_environ(environ)
            raise
        address = started.address_info["address"]
        log.debug("started Ray at %s in %s", address, temp_dir)
        producer_end, consumer_end = ctx.Pipe(duplex=True)
        return RayLink(address, temp_dir, producer_end, consumer_end, environ)

    def sender(self, link: Any) -> Sender:
        return _RaySender(link)

    def receiver(self, link: Any) -> Receiver:
        return _RayReceiver(link)

    def close_link(self, link: Any) -> None:
        import ray

        link.producer_end.close()
        link.consumer_end.close()
        ray.shutdown(wait_for_processes=True)
        shutil.rmtree(link.temp_dir, ignore_errors=True)
        _restore_environ(link.environ)


__all__ = ["MAX_STORE_BYTES", "MIN_STORE_BYTES", "RayLink", "RayTransport"]
