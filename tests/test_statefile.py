"""Reading the channel's small state files: exact bytes, a hard size limit, no symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem
from ramxchg._sidecar import MAX_SIDECAR_BYTES, read_sidecar
from ramxchg._statefile import read_state

LIMIT = 1 << 20


@pytest.mark.parametrize("size", [0, 100, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, 300_000, LIMIT])
def test_read_state_returns_every_byte_up_to_the_limit(tmp_path: Path, size: int) -> None:
    path = tmp_path / "state"
    data = os.urandom(size)
    path.write_bytes(data)
    assert read_state(path, LIMIT, "sidecar") == data


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT])
def test_read_state_refuses_a_file_over_the_limit(tmp_path: Path, size: int) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"x" * size)
    with pytest.raises(CorruptItem, match=f"sidecar {path} is over {LIMIT} bytes") as info:
        read_state(path, LIMIT, "sidecar")
    assert info.value.path == str(path)


def test_read_state_of_a_missing_file_or_a_symlink(tmp_path: Path) -> None:
    assert read_state(tmp_path / "missing", LIMIT, "sidecar") is None
    (tmp_path / "target").write_bytes(b"{}")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(CorruptItem, match="cannot be opened"):
        read_state(tmp_path / "link", LIMIT, "sidecar")


def test_an_oversized_sidecar_is_refused_and_its_item_is_legacy(root: Path) -> None:
    ch = Channel("big-sidecar")
    ch.put(np.arange(3), "a", attrs={"k": 1})
    sidecar = ch.path / ".ramxchg" / "meta" / "a.json"
    sidecar.write_bytes(b" " * (MAX_SIDECAR_BYTES + 1))
    with pytest.raises(CorruptItem, match=f"over {MAX_SIDECAR_BYTES} bytes"):
        read_sidecar(sidecar)
    item = ch.get("a")  # never read: the item counts as legacy (tests/test_bad_sidecar.py)
    assert (item.sidecar, item.seq, item.attrs) == (None, None, {})
