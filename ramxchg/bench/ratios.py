"""Ratios between the rows of a result: every row against memcpy and
``multiprocessing.Queue``, and every ramxchg row against the peers users would pick
instead (iceoryx2, Ray, np.save/np.load on the real disk)."""

from __future__ import annotations

from typing import Any

#: The peers each ramxchg row is measured against: transport name -> short name.
PEERS = {"iceoryx2": "iceoryx2", "ray": "Ray", "npy_disk": "disk"}


def is_ramxchg(entry: dict[str, Any]) -> bool:
    """Whether a transport entry of a result is one of ramxchg's own."""
    return str(entry["name"]).startswith("ramxchg")


def _measured(entries: list[dict[str, Any]], name: str) -> dict[int, dict[str, Any]]:
    """size -> result of the transport ``name``, for the sizes it finished."""
    entry = next((e for e in entries if e["name"] == name), None)
    return {r["size"]: r for r in entry["results"] if not r.get("error")} if entry else {}


def _gbps_ratio(result: dict[str, Any], reference: dict[str, Any] | None) -> float | None:
    if reference is None:
        return None
    return float(result["gbps"]["median"] / reference["gbps"]["median"])


def add_ratios(entries: list[dict[str, Any]], memcpy: float) -> None:
    """Add the ratios to every finished result, in place.

    ``ratio_memcpy`` and ``ratio_queue`` are GB/s ratios; ``latency_vs_queue`` = p50 /
    Queue's p50 (below 1: faster than Queue); ramxchg's rows also get ``vs_peers``, the
    GB/s ratio to each of `PEERS` at that size (None: the peer has no number there).
    """
    queue = _measured(entries, "queue")
    peers = {name: _measured(entries, name) for name in PEERS}
    for entry in entries:
        for result in entry["results"]:
            if result.get("error"):
                continue
            size = result["size"]
            result["ratio_memcpy"] = result["gbps"]["median"] / memcpy
            reference = queue.get(size)
            result["ratio_queue"] = _gbps_ratio(result, reference)
            result["latency_vs_queue"] = (
                result["p50_us"]["median"] / reference["p50_us"]["median"] if reference else None
            )
            if is_ramxchg(entry):
                result["vs_peers"] = {
                    name: _gbps_ratio(result, by_size.get(size)) for name, by_size in peers.items()
                }
