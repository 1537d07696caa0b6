"""``ramxchg put``, ``info``, ``ack`` and ``gc``: items from the shell (``ls`` is in _listing)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import (
    Channel,
    GroupNotFound,
    InvalidAttrs,
    Item,
    ItemNotFound,
    RamxchgError,
    default_root,
    encode_attrs,
    list_channels,
)
from . import add_command, add_json
from ._failures import failure_line
from ._output import item_record, print_fields, print_published

PUT_EXAMPLE = """\
output: one row per file published: NAME SEQ FORMAT SIZE PUBLISHED PATH (piped:
  tab-separated, SIZE in bytes, PUBLISHED in ISO 8601 UTC)

examples:
  ramxchg put camera frame.npy                 # publishes item "frame" (a copy)
  ramxchg put camera /tmp/a.npy /tmp/b.h5 --move
  ramxchg put camera scan.h5 --name run7 --attrs '{"exposure": 0.01}'
  ramxchg put camera frame.npy --replace       # run again: the new file replaces "frame"
"""
INFO_EXAMPLE = """\
output: one line per field, the field's name first (piped: tab-separated, size in bytes,
  published in ISO 8601 UTC): name, seq, format, size, published, path, then
  "array NAME SHAPE DTYPE" per array, "attrs JSON", "group NAME pending|claimed|acked"

examples:
  ramxchg info camera 000000000042
  ramxchg info camera frame | awk -F'\\t' '$1 == "path" {print $2}'
  ramxchg info camera frame --json
"""
ACK_EXAMPLE = """\
An item that is gone already (deleted, or acked by every group) counts as done: exit 0.

examples:
  ramxchg ack camera 000000000042 --group analysis   # a foreign reader is done with it
  ramxchg ack camera frame --group analysis --json   # {"outcome": "acked" | "deleted" | "gone"}
"""
GC_EXAMPLE = """\
examples:
  ramxchg gc            # every channel under the root
  ramxchg gc camera --json
"""


def add_channel_args(parser: argparse.ArgumentParser) -> None:
    """The CHANNEL argument and ``--root``, shared by the item commands and ``watch``."""
    parser.add_argument("channel", metavar="CHANNEL", help="channel name, or a folder's path")
    add_root(parser)


def add_root(parser: argparse.ArgumentParser) -> None:
    """``--root`` (also accepted before the command: ``ramxchg --root X ls cam``)."""
    parser.add_argument("--root", help="folder holding channels (default: $RAMXCHG_ROOT)")


def open_channel(args: argparse.Namespace, *, create: bool = False) -> Channel:
    """The channel named by ``args.channel`` (a name under ``--root``, or a path).

    Only commands that publish create a channel (or its state folder in a folder named by
    path); the others refuse a missing one and write nothing to read it.
    """
    if os.path.isabs(args.channel) or os.sep in args.channel:
        return Channel(Path(args.channel).absolute(), create=create)
    return Channel(args.channel, root=args.root, create=create)


def register(subparsers: Any) -> None:
    """Add ``put``, ``info``, ``ack`` and ``gc`` to the ``ramxchg`` command."""
    put = add_command(
        subparsers,
        "put",
        run_put,
        help="publish existing .npy/.h5 files atomically",
        description="Publish files as items, each named after its file's stem. The file "
        "is checked, copied (or moved) into the channel's hidden tmp folder, then "
        "published with one atomic link, like Channel.put.",
        epilog=PUT_EXAMPLE,
    )
    add_channel_args(put)
    put.add_argument("files", metavar="FILE", nargs="+", help=".npy or .h5 files")
    put.add_argument("--name", help="item name (only with one FILE)")
    put.add_argument("--move", action="store_true", help="move instead of copy (same disk)")
    put.add_argument(
        "--replace",
        action="store_true",
        help="publish over an item of that name and format (readers see one or the other)",
    )
    put.add_argument("--attrs", type=_attrs, default={}, help="item attrs as a JSON object")
    add_json(put, "print what was published as JSON")

    info = add_command(
        subparsers,
        "info",
        run_info,
        help="show one item: arrays, attrs and where each group is with it",
        description="An item's sequence number, arrays (shape, dtype), attrs and group state.",
        epilog=INFO_EXAMPLE,
    )
    add_channel_args(info)
    info.add_argument("name", metavar="NAME", help="item name")
    add_json(info, "print a JSON object")

    ack = add_command(
        subparsers,
        "ack",
        run_ack,
        help="mark an item done for a durable group",
        description="Ack an item for a group, also one never delivered to it (a program "
        "that reads the files directly); the item is deleted once every group acked it.",
        epilog=ACK_EXAMPLE,
    )
    add_channel_args(ack)
    ack.add_argument("name", metavar="NAME", help="item name")
    ack.add_argument("--group", required=True, help="the durable group")
    add_json(ack, "print the outcome as JSON")

    gc = add_command(
        subparsers,
        "gc",
        run_gc,
        help="apply retention and remove what dead processes left",
        description="Remove dead producers' temporary files, orphan sidecars and stale "
        "claims/acks; delete items every group acked and items over keep_last/ttl. Other "
        "users' channels are skipped (unless run as root); no link is ever followed.",
        epilog=GC_EXAMPLE,
    )
    gc.add_argument("channel", metavar="CHANNEL", nargs="?", help="one channel (default: all)")
    add_root(gc)
    add_json(gc, "print the counts as JSON")


def _attrs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--attrs is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--attrs must be a JSON object")
    try:
        return encode_attrs(value)
    except InvalidAttrs as exc:  # argparse would print only "invalid value"
        raise argparse.ArgumentTypeError(str(exc)) from exc


# -- put --------------------------------------------------------------------------------------


def run_put(args: argparse.Namespace) -> int:
    """Publish each FILE; stop at the first one that fails."""
    if args.name is not None and len(args.files) != 1:
        print("ramxchg: error: --name needs exactly one FILE", file=sys.stderr)
        return 2
    channel = open_channel(args, create=True)
    done = []
    for file in args.files:
        try:
            item = channel.put_file(
                file, args.name, attrs=args.attrs, move=args.move, replace=args.replace
            )
        except RamxchgError as exc:
            fix = _put_fix(exc)
            if fix is None:
                raise
            raise RamxchgError(f"{exc}; {fix}", path=exc.path) from exc
        done.append(item_record(item))
    if args.json:
        print(json.dumps(done, indent=1))
    else:
        print_published(done)
    return 0


def _put_fix(exc: RamxchgError) -> str | None:
    """What to do, in the command's words, about a FILE that `Channel.put_file` cannot
    take (it says why, by the error it chains, in the API's words)."""
    cause = exc.__cause__
    if isinstance(cause, ItemNotFound):  # how the library finds a file missing
        return "check the FILE argument"
    if isinstance(cause, OSError) and cause.errno == errno.EXDEV:
        return "drop --move to copy it"
    return None


# -- info -----------------------------------------------------------------------------------


def arrays_record(item: Item) -> dict[str, dict[str, Any]]:
    """``{array name: {"shape": [...], "dtype": "<f8"}}`` from the file's metadata."""
    return {
        key: {"shape": list(shape), "dtype": dtype.str}
        for key, (shape, dtype) in item.layouts().items()
    }


def run_info(args: argparse.Namespace) -> int:
    """Show one item."""
    channel = open_channel(args)
    with channel.get(args.name) as item:  # closes what attrs opens (HDF5)
        groups = channel.group_states(item.name)
        record = {
            **item_record(item),
            "arrays": arrays_record(item),
            "attrs": item.attrs,
            "groups": groups,
        }
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    fields: list[list[Any]] = [[key, record[field]] for key, field in INFO_FIELDS]
    for key, array in record["arrays"].items():
        fields.append(["array", key, "x".join(map(str, array["shape"])), array["dtype"]])
    fields.append(["attrs", json.dumps(record["attrs"])])
    fields += [["group", group_name, state] for group_name, state in groups.items()]
    print_fields(fields, {"size": "size", "published": "time"})
    return 0


#: info's first lines and the record's keys behind them (the order of every item listing).
INFO_FIELDS = (
    ("name", "name"),
    ("seq", "seq"),
    ("format", "format"),
    ("size", "bytes"),
    ("published", "published_ns"),
    ("path", "path"),
)


# -- ack, gc ------------------------------------------------------------------------------


def run_ack(args: argparse.Namespace) -> int:
    """Ack an item for a group (delivered to it or not); one that is gone counts as done."""
    channel = open_channel(args)
    try:
        outcome = "deleted" if channel.ack(args.name, args.group) else "acked"
    except GroupNotFound:
        raise
    except ItemNotFound:
        if args.group not in {group.name for group in channel.groups()}:
            raise GroupNotFound(
                f"no group {args.group!r} in channel {channel.path}",
                path=channel.path,
                group=args.group,
                name=args.group,
            ) from None
        outcome = "gone"
    if args.json:
        print(json.dumps({"name": args.name, "group": args.group, "outcome": outcome}))
    elif outcome == "gone":
        print(f"{args.name}: already done (gone: deleted, or never published)")
    else:
        done = "; deleted (every group acked)" if outcome == "deleted" else ""
        print(f"acked {args.name} for {args.group}{done}")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Garbage-collect one channel or every channel under the root.

    With every channel, other users' channels are skipped (unless we are root), one that
    fails is reported and the rest are still collected; the exit code is then 1.
    """
    if args.channel is not None:
        channel = open_channel(args)
        reports: dict[str, dict[str, Any]] = {str(channel.path): channel.gc()}
    else:
        reports = {str(path): _gc_or_error(path) for path in list_channels(args.root)}
    failed = any("error" in counts for counts in reports.values())
    if args.json:
        print(json.dumps(reports, indent=1))
        return int(failed)
    if not reports:
        where = args.root or default_root(create=False)
        print(f"no channels under {where}: nothing to collect", file=sys.stderr)
    for path, counts in reports.items():
        print(path + ": " + ", ".join(f"{key} {value}" for key, value in counts.items()))
    return int(failed)


def _gc_or_error(path: Path) -> dict[str, Any]:
    """The channel's gc counts, ``{"error": ...}`` if it cannot be collected, or
    ``{"skipped": ...}`` for another user's channel (unless we are root)."""
    try:
        owner = os.lstat(path).st_uid
        me = os.geteuid() if hasattr(os, "geteuid") else owner
        if me not in (0, owner):  # in a shared root: theirs to collect, and to booby-trap
            return {"skipped": f"owned by uid {owner}, not yours"}
        return Channel(path.absolute(), create=False).gc()
    except (RamxchgError, OSError) as exc:
        return {"error": failure_line(exc)}
