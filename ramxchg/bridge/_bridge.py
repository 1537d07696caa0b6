"""`Bridge`: a durable group on the source channel whose member publishes on another node.

The bridge runs on the source host. It consumes the source channel as the durable
group ``bridge-<DEST name>``, copies each item's file once into Ray's object store
(``ray.put`` of the mapped file: `Item.file_bytes`, through the mapping the
subscription keeps of a recycled file) and hands the object to a `Receiver` actor pinned to
the destination node; Ray moves the bytes between the nodes, the receiver reads them
zero-copy and publishes them. The source item is acked only when the receiver has
returned, so nothing is lost when the bridge is killed, and nothing is published
twice after a restart (see `ramxchg.bridge._receiver`).

Up to ``window`` items are in flight at once: while the receiver writes one, Ray moves
the next. The receiver publishes them in the order they were sent (one actor, one
task at a time), so the destination's order is the source's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import Channel, CorruptItem, Item, ItemExists, ItemNotFound, RamxchgError, Subscription
from ._ray import default_address, describe_node, require_ray, resolve_node
from ._receiver import LEDGER_LINES, Receiver

log = logging.getLogger(__name__)

#: How long the loop waits for an item or a result before it looks at `stop` again.
TICK_SECONDS = 0.1
#: On stop, how long items in flight may take to be confirmed before they are released.
DRAIN_SECONDS = 5.0
#: How long starting the receiver on the destination node may take.
START_TIMEOUT_SECONDS = 120.0

Event = dict[str, Any]


class BridgeFailed(RamxchgError, RuntimeError):
    """The bridge stopped on an error (the cause is chained): Ray, the receiver, a conflict."""


@dataclass
class BridgeStats:
    """What a bridge has done so far."""

    #: items delivered and acked at the source
    items: int = 0
    #: of which published at the destination by this run
    published: int = 0
    #: of which were there already (sent again after a restart)
    present: int = 0
    #: bytes of the delivered items' files
    bytes: int = 0
    #: seconds since the bridge started
    seconds: float = 0.0
    #: items sent but not confirmed when the bridge stopped (delivered again later)
    released: int = 0
    #: malformed items the destination refused, moved to the source's dead letters
    dead: int = 0
    started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def gbps(self) -> float:
        """Delivered bytes per second, in GB/s."""
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The numbers as JSON values."""
        record = asdict(self)
        del record["started"]
        record["gbps"] = round(self.gbps, 4)
        return record


@dataclass
class _Sent:
    item: Item
    result: Any  # the ObjectRef of Receiver.deliver's answer
    nbytes: int


class Bridge:
    """Copy every item of a channel to a channel on another Ray node, exactly once.

    Parameters
    ----------
    source
        The source channel on this host: a `Channel`, a name under ``root``, or a path.
    dest
        The destination channel: a name under ``dest_root``, or an absolute path on
        the destination node.
    node
        The destination Ray node: node id (hex), IP address, or ``resource:NAME``.
    address
        The Ray cluster (``$RAY_ADDRESS``, else ``"auto"``); ignored when this process
        is already connected to Ray.
    root, dest_root
        Channel roots on this host and on the destination node (each node's default
        root when None).
    group
        The durable group on the source (default ``bridge-<DEST name>``).
    window
        Items in flight at once (memory: about ``window`` items in each object store).
    on_event
        Called (from the bridge's thread) with each event: ``started``, ``sent`` (handed
        to Ray), ``delivered`` (confirmed and acked), ``gone`` (deleted at the source
        before it was sent), ``dead`` (malformed: moved to the source's dead letters),
        ``stopping`` (asked to stop) and ``stopped``, as JSON-ready dicts.

    Examples
    --------
    >>> with Bridge("camera", "camera", node="resource:gpu-node") as bridge:
    ...     bridge.wait(60)  # or until stop() from another thread or a signal
    """

    def __init__(
        self,
        source: Channel | str | os.PathLike[str],
        dest: str | os.PathLike[str],
        *,
        node: str,
        address: str | None = None,
        root: str | os.PathLike[str] | None = None,
        dest_root: str | os.PathLike[str] | None = None,
        group: str | None = None,
        window: int = 4,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.source = source if isinstance(source, Channel) else Channel(source, root)
        self.dest = os.fspath(dest)
        self.node = node
        self.address = address or default_address()
        self.dest_root = os.fspath(dest_root) if dest_root is not None else None
        self.group = group or f"bridge-{Path(self.dest).name}"
        self.window = window
        self.stats = BridgeStats()
        #: the exception that stopped the bridge, if one did
        self.error: BaseException | None = None
        self._on_event = on_event
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ray: Any = None
        self._own_ray = False
        self._receiver: Any = None
        self._subscription: Subscription | None = None
        self._sent: deque[_Sent] = deque()

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> Bridge:
        """Join the Ray cluster, start the receiver on the destination node, and begin.

        Raises `RayNotInstalled`, `NodeNotFound`, and `BridgeFailed` when the cluster or
        the receiver cannot be reached.
        """
        ray = self._ray = require_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BridgeFailed(
                    f"cannot join the Ray cluster at {self.address!r}: {exc}. Start one with "
                    "'ray start --head' (see docs/distributed.md) or pass --address"
                ) from exc
            self._own_ray = True
        try:
            self._start_receiver(ray)
            self._subscription = self.source.subscribe(group=self.group)
        except BaseException:
            self._shutdown()
            raise
        self._thread = threading.Thread(target=self._loop, name="ramxchg-bridge", daemon=True)
        self._thread.start()
        return self

    def _start_receiver(self, ray: Any) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = ray.nodes()
        node_id = resolve_node(self.node, nodes)
        # Pinned by node id with no resources asked for: a predecessor's receiver that
        # Ray has not reaped yet never delays this one.
        actor = ray.remote(Receiver).options(
            num_cpus=0,
            max_concurrency=1,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        bridge_id = hashlib.sha256(
            f"{self._host}\0{self.source.path}\0{self.group}".encode()
        ).hexdigest()[:16]
        lines = max(LEDGER_LINES, 2 * self.window)
        self._receiver = actor.remote(self.dest, self.dest_root, bridge_id, lines)
        try:
            where = ray.get(self._receiver.where.remote(), timeout=START_TIMEOUT_SECONDS)
        except Exception as exc:
            raise BridgeFailed(
                f"the receiver did not start on node {node_id}: {_cause(exc)}"
            ) from exc
        node = next(n for n in nodes if n["NodeID"] == node_id)
        self._emit(
            "started",
            source=str(self.source.path),
            source_host=self._host,
            source_node=ray.get_runtime_context().get_node_id(),
            group=self.group,
            dest=where["channel"],
            dest_host=where["host"],
            dest_node=node_id,
            node=describe_node(node),
            window=self.window,
        )

    def request_stop(self) -> None:
        """Ask the bridge to stop, without waiting (safe in a signal handler); see `stop`."""
        self._stop.set()

    def stop(self, timeout: float | None = 30.0) -> BridgeStats:
        """Stop taking items and wait up to ``timeout`` s for the bridge to end; the stats.

        Items in flight get `DRAIN_SECONDS` to be confirmed; the others are released:
        the next run sends them again and finds them delivered if they were.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._shutdown()
        return self.stats

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the bridge stops (`stop`, or an error in `error`); False on timeout."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _shutdown(self) -> None:
        """Release what is unconfirmed, end the receiver, and leave Ray if we joined it."""
        if self._subscription is not None:
            self._sent.clear()
            self._subscription.close()  # unacked claims go back to the group
            self._subscription = None
        ray = self._ray
        if ray is not None and self._receiver is not None:
            ray.kill(self._receiver)  # a put still waiting for room must not land later
            self._receiver = None
        if ray is not None and self._own_ray:
            ray.shutdown()
            self._own_ray = False

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._subscription is not None
        try:
            while not self._stop.is_set():
                if self._sent:
                    # A full window waits for the oldest result; otherwise only a glance.
                    full = len(self._sent) >= self.window
                    self._collect(TICK_SECONDS if full else 0.005)
                    if full:
                        continue
                try:
                    item = self._subscription.get(timeout=0 if self._sent else TICK_SECONDS)
                except TimeoutError:
                    continue
                self._send(item)
            self._emit("stopping", in_flight=len(self._sent))
            deadline = time.monotonic() + DRAIN_SECONDS
            while self._sent and time.monotonic() < deadline:
                self._collect(TICK_SECONDS)
        except BaseException as exc:
            self.error = exc
            log.error("bridge %s -> %s stopped: %s", self.source.path, self.dest, exc)
        finally:
            self.stats.released = len(self._sent)
            self.stats.seconds = time.monotonic() - self.stats.started
            self._emit(
                "stopped", error=str(self.error) if self.error else None, **self.stats.summary()
            )
            self._stop.set()

    def _send(self, item: Item) -> None:
        """Copy the item's file into the object store and hand it to the receiver."""
        sidecar = item.sidecar
        try:
            origin = {
                "host": self._host,
                "channel": str(self.source.path),
                "name": item.name,
                "seq": item.seq,
                "published_ns": item.published_ns,
            }
            # Zero-copy, reader-locked; a recycled file through the mapping the
            # subscription keeps of it (no new mapping of its pages per item).
            data = item.file_bytes()
        except (FileNotFoundError, ItemNotFound):
            # Deleted meanwhile (keep_last, ttl, by hand): nothing to copy.
            log.warning("%s: item %s was deleted before it was sent", self.source.path, item.name)
            self._emit("gone", name=item.name, seq=item.seq)
            return
        nbytes = data.nbytes
        ref = self._ray.put(data)  # the one copy on this node
        del data  # lets go of the reader lock (and of a mapping not kept)
        result = self._receiver.deliver.remote(
            ref, item.name, item.format, dict(sidecar.attrs) if sidecar else {}, origin
        )
        self._sent.append(_Sent(item, result, nbytes))
        self._emit("sent", name=item.name, seq=item.seq, bytes=nbytes)

    def _collect(self, timeout: float) -> None:
        """Ack every item whose delivery is confirmed, oldest first."""
        ray = self._ray
        while self._sent:
            ready, _ = ray.wait([self._sent[0].result], timeout=timeout)
            if not ready:
                return
            sent = self._sent.popleft()
            try:
                answer = ray.get(sent.result)
            except ray.exceptions.RayTaskError as exc:
                cause = _cause(exc)
                if not isinstance(cause, CorruptItem):
                    raise (
                        cause if isinstance(cause, ItemExists) else BridgeFailed(str(exc))
                    ) from exc
                self._dead_letter(sent, cause)
                timeout = 0
                continue
            except ray.exceptions.RayError as exc:
                raise BridgeFailed(f"the receiver failed: {exc}") from exc
            sent.item.ack()
            stats = self.stats
            stats.items += 1
            stats.bytes += sent.nbytes
            stats.published += answer["status"] == "published"
            stats.present += answer["status"] == "present"
            stats.seconds = time.monotonic() - stats.started
            self._emit(
                "delivered",
                name=sent.item.name,
                seq=sent.item.seq,
                bytes=sent.nbytes,
                status=answer["status"],
                dest_seq=answer["seq"],
            )
            timeout = 0

    def _dead_letter(self, sent: _Sent, cause: CorruptItem) -> None:
        """A file the destination refused as malformed: a dead letter at the source, as
        ``ramxchg watch`` does with unreadable items, so it stops no one for good."""
        assert self._subscription is not None
        reason = f"the bridge's destination refused it: {cause}"
        moved = self._subscription.dead_letter(sent.item, reason, group=self.group)
        log.error("%s: %s moved to %s: %s", self.source.path, sent.item.name, moved, reason)
        self.stats.dead += 1
        self._emit("dead", name=sent.item.name, seq=sent.item.seq, reason=reason, moved=str(moved))

    def _emit(self, event: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event({"event": event, **fields})


def _cause(exc: BaseException) -> BaseException:
    """What a Ray error wraps (the receiver's own exception), or the error itself."""
    return getattr(exc, "cause", None) or exc
