"""``ramxchg bench``: ramxchg side by side with the transports users would pick instead."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from ..bench import FULL_SIZES, QUICK_SIZES, BenchConfig, run_bench
from ..bench.report import PlotUnavailable, plot, require_matplotlib, rich_tables, winners
from ..bench.suite import TRANSPORT_NAMES
from . import add_command, add_json, size_arg

BENCH_EXAMPLE = """\
examples:
  ramxchg bench --quick                 # small sizes, a few seconds per transport
  ramxchg bench --json > bench.json     # 1 KB .. 512 MB, the JSON is described in
                                        # the docstring of ramxchg.bench
  ramxchg bench --sizes 1K 64M --repeat 5 --plot bench.png
  ramxchg bench --only ramxchg_put queue --quick

exit codes: 0 ok, 1 a transport failed at some size, 2 usage error, 130 interrupted
"""


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``ramxchg`` command."""
    bench = add_command(
        subparsers,
        "bench",
        run,
        help="measure ramxchg against iceoryx2, Ray, Arrow, np.save, Queue, Pipe, shared_memory",
        description=(
            "Producer process -> consumer process, the consumer reading every byte (and "
            "checking the bytes it got): GB/s and latency p50/p99 per transport and size "
            "(median, min-max over repetitions after a warm-up), as ratios to single-thread "
            "memcpy and to multiprocessing.Queue, and each ramxchg row as a ratio to "
            "iceoryx2, Ray and np.save/np.load on the real disk. Peers that are not "
            "installed (pip install 'ramxchg[bench]') are skipped with the reason. Ends "
            "with one line per size naming the transport with the most GB/s, and how the "
            "best ramxchg row compares with the peers there."
        ),
        epilog=BENCH_EXAMPLE,
    )
    bench.add_argument("--quick", action="store_true", help="1 KB, 64 KB, 1 MB; few messages")
    bench.add_argument("--sizes", nargs="+", type=size_arg, help="sizes, e.g. 1K 64M 512M")
    bench.add_argument("--repeat", type=int, help="repetitions after warm-up (3; --quick 2)")
    bench.add_argument("--only", nargs="+", metavar="NAME", help="transports by name")
    add_json(bench)
    bench.add_argument("--plot", metavar="FILE.png", help="save a plot (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table or the JSON."""
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 3)
    if repeat < 1:
        print("ramxchg bench: error: --repeat must be at least 1", file=sys.stderr)
        return 2
    unknown = set(args.only or ()) - set(TRANSPORT_NAMES)
    if unknown:
        print(
            f"ramxchg bench: error: unknown transports {sorted(unknown)}; "
            f"known: {', '.join(TRANSPORT_NAMES)}",
            file=sys.stderr,
        )
        return 2
    config = BenchConfig(
        sizes=tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES),
        repeat=repeat,
        quick=args.quick,
        only=tuple(args.only or ()),
    )
    if args.plot:
        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            print(f"ramxchg bench: error: {exc}", file=sys.stderr)
            return 2
    err = Console(stderr=True)
    with err.status("benchmarking") as status:
        result = run_bench(config, tick=lambda what: status.update(f"benchmarking {what}"))
    if args.plot:
        plot(result, args.plot)  # matplotlib was checked before the run
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        tables, console = rich_tables(result), Console()
        if not console.is_terminal:  # piped: as wide as the tables, not rich's default 80
            unbounded = console.options.update_width(1 << 16)
            width = max(console.measure(t, options=unbounded).maximum for t in tables)
            console = Console(width=width)
        for table in tables:
            console.print(table)
        print('\nwinner per size: most GB/s streamed (median); "ranges overlap": no clear winner')
        print("  indented: the best ramxchg row's GB/s ratio to iceoryx2, Ray and the disk")
        print("\n".join(winners(result)))
    failed = any(r.get("error") for e in result["transports"] for r in e["results"])
    return 1 if failed else 0
