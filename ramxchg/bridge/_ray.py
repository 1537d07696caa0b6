"""Ray, imported on demand: the bridge's one optional dependency, and where it runs.

``--node`` names the destination as a node id (hex), a node IP address, or
``resource:NAME`` (a custom resource only that node has). It is resolved once, from
``ray.nodes()``, to a node id: the receiving actor is then pinned to that node by id
and asks for no resource at all, so a restarted bridge never waits for the resources
its killed predecessor's actor may still hold.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .. import RamxchgError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "ramxchg[ray]"'
#: A Ray node id: 28 bytes, written as 56 hex digits.
_NODE_ID = re.compile(r"^[0-9a-fA-F]{56}$")


class RayNotInstalled(RamxchgError, ImportError):
    """The bridge needs Ray, which is an optional extra."""


class NodeNotFound(RamxchgError, LookupError):
    """``--node`` matches no live node, or several (``.spec``, ``.matches``: node ids)."""


def require_ray() -> Any:
    """The `ray` module; `RayNotInstalled` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled(
            f"the bridge needs Ray, which is not installed: {INSTALL_HINT}"
        ) from exc
    return ray


def default_address() -> str:
    """``$RAY_ADDRESS``, else ``"auto"`` (the cluster started on this host by ``ray start``)."""
    return os.environ.get("RAY_ADDRESS") or "auto"


def resolve_node(spec: str, nodes: Sequence[Mapping[str, Any]]) -> str:
    """The id of the one live node ``spec`` names, among ``nodes`` (``ray.nodes()``).

    ``spec`` is a node id (hex), an IP address, or ``resource:NAME``. Raises
    `NodeNotFound` when no live node matches, or several do (listing them): several
    Ray nodes may run on one host, and a bridge must not pick one of them by chance.
    """
    alive = [node for node in nodes if node.get("Alive")]
    if spec.startswith("resource:"):
        resource = spec.removeprefix("resource:")
        matches = [n for n in alive if n.get("Resources", {}).get(resource, 0) > 0]
        what = f"custom resource {resource!r}"
    elif _NODE_ID.match(spec):
        matches = [n for n in alive if n["NodeID"] == spec.lower()]
        what = f"node id {spec}"
    else:
        try:
            address = ipaddress.ip_address(spec)
        except ValueError as exc:
            raise NodeNotFound(
                f"--node {spec!r} is not a node id (56 hex digits), an IP address or resource:NAME",
                spec=spec,
                matches=[],
            ) from exc
        matches = [n for n in alive if n.get("NodeManagerAddress") == str(address)]
        what = f"IP address {address}"
    if len(matches) == 1:
        return str(matches[0]["NodeID"])
    if not matches:
        listing = "; ".join(describe_node(n) for n in alive) or "none"
        raise NodeNotFound(
            f"no live Ray node has {what}. Live nodes: {listing}", spec=spec, matches=[]
        )
    listing = "; ".join(describe_node(n) for n in matches)
    raise NodeNotFound(
        f"{len(matches)} Ray nodes have {what}: {listing}. Name one by its node id, or "
        "give it a custom resource of its own (ray start --resources) and use resource:NAME",
        spec=spec,
        matches=[n["NodeID"] for n in matches],
    )


def describe_node(node: Mapping[str, Any]) -> str:
    """``<node id> at <ip> (<custom resources>)``, for messages."""
    custom = sorted(
        name
        for name in node.get("Resources", {})
        if name not in ("CPU", "GPU", "memory", "object_store_memory")
        and not name.startswith("node:")
        and not name.startswith("accelerator_type:")
    )
    extra = f" ({', '.join(custom)})" if custom else ""
    return f"{node['NodeID']} at {node.get('NodeManagerAddress', '?')}{extra}"
