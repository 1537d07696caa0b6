"""Wake-ups for subscribers: filesystem events through watchdog, or polling.

The notifier only says *which names changed*; the subscription decides what they
mean. Events can be lost (a full inotify queue drops them), so subscribers also
rescan the folder periodically and whenever sequence numbers show a gap; where the
filesystem gives no events at all (network filesystems) the notifier falls back to
polling, i.e. to rescans at a short interval.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

#: The events that can announce a new item: our link() shows as "created", a rename by
#: another tool as "moved", and a legacy writer finishing a file as "closed".
WATCHED_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent, FileClosedEvent]

WATCH_MODES = ("auto", "events", "polling")


class Notifier(FileSystemEventHandler):
    """Collects the names of files that appeared in one folder.

    Parameters
    ----------
    folder
        The folder to watch (not recursively: hidden temporary files live below it).
    mode
        ``"events"`` (watchdog, fail if unavailable), ``"polling"`` (no events: callers
        rescan) or ``"auto"`` (events, falling back to polling).
    """

    def __init__(self, folder: Path, mode: str = "auto") -> None:
        if mode not in WATCH_MODES:
            raise ValueError(f"watch must be one of {WATCH_MODES}, not {mode!r}")
        super().__init__()
        self._cond = threading.Condition()
        self._names: list[str] = []
        self._closed_names: set[str] = set()
        self._closed = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        if mode != "polling":
            observer = Observer()
            try:
                observer.schedule(self, str(folder), recursive=False, event_filter=WATCHED_EVENTS)
                observer.start()
            except OSError as exc:
                if mode == "events":
                    raise
                log.warning("no filesystem events for %s (%s); polling instead", folder, exc)
            else:
                self._observer = observer

    @property
    def has_events(self) -> bool:
        """True while filesystem events are being delivered (False: polling)."""
        return self._observer is not None

    def dispatch(self, event: FileSystemEvent) -> None:
        # Called on watchdog's thread: record the name, wake the waiter, nothing more.
        path = event.dest_path if isinstance(event, FileMovedEvent) else event.src_path
        name = os.path.basename(os.fsdecode(path))
        if name.startswith("."):
            return
        with self._cond:
            self._names.append(name)
            if isinstance(event, FileClosedEvent):
                self._closed_names.add(name)
            self._cond.notify()

    def wait(self, timeout: float | None) -> list[str]:
        """Names that appeared since the last call, waiting up to ``timeout`` for one."""
        with self._cond:
            if not self._names and not self._closed:
                self._cond.wait(timeout)
            names, self._names = self._names, []
            return names

    def take(self) -> list[str]:
        """Names that appeared since the last call, without waiting."""
        with self._cond:
            names, self._names = self._names, []
            return names

    def take_closed(self) -> set[str]:
        """Names that got a close-after-write event since the last call (Linux only).

        Each is also reported by `take`/`wait`; legacy writers are done with them.
        """
        with self._cond:
            closed, self._closed_names = self._closed_names, set()
            return closed

    def wake(self) -> None:
        """Wake a waiter (used by ``close`` from another thread)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop watching and join watchdog's threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
