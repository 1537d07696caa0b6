"""A sidecar belongs to one file: an orphan never makes a later file of its name sequenced.

docs/protocol.md, section 3. A producer killed between writing the sidecar and linking
its item leaves the sidecar behind (until ``gc``). A program that later writes a file of
that name in place must not inherit it: the file would count as a complete sequenced item
at its "created" event, while it is still being written. Sidecars record the inode and
size of their item's file; one that names another file is ignored.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from ramxchg import Channel
from ramxchg._store.scan import Entry, look

SPAWN = mp.get_context("spawn")


def _die_between_sidecar_and_link(root: str, channel: str, name: str) -> None:
    """Publish ``name`` and die where the sidecar is written and the link is not."""
    os.environ["RAMXCHG_ROOT"] = root
    ch = Channel(channel)
    os.link = lambda *args, **kwargs: os._exit(9)  # the publishing link: die there
    ch.put(np.arange(4.0), name)


def _leave_orphan(root: Path, channel: Channel, name: str) -> None:
    producer = SPAWN.Process(
        target=_die_between_sidecar_and_link, args=(str(root), channel.name, name)
    )
    producer.start()
    producer.join(60)
    assert producer.exitcode == 9
    assert (channel.path / ".ramxchg" / "meta" / f"{name}.json").exists()
    assert name not in channel


def _write_half(path: Path, array: np.ndarray) -> tuple[BinaryIO, bytes]:
    """Start writing ``array`` in place like ``np.save``; return the open file and the rest."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": array.shape}
    )
    data = array.tobytes()
    out = open(path, "wb")  # noqa: SIM115 - the test closes it when the writer is done
    out.write(header.getvalue() + data[: len(data) // 2])
    out.flush()
    return out, data[len(data) // 2 :]


@pytest.mark.parametrize("group", [None, "g"])
def test_a_later_file_of_the_name_does_not_adopt_an_orphan_sidecar(
    root: Path, group: str | None
) -> None:
    channel = Channel("orphan")
    with channel.subscribe(group=group) as subscription:
        _leave_orphan(root, channel, "frame")
        array = np.arange(1000.0)
        out, rest = _write_half(channel.path / "frame.npy", array)
        try:
            listed = look(channel._layout, "frame.npy")
            assert isinstance(listed, Entry)
            assert listed.seq is None  # a legacy file, not the dead producer's item
            assert channel.get("frame").seq is None
            # Still being written: not delivered (as sequenced it was, at once, half-written).
            with pytest.raises(TimeoutError):
                subscription.get(timeout=1.0)
            out.write(rest)
        finally:
            out.close()
        item = subscription.get(timeout=30)
        assert (item.name, item.seq, item.attrs) == ("frame", None, {})
        np.testing.assert_array_equal(item.array, array)
        item.close()
        if group is not None:  # claimed and acked as the legacy file it is
            assert item.ack() is True


def test_sidecars_record_their_file(root: Path) -> None:
    channel = Channel("own")
    item = channel.put(np.arange(3), "a", attrs={"k": 1})
    sidecar = json.loads((channel.path / ".ramxchg" / "meta" / "a.json").read_text())
    info = os.lstat(item.path)
    assert (sidecar["ino"], sidecar["size"]) == (info.st_ino, info.st_size)
    assert channel.get("a").seq == item.seq


def test_a_sidecar_of_another_size_or_inode_is_ignored(root: Path) -> None:
    channel = Channel("mismatch")
    channel.put(np.arange(3), "a")
    channel.put(np.arange(3), "b")
    meta = channel.path / ".ramxchg" / "meta"
    for name, key in (("a", "ino"), ("b", "size")):
        sidecar = json.loads((meta / f"{name}.json").read_text())
        sidecar[key] += 1
        (meta / f"{name}.json").write_text(json.dumps(sidecar))
    assert [(item.name, item.seq) for item in channel.items()] in (
        [("a", None), ("b", None)],
        [("b", None), ("a", None)],  # legacy: by arrival, within one clock tick
    )
    assert channel.get("a").seq is None
