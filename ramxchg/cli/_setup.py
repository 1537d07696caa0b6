"""``ramxchg setup``, ``teardown`` and ``status``: make, remove and inspect the RAM disk."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import (
    Channel,
    NotRamBackedWarning,
    RamDiskError,
    RamxchgError,
    default_root,
    list_channels,
)
from ..disks import DiskSpec, format_size, get_adapter
from ..disks.memcg import MemoryLimit, headroom
from ..disks.probe import advice, info, memory_advice, pages
from . import add_command, add_json, size_arg
from ._output import Column, Kind, on_terminal, print_fields, print_table

SETUP_EXAMPLE = """\
examples:
  sudo ramxchg setup /mnt/ramxchg --size 8G          # tmpfs with huge pages
  sudo ramxchg setup /mnt/ramxchg --size 8G --persist  # ... and mount it at every boot
  ramxchg setup R: --size 4G                          # Windows, elevated prompt
  ramxchg setup /Volumes/ramxchg --size 4G            # macOS
"""
TEARDOWN_EXAMPLE = """\
examples:
  sudo ramxchg teardown /mnt/ramxchg          # refuses while a channel holds items
  sudo ramxchg teardown /mnt/ramxchg --force  # drop them anyway
  sudo ramxchg teardown /mnt/ramxchg --persist  # ... and undo setup --persist
"""
STATUS_EXAMPLE = """\
output: the disk, one field per line (root, filesystem, mount_point, device, ram_backed,
  size, used, free, huge_pages, pages, options, advice), then a table of the channels:
  CHANNEL ITEMS SIZE POOLED GROUPS ERROR (POOLED: deleted items' RAM kept for recycling;
  GROUPS: name:backlog,...). Piped: tab-separated, the field's name first, each channel
  as "channel" then those columns, sizes in bytes

examples:
  ramxchg status
  ramxchg status | awk -F'\\t' '$1 == "channel" {print $2}'   # the channel names
  ramxchg status --root /mnt/ramxchg --json
"""

#: The channel table of ``status``.
CHANNEL_COLUMNS = (
    Column("CHANNEL"),
    Column("ITEMS", "count"),
    Column("SIZE", "size"),
    Column("POOLED", "size"),  # RAM kept for recycling (freed when the disk fills)
    Column("GROUPS"),
    Column("ERROR"),
)


def register(subparsers: Any) -> None:
    """Add ``setup``, ``teardown`` and ``status`` to the ``ramxchg`` command."""
    setup = add_command(
        subparsers,
        "setup",
        run_setup,
        help="create a RAM disk and print the RAMXCHG_ROOT line",
        description="Mount a RAM disk (tmpfs, ImDisk/aim_ll or hdiutil) to hold channels.",
        epilog=SETUP_EXAMPLE,
    )
    setup.add_argument("path", nargs="?", help="mount point or drive letter (default per OS)")
    setup.add_argument("--size", type=size_arg, default="8G", help="size, e.g. 8G, 512M (8G)")
    setup.add_argument("--no-huge", action="store_true", help="no transparent huge pages")
    setup.add_argument("--mode", type=_mode, default="1777", help="octal permissions (1777)")
    setup.add_argument("--fs", help="filesystem: HFS+/APFS on macOS, ntfs on Windows")
    setup.add_argument("--persist", action="store_true", help="recreate it at boot/logon")
    setup.add_argument(
        "--persist-to", metavar="DIR", help="only write the persistence files into DIR"
    )
    add_json(setup)

    teardown = add_command(
        subparsers,
        "teardown",
        run_teardown,
        help="unmount a RAM disk made by setup",
        description="Unmount a RAM disk and give its memory back.",
        epilog=TEARDOWN_EXAMPLE,
    )
    teardown.add_argument("path", help="mount point or drive letter")
    teardown.add_argument(
        "--force", action="store_true", help="even while channels hold items or files are open"
    )
    teardown.add_argument(
        "--persist",
        action="store_true",
        help="also remove what setup --persist installed (works when already unmounted)",
    )
    add_json(teardown)

    status = add_command(
        subparsers,
        "status",
        run_status,
        help="show the root's RAM disk and its channels",
        description="Root, filesystem, size/used/free, huge pages, and every channel.",
        epilog=STATUS_EXAMPLE,
    )
    status.add_argument("--root", help="channel root (default: $RAMXCHG_ROOT or the default)")
    add_json(status, "print the status as JSON")


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from exc


# -- setup / teardown -----------------------------------------------------------------------


def run_setup(args: argparse.Namespace) -> int:
    """Mount, optionally persist, and print the ``export RAMXCHG_ROOT=...`` line."""
    adapter = get_adapter()
    spec = DiskSpec(
        path=args.path or adapter.default_path,
        size_bytes=args.size,
        mode=args.mode,
        huge=not args.no_huge,
        filesystem=args.fs,
    )
    mounted = adapter.mount(spec)
    done = []
    if args.persist or args.persist_to:
        done = adapter.persist(spec, args.persist_to)
    disk = info(mounted.mount_point, adapter=adapter)
    export = adapter.export_line(mounted.mount_point)
    if args.json:
        result = {
            "mount_point": mounted.mount_point,
            "device": mounted.device,
            "adapter": mounted.adapter,
            "commands": [list(c) for c in mounted.commands],
            "persisted": done,
            "export": export,
            "disk": disk.to_dict(),
            "pages": pages(disk),
        }
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"mounted a {format_size(disk.total_bytes)} {disk.fs_type} RAM disk at "
        f"{mounted.mount_point} (huge pages: {disk.huge_pages or 'n/a'})"
    )
    for line in done:
        print(line)
    print(export)
    return 0


def run_teardown(args: argparse.Namespace) -> int:
    """Unmount ``args.path`` unless a channel still holds items (or ``--force``).

    ``--persist`` first removes what ``setup --persist`` installed; the disk is then
    unmounted if it is mounted.
    """
    path = Path(args.path)
    busy = [row for row in channel_rows(path) if row.error or row.items]
    if busy and not args.force:
        listed = ", ".join(f"{row.name} ({row.error or f'{row.items} items'})" for row in busy)
        raise RamDiskError(
            f"{path} still holds channels with items: {listed}. Consume or delete them, or "
            "run teardown with --force to drop them.",
            path=path,
            channels=[row.name for row in busy],
        )
    adapter = get_adapter()
    removed = adapter.unpersist(os.fspath(path)) if args.persist else []
    # With --persist, the disk may be gone already: undoing the persistence is enough.
    mounted = adapter.unmount(os.fspath(path), force=args.force, missing_ok=args.persist)
    if args.json:
        result = {
            "unmounted": os.fspath(path) if mounted else None,
            "dropped": [r.name for r in busy],
            "unpersisted": removed,
        }
        print(json.dumps(result))
        return 0
    for line in removed:
        print(line)
    if args.persist and not removed:
        print("nothing was installed to recreate it")
    if mounted:
        print(f"unmounted {path}" + (f"; dropped {len(busy)} channels" if busy else ""))
        # The mount point stays, as a plain folder on disk: channels there would go to disk.
        print(f"unset RAMXCHG_ROOT if it points at {path}: it is no RAM disk any more")
    else:
        print(f"{path} is not a mounted RAM disk; nothing to unmount")
    return 0


# -- status ---------------------------------------------------------------------------------


@dataclass
class ChannelRow:
    """One channel of the status listing."""

    name: str
    path: str
    items: int | None = None
    bytes: int | None = None
    #: bytes of deleted item files kept for recycling (None: not readable)
    pooled: int | None = None
    groups: list[dict[str, Any]] | None = None
    error: str | None = None


def channel_rows(root: Path) -> list[ChannelRow]:
    """Every channel folder under ``root`` (folders holding a ``.ramxchg`` state folder)."""
    rows = []
    for entry in list_channels(root):
        row = ChannelRow(entry.name, os.fspath(entry))
        try:
            channel = Channel(entry, create=False)
            status = channel.status()
            row.items, row.bytes, row.pooled = status.items, status.bytes, status.pooled_bytes
            row.groups = [asdict(group) for group in status.groups]
        except (RamxchgError, OSError) as exc:
            row.error = str(exc)
        rows.append(row)
    return rows


def run_status(args: argparse.Namespace) -> int:
    """Print the root's disk and channels (a table, or JSON with ``--json``)."""
    if args.root:
        root = Path(args.root)
    else:
        with warnings.catch_warnings():
            # status prints the same advice itself, in its place.
            warnings.simplefilter("ignore", NotRamBackedWarning)
            root = default_root()
    disk = info(root)
    limit = headroom()
    tips = advice(disk) + memory_advice(disk, limit)
    rows = channel_rows(root)
    if args.json:
        data = {
            "root": os.fspath(root),
            "disk": disk.to_dict(),
            "pages": pages(disk),
            "memory_limit": None
            if limit is None
            else {**asdict(limit), "free_bytes": limit.free_bytes},
            "advice": tips,
            "channels": [row.__dict__ for row in rows],
        }
        print(json.dumps(data, indent=2))
        return 0
    _print_status(root, disk, limit, tips, rows)
    return 0


def _print_status(
    root: Path, disk: Any, limit: MemoryLimit | None, tips: list[str], rows: list[ChannelRow]
) -> None:
    """The disk's fields, then the channels (a table on a terminal)."""
    fields: list[list[Any]] = [
        ["root", os.fspath(root)],
        ["filesystem", disk.fs_type],
        ["mount_point", disk.mount_point],
        ["device", disk.device],
        ["ram_backed", "yes" if disk.ram_backed else "NO"],
        ["size", disk.total_bytes],
        ["used", disk.used_bytes],
        ["free", disk.free_bytes],
        ["huge_pages", disk.huge_pages],
        ["pages", pages(disk)],
        ["options", ",".join(disk.mount_options)],
        ["memory_limit", _memory_limit(limit)],
        *(["advice", tip] for tip in tips),
    ]
    channels = [
        [row.name, row.items, row.bytes, row.pooled, _groups(row), row.error] for row in rows
    ]
    sizes: dict[str, Kind] = {"size": "size", "used": "size", "free": "size"}
    if on_terminal():
        print_fields(fields, sizes)
        print_table(CHANNEL_COLUMNS, channels, title=f"channels in {root}")
    else:
        print_fields([*fields, *(["channel", *row] for row in channels)], sizes)


def _memory_limit(limit: MemoryLimit | None) -> str:
    """This process's memory limit as `status` shows it."""
    if limit is None:
        return "none"
    return (
        f"{format_size(limit.limit_bytes)} (cgroup {limit.cgroup}), "
        f"{format_size(limit.free_bytes)} free"
    )


def _groups(row: ChannelRow) -> str | None:
    """``name:backlog`` of each group, comma-separated; None for none."""
    shown = [f"{g['name']}:{g.get('backlog', '?')}" for g in row.groups or []]
    return ",".join(shown) or None
