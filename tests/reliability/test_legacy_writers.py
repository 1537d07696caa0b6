"""Legacy writers that keep writing after a close event, or flush and pause.

Programs that know nothing of ramxchg write items in place. Two kinds fooled the close
event and the settle rule (issue #12, item 8):

- ``np.lib.format.open_memmap``: the header is written and the file closed (the close
  event fires) before the data is written through a shared writable mapping;
- an h5py writer that flushes, pauses longer than the settle interval, then writes
  more datasets (the file is unchanged meanwhile, but still open for writing).

The consumer must deliver each file once, with every value and every dataset.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.reliability._work import checksum
from tests.reliability.conftest import Figures, Profile

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPAWN = mp.get_context("spawn")
VALUES = 1 << 20  # float64 values per file (8 MiB)
#: The writers pause this long mid-way: twice the default settle interval.
PAUSE = 1.0
DATASETS = 3


def _values(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(VALUES)


def _memmap_writer(path: str, seed: int) -> None:
    """open_memmap, then write through the mapping: half, a pause, the rest."""
    values = _values(seed)
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype="<f8", shape=(VALUES,))
    # The header is written and the file closed: the close event has fired.
    half = VALUES // 2
    mapped[:half] = values[:half]
    mapped.flush()
    time.sleep(PAUSE)  # a writer pausing mid-way (the scenario), not synchronisation
    mapped[half:] = values[half:]
    mapped.flush()
    del mapped  # unmapped: now the file is complete


def _h5py_writer(path: str, seed: int) -> None:
    """One dataset, flush, a pause, then the other datasets."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("d0", data=_values(seed))
        f.flush()
        time.sleep(PAUSE)  # a writer pausing mid-way (the scenario), not synchronisation
        for index in range(1, DATASETS):
            f.create_dataset(f"d{index}", data=_values(seed + index))


WRITERS = {"open_memmap": (_memmap_writer, ".npy"), "h5py_flush_pause": (_h5py_writer, ".h5")}


@pytest.mark.parametrize("watch", ["auto", "polling"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_legacy_writer_is_delivered_only_complete(
    root: Path, profile: Profile, figures: Figures, writer: str, watch: str
) -> None:
    target, suffix = WRITERS[writer]
    channel = Channel("legacy")
    partial = 0
    with channel.subscribe(watch=watch) as subscription:
        for run in range(profile.legacy_runs):
            name = f"{writer}{run}"
            seed = 10 * run
            proc = SPAWN.Process(target=target, args=(str(channel.path / f"{name}{suffix}"), seed))
            proc.start()
            item = subscription.get(timeout=60)
            assert item.name == name
            with item:
                arrays = item.arrays
                got = [checksum(arrays[key]) for key in sorted(arrays)]
            expected = [checksum(_values(seed + i)) for i in range(len(got))]
            wanted = 1 if suffix == ".npy" else DATASETS
            partial += got != expected or len(got) != wanted
            proc.join(60)
            assert proc.exitcode == 0
    assert not channel._layout.quarantine.exists()
    figures.runs = f"{profile.legacy_runs} files, {watch}"
    figures.faults = f"{writer}: writes after the close event or pauses {PAUSE} s mid-way"
    figures.partial = partial
    assert partial == 0, f"{partial} of {profile.legacy_runs} files delivered incomplete"
