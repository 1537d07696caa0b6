"""``ramxchg bridge``: copy a channel's items to a channel on another Ray node.

Runs until SIGINT/SIGTERM. The first stops it cleanly: no new items, those in flight
confirmed or released for the next run (exit 0). A second Ctrl-C leaves at once
(exit 130); nothing is lost either way, the next run sends what was not confirmed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..bridge import Bridge, BridgeStats
from . import EXIT_FAILURE, EXIT_OK, add_command, add_json, stop_signals
from ._items import open_channel
from ._watch import _positive

#: How often the progress line is redrawn, and signals looked at.
_TICK = 0.25

BRIDGE_EXAMPLE = """\
NODE is a Ray node id (hex), a node IP address, or resource:NAME for a custom resource
only that node has (ray start --resources '{"gpu-node": 1}').

examples:
  ramxchg bridge camera camera --node resource:gpu-node
  ramxchg bridge camera frames --node 10.0.0.7 --address 10.0.0.5:6379 --dest-root /mnt/ram
  ramxchg bridge /dev/shm/exchange camera --node resource:analysis --window 8 --json

Each item is published at the destination under the same name, attrs and bytes, and
acked at the source only then. See docs/distributed.md.
"""


def register(subparsers: Any) -> None:
    """Add ``bridge`` to the ``ramxchg`` command."""
    bridge = add_command(
        subparsers,
        "bridge",
        run_bridge,
        help="copy a channel's items to a channel on another host (Ray)",
        description="Consume SOURCE as a durable group and publish every item on DEST, a "
        "channel on another node of a Ray cluster, exactly once. Needs Ray: "
        'pip install "ramxchg[ray]".',
        epilog=BRIDGE_EXAMPLE,
    )
    bridge.add_argument("channel", metavar="SOURCE", help="source channel: name or path")
    bridge.add_argument("dest", metavar="DEST", help="destination channel: name or absolute path")
    bridge.add_argument("--node", required=True, help="destination node: id, IP or resource:NAME")
    bridge.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else auto)")
    bridge.add_argument("--root", help="source channel root (default: $RAMXCHG_ROOT)")
    bridge.add_argument("--dest-root", help="channel root on the destination node")
    bridge.add_argument("--group", help="durable group on the source (bridge-<DEST name>)")
    bridge.add_argument("--window", type=_positive, default=4, help="items in flight (4)")
    add_json(bridge, "print events as JSON lines (started, sent, delivered, stopped, ...)")


def run_bridge(args: argparse.Namespace) -> int:
    """Run ``ramxchg bridge`` until a signal stops it."""
    source = open_channel(args, create=True)  # the producer may not have started yet
    err = Console(stderr=True)
    bridge = Bridge(
        source,
        args.dest,
        node=args.node,
        address=args.address,
        dest_root=args.dest_root,
        group=args.group,
        window=args.window,
        on_event=_print_json if args.json else _print_text,
    )
    bridge.start()
    try:
        with _signals_stop(bridge):
            if err.is_terminal and not args.json:
                with Live(console=err, transient=True, refresh_per_second=4) as live:
                    while not bridge.wait(_TICK):
                        live.update(_progress(bridge.stats))
            else:
                while not bridge.wait(_TICK):  # short waits: signals are handled between
                    pass
    except BaseException:  # a second Ctrl-C: leave now, what is unconfirmed is released
        bridge.stop(timeout=0)
        raise
    bridge.stop()
    if bridge.error is not None:
        print(f"ramxchg: bridge: {bridge.error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _progress(stats: BridgeStats) -> Text:
    return Text(
        f"{stats.items} items  {stats.bytes / 1e9:.2f} GB  {stats.gbps:.2f} GB/s"
        + (f"  ({stats.present} already there)" if stats.present else "")
    )


def _print_json(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def _print_text(event: dict[str, Any]) -> None:
    """The start and the end, for people; the items only with --json."""
    if event["event"] == "started":
        print(
            f"bridging {event['source_host']}:{event['source']} -> "
            f"{event['dest_host']}:{event['dest']} (node {event['node']}, group "
            f"{event['group']})",
            flush=True,
        )
    elif event["event"] == "stopped":
        print(
            f"stopped: {event['items']} items ({event['published']} published, "
            f"{event['present']} already there), {event['bytes'] / 1e9:.3f} GB in "
            f"{event['seconds']:.1f} s ({event['gbps']:.2f} GB/s); {event['released']} "
            f"released for the next run; {event['dead']} malformed, moved to dead letters",
            flush=True,
        )


@contextlib.contextmanager
def _signals_stop(bridge: Bridge) -> Iterator[None]:
    """SIGINT/SIGTERM once: stop cleanly. A second Ctrl-C: KeyboardInterrupt (exit 130)."""
    received = 0

    def handle(signum: int) -> None:
        nonlocal received
        received += 1
        if received > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        bridge.request_stop()

    with stop_signals(handle):
        yield
