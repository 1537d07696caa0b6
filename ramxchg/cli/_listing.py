"""``ramxchg ls``: a channel's items, or its dead letters or quarantined files."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from .. import Channel, SetAsideFile
from . import add_command, add_json
from ._items import add_channel_args, open_channel
from ._output import ITEM_COLUMNS, Column, item_record, item_row, print_table, utc_time

LS_EXAMPLE = """\
output: one row per item, in publish order: NAME SEQ FORMAT SIZE PUBLISHED
  with --dead or --quarantine, one row per file set aside, oldest first:
  FILE SEQ FORMAT SIZE SET-ASIDE REASON (FILE is what 'ramxchg requeue' and
  'ramxchg rm --dead' take)
  piped: tab-separated, no header, SIZE in bytes, times in ISO 8601 UTC, '-' for none

examples:
  ramxchg ls camera
  ramxchg ls camera | cut -f1                       # the names
  ramxchg ls /dev/shm/exchange --json | jq '.[].name'
  ramxchg ls camera --dead                          # items whose command kept failing
"""

#: The columns of ``ls --dead`` and ``ls --quarantine``.
SET_ASIDE_COLUMNS = (
    Column("FILE"),
    Column("SEQ", "count"),
    Column("FORMAT"),
    Column("SIZE", "size"),
    Column("SET-ASIDE", "time"),
    Column("REASON"),
)


def register(subparsers: Any) -> None:
    """Add ``ls`` to the ``ramxchg`` command."""
    ls = add_command(
        subparsers,
        "ls",
        run_ls,
        help="list a channel's items in publish order (or its dead letters, --dead)",
        description="Name, sequence number, format, size and publish time of every item.",
        epilog=LS_EXAMPLE,
    )
    add_channel_args(ls)
    aside = ls.add_mutually_exclusive_group()
    aside.add_argument(
        "--dead", action="store_true", help="the dead letters (items whose command failed)"
    )
    aside.add_argument(
        "--quarantine", action="store_true", help="the files quarantined as malformed or unsafe"
    )
    add_json(ls, "print a JSON list")


def run_ls(args: argparse.Namespace) -> int:
    """List the items (or the files set aside) of a channel."""
    channel = open_channel(args)
    if args.dead or args.quarantine:
        folder = channel.dead_letters if args.dead else channel.quarantine
        files = folder.files()
        if args.json:
            print(json.dumps([set_aside_record(f) for f in files], indent=1))
        else:
            rows = [[f.file, f.seq, f.format, f.size, f.set_aside_ns, f.reason] for f in files]
            print_table(SET_ASIDE_COLUMNS, rows, title=f"{folder.path}")
        return 0
    records = item_records(channel)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print_table(ITEM_COLUMNS, [item_row(record) for record in records])
    return 0


def item_records(channel: Channel) -> list[dict[str, Any]]:
    """`item_record` of every item, in publish order (those deleted meanwhile left out)."""
    records = []
    for item in channel.items():
        with contextlib.suppress(FileNotFoundError):
            records.append(item_record(item))
    return records


def set_aside_record(found: SetAsideFile) -> dict[str, Any]:
    """What ``ls --dead --json`` prints for one file."""
    return {
        "file": found.file,
        "name": found.name,
        "seq": found.seq,
        "format": found.format,
        "path": str(found.path),
        "bytes": found.size,
        "set_aside_ns": found.set_aside_ns,
        "set_aside": utc_time(found.set_aside_ns),
        "reason": found.reason,
        "details": found.details,
    }
