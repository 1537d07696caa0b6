"""``ramxchg bench`` against its peers: iceoryx2 and Arrow really run (tiny sizes, the
consumer checking the bytes it got), and iceoryx2 leaves nothing behind, even when a
worker is killed."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg.cli import main

pytestmark = pytest.mark.slow

KB = 1 << 10


def _iceoryx_files() -> set[str]:
    """What iceoryx2 runs of this benchmark have in /dev/shm and the temp folder."""
    return set(glob.glob("/dev/shm/rxbench*")) | set(glob.glob("/tmp/ramxchg-iox2-*"))


def test_iceoryx2_and_arrow_deliver_the_bytes_and_leave_nothing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("iceoryx2", reason="needs iceoryx2 (pip install 'ramxchg[bench]')")
    pytest.importorskip("pyarrow", reason="needs pyarrow (pip install 'ramxchg[bench]')")
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
