"""Show a benchmark result: a rich table, a markdown table, or a plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from ..disks import format_size


class PlotUnavailable(RuntimeError):
    """matplotlib is missing: ``pip install 'ramxchg[plot]'``."""


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per transport and size: the cells both tables show."""
    table = []
    for entry in result["transports"]:
        if entry["skipped"]:
            table.append([entry["label"], "-", f"skipped: {entry['skipped']}", *[""] * 5])
            continue
        for item in entry["results"]:
            if item.get("error"):
                first_line = item["error"].splitlines()[0]
                table.append([entry["label"], format_size(item["size"]), f"error: {first_line}"])
                table[-1] += [""] * 5
                continue
            gbps, p50, p99 = item["gbps"], item["p50_us"], item["p99_us"]
            table.append(
                [
                    entry["label"],
                    format_size(item["size"]),
                    f"{gbps['median']:.3g} ({gbps['min']:.3g}-{gbps['max']:.3g})",
                    _ratio(item["ratio_memcpy"]),
                    _ratio(item["ratio_queue"]),
                    f"{p50['median']:.0f} ({p50['min']:.0f}-{p50['max']:.0f})",
                    f"{p99['median']:.0f}",
                    _ratio(item["latency_vs_queue"]),
                ]
            )
    return table


HEADERS = [
    "transport",
    "size",
    "GB/s median (min-max)",
    "x memcpy",
    "x Queue",
    "p50 us (min-max)",
    "p99 us",
    "p50 / Queue p50",
]


def rich_table(result: dict[str, Any]) -> Table:
    """The result as a rich table, titled with memcpy bandwidth and the machine."""
    m = result["machine"]
    title = (
        f"producer -> consumer process, consumer reads every byte; memcpy "
        f"{result['memcpy_gbps']:.1f} GB/s; {m['cpus']} CPUs, {m['kernel']}"
    )
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("transport", "size") else "right")
    for row in rows(result):
        table.add_row(*row)
    return table


def markdown_table(result: dict[str, Any]) -> str:
    """The result as a markdown table (for docs/benchmarks.md)."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    return "\n".join(lines)


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` now if matplotlib is missing (before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'ramxchg[plot]'") from exc


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Save GB/s and p50 latency against message size, one line per transport."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colors = plt.get_cmap("tab20").colors  # more transports than tab10 has colors
    for index, entry in enumerate(result["transports"]):
        good = [r for r in entry["results"] if not r.get("error")]
        if not good:
            continue
        sizes = [r["size"] for r in good]
        style = {
            "marker": "o",
            "label": entry["label"],
            "color": colors[index % len(colors)],
            "linestyle": "-" if entry["name"].startswith("ramxchg") else ":",
        }
        left.plot(sizes, [r["gbps"]["median"] for r in good], **style)
        right.plot(sizes, [r["p50_us"]["median"] for r in good], **style)
    left.axhline(result["memcpy_gbps"], color="black", linestyle="--", label="memcpy")
    for axis, ylabel in ((left, "GB/s (median)"), (right, "latency p50 (us)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("message size (bytes)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="small")
    figure.suptitle("ramxchg bench: producer process -> consumer process")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
