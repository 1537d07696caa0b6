"""The destination end of a bridge: a Ray actor that publishes what arrives.

It runs on the destination node, opens the destination channel there, and receives
each item as the bytes of its file: a numpy array that Ray reads zero-copy from the
node's object store, written once into the channel by `Channel.put_file_bytes`. It
never opens a file of the source host.

**Exactly once.** The bridge acks an item at the source only after `Receiver.deliver`
returned, so a bridge killed in between sends the item again after a restart. It is
then found as delivered, not published twice, in one of two ways:

- an item of that name at the destination whose ``origin`` (source host, channel,
  name, seq, publish time) is the same: the copy made before the kill;
- the item's key in the `Ledger`: the copy was published and has been consumed and
  deleted at the destination since.

An item of that name with another origin is a conflict: `ItemExists` (with
``.origin`` and ``.existing_origin``), never an overwrite or a silent skip.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import Channel, Item, ItemExists, ItemNotFound, RamDiskFull

log = logging.getLogger(__name__)

#: A full RAM disk at the destination is tried again after this many seconds.
RETRY_FULL_SECONDS = 0.5
#: The ledger starts a new generation after this many entries (it keeps two).
LEDGER_LINES = 10_000


def item_key(origin: dict[str, Any]) -> str:
    """One line that identifies a source item: seq, publish time and name."""
    seq = "" if origin["seq"] is None else str(origin["seq"])
    return f"{seq}\t{origin['published_ns']}\t{origin['name']}"


class Ledger:
    """The keys of the items one bridge published at the destination, newest last.

    One line per item, appended (``O_APPEND``: a killed writer leaves at most a
    partial last line, which is ignored) to ``<path>``; when it holds ``lines``
    entries it becomes ``<path>.old`` and a new file starts. Only items published but
    not yet acked at the source matter (at most the bridge's window), so two
    generations of ``lines >= 2 x window`` always hold them.
    """

    def __init__(self, path: Path, lines: int = LEDGER_LINES) -> None:
        self.path = path
        self.old_path = path.with_name(path.name + ".old")
        self.lines = lines
        self._old = _read_keys(self.old_path)
        self._current = _read_keys(self.path)
        self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        return os.open(self.path, flags, 0o600)

    def __contains__(self, key: str) -> bool:
        return key in self._current or key in self._old

    def add(self, key: str) -> None:
        """Record ``key`` (after its item was published)."""
        if len(self._current) >= self.lines:
            os.close(self._fd)
            os.replace(self.path, self.old_path)
            self._old, self._current = self._current, set()
            self._fd = self._open()
        os.write(self._fd, (key + "\n").encode())
        self._current.add(key)

    def close(self) -> None:
        """Close the file (the entries stay, for the next run)."""
        os.close(self._fd)


def _read_keys(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    # A line cut short by a kill has no newline: it is not an entry.
    return set(text.split("\n")[:-1])


def open_destination(dest: str, root: str | None) -> Channel:
    """The destination channel: an absolute path, or a name under ``root`` (this node's
    default root when None)."""
    if os.path.isabs(dest):
        return Channel(Path(dest))
    return Channel(dest, root=root)


class Receiver:
    """Publishes the items a bridge sends into the destination channel (a Ray actor).

    Parameters
    ----------
    dest, dest_root
        The destination channel, as `open_destination` takes them.
    bridge_id
        Names this bridge's ledger (one per source host, channel and group).
    ledger_lines
        Entries per ledger generation (at least twice the bridge's window).
    """

    def __init__(self, dest: str, dest_root: str | None, bridge_id: str, ledger_lines: int):
        self.channel = open_destination(dest, dest_root)
        self.ledger = Ledger(self.channel.path / f".bridge-{bridge_id}.ledger", ledger_lines)

    def where(self) -> dict[str, Any]:
        """Where the receiver runs: host name, pid and destination channel path."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "channel": str(self.channel.path)}

    def deliver(
        self,
        data: np.ndarray,
        name: str,
        format: str,
        attrs: dict[str, Any],
        origin: dict[str, Any],
    ) -> dict[str, Any]:
        """Publish ``data`` (the item's file) as ``name``, unless that copy is there already.

        Waits while the destination has no room (limits or a full RAM disk): the bridge
        slows down, nothing is dropped. Returns ``{"status": "published", "seq": n}``
        or ``{"status": "present", "seq": n or None}``; raises `ItemExists` for a
        conflict.
        """
        key = item_key(origin)
        if key in self.ledger:
            return {"status": "present", "seq": None}
        waiting = False
        while True:
            try:
                return self._present(self.channel.get(name), origin, key)
            except ItemNotFound:
                pass  # not there: publish it
            try:
                item = self.channel.put_file_bytes(
                    data, name, format=format, attrs=attrs, origin=origin
                )
            except ItemExists:
                continue  # published meanwhile: is it our copy?
            except RamDiskFull as exc:
                if not waiting:
                    log.warning("%s: waiting for room for %s: %s", self.channel.path, name, exc)
                    waiting = True
                time.sleep(RETRY_FULL_SECONDS)  # no event tells when room is made
                continue
            self.ledger.add(key)
            return {"status": "published", "seq": item.seq}

    def _present(self, existing: Item, origin: dict[str, Any], key: str) -> dict[str, Any]:
        """The destination has an item of that name: our copy (delivered), or a conflict."""
        if existing.origin != origin:
            raise ItemExists(
                f"{existing.path} exists at the destination but is not a copy of item "
                f"{existing.name!r} (seq {origin['seq']}) of {origin['host']}:"
                f"{origin['channel']}; its origin is {existing.origin}. The bridge stops "
                "rather than skip or overwrite it: remove or rename one of the two, then "
                "restart the bridge.",
                path=existing.path,
                name=existing.name,
                origin=origin,
                existing_origin=existing.origin,
            )
        self.ledger.add(key)
        return {"status": "present", "seq": existing.seq}

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()
