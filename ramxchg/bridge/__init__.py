"""Bridge a channel to other hosts over a Ray cluster (``pip install "ramxchg[ray]"``).

A bridge is a durable group on the source channel whose member publishes every item
on a channel of another Ray node: same names, attrs and files, each item exactly
once, in the source's order. Ray carries the bytes (its object store, node to node);
ramxchg keeps the groups, retention and delivery guarantees. See docs/distributed.md.

Importing this package does not import Ray; `Bridge.start` does.
"""

from __future__ import annotations

from ._bridge import Bridge, BridgeFailed, BridgeStats
from ._ray import INSTALL_HINT, NodeNotFound, RayNotInstalled, resolve_node

__all__ = [
    "INSTALL_HINT",
    "Bridge",
    "BridgeFailed",
    "BridgeStats",
    "NodeNotFound",
    "RayNotInstalled",
    "resolve_node",
]
