"""``ramxchg rm``, ``drop`` and ``requeue``: take items, groups and channels away, or put
dead letters and quarantined files back."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import Channel, ItemNotFound, RamxchgError, SetAsideFolder
from . import EXIT_FAILURE, EXIT_OK, add_command, add_json
from ._failures import failure_line
from ._items import add_channel_args, open_channel
from ._output import item_record, print_published

RM_EXAMPLE = """\
Prints nothing (with --json: {"deleted": [...], "missing": [...]}); a NAME that is not
there is reported on stderr and makes the exit code 1, the others are still deleted.

examples:
  ramxchg rm camera frame-1 frame-2
  ramxchg ls camera | cut -f1 | xargs ramxchg rm camera     # every item
  ramxchg rm camera frame.npy --dead                       # a dead letter, for good
"""
DROP_EXAMPLE = """\
examples:
  ramxchg drop camera --group analysis   # the group stops holding items back
  ramxchg drop camera                    # refused while it holds items or dead letters
  ramxchg drop camera --force            # the whole channel, with what it holds
"""
REQUEUE_EXAMPLE = """\
FILE is the first column of 'ramxchg ls CHANNEL --dead' (or --quarantine); an item name
works too when one file has it. Each is published again under its item name with its
attrs, as a new item (every group receives it), then taken out of the folder. A file
that still does not parse stays where it is (exit 1).

output: one row per item published: NAME SEQ FORMAT SIZE PUBLISHED PATH (as put)

examples:
  ramxchg requeue camera frame.npy
  ramxchg requeue camera --all                  # every dead letter
  ramxchg requeue camera late.npy --quarantine  # a file repaired in the quarantine
"""


def register(subparsers: Any) -> None:
    """Add ``rm``, ``drop`` and ``requeue`` to the ``ramxchg`` command."""
    rm = add_command(
        subparsers,
        "rm",
        run_rm,
        help="delete items (or dead letters, quarantined files) of a channel",
        description="Delete the named items, as Channel.delete: readers that mapped one keep "
        "its data. With --dead or --quarantine, delete those files instead.",
        epilog=RM_EXAMPLE,
    )
    add_channel_args(rm)
    rm.add_argument("names", metavar="NAME", nargs="+", help="item names (FILE with --dead)")
    _add_folder_choice(rm)
    add_json(rm, "print what was deleted as JSON")

    drop = add_command(
        subparsers,
        "drop",
        run_drop,
        help="remove a durable group, or a whole channel",
        description="With --group, remove that group (its claims and acks; it no longer "
        "holds items back). Without, remove the channel folder with everything in it: "
        "refused while it holds items or dead letters, unless --force.",
        epilog=DROP_EXAMPLE,
    )
    add_channel_args(drop)
    drop.add_argument("--group", help="drop only this durable group")
    drop.add_argument("--force", action="store_true", help="drop a channel that holds items")
    add_json(drop, "print what was dropped as JSON")

    requeue = add_command(
        subparsers,
        "requeue",
        run_requeue,
        help="publish dead letters (or quarantined files) again",
        description="Publish files set aside as dead letters (or quarantined) again, each "
        "as a new item under its name, and take them out of the folder.",
        epilog=REQUEUE_EXAMPLE,
    )
    add_channel_args(requeue)
    requeue.add_argument("files", metavar="FILE", nargs="*", help="as 'ls --dead' lists them")
    requeue.add_argument("--all", action="store_true", help="every file in the folder")
    requeue.add_argument(
        "--quarantine", action="store_true", help="from the quarantine, not the dead letters"
    )
    add_json(requeue, "print what was published as JSON")


def _add_folder_choice(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--dead", action="store_true", help="NAMEs are dead letters' FILEs")
    choice.add_argument("--quarantine", action="store_true", help="NAMEs are quarantined FILEs")


def run_rm(args: argparse.Namespace) -> int:
    """Delete each NAME; report the missing ones and go on."""
    channel = open_channel(args)
    folder = _folder(channel, args)
    deleted, missing = [], []
    for name in args.names:
        try:
            if folder is not None:
                folder.delete(name)
            else:
                channel.delete(name)
        except ItemNotFound as exc:
            missing.append(name)
            print(f"ramxchg: error: {failure_line(exc)}", file=sys.stderr)
        else:
            deleted.append(name)
    if args.json:
        print(json.dumps({"deleted": deleted, "missing": missing}))
    return EXIT_FAILURE if missing else EXIT_OK


def run_drop(args: argparse.Namespace) -> int:
    """Drop a group, or the channel (only an empty one without ``--force``)."""
    channel = open_channel(args)
    if args.group is not None:
        channel.drop_group(args.group)
        dropped: dict[str, Any] = {"channel": str(channel.path), "group": args.group}
        text = f"dropped group {args.group} of {channel.path}"
    else:
        items, dead = len(channel), len(channel.dead_letters)
        if (items or dead) and not args.force:
            raise RamxchgError(
                f"{channel.path} holds {items} items and {dead} dead letters; consume or "
                "delete them ('ramxchg rm'), or drop it with them: --force",
                path=channel.path,
            )
        channel.drop()
        dropped = {"channel": str(channel.path), "items": items, "dead_letters": dead}
        text = f"dropped channel {channel.path} ({items} items, {dead} dead letters)"
    print(json.dumps(dropped) if args.json else text)
    return EXIT_OK


def run_requeue(args: argparse.Namespace) -> int:
    """Publish each FILE (or every one, ``--all``) again; stop at the first failure."""
    if bool(args.files) == args.all:
        print("ramxchg: error: name the FILEs to requeue, or --all", file=sys.stderr)
        return 2
    channel = open_channel(args)
    folder = channel.quarantine if args.quarantine else channel.dead_letters
    files = [f.file for f in folder.files()] if args.all else args.files
    done = []
    try:
        for file in files:
            done.append(item_record(folder.requeue(_file_named(folder, file))))
    finally:  # what was published before a failure is shown too
        if args.json:
            print(json.dumps(done, indent=1))
        elif done:
            print_published(done)
    return EXIT_OK


def _folder(channel: Channel, args: argparse.Namespace) -> SetAsideFolder | None:
    if args.dead:
        return channel.dead_letters
    return channel.quarantine if args.quarantine else None


def _file_named(folder: SetAsideFolder, wanted: str) -> str:
    """The file ``wanted`` names: a file of the folder, or the item name of exactly one."""
    listed = folder.files()
    if any(f.file == wanted for f in listed):
        return wanted
    matching = [f.file for f in listed if f.name == wanted]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise RamxchgError(
            f"{len(matching)} files in {folder.path} hold item {wanted!r}: "
            f"{', '.join(matching)}; name one of them",
            path=folder.path,
        )
    raise ItemNotFound(
        f"no file {wanted!r} in {folder.path}; 'ramxchg ls CHANNEL --{folder.kind}' lists them",
        path=folder.path,
        name=wanted,
    )
