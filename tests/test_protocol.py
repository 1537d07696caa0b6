"""The files the Python implementation writes match docs/protocol.md, and programs that
follow the spec with plain file operations interoperate with it."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel
from ramxchg._store.config import ChannelConfig
from ramxchg._store.layout import PROTOCOL_VERSION

SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
NAME = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{1,200}(?<!\.)$")
AUTO_NAME = re.compile(r"^[0-9]{12}$")
SEQ_FILE = re.compile(rb"^[0-9]{20}\n$")
#: section 2: <stem>.<pid>.<random>[.lk]<suffix> (the marker: a 1.1 writer that locks)
TMP_NAME = re.compile(r"^(?P<stem>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]{12}(\.lk)?\.(npy|h5)$")
#: the major part of the version: what the files' "version" fields hold
MAJOR = int(PROTOCOL_VERSION.split(".")[0])
#: after a type in a table: written by 1.1 writers, absent from 1.0 files
SINCE_1_1 = " (1.1)"
#: after a type in a table: a field a writer may leave out
OPTIONAL = " (optional)"

_TYPES: dict[str, Any] = {
    "int": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def spec_rows(kind: str) -> list[list[str]]:
    """The cells of each row of the table after ``<!-- format: kind -->`` in the spec."""
    text = SPEC.read_text()
    marker = f"<!-- format: {kind} -->"
    assert marker in text, f"the spec has no {kind} table"
    rows = []
    for line in text.split(marker, 1)[1].lstrip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def spec_table(kind: str) -> dict[str, str]:
    """field -> type from the spec's ``kind`` table."""
    return {row[0]: row[1] for row in spec_rows(kind)}


def check_against(data: object, kind: str, path: object, *, written_by_1_0: bool = False) -> None:
    """Exactly the spec's fields, each of the spec's type.

    ``written_by_1_0``: the fields marked "(1.1)" may be missing.
    """
    table = spec_table(kind)
    assert isinstance(data, dict), f"{path} is not a JSON object"
    required = {
        f
        for f, t in table.items()
        if not (t.endswith(OPTIONAL) or (written_by_1_0 and t.endswith(SINCE_1_1)))
    }
    assert required <= set(data) <= set(table), (
        f"{path}: fields {sorted(data)} != spec {sorted(table)}"
    )
    for field, type_text in table.items():
        if field not in data:
            continue
        bare = type_text.removesuffix(SINCE_1_1).removesuffix(OPTIONAL)
        allowed = [t.strip() for t in bare.split(" or ")]
        assert all(t in _TYPES for t in allowed), f"unknown type {type_text!r} in the spec"
        assert any(_TYPES[t](data[field]) for t in allowed), (
            f"{path}: {field}={data[field]!r} is not {type_text}"
        )
    if "version" in table:
        assert data["version"] == MAJOR


def test_spec_tables_are_complete() -> None:
    assert set(spec_table("sidecar")) == {
        "version",
        "seq",
        "format",
        "published_ns",
        "ino",
        "size",
        "attrs",
    }
    assert spec_table("claim")["lock"] == "bool" + SINCE_1_1
    assert f"version {PROTOCOL_VERSION}" in SPEC.read_text().splitlines()[0]
    assert f'PROTOCOL_VERSION = "{PROTOCOL_VERSION}"' in SPEC.read_text()


def test_the_config_defaults_are_the_spec_s() -> None:
    """The default column of section 5 is what a missing key (or file) means."""
    defaults = {row[0]: json.loads(row[2].strip("`")) for row in spec_rows("config")}
    assert defaults.pop("version") == MAJOR
    assert defaults == asdict(ChannelConfig())
    assert ChannelConfig.from_json(b"{}", Path("config.json")) == ChannelConfig()


def test_state_files_written_by_python_match_the_spec(root: Path) -> None:
    channel = Channel("spec", keep_last=100, ttl=3600.5)
    subscription = channel.subscribe(group="readers")
    channel.put(np.arange(3), attrs={"a": [1, {"b": None}]})
    channel.put({"x": np.ones(2)}, name="named.v1", format="hdf5")
    with channel.create((4,), "f4") as array:
        array[:] = 1
        [tmp] = os.listdir(channel.path / ".ramxchg" / "tmp")
        parts = TMP_NAME.match(tmp)
        assert parts is not None, tmp
        assert (parts["stem"], parts["pid"]) == ("auto", str(os.getpid()))
    first = subscription.get(timeout=10)
    second = subscription.get(timeout=10)
    first.ack()
    state = channel.path / ".ramxchg"

    check_against(json.loads((state / "config.json").read_text()), "config", "config.json")
    config = json.loads((state / "config.json").read_text())
    assert (config["keep_last"], config["ttl"], config["max_items"]) == (100, 3600.5, None)

    seq = (state / "seq").read_bytes()
    assert SEQ_FILE.match(seq)
    assert int(seq) == 3

    sidecars = sorted(os.listdir(state / "meta"))
    assert sidecars == ["000000000003.json", "named.v1.json"]  # the first was acked: deleted
    for name in sidecars:
        data = json.loads((state / "meta" / name).read_text())
        check_against(data, "sidecar", name)
        item_name = name[: -len(".json")]
        assert NAME.match(item_name)
        suffix = {"npy": ".npy", "hdf5": ".h5"}[data["format"]]
        assert (channel.path / f"{item_name}{suffix}").is_file()
        if data["seq"] == 3:
            assert AUTO_NAME.match(item_name)
            assert item_name == f"{data['seq']:012d}"

    group = state / "groups" / "readers"
    registration = json.loads((group / "group.json").read_text())
    check_against(registration, "group", "group.json")
    assert registration["name"] == "readers"
    assert registration["created_seq"] == registration["start_seq"] == 0

    [claim] = os.listdir(group / "claims")
    assert claim == second.name
    # "lock" comes with the claim lock (issue #13), built separately from this check
    check_against(
        json.loads((group / "claims" / claim).read_text()), "claim", claim, written_by_1_0=True
    )
    assert json.loads((group / "claims" / claim).read_text())["pid"] == os.getpid()
    assert os.listdir(group / "acks") == []  # the acked item was deleted, and its ack
    second.ack()
    assert os.listdir(group / "claims") == []
    subscription.close()


def _foreign_publish(channel: Path, name: str | None, array: np.ndarray, version: str) -> str:
    """Publish like docs/protocol.md section 4 says, with plain os calls.

    ``version`` "1.1" locks the temporary file (section 11) and records it in the
    sidecar; "1.0" does neither, as older and simpler producers do.
    """
    state = channel / ".ramxchg"
    locking = version == "1.1"
    marker = ".lk" if locking else ""
    tmp = state / "tmp" / f"{name or 'auto'}.{os.getpid()}.{os.urandom(6).hex()}{marker}.npy"
    data = io.BytesIO()
    np.save(data, array)
    # step 1: the complete file, hidden (and locked by a 1.1 writer until step 7)
    written = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        if locking:
            fcntl.flock(written, fcntl.LOCK_EX)
            assert os.fstat(written).st_ino == os.lstat(tmp).st_ino  # not collected meanwhile
        os.write(written, data.getvalue())
        info = os.fstat(written)
        fd = os.open(state / "seq", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # step 2
            raw = os.pread(fd, 21, 0)
            seq = (int(raw) if raw else 0) + 1
            final = name or f"{seq:012d}"  # step 3
            assert not (channel / f"{final}.npy").exists()
            assert not (channel / f"{final}.h5").exists()
            sidecar = {
                "version": 1,
                "seq": seq,
                "format": "npy",
                "published_ns": time.time_ns(),
                **({"ino": info.st_ino, "size": info.st_size} if locking else {}),
                "attrs": {"producer": "foreign"},
            }
            check_against(sidecar, "sidecar", "foreign sidecar", written_by_1_0=not locking)
            tmp_sidecar = tmp.with_suffix(".json")  # step 4: complete, then renamed into place
            tmp_sidecar.write_text(json.dumps(sidecar))
            os.rename(tmp_sidecar, state / "meta" / f"{final}.json")
            os.pwrite(fd, b"%020d\n" % seq, 0)  # step 5
            os.link(tmp, channel / f"{final}.npy")  # step 6
        finally:
            os.close(fd)  # step 7: closing drops the publish lock ...
        os.unlink(tmp)
    finally:
        os.close(written)  # ... and this the writer lock, after the unlink
    return final


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_foreign_producer_following_the_spec_is_delivered(root: Path, version: str) -> None:
    channel = Channel("foreign")
    with channel.subscribe() as subscription:
        channel.put(np.zeros(2))
        assert subscription.get(timeout=10).seq == 1
        name = _foreign_publish(channel.path, None, np.arange(5.0), version)
        item = subscription.get(timeout=10)
        assert (item.name, item.seq, item.attrs) == (name, 2, {"producer": "foreign"})
        np.testing.assert_array_equal(item.array, np.arange(5.0))
        item.close()
        _foreign_publish(channel.path, "chosen", np.ones(3), version)
        assert channel.put(np.ones(1)).seq == 4  # the Python side continues the count
        assert [(i.name, i.seq) for i in (subscription.get(timeout=10) for _ in range(2))] == [
            ("chosen", 3),
            ("000000000004", 4),
        ]
    assert os.listdir(channel.path / ".ramxchg" / "tmp") == []


def test_a_foreign_consumer_ack_lets_retention_delete_the_item(root: Path) -> None:
    channel = Channel("acks")
    channel.subscribe(group="foreign").close()  # registered: it holds items back
    name = channel.put(np.ones(4)).name
    assert channel.gc()["released"] == 0
    assert name in channel
    # The foreign consumer read the file directly; acking is creating one empty file.
    ack = channel.path / ".ramxchg" / "groups" / "foreign" / "acks" / name
    ack.touch()
    assert channel.gc()["released"] == 1
    assert name not in channel
    assert not (channel.path / ".ramxchg" / "meta" / f"{name}.json").exists()
    assert not ack.exists()


def test_acks_name_their_item_and_a_foreign_late_ack_counts_for_no_newer_one(
    root: Path,
) -> None:
    channel = Channel("late")
    channel.subscribe(group="foreign").close()
    acks = channel.path / ".ramxchg" / "groups" / "foreign" / "acks"
    old = channel.put(np.ones(4), "frame")
    channel.subscribe(group="other").close()  # holds the next frame back
    assert channel.ack("frame", "foreign") is True  # "other" came after it: deleted
    held = channel.put(np.ones(4), "frame")
    channel.ack("frame", "foreign")
    check_against(json.loads((acks / "frame").read_text()), "ack", "acks/frame")
    assert json.loads((acks / "frame").read_text())["seq"] == held.seq
    # A foreign consumer's ack of the old frame, arriving late, names the old seq.
    (acks / "frame").write_text(json.dumps({"seq": old.seq}))
    (acks.parent.parent / "other" / "acks" / "frame").write_text(json.dumps({"seq": held.seq}))
    assert channel.gc()["released"] == 0
    assert "frame" in channel


def test_seq_gap_left_by_a_dead_producer_is_not_waited_for(root: Path) -> None:
    channel = Channel("gap")
    with channel.subscribe() as subscription:
        channel.put(np.ones(1))
        assert subscription.get(timeout=10).seq == 1
        # A producer died after storing number 2 and before its link (spec step 5/6).
        (channel.path / ".ramxchg" / "seq").write_bytes(b"%020d\n" % 2)
        assert channel.put(np.ones(1)).seq == 3
        assert subscription.get(timeout=10).seq == 3


def test_an_ack_that_does_not_know_the_inode_counts_for_the_item(root: Path) -> None:
    """``"ino": null`` in an ack means "not known" (as `ramxchg ack` writes it), not
    "another file": the group's members must not receive the item again."""
    channel = Channel("hand-acked")
    channel.subscribe(group="a").close()
    channel.subscribe(group="b").close()  # holds the item after "a" acked it
    name = channel.put(np.ones(3)).name
    assert channel.ack(name, "a") is False
    ack = json.loads((channel.path / ".ramxchg" / "groups" / "a" / "acks" / name).read_text())
    assert ack["ino"] is None
    with channel.subscribe(group="a") as subscription:
        try:
            again = subscription.get(timeout=1.0)
        except TimeoutError:
            again = None
        assert again is None, f"{name}, acked for the group, was delivered to it again"
    with channel.subscribe(group="b") as subscription:
        assert subscription.get(timeout=10).name == name
