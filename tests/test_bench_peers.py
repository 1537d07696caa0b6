"""``ramxchg bench`` against its peers: iceoryx2 and Arrow really run (tiny sizes, the
consumer checking the bytes it got), and iceoryx2 leaves nothing behind, even when a
worker is killed."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import numpy as np
import pytest

from ramxchg.bench import runner
from ramxchg.cli import main

pytestmark = pytest.mark.slow

KB = 1 << 10


def _iceoryx_files() -> set[str]:
    """What iceoryx2 runs of this benchmark have in /dev/shm and the temp folder."""
    return set(glob.glob("/dev/shm/rxbench*")) | set(glob.glob("/tmp/ramxchg-iox2-*"))


def test_iceoryx2_and_arrow_deliver_the_bytes_and_leave_nothing(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("iceoryx2", reason="needs iceoryx2 (pip install 'ramxchg[bench]')")
    pytest.importorskip("pyarrow", reason="needs pyarrow (pip install 'ramxchg[bench]')")
    # A hung phase fails the size with where each process was, before pytest's timeout.
    monkeypatch.setattr(runner, "PHASE_TIMEOUT", 60.0)
    before = _iceoryx_files()
    only = ["ramxchg_put", "iceoryx2", "arrow_shm"]
    code = main(
        ["bench", "--quick", "--json", "--sizes", "1K", "64K", "--repeat", "1", "--only", *only]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    entries = {entry["name"]: entry for entry in result["transports"]}
    assert list(entries) == only
    for entry in entries.values():
        assert entry["skipped"] is None, entry
        # Every phase ended with the consumer's check of the bytes it got (an error if not).
        assert [(r["size"], r["error"]) for r in entry["results"]] == [(KB, None), (64 * KB, None)]
    for item in entries["ramxchg_put"]["results"]:
        versus = item["vs_peers"]
        assert versus["iceoryx2"] > 0
        assert versus["ray"] is None  # not selected: no number to compare with
    assert "vs_peers" not in entries["iceoryx2"]["results"][0]
    assert _iceoryx_files() == before
    assert list(root.iterdir()) == []


def _crash(link: Any, ready: Any) -> None:
    """Publish one message, hold it received, and die without cleaning up."""
    from ramxchg.bench.transports_iceoryx2 import IceoryxTransport

    transport = IceoryxTransport()
    receiver = transport.receiver(link)
    receiver.prepare(KB)
    sender = transport.sender(link)
    sender.send(np.zeros(KB, np.uint8))
    receiver.recv(KB)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_iceoryx2_cleanup_removes_what_a_killed_worker_left() -> None:
    pytest.importorskip("iceoryx2", reason="needs iceoryx2 (pip install 'ramxchg[bench]')")
    from ramxchg.bench.transports_iceoryx2 import IceoryxTransport, cleanup, leftovers

    ctx = mp.get_context("spawn")
    link = IceoryxTransport().open_link(ctx, Path("unused"))
    ready = ctx.Event()
    process = ctx.Process(target=_crash, args=(link, ready))
    process.start()
    process.join(60)
    assert ready.is_set()
    assert process.exitcode == -signal.SIGKILL
    left = [Path(path).name.split(".")[-1] for path in leftovers(link)]
    assert "data" in left  # the publisher's pool, mapped by nobody now
    cleanup(link)
    assert leftovers(link) == []
    assert not os.path.exists(link.root)


def _send_and_notify_after(link: Any, delay: float | None) -> None:
    """Send one message of sevens 0.2 s from now (while the receiver waits), and notify
    ``delay`` s after it (None: never)."""
    from ramxchg.bench.transports_iceoryx2 import IceoryxTransport

    sender = IceoryxTransport().sender(link)
    notifier, sender.notifier = sender.notifier, Mock()
    time.sleep(0.2)
    sender.send(np.full(KB, 7, np.uint8))
    if delay is not None:
        time.sleep(delay)
        notifier.notify()
    time.sleep(1.5)  # the sample lives in this publisher's pool: until the receiver is done
    sender.notifier = notifier
    sender.close()


@pytest.mark.parametrize("delay", [None, 0.6], ids=["lost", "late"])
def test_iceoryx2_receiver_reports_a_lost_notification_instead_of_hanging(
    delay: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample that comes without its notification fails the phase with a reason after
    a timed wait (an untimed one hung); one whose notification comes late, after the
    wait timed out, is delivered."""
    pytest.importorskip("iceoryx2", reason="needs iceoryx2 (pip install 'ramxchg[bench]')")
    from ramxchg.bench import transports_iceoryx2
    from ramxchg.bench.transports_iceoryx2 import IceoryxTransport, cleanup

    monkeypatch.setattr(transports_iceoryx2, "LOST_WAKE_UP_SECONDS", 0.4)
    ctx = mp.get_context("spawn")
    transport = IceoryxTransport()
    link = transport.open_link(ctx, Path("unused"))
    receiver = transport.receiver(link)
    try:
        receiver.prepare(KB)
        process = ctx.Process(target=_send_and_notify_after, args=(link, delay))
        process.start()
        if delay is None:
            with pytest.raises(ConnectionError, match="iceoryx2 lost a notification"):
                receiver.recv(KB)
        else:
            assert receiver.recv(KB).tolist() == [7] * KB
        receiver.close()
        process.join(30)
        assert process.exitcode == 0
    finally:
        cleanup(link)
