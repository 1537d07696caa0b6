"""The ``ramxchg`` command.

Exit codes: 0 ok, 1 failure (one line on stderr: the path and the fix, never a
traceback; see _failures.py), 2 usage error, 130 interrupted.
Each subcommand lives in its own module with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import RamxchgError
from .._version import __version__
from ..disks import parse_size
from ._failures import failure_line

#: Modules that add subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "_setup",
    "_demo",
    "_bench",
    "_listing",
    "_items",
    "_remove",
    "_watch",
    "_bridge",
    "_completion",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """Add subcommand ``name``, run by ``run(args)``, with ``epilog`` (its examples) kept
    as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run, verb=name)
    return parser


def add_json(parser: argparse.ArgumentParser, help: str = "print the result as JSON") -> None:
    """The ``--json`` flag: print data instead of text."""
    parser.add_argument("--json", action="store_true", help=help)


def size_arg(text: str) -> int:
    """Argument type for sizes such as ``8G`` or ``512M`` (`parse_size`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


@contextlib.contextmanager
def stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Call ``handler(signum)`` on SIGINT/SIGTERM instead of raising, so no state is left
    half-updated (in the main thread only); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: handler(signum)) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="ramxchg",
        description="Pass large numpy arrays between processes through a RAM disk.",
        epilog="exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted\n\n"
        "Data goes to standard output: a table on a terminal, tab-separated lines when\n"
        "piped (columns in each command's --help), JSON with --json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ramxchg {__version__}")
    parser.add_argument(
        "--root",
        dest="global_root",
        metavar="ROOT",
        help="folder holding channels, for every command that takes --root "
        "(default: $RAMXCHG_ROOT); 'ramxchg --root X ls cam' = 'ramxchg ls cam --root X'",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ramxchg`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.global_root is not None:
        if not hasattr(args, "root"):
            print(f"ramxchg: error: {args.verb} takes no --root", file=sys.stderr)
            return EXIT_USAGE
        if args.root is None:  # given after the command too: that one counts
            args.root = args.global_root
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(run(args))
    except KeyboardInterrupt:
        print("ramxchg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output left (``ramxchg ls | head``): not a failure to report,
        # and Python's final flush must not fail on the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except (RamxchgError, OSError) as exc:
        print(f"ramxchg: error: {failure_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE


def _show_warning(message: Warning | str, category: type[Warning], *_: object) -> None:
    """Warnings as one line for people (``ramxchg: warning: ...``), not Python's file:line."""
    print(f"ramxchg: warning: {message}", file=sys.stderr)
