"""The channel's publish counter: one small file, locked while an item is published.

Holding the lock from "take the next number" to "the item is visible" makes publish
order equal sequence order across every producer process, so a consumer that sees
seq N knows every item before N was already published (or since deleted).

We lock the counter file itself (``flock`` on POSIX, ``msvcrt.locking`` on Windows)
rather than use a separate lock library, because we must read and write the counter
through the very descriptor that holds the lock. The kernel drops the lock when a
producer dies, so a crash never wedges a channel.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import CorruptItem
from ..disks.files import read_at
from ..formats.locks import NOFOLLOW_NONBLOCK, FileLock, check_regular

WIDTH = 20  # digits; the file holds exactly one zero-padded number and a newline


class SequenceCounter:
    """The last published sequence number of a channel, shared by all processes.

    The file is opened per use (a few microseconds on tmpfs), so a counter holds no
    descriptor between publishes and survives ``fork``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        """The last sequence number taken (0 before the first publish)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | NOFOLLOW_NONBLOCK)
        except FileNotFoundError:
            return 0
        try:
            check_regular(fd, self.path)
            return _parse(self.path, read_at(fd, WIDTH + 1))
        finally:
            os.close(fd)

    def lock(self) -> FileLock:
        """The publish lock alone, for a ``with`` block that takes no number (deletes)."""
        return FileLock(self.path)

    def claim(self) -> Claim:
        """The publish lock, for a ``with`` block that gets a claim on the next number.

        Call ``claim.commit()`` to use the number up (before the item becomes visible,
        so a crash leaves a gap rather than a number handed out twice).
        """
        return Claim(self)


class Claim:
    """The publish lock while in a ``with`` block; ``next`` is the number to use."""

    def __init__(self, counter: SequenceCounter) -> None:
        self._lock = FileLock(counter.path)
        self._fd = -1
        self.next = 0

    def __enter__(self) -> Claim:
        fd = self._lock.__enter__()
        try:
            self.next = _parse(self._lock.path, read_at(fd, WIDTH + 1)) + 1
        except BaseException:
            self._lock.__exit__()
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._fd = -1
        self._lock.__exit__()

    def commit(self) -> None:
        # One 21-byte pwrite of a fixed-width number: never seen half-written by readers.
        _write_at(self._fd, b"%0*d\n" % (WIDTH, self.next))


def _parse(path: str | Path, raw: bytes) -> int:
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise CorruptItem(f"{path} should hold one number, found {raw[:40]!r}", path=path) from exc


def _write_at(fd: int, data: bytes) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, 0)
        return
    os.lseek(fd, 0, os.SEEK_SET)  # pragma: no cover - Windows has no pwrite
    os.write(fd, data)  # pragma: no cover
