"""Legacy files: items written in place by programs that know nothing of ramxchg.

A program that ``np.save``s, ``h5py.File(path, "w")``s or ``cp``s straight to the final
name makes the file visible while it is still being written. Such a file has no
sidecar (`Entry.seq` is None); a subscriber holds it back in a `LegacyGate` until it
is complete (docs/protocol.md, "Legacy producers"):

- **nobody writes it**: no process holds it open for writing or maps it writable
  (`find_writers`, from Linux's /proc). A file being written is not settled, whatever
  its mtime says; elsewhere this cannot be known and the two rules below are all; and
- **closed**: the filesystem reported a close-after-write (inotify ``IN_CLOSE_WRITE``,
  watchdog's `FileClosedEvent`, Linux only), trusted only when every process could be
  looked at (not so for other users' processes when we are not root); or
- **settled**: its size and ctime have not changed for `SETTLE_SECONDS` (watched by
  us, not taken from the mtime's age); and
- the header checks.

"The header checks" means the format's ``describe()`` parses it and it promises no more
bytes than the file has (.npy: header + shape x itemsize; HDF5: the library refuses a
file shorter than its superblock's end-of-file address).

A file that stays malformed is moved to ``.ramxchg/quarantine/`` with a reason file:
after `SETTLE_SECONDS` unchanged once it was closed, else after `QUARANTINE_SECONDS`
unchanged (longer: without a close event, a stalled writer looks just like a broken file),
and never while a process still writes it.

/proc is read only for files that would otherwise be delivered or quarantined now, at
most once per `PROBE_COST_FACTOR` times what the last look cost.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .._errors import CorruptItem, ItemNotFound
from .._store.aside import set_aside
from .._store.layout import ChannelLayout
from .._store.scan import Entry, arrival_ns
from ..formats import format_for
from .writers import FileKey, WriterScan, find_writers

log = logging.getLogger(__name__)

#: A legacy file unchanged this long (and with a good header) is complete.
SETTLE_SECONDS = 0.5
#: Without a close event, a file unchanged and malformed this long is quarantined.
QUARANTINE_SECONDS = 5.0
#: How often waiting files are looked at again.
CHECK_SECONDS = 0.05
#: Looking for writers in /proc that took t seconds is not repeated for this x t seconds.
PROBE_COST_FACTOR = 4


#: A waiting file worth deciding on: its lstat and its header's problem (None: fine).
_Looked = tuple[os.stat_result, "str | None"]


@dataclass
class _Waiting:
    entry: Entry
    size: int
    #: its `arrival_ns` (the ctime): every write moves it on, as it does the mtime
    changed_ns: int
    unchanged_since: float
    closed: bool


def check_complete(path: Path) -> str | None:
    """None when the file's header parses and its data is all there; else the problem."""
    fmt = format_for(path)
    if fmt is None:
        return f"{path.name} has no known item suffix"
    try:
        fmt.describe(path)
    except (CorruptItem, ItemNotFound) as exc:
        return str(exc)
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    return None


class LegacyGate:
    """Sidecar-less files waiting until they are complete.

    Parameters
    ----------
    layout
        The channel whose files these are (for the quarantine folder).
    settle, quarantine_after
        Override `SETTLE_SECONDS` and `QUARANTINE_SECONDS`.
    clock, check, probe
        Seams for tests: a monotonic clock, `check_complete` and `find_writers`.
    """

    def __init__(
        self,
        layout: ChannelLayout,
        *,
        settle: float | None = None,
        quarantine_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[Path], str | None] = check_complete,
        probe: Callable[[set[FileKey]], WriterScan] = find_writers,
    ) -> None:
        self.layout = layout
        self.settle = SETTLE_SECONDS if settle is None else settle
        self.quarantine_after = QUARANTINE_SECONDS if quarantine_after is None else quarantine_after
        if self.settle < 0 or self.quarantine_after < self.settle:
            raise ValueError(
                f"need 0 <= settle ({self.settle}) <= quarantine_after ({self.quarantine_after})"
            )
        self._clock = clock
        self._check = check
        self._probe = probe
        self._next_probe = -math.inf
        self._waiting: dict[str, _Waiting] = {}
        self._closed_early: set[str] = set()  # close events for files not offered yet
        self._due = math.inf

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, filename: object) -> bool:
        return filename in self._waiting

    def due(self) -> float:
        """The monotonic time of the next useful `ready` call (inf: nothing waits)."""
        return self._due

    def offer(self, entry: Entry) -> None:
        """Hold a sidecar-less file until it is complete (again: a no-op)."""
        filename = os.path.basename(entry.path)
        closed = filename in self._closed_early
        self._closed_early.discard(filename)
        now = self._clock()
        waiting = self._waiting.get(filename)
        if waiting is not None:
            waiting.closed = waiting.closed or closed
        else:
            self._waiting[filename] = _Waiting(entry, entry.size, entry.published_ns, now, closed)
        self._due = 0.0 if closed else min(self._due, now)

    def closed(self, filenames: set[str]) -> None:
        """Record close-after-write events (before or after the file is offered)."""
        for filename in filenames:
            waiting = self._waiting.get(filename)
            if waiting is None:
                self._closed_early.add(filename)
            else:
                waiting.closed = True
                self._due = 0.0

    def forget_absent(self, present: set[str]) -> None:
        """Drop close marks of files no longer in the folder (bounds memory)."""
        self._closed_early &= present

    def ready(self) -> list[Entry]:
        """Look at every waiting file: return the complete ones, quarantine broken ones."""
        now = self._clock()
        done: list[Entry] = []
        decide: list[tuple[_Waiting, os.stat_result, str | None]] = []  # (waiting, *_Looked)
        for filename, waiting in list(self._waiting.items()):
            looked = self._look(waiting, now)
            if looked is False:
                del self._waiting[filename]
            elif looked is not None:
                decide.append((waiting, *looked))
        if decide and now >= self._next_probe:
            scan = self._probe({(info.st_dev, info.st_ino) for _, info, _ in decide})
            # Paced by its own cost: reading /proc takes ~10-30 ms on a busy machine.
            self._next_probe = now + PROBE_COST_FACTOR * (self._clock() - now)
            for waiting, info, problem in decide:
                verdict = self._decide(waiting, info, problem, scan, now)
                if verdict is not None:
                    del self._waiting[os.path.basename(waiting.entry.path)]
                    if verdict is not False:
                        done.append(verdict)
        self._due = max(now + CHECK_SECONDS, self._next_probe) if self._waiting else math.inf
        return done

    def _look(self, waiting: _Waiting, now: float) -> _Looked | bool | None:
        """False when gone, None to keep waiting, else (stat, problem) to decide on."""
        path = Path(waiting.entry.path)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        if (info.st_size, arrival_ns(info)) != (waiting.size, waiting.changed_ns):
            waiting.size, waiting.changed_ns = info.st_size, arrival_ns(info)
            waiting.unchanged_since = now
        unchanged = now - waiting.unchanged_since
        if not waiting.closed and unchanged < self.settle:
            return None
        problem = self._check(path)
        if problem is not None and unchanged < (
            self.settle if waiting.closed else self.quarantine_after
        ):
            return None
        return info, problem

    def _decide(
        self,
        waiting: _Waiting,
        info: os.stat_result,
        problem: str | None,
        scan: WriterScan,
        now: float,
    ) -> Entry | bool | None:
        """With the writers known: an entry when ready, False when quarantined, None to wait."""
        path = waiting.entry.path
        if (info.st_dev, info.st_ino) in scan.writing:
            # Still open for writing or mapped writable: not settled, whatever its mtime.
            log.debug("%s is still being written; waiting", path)
            waiting.unchanged_since = now
            return None
        unchanged = now - waiting.unchanged_since
        # A close event proves nothing while some process could not be looked at.
        closed = waiting.closed and scan.complete
        if not closed and unchanged < self.settle:
            return None
        if problem is None:
            return replace(waiting.entry, size=info.st_size, published_ns=arrival_ns(info))
        if unchanged < (self.settle if closed else self.quarantine_after):
            return None
        set_aside(
            Path(path),
            self.layout.quarantine,
            problem,
            size=info.st_size,
            unchanged_seconds=round(unchanged, 3),
            closed_event=waiting.closed,
        )
        return False
