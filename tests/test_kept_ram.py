"""The RAM a consumer's kept mappings (formats/kept.py) hold is never out of a producer's
reach: a file deleted while only kept mappings map it gives its pages back at once."""

from __future__ import annotations

import multiprocessing as mp
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, NotRamBackedWarning
from tests.conftest import mounted_tmpfs

SPAWN = mp.get_context("spawn")
ITEM = 4 << 20  # bytes of data: with its header, large enough for a kept mapping
TIMEOUT = 60


def _read_then_idle(root: str, count: int, done: Any, stop: Any) -> None:
    """Read ``count`` items of channel "ram" whole and let go of them, then sit idle (a
    consumer busy elsewhere, or waiting for an item that needs the RAM it keeps)."""
    warnings.simplefilter("ignore", NotRamBackedWarning)  # warned about in the test
    sub = Channel("ram", root=root).subscribe()
    for _ in range(count):
        with sub.get(timeout=TIMEOUT) as item:
            item.array.sum()
    done.set()
    stop.wait(TIMEOUT)
    sub.close()


@pytest.mark.root
def test_files_deleted_while_an_idle_consumer_keeps_them_mapped_give_their_ram_back(
    tmp_path: Path,
) -> None:
    with mounted_tmpfs(tmp_path / "ram", 64 << 20) as mount:
        ch = Channel("ram", root=mount, recycle=1)
        names = [ch.put(np.full(ITEM, n, np.uint8)).name for n in range(4)]
        done, stop = SPAWN.Event(), SPAWN.Event()
        consumer = SPAWN.Process(target=_read_then_idle, args=(str(mount), 4, done, stop))
        consumer.start()
        try:
            assert done.wait(TIMEOUT)
            for name in names:  # one goes into the pool (recycle=1), three are unlinked
                ch.delete(name)
            # Room only if the deleted files' pages came back, the consumer's mappings
            # of them notwithstanding (on 47d3edf: RamDiskFull, 8 MiB held by them).
            ch.put(np.ones(60 << 20, np.uint8))
        finally:
            stop.set()
            consumer.join(TIMEOUT)
        assert consumer.exitcode == 0
