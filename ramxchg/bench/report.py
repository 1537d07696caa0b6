"""Show a benchmark result: rich tables, markdown tables, the winners, or a plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from ..disks import format_size
from .ratios import PEERS, is_ramxchg

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class PlotUnavailable(RuntimeError):
    """matplotlib is missing: ``pip install 'ramxchg[plot]'``."""


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _time_scale(us: float) -> tuple[float, str]:
    """Divisor and unit that show ``us`` microseconds with at most 3 integer digits."""
    if us < 1e3:
        return 1.0, "us"
    return (1e3, "ms") if us < 1e6 else (1e6, "s")


def _duration(us: float) -> str:
    """``16 us``, ``1.5 ms``, ``2.05 s``."""
    scale, unit = _time_scale(us)
    return f"{us / scale:.3g} {unit}"


def _time(spread: dict[str, float], ranges: bool) -> str:
    """``472 us``, ``48 (46.3-51.2) ms``: the median's unit for the whole cell."""
    if not ranges:
        return _duration(spread["median"])
    scale, unit = _time_scale(spread["median"])
    low, mid, high = (spread[k] / scale for k in ("min", "median", "max"))
    return f"{mid:.3g} ({low:.3g}-{high:.3g}) {unit}"


def _gbps(spread: dict[str, float], ranges: bool) -> str:
    mid = f"{spread['median']:.3g}"
    return f"{mid} ({spread['min']:.3g}-{spread['max']:.3g})" if ranges else mid


def headers(ranges: bool) -> list[str]:
    """Column titles; ``ranges`` adds min-max over the repetitions to GB/s and p50."""
    spread = " (min-max)" if ranges else ""
    return [
        "transport",
        "size",
        f"GB/s{spread}",
        "/memcpy",
        "/Queue",
        f"p50{spread}",
        "p99",
        "p50/Queue",
    ]


def rows(result: dict[str, Any], ranges: bool = True) -> list[list[str]]:
    """One row per transport and size: the cells both tables show."""
    width = len(headers(ranges))
    table = []
    for entry in result["transports"]:
        if entry["skipped"]:
            table.append([entry["label"], "-", f"skipped: {entry['skipped']}"])
            table[-1] += [""] * (width - 3)
            continue
        for item in entry["results"]:
            if item.get("error"):
                first_line = item["error"].splitlines()[0]
                table.append([entry["label"], format_size(item["size"]), f"error: {first_line}"])
                table[-1] += [""] * (width - 3)
                continue
            table.append(
                [
                    entry["label"],
                    format_size(item["size"]),
                    _gbps(item["gbps"], ranges),
                    _ratio(item["ratio_memcpy"]),
                    _ratio(item["ratio_queue"]),
                    _time(item["p50_us"], ranges),
                    _time(item["p99_us"], False),
                    _ratio(item["latency_vs_queue"]),
                ]
            )
    return table


def peer_headers() -> list[str]:
    """Column titles of the table of ramxchg's rows against the peers."""
    return ["transport", "size", "GB/s", *(f"/{short}" for short in PEERS.values())]


def peer_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per ramxchg transport and size it finished: GB/s and the ratio to each
    peer at that size ("-": the peer has no number there)."""
    table = []
    for entry in filter(is_ramxchg, result["transports"]):
        for item in entry["results"]:
            if item.get("error"):
                continue
            versus = item.get("vs_peers") or {}
            table.append(
                [
                    entry["label"],
                    format_size(item["size"]),
                    _gbps(item["gbps"], False),
                    *(_ratio(versus.get(name)) for name in PEERS),
                ]
            )
    return table


def _compared(result: dict[str, Any]) -> bool:
    """Whether any ramxchg row has a ratio to a peer (else there is no peer table)."""
    return any(
        ratio is not None
        for entry in filter(is_ramxchg, result["transports"])
        for item in entry["results"]
        for ratio in (item.get("vs_peers") or {}).values()
    )


def _rich(title: str, titles: list[str], cells: list[list[str]], caption: str) -> Table:
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for header in titles:
        table.add_column(header, justify="left" if header in ("transport", "size") else "right")
    for row in cells:
        table.add_row(*map(Text, row))  # a skip reason says pip install 'ramxchg[ray]'
    return table


#: What the peer table's ratios are.
PEER_TITLE = "ramxchg against the peers: GB/s ratio (above 1: ramxchg moved more)"


def rich_table(result: dict[str, Any]) -> Table:
    """Every transport as a rich table, with memcpy bandwidth and the machine below it.

    ``--quick`` results leave out the min-max ranges (two repetitions say little), so the
    table fits 100 columns.
    """
    m = result["machine"]
    ranges = not result["config"]["quick"]
    return _rich(
        "producer -> consumer process, consumer reads every byte",
        headers(ranges),
        rows(result, ranges),
        f"memcpy {result['memcpy_gbps']:.1f} GB/s; {m['cpus']} CPUs, kernel {m['kernel']}",
    )


def peer_table(result: dict[str, Any]) -> Table | None:
    """ramxchg's rows against the peers as a rich table (None: no peer was measured)."""
    if not _compared(result):
        return None
    disk = result.get("disk_folder", "the real disk")
    caption = f"disk: np.save/np.load in {disk}, through the page cache"
    return _rich(PEER_TITLE, peer_headers(), peer_rows(result), caption)


def rich_tables(result: dict[str, Any]) -> list[Table]:
    """`rich_table`, then `peer_table` when any peer was measured (both fit 100 columns
    for ``--quick`` results)."""
    peers = peer_table(result)
    return [rich_table(result)] + ([peers] if peers is not None else [])


def _markdown(titles: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    return lines + ["| " + " | ".join(row) + " |" for row in cells]


def markdown_table(result: dict[str, Any]) -> str:
    """The result as markdown tables (for docs/benchmarks.md), with min-max ranges: every
    transport, then ramxchg's rows against the peers when any peer was measured."""
    lines = _markdown(headers(ranges=True), rows(result))
    if _compared(result):
        lines += ["", PEER_TITLE + ":", "", *_markdown(peer_headers(), peer_rows(result))]
    return "\n".join(lines)


def _ranked(result: dict[str, Any], size: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(entry, result) of every transport measured at ``size``, most GB/s first."""
    found = [
        (entry, item)
        for entry in result["transports"]
        for item in entry["results"]
        if item["size"] == size and not item.get("error")
    ]
    return sorted(found, key=lambda pair: -pair[1]["gbps"]["median"])


def _against_peers(ranked: list[tuple[dict[str, Any], dict[str, Any]]]) -> str | None:
    """The best ramxchg row of a size against the peers measured there, or None."""
    ours = [(entry, item) for entry, item in ranked if is_ramxchg(entry)]
    if not ours:
        return None
    entry, item = ours[0]
    versus = item.get("vs_peers") or {}
    ratios = [
        f"{versus[name]:.2f}x {short}"
        for name, short in PEERS.items()
        if versus.get(name) is not None
    ]
    if not ratios:
        return None
    return f"{entry['label']} ({item['gbps']['median']:.3g} GB/s): {', '.join(ratios)}"


def winners(result: dict[str, Any]) -> list[str]:
    """Per size, a line saying which transport moved the most GB/s and by how much, and
    below it, indented, the best ramxchg row's GB/s ratio to each peer measured there.

    "(ranges overlap)": the runner-up's best repetition beat the winner's worst, so the
    lead is within the run-to-run spread.
    """
    lines = []
    for size in result["config"]["sizes"]:
        ranked = _ranked(result, size)
        head = f"{format_size(size)}:"
        if not ranked:
            lines.append(f"{head} no transport finished")
            continue
        entry, best = ranked[0]
        line = f"{head} {entry['label']} won ({best['gbps']['median']:.3g} GB/s)"
        if len(ranked) == 1:
            line += ", the only one measured"
        else:
            second_entry, second = ranked[1]
            lead = best["gbps"]["median"] / second["gbps"]["median"]
            line += f", {lead:.2f}x ahead of {second_entry['label']}"
            if second["gbps"]["max"] >= best["gbps"]["min"]:
                line += " (ranges overlap)"
        lines.append(line)
        against = _against_peers(ranked)
        if against:
            lines.append(f"  {against}")
    return lines


#: Matplotlib markers and colors, one each per transport (tab10, then four more).
_MARKERS = "osD^vP<X>hp*dH8"
_EXTRA_COLORS = ("black", "goldenrod", "navy", "lime")


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Save GB/s and p50 latency against message size, one line per transport, as a PNG.

    Sizes are labelled as the table shows them, a ring marks the best transport at each
    size (most GB/s; lowest p50), and the legend sits below the plots, off the data.
    """
    require_matplotlib()
    draw(result).savefig(path, dpi=110)


def draw(result: dict[str, Any]) -> Figure:
    """The figure `plot` saves (needs matplotlib; pyplot and its backends stay untouched)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(13, 7), layout="constrained")
    left, right = figure.subplots(1, 2)
    for axis in (left, right):
        axis.set_yscale("log")  # before the tick formatters, which a new scale resets
    colors = [*colormaps["tab10"].colors, *_EXTRA_COLORS]
    most_gbps: dict[int, float] = {}
    least_p50: dict[int, float] = {}
    for index, entry in enumerate(result["transports"]):
        good = [r for r in entry["results"] if not r.get("error")]
        if not good:
            continue
        sizes = [r["size"] for r in good]
        style = {
            "marker": _MARKERS[index % len(_MARKERS)],
            "label": entry["label"],
            "color": colors[index % len(colors)],
            "linestyle": "-" if entry["name"].startswith("ramxchg") else "--",
            "markersize": 7,
        }
        gbps = [r["gbps"]["median"] for r in good]
        p50 = [r["p50_us"]["median"] for r in good]
        left.plot(sizes, gbps, **style)
        right.plot(sizes, p50, **style)
        for size, rate, latency in zip(sizes, gbps, p50, strict=True):
            most_gbps[size] = max(rate, most_gbps.get(size, 0.0))
            least_p50[size] = min(latency, least_p50.get(size, float("inf")))
    left.axhline(result["memcpy_gbps"], color="black", linestyle=":", label="memcpy")
    ring = {"s": 260, "facecolors": "none", "edgecolors": "black", "linewidths": 1.5}
    for axis, marks in ((left, most_gbps), (right, least_p50)):
        axis.scatter(list(marks), list(marks.values()), zorder=5, label="best at that size", **ring)
    sizes = result["config"]["sizes"]
    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _duration(value)))
    for axis, ylabel in ((left, "GB/s, streamed (median)"), (right, "latency p50, lock-step")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [format_size(size) for size in sizes])
        axis.minorticks_off()
        axis.set_xlim(min(sizes) / 2, max(sizes) * 2)
        axis.set_xlabel("message size")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="major", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="small")
    figure.suptitle("ramxchg bench: producer process -> consumer process")
    return figure


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` now if matplotlib is missing (before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'ramxchg[plot]'") from exc
