"""``ramxchg demo``: stream camera-like frames between two processes and check every one."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..demo import DemoConfig, DemoSummary, run_demo
from ..disks import format_size
from . import EXIT_INTERRUPTED, add_command, add_json

DEMO_EXAMPLE = """\
examples:
  ramxchg demo                                  # 10 s of 2048x2048 uint16 frames
  ramxchg demo --seconds 3 --shape 4096x4096 --rate 1.5
  ramxchg demo --format hdf5 --json

exit codes: 0 every frame arrived intact, 1 a frame was lost or corrupt (or an error),
2 usage error, 130 interrupted: the summary of the frames streamed until Ctrl-C is
printed (a second Ctrl-C leaves at once); the channel is removed in every case
"""


def register(subparsers: Any) -> None:
    """Add ``demo`` to the ``ramxchg`` command."""
    demo = add_command(
        subparsers,
        "demo",
        run,
        help="stream frames from a producer process to a consumer process and verify them",
        description=(
            "A producer process publishes frames into a fresh channel; a consumer process "
            "subscribes, verifies every frame (frame counters and a 64-bit sum over every "
            "byte) and reduces it. Prints frames, GB/s, latency, lost/corrupt frames and "
            "the peak RAM-disk use, then removes the channel."
        ),
        epilog=DEMO_EXAMPLE,
    )
    demo.add_argument("--seconds", type=float, default=10.0, help="how long to stream (10)")
    demo.add_argument("--shape", type=_shape, default=(2048, 2048), help="frame shape (2048x2048)")
    demo.add_argument("--dtype", default="uint16", help="frame dtype (uint16)")
    demo.add_argument("--rate", type=float, metavar="GBPS", help="cap the producer at GB/s")
    demo.add_argument("--root", help="channel root (default: the default root, /dev/shm)")
    demo.add_argument("--format", choices=("npy", "hdf5"), default="npy", help="item format")
    add_json(demo, "print the summary as JSON")


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 2048x2048, not {text!r}") from None
    if not dims or any(n <= 0 for n in dims):
        raise argparse.ArgumentTypeError(f"shape must be positive numbers, not {text!r}")
    return dims


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its summary; 1 when any frame was lost or corrupt."""
    config = DemoConfig(
        seconds=args.seconds,
        shape=args.shape,
        dtype=args.dtype,
        rate_gbps=args.rate,
        root=args.root,
        format=args.format,
    )
    err = Console(stderr=True)
    # SIGTERM cleans up like Ctrl-C: the channel is removed and the processes stopped.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        if args.json or not err.is_terminal:
            summary = run_demo(config)
        else:
            summary = _with_progress(config, err)
    except (ValueError, TypeError) as exc:
        print(f"ramxchg demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        Console().print(summary_table(summary))
        for error in summary.errors:
            err.print(Text(error, style="red"))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.ok else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _with_progress(config: DemoConfig, console: Console) -> DemoSummary:
    columns = (
        TextColumn("[bold]streaming"),
        BarColumn(),
        TextColumn("{task.fields[frames]} frames  {task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("demo", total=config.seconds, frames=0, rate="")

        def tick(elapsed: float, frames: int, nbytes: int) -> None:
            rate = f"{nbytes / elapsed / 1e9:.2f} GB/s" if elapsed > 0 else ""
            bar.update(task, completed=elapsed, frames=frames, rate=rate)

        return run_demo(config, tick)


def summary_table(summary: DemoSummary) -> Table:
    """The summary as a two-column table."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    if summary.interrupted:
        verdict = Text("INTERRUPTED: the frames streamed until Ctrl-C", style="yellow")
    else:
        verdict = Text("OK", style="green") if summary.ok else Text("FAILED", style="red")
    table = Table(title=Text("ramxchg demo: ").append_text(verdict), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    shape = "x".join(map(str, summary.shape))
    rows = [
        ("frames", f"{summary.received} received / {summary.published} published"),
        (
            "frame",
            f"{shape} {summary.dtype} ({format_size(summary.frame_bytes)}), {summary.format}",
        ),
        ("throughput", f"{summary.gbps:.2f} GB/s ({summary.frames_per_second:.0f} frames/s)"),
        (
            "latency p50 / p99 / max",
            f"{ms(summary.latency_p50_ms)} / "
            f"{ms(summary.latency_p99_ms)} / {ms(summary.latency_max_ms)}",
        ),
        (
            "lost / duplicated / corrupt",
            f"{summary.lost} / {summary.duplicates} / {summary.corrupt}",
        ),
        ("peak RAM-disk use", format_size(summary.peak_ram_disk_bytes)),
        ("channel", f"{summary.channel} ({'LEFT BEHIND' if summary.left_behind else 'removed'})"),
    ]
    for key, value in rows:
        table.add_row(key, Text(value))  # a channel path is no markup
    return table
