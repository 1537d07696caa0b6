"""The channel's small state files: read with exact bytes, a hard size limit and no
symlinks; created once, whole and locked before they have a name."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, CorruptItem
from ramxchg._store.scan import item_sidecar
from ramxchg._store.sidecar import MAX_SIDECAR_BYTES, read_sidecar
from ramxchg._store.statefile import create_held, read_state
from ramxchg.disks.files import _can_link_unnamed
from ramxchg.formats.locks import lock_file, try_lock

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


def test_a_sidecar_read_again_is_parsed_again_only_when_its_bytes_changed(root: Path) -> None:
    ch = Channel("known-sidecar")
    ch.put(np.arange(3), "a", attrs={"k": 1})
    item_file, path = ch.path / "a.npy", ch.path / ".ramxchg" / "meta" / "a.json"
    info = os.lstat(item_file)
    first = item_sidecar(path, info)
    assert first is not None
    assert item_sidecar(path, info, first) is first  # same bytes: not parsed again
    ch.delete("a")
    ch.put(np.arange(3), "a", attrs={"k": 2})  # the name published again (recycled file)
    again = item_sidecar(path, os.lstat(item_file), first)
    assert again is not None
    assert (again.seq, again.attrs) == (first.seq + 1, {"k": 2})
    path.write_bytes(b"not json")
    assert item_sidecar(path, os.lstat(item_file), first) is None  # bad: legacy


def test_read_state_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CorruptItem, match="not a regular file"):
        read_state(tmp_path / "fifo", LIMIT, "channel config")


def _subscribe_latest(root: str, out: Any) -> None:
    os.environ["RAMXCHG_ROOT"] = root
    try:
        Channel("fifo", create=False).subscribe(start="latest").close()
        out.put("subscribed")
    except CorruptItem as exc:
        out.put(f"CorruptItem: {exc}")


def _swap_counter_for_a_fifo(root: Path) -> tuple[Channel, Path]:
    ch = Channel("fifo")
    ch.put(np.arange(3))
    seq = ch.path / ".ramxchg" / "seq"
    seq.unlink()
    os.mkfifo(seq)  # someone who can write the state folder swapped it
    return ch, seq


def test_a_fifo_for_the_counter_is_refused_not_waited_on(root: Path) -> None:
    ch, seq = _swap_counter_for_a_fifo(root)
    spawn = mp.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_subscribe_latest, args=(str(root), results))
    child.start()
    try:
        result = results.get(timeout=60)  # on 3c44b6e: nothing, the child blocks in open()
    finally:
        child.kill()
        child.join()
    assert result.startswith("CorruptItem")
    assert "not a regular file" in result
    assert str(seq) in result
    with pytest.raises(CorruptItem, match="not a regular file"):
        ch.put(np.arange(3))  # the publish lock refuses it too


def test_watch_start_latest_on_a_fifo_counter_fails_at_once(root: Path) -> None:
    _, seq = _swap_counter_for_a_fifo(root)
    done = subprocess.run(
        [sys.executable, "-m", "ramxchg", "watch", "fifo", "--start", "latest", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RAMXCHG_ROOT": str(root)},
        check=False,
    )
    assert done.returncode == 1
    assert "not a regular file" in done.stderr
    assert str(seq) in done.stderr


# -- files created once: complete and locked before they have a name ----------------------

#: The flag of a file made without a name (0 where the OS has none).
UNNAMED = getattr(os, "O_TMPFILE", 0)


def _lock_and_look(folder: int, seen: list[list[str]]) -> Callable[[int], None]:
    """A ``hold`` for `create_held`: lock the new file, and list its folder meanwhile."""

    def hold(fd: int) -> None:
        lock_file(fd)
        seen.append(sorted(os.listdir(folder)))

    return hold


def _refuse_unnamed(real_open: Callable[..., int]) -> Callable[..., int]:
    """``os.open``, but O_TMPFILE fails as on a filesystem without it."""

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if UNNAMED and flags & UNNAMED == UNNAMED:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
        return real_open(path, flags, *args, **kwargs)

    return fake_open


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "hidden-name"])
def test_a_held_file_is_whole_and_locked_when_its_name_appears(
    root: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """A claim is made complete and locked before it is linked under its name: without a
    name at all where Linux allows (O_TMPFILE), else under a hidden one, removed after."""
    if unnamed and not _can_link_unnamed():
        pytest.skip("needs O_TMPFILE and /proc/self/fd")
    if not unnamed:
        monkeypatch.setattr(os, "open", _refuse_unnamed(os.open))
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    seen: list[list[str]] = []
    try:
        fd = create_held("claim", b'{"seq": 7}', _lock_and_look(folder, seen), dir_fd=folder)
        assert fd is not None
        try:
            assert sorted(os.listdir(root)) == ["claim"]  # no hidden file left behind
            assert (root / "claim").read_bytes() == b'{"seq": 7}'
            other = os.open(root / "claim", os.O_RDONLY)
            try:
                assert not try_lock(other), "the claim was linked unlocked"
            finally:
                os.close(other)
            assert create_held("claim", b"{}", lock_file, dir_fd=folder) is None  # taken
        finally:
            os.close(fd)
    finally:
        os.close(folder)
    (meanwhile,) = seen  # the folder as the claim was written and locked
    if unnamed:
        assert meanwhile == []
    else:
        (hidden,) = meanwhile
        assert hidden.startswith(".claim."), hidden


def _claim_and_wait(folder: str, ready: Any) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    create_held("claim", b'{"seq": 7}', lambda _: (ready.set(), time.sleep(600)), dir_fd=fd)


def test_a_process_killed_while_it_makes_a_claim_leaves_no_file(root: Path) -> None:
    """A member killed after writing its claim and before linking it leaves nothing for
    the sweeps to collect: the claim had no name yet (older versions left a hidden
    ``.claim.<pid>.<random>`` file behind)."""
    if not _can_link_unnamed():
        pytest.skip("needs O_TMPFILE and /proc/self/fd")
    spawn = mp.get_context("spawn")
    ready = spawn.Event()
    child = spawn.Process(target=_claim_and_wait, args=(str(root), ready))
    child.start()
    try:
        assert ready.wait(60), "the child never wrote its claim"
    finally:
        child.kill()
        child.join()
    assert os.listdir(root) == []
