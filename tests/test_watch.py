"""Contract tests run against every notifier backend."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ramxchg._delivery.notifiers import (
    InotifyNotifier,
    Notifier,
    ObserverNotifier,
    PollingNotifier,
    make_notifier,
)

EVENT_BACKENDS = [ObserverNotifier]
if sys.platform.startswith("linux"):
    EVENT_BACKENDS.append(InotifyNotifier)


def _collect(notifier: Notifier, wanted: set[str], timeout: float = 10.0) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen and time.monotonic() < deadline:
        seen.update(notifier.wait(0.2))
    return seen


@pytest.fixture(params=EVENT_BACKENDS, ids=lambda cls: cls.__name__)
def notifier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Notifier]:
    backend = request.param(tmp_path)
    yield backend
    backend.close()


def test_reports_links_renames_and_closed_writes(notifier: Notifier, tmp_path: Path) -> None:
    hidden = tmp_path / ".tmp"
    hidden.mkdir()
    (hidden / "a").write_bytes(b"x")
    os.link(hidden / "a", tmp_path / "linked.npy")  # how ramxchg publishes
    (hidden / "b").write_bytes(b"x")
    os.rename(hidden / "b", tmp_path / "renamed.npy")  # how other tools publish
    (tmp_path / "written.npy").write_bytes(b"x")  # a legacy writer
    (tmp_path / ".ignored.npy").write_bytes(b"x")  # our own hidden files
    wanted = {"linked.npy", "renamed.npy", "written.npy"}
    seen = _collect(notifier, wanted)
    assert wanted <= seen
    assert ".ignored.npy" not in seen
    if sys.platform.startswith("linux"):  # close-after-write events exist only there
        closed: set[str] = set()
        deadline = time.monotonic() + 10
        while "written.npy" not in closed and time.monotonic() < deadline:
            notifier.wait(0.1)
            closed |= notifier.take_closed()
        assert closed == {"written.npy"}


def test_close_wakes_a_waiting_thread(notifier: Notifier) -> None:
    returned = threading.Event()

    def wait() -> None:
        notifier.wait(30)
        returned.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)  # let it block (if it has not, close() must still end it)
    notifier.close()
    assert returned.wait(5), "close() did not wake the waiting thread"
    waiter.join(5)
    notifier.close()  # closing twice is harmless


def test_polling_has_no_events_and_wakes_on_close(tmp_path: Path) -> None:
    polling = make_notifier(tmp_path, "polling")
    assert isinstance(polling, PollingNotifier)
    assert not polling.has_events
    (tmp_path / "x.npy").write_bytes(b"x")
    started = time.monotonic()
    assert polling.wait(0.1) == []
    assert time.monotonic() - started >= 0.09
    polling.close()
    assert polling.wait(30) == []  # returns at once once closed


def test_auto_picks_events_and_rejects_unknown_modes(tmp_path: Path) -> None:
    auto = make_notifier(tmp_path, "auto")
    try:
        assert auto.has_events
        if sys.platform.startswith("linux"):
            assert isinstance(auto, InotifyNotifier)
    finally:
        auto.close()
    with pytest.raises(ValueError, match="watch"):
        make_notifier(tmp_path, "telepathy")


def test_events_mode_fails_loudly_and_auto_falls_back_to_polling(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):
        make_notifier(missing, "events")
    fallback = make_notifier(missing, "auto")
    assert isinstance(fallback, PollingNotifier)
    fallback.close()
