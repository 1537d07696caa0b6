"""How the commands print data: a table for people, tab-separated lines for programs.

On a terminal (standard output is a TTY) a table with a header, sizes for people
(`format_size`: ``"65.6 MB"``) and local times (``2025-06-01 14:03:07``). Piped, one
line per row, fields separated by tabs, no header: sizes in bytes, times in ISO 8601
UTC with microseconds (``2025-06-01T12:03:07.123456Z``), ``-`` for no value; a tab or a
line break inside a field becomes a space. Both show the same columns in the same order
(each command's ``--help`` lists them); ``--json`` prints everything, unabridged.

Whatever comes from outside (names, paths, reasons, errors) is printed as text, never
read as rich markup: ``pip install 'ramxchg[ray]'`` keeps its ``[ray]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..disks import format_size

if TYPE_CHECKING:
    from .. import Item

Kind = Literal["text", "count", "size", "time"]


@dataclass(frozen=True)
class Column:
    """A column: its title and how its values are shown."""

    title: str
    kind: Kind = "text"


#: What every listing of items starts with, in this order (``ls``, ``put``, ``watch``).
ITEM_COLUMNS = (
    Column("NAME"),
    Column("SEQ", "count"),
    Column("FORMAT"),
    Column("SIZE", "size"),
    Column("PUBLISHED", "time"),
)


def on_terminal(stream: TextIO | None = None) -> bool:
    """Is ``stream`` (standard output by default) a terminal?"""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def console(*, stderr: bool = False) -> Console:
    """A rich console that highlights nothing on its own (numbers, paths) and writes to
    the current ``sys.stdout``/``sys.stderr`` (as tests capture them)."""
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False)


def utc_time(ns: int) -> str:
    """``ns`` since the epoch as ISO 8601 UTC with microseconds: ``...T12:03:07.123456Z``."""
    seconds, rest = divmod(ns, 10**9)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_time(ns: int) -> str:
    """``ns`` since the epoch as local time for people: ``2025-06-01 14:03:07``."""
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def shown(value: Any, kind: Kind, *, human: bool) -> str:
    """One value as text, for people (``human``) or for programs."""
    if value is None:
        return "-"
    if kind == "size":
        return format_size(int(value)) if human else str(int(value))
    if kind == "time":
        return local_time(int(value)) if human else utc_time(int(value))
    text = str(value)
    # One row per line, whatever a reason or a path holds.
    return text if human else " ".join(text.replace("\t", " ").splitlines())


def cells(columns: Sequence[Column], row: Sequence[Any], *, human: bool) -> list[str]:
    """The values of ``row`` as text, each as its column shows it."""
    return [
        shown(value, column.kind, human=human) for column, value in zip(columns, row, strict=True)
    ]


def tsv_line(values: Iterable[str]) -> str:
    """Fields joined by tabs (each already made tab- and newline-free by `shown`)."""
    return "\t".join(values)


def print_table(
    columns: Sequence[Column], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """The rows as a table on a terminal, else as tab-separated lines (``title`` only on
    a terminal)."""
    if not on_terminal():
        for row in rows:
            print(tsv_line(cells(columns, row, human=False)))
        return
    out = console()
    if title:  # above the table, not as its title: rich would wrap it to the table's width
        out.print(Text(title), soft_wrap=True)
    table = Table()
    for column in columns:
        justify = "right" if column.kind in ("count", "size") else "left"
        table.add_column(column.title, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*map(Text, cells(columns, row, human=True)))
    out.print(table)


def print_fields(rows: Iterable[Sequence[Any]], kinds: dict[str, Kind] | None = None) -> None:
    """Records that start with their key (``path``, ``array``, ``group`` ...): aligned
    for people on a terminal, tab-separated for programs. ``kinds`` says how the value
    of a key is shown (sizes, times)."""
    kinds = kinds or {}
    human = on_terminal()
    lines = []
    for key, *values in rows:
        kind = kinds.get(str(key), "text")
        lines.append([str(key)] + [shown(value, kind, human=human) for value in values])
    if not human:
        for line in lines:
            print(tsv_line(line))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    width = max((len(line) for line in lines), default=1)
    for index in range(width):
        table.add_column(style="bold" if index == 0 else None, overflow="fold")
    for line in lines:
        table.add_row(*(Text(value) for value in line + [""] * (width - len(line))))
    console().print(table)


class RowStream:
    """Rows printed one at a time as they come (``watch``): on a terminal under a header,
    in columns of at least ``widths`` characters; piped, as tab-separated lines."""

    def __init__(self, columns: Sequence[Column], widths: Sequence[int]) -> None:
        self.columns = columns
        self.widths = widths
        self.human = on_terminal()
        self._header_done = False

    def print(self, row: Sequence[Any]) -> None:
        """Print one row now (flushed)."""
        values = cells(self.columns, row, human=self.human)
        if not self.human:
            print(tsv_line(values), flush=True)
            return
        out = console()
        if not self._header_done:
            out.print(Text(self._line([c.title for c in self.columns]), style="bold"))
            self._header_done = True
        out.print(Text(self._line(values)))
        sys.stdout.flush()

    def _line(self, values: Sequence[str]) -> str:
        cells = []
        for column, width, value in zip(self.columns, self.widths, values, strict=True):
            right = column.kind in ("count", "size")
            cells.append(value.rjust(width) if right else value.ljust(width))
        return "  ".join(cells).rstrip()


def item_record(item: Item) -> dict[str, Any]:
    """What listings say about an item, as ``--json`` prints it: ``name``, ``seq``,
    ``format``, ``path``, ``bytes``, ``published_ns`` and ``published`` (ISO 8601 UTC).

    Raises FileNotFoundError when the item was deleted meanwhile.
    """
    published_ns = item.published_ns
    return {
        "name": item.name,
        "seq": item.seq,
        "format": item.format,
        "path": str(item.path),
        "bytes": os.lstat(item.path).st_size,
        "published_ns": published_ns,
        "published": utc_time(published_ns),
    }


def item_row(record: dict[str, Any]) -> list[Any]:
    """The `ITEM_COLUMNS` of an `item_record`."""
    return [record[key] for key in ("name", "seq", "format", "bytes", "published_ns")]


def print_published(records: list[dict[str, Any]]) -> None:
    """What ``put`` and ``requeue`` published: `ITEM_COLUMNS` and PATH per `item_record`."""
    print_table([*ITEM_COLUMNS, Column("PATH")], [[*item_row(r), r["path"]] for r in records])
