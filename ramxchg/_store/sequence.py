"""The channel's publish counter: one small file, locked while an item is published.

Holding the lock from "take the next number" to "the item is visible" makes publish
order equal sequence order across every producer process, so a consumer that sees
seq N knows every item before N was already published (or since deleted).

We lock the counter file itself (``flock`` on POSIX, ``msvcrt.locking`` on Windows)
rather than use a separate lock library, because we must read and write the counter
through the very descriptor that holds the lock. The kernel drops the lock when a
producer dies, so a crash never wedges a channel.

The file, ``seq`` in the state folder, is opened relative to that folder's descriptor,
the one the channel handle holds open (`HeldState`), or the one a walk of its own has
open (``gc``), and never through a link: never by its path, which a ``.ramxchg`` that
whoever shares the channel swaps for a link would lead into a folder of yours (a ``seq``
created and locked there).
"""

from __future__ import annotations

import os

from .._errors import CorruptItem
from ..disks.files import read_at
from ..formats.locks import LOCK_FLAGS, NOFOLLOW_NONBLOCK, FileLock, open_plain
from .held import HeldState
from .layout import ChannelLayout
from .safedir import SafeDir

WIDTH = 20  # digits; the file holds exactly one zero-padded number and a newline
#: The counter's name in the state folder.
SEQ = "seq"


def open_seq(folder: SafeDir) -> int:
    """``seq`` in the state folder ``folder``, open for reading and writing, created if
    missing.

    Not ``O_EXCL``: the file is made once and shared by every process. A symlink in its
    place is refused (``O_NOFOLLOW``: ELOOP, nothing created at its target), a FIFO does
    not block; the caller refuses anything else but a plain file of one name
    (`open_plain`).
    """
    return folder.open_file(SEQ, LOCK_FLAGS)


def _open_to_read(folder: SafeDir) -> int:
    return folder.open_file(SEQ, os.O_RDONLY | NOFOLLOW_NONBLOCK)


class SequenceCounter:
    """The last published sequence number of a channel, shared by all processes.

    The file is opened per use (a few microseconds on tmpfs), through the state folder
    ``state`` holds, so a counter holds no descriptor between publishes and survives
    ``fork``.
    """

    def __init__(self, layout: ChannelLayout, state: HeldState) -> None:
        self.layout = layout
        self.path = layout.seq_file
        self._state = state

    def read(self) -> int:
        """The last sequence number taken (0 before the first publish).

        Raises `UnsafeRoot` when the state folder is a link now.
        """
        try:
            fd = open_plain(lambda: self._state.in_folder((), _open_to_read), self.path)
        except FileNotFoundError:  # not published yet, or the channel is gone
            return 0
        try:
            return _parse(self.path, read_at(fd, WIDTH + 1))
        finally:
            os.close(fd)

    def lock(self, folder: SafeDir | None = None) -> PublishLock:
        """The publish lock alone, for a ``with`` block that takes no number (deletes).

        ``folder``: the state folder, open in a walk of the caller's own (``gc``); else
        the one the channel handle holds.
        """
        return PublishLock(self.layout, self._state, folder)

    def claim(self) -> Claim:
        """The publish lock, for a ``with`` block that gets a claim on the next number.

        Call ``claim.commit()`` to use the number up (before the item becomes visible,
        so a crash leaves a gap rather than a number handed out twice).
        """
        return Claim(self)


class PublishLock(FileLock):
    """The publish lock while in a ``with`` block, which gets the locked descriptor of
    ``seq``.

    The file is opened in the state folder ``folder`` when given (open already), else in
    the one ``state`` holds, in a ``use()`` block of its own (`HeldState.in_folder`) that
    has ended before the lock is waited for (see `HeldState`), else in a `StateTree` opened
    for it. Raises `UnsafeRoot` when the state folder is a link, `ChannelNotFound` when it
    is gone, `CorruptItem` when ``seq`` is no plain file of one name; with ``wait=False``,
    `BlockingIOError` when the lock is held (see `FileLock`).
    """

    def __init__(
        self,
        layout: ChannelLayout,
        state: HeldState | None,
        folder: SafeDir | None = None,
        *,
        wait: bool = True,
    ) -> None:
        super().__init__(layout.seq_file, wait=wait)
        self._layout = layout
        self._state = state
        self._folder = folder

    def _open(self) -> int:
        if self._folder is not None:
            return open_seq(self._folder)
        if self._state is not None:
            return self._state.in_folder((), open_seq)
        with self._layout.open_state() as tree:
            return open_seq(tree.existing())


class Claim:
    """The publish lock while in a ``with`` block; ``next`` is the number to use."""

    def __init__(self, counter: SequenceCounter) -> None:
        self._lock = counter.lock()
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


def _parse(path: str | os.PathLike[str], raw: bytes) -> int:
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
