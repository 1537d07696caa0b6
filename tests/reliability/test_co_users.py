"""A hostile co-user of a shared root: links in their own channel's state, aimed at you.

In a root shared by everyone (mode 1777, what `ramxchg setup` mounts), another user owns
channels of their own and may swap any of their state folders for a symlink to a folder of
yours, or hard-link your files into them. Your `ramxchg gc` (or root's) must then leave
your folder exactly as it was, and so must consuming from, publishing into or dropping a
group of such a channel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import snapshot
from tests.reliability._users import OTHER, as_user, cli
from tests.reliability.conftest import Figures

pytestmark = [pytest.mark.reliability, pytest.mark.root]

VICTIM = OTHER
ATTACKER = OTHER + 1
#: State folders the attacker swaps for a link to the victim's folder, one channel each.
LINKED = (
    "groups/g/acks",
    "groups/g/claims",
    "meta",
    "tmp",
    "pool",
    "quarantine",
    "dead",
    "groups",
    "groups/g",
)
#: One hour ago: old enough for every age rule of gc (temporary files, dead claims).
OLD = time.time() - 3600
#: The item size a pooled file of the victim's folder is named after (128-byte header).
POOLED_BYTES = 8192
GROUP_JSON = json.dumps(
    {"version": 1, "name": "g", "start_seq": 0, "created_seq": 0, "created_ns": 0}
)


def _state_shaped(folder: Path) -> None:
    """Files of the victim shaped like what each state walk would remove."""
    files = {
        "notes.json": "{}",  # an orphan sidecar, to a meta walk
        "results": "not json",  # a stale ack, or a dead claim, to acks/claims walks
        "half.npy": "old",  # a dead producer's temporary file, to a tmp walk
        f"{POOLED_BYTES}.1.cafe": "x" * POOLED_BYTES,  # a recycled file, to the pool
        "group.json": GROUP_JSON,  # a registered group, to groups/g
        "seq": f"{7:020d}\n",
    }
    for sub in ("", "acks/", "claims/", "meta/", "tmp/", "pool/", "g/", "g/acks/", "g/claims/"):
        (folder / sub).mkdir(exist_ok=True)
        for name, text in files.items():
            (folder / sub / name).write_text(text)


@pytest.fixture
def precious() -> Iterator[Path]:
    """The victim's private folder (0700), outside the shared root but on the same disk."""
    folder = Path(tempfile.mkdtemp(prefix="ramxchg-victim-", dir="/dev/shm"))
    _state_shaped(folder)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, VICTIM, VICTIM)
        os.utime(path, (OLD, OLD))
    yield folder
    shutil.rmtree(folder)


def _slug(kind: str) -> str:
    return "evil-" + kind.replace("/", "-").strip(".")


def _plant(shared: str, precious: str) -> list[str]:
    """As the attacker: real channels of theirs, each with one state folder a link."""
    made = []
    for kind in (*LINKED, ".ramxchg", "hard-links", "seq"):
        ch = Channel(_slug(kind), root=shared, mode=0o777, keep_last=1, recycle=2)
        ch.subscribe("g").close()
        for _ in range(3):  # keep_last=1: two go to the pool
            ch.put(np.zeros(POOLED_BYTES - 128, np.uint8))
        state = ch.path / ".ramxchg"
        target = state if kind == ".ramxchg" else state / kind
        if kind in (*LINKED, ".ramxchg"):
            if target.exists():  # quarantine/ and dead/ are made on first use
                shutil.rmtree(target)
            target.symlink_to(precious)
        for path in [ch.path, *ch.path.rglob("*")]:  # open to all: others may use it
            if not path.is_symlink():
                path.chmod(0o777 if path.is_dir() else 0o666)
        made.append(str(ch.path))
    return made


def _hard_link(channel: Path, precious: Path) -> None:
    """Root links the victim's files into the attacker's state (protected_hardlinks stops
    the attacker alone only when the victim's files are not theirs to read or write)."""
    state = channel / ".ramxchg"
    for sub, name in (
        ("meta", "notes.json"),
        ("tmp", "half.npy"),
        ("pool", f"{POOLED_BYTES}.1.cafe"),
        ("groups/g/acks", "results"),
        ("groups/g/claims", "results"),
    ):
        os.link(precious / name, state / sub / name)
    os.link(precious / "results", channel / "stolen.npy")  # an item with no sidecar


def _swap_seq(channel: Path, precious: Path) -> None:
    seq = channel / ".ramxchg" / "seq"
    seq.unlink()
    os.link(precious / "seq", seq)  # the publish lock would write into it


@pytest.fixture
def shared(root: Path, precious: Path) -> dict[str, Path]:
    """The shared root (1777) holding the attacker's channels and one of the victim's."""
    os.chmod(root, 0o1777)
    status, made = as_user(ATTACKER, _plant, str(root), str(precious))
    assert status == "ok", made
    channels = {Path(path).name: Path(path) for path in made}
    _hard_link(channels["evil-hard-links"], precious)
    _swap_seq(channels["evil-seq"], precious)
    assert as_user(VICTIM, _own_channel, str(root))[0] == "ok"
    return channels


def _own_channel(shared: str) -> None:
    ch = Channel("mine", root=shared)
    ch.put(np.arange(3), "a")
    (ch.path / ".ramxchg" / "meta" / "orphan.json").write_text("{}")


def test_gc_of_a_shared_root_by_the_victim_skips_the_attackers_channels(
    shared: dict[str, Path], precious: Path, figures: Figures
) -> None:
    before = snapshot(precious)
    root = next(iter(shared.values())).parent
    status, result = as_user(VICTIM, cli, "gc", "--root", str(root), "--json")
    assert status == "ok", result
    code, out, err = result
    assert snapshot(precious) == before  # on 3c44b6e: the victim's files were deleted
    assert code == 0, err
    report = json.loads(out)
    assert report[str(root / "mine")]["orphan_sidecars"] == 1  # its own channel: collected
    for path in shared.values():
        assert "not yours" in report[str(path)]["skipped"]
    figures.runs = f"{len(shared)} channels of a co-user, gc by the victim and by root"
    figures.faults = "state folders swapped for symlinks, hard links, a hard-linked seq"


@pytest.mark.parametrize("kind", [*LINKED, ".ramxchg", "hard-links", "seq"])
def test_gc_of_the_attackers_channel_by_the_victim_stays_inside(
    shared: dict[str, Path], precious: Path, kind: str
) -> None:
    before = snapshot(precious)
    path = shared[_slug(kind)]
    status, result = as_user(VICTIM, cli, "gc", str(path), "--json")
    assert status == "ok", result
    code, _, err = result
    assert snapshot(precious) == before
    assert code in (0, 1)
    assert "Traceback" not in err


def test_gc_of_a_shared_root_by_root_never_follows_a_link(
    shared: dict[str, Path], precious: Path
) -> None:
    before = snapshot(precious)
    root = next(iter(shared.values())).parent
    done = subprocess.run(
        [sys.executable, "-m", "ramxchg", "gc", "--root", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert snapshot(precious) == before
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report[str(root / "mine")]["orphan_sidecars"] == 1
    walked = ("groups/g/acks", "groups/g/claims", "meta", "tmp", "groups", "groups/g")
    for kind in (*walked, ".ramxchg", "seq"):
        counts = report[str(shared[_slug(kind)])]
        assert counts.get("unsafe_folders") or "error" in counts, (kind, counts)


def _consume(path: str) -> list[str]:
    with Channel(path).subscribe("g", watch="polling") as sub:
        return [sub.get(timeout=0.5).name]


def _publish(path: str) -> str:
    return Channel(path).put(np.ones(POOLED_BYTES - 128, np.uint8)).name


def _drop(path: str) -> None:
    Channel(path).drop_group("g")


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("groups/g/claims", _consume),  # a dead claim is removed: from the victim's folder?
        ("quarantine", _consume),  # the hard link is set aside: into the victim's folder?
        ("pool", _publish),  # a pooled file is overwritten, the old item pooled: the victim's?
        ("groups/g", _drop),
        ("groups", _drop),
    ],
)
def test_using_the_attackers_channel_stays_inside(
    shared: dict[str, Path], precious: Path, kind: str, action: object
) -> None:
    path = shared[_slug(kind)]
    if kind == "quarantine":
        os.link(precious / "results", path / "intruder.npy")  # set aside at once
    before = snapshot(precious)
    status, result = as_user(VICTIM, action, str(path))
    assert snapshot(precious) == before
    assert status in ("ok", "UnsafeRoot", "TimeoutError"), result


def _plain_channel(shared: str) -> str:
    """As the attacker: a channel of theirs with no link in it yet, open to all."""
    ch = Channel("evil-later", root=shared, mode=0o777, recycle=2)
    for path in [ch.path, *ch.path.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return str(ch.path)


def _swap_for_link(folder: Path, target: str) -> None:
    """Move ``folder`` away (as ``<name>-away``) and put a link to ``target`` in its place."""
    os.rename(folder, folder.with_name(f"{folder.name}-away"))
    folder.symlink_to(target)


def _victim_in_a_plain_channel(root: Path, precious: Path, action: Any, *args: str) -> str:
    """Run ``action(path, precious, *args)`` as the victim in a plain channel of the
    attacker's (`_plain_channel`); the victim's folder must stay as it was. Its status."""
    os.chmod(root, 0o1777)
    status, path = as_user(ATTACKER, _plain_channel, str(root))
    assert status == "ok", path
    before = snapshot(precious)
    status, result = as_user(VICTIM, action, path, str(precious), *args)
    assert snapshot(precious) == before
    return f"{status}: {result}"


def _swap_while_held(path: str, precious: str, kind: str) -> list[str]:
    """Use the channel, then swap one of its state folders for a link to ``precious``
    while this handle holds the folders open, and go on using it, past the moment the
    handle opens its folders again."""
    ch = Channel(path)
    item = np.ones(POOLED_BYTES - 128, np.uint8)
    ch.put(item, "a")
    ch.delete("a")  # into the pool: pool/, tmp/ and meta/ are held open now
    _swap_for_link(Path(path) / ".ramxchg" / kind, precious)
    names = []
    for round_ in range(2):  # through the held folders, then through folders opened anew
        for index in range(3):
            names.append(ch.put(item, f"r{round_}-{index}").name)
            ch.delete(names[-1])
        ch._retention.state.close()  # the next use opens the folders again
    return names


@pytest.mark.parametrize("kind", ["pool", "meta", "tmp"])
def test_a_folder_swapped_while_held_open_is_never_followed(
    root: Path, precious: Path, kind: str
) -> None:
    outcome = _victim_in_a_plain_channel(root, precious, _swap_while_held, kind)
    assert outcome.startswith(("ok:", "UnsafeRoot:")), outcome


def _ack_after_swap(path: str, precious: str, how: str) -> None:
    """Take the item "results" as group g (group h has yet to ack it: the ack is a file),
    swap ``acks/`` for a link to ``precious`` (as the attacker would, while this handle
    holds the group's folders open) and ack it: as the item, or by name."""
    ch = Channel(path)
    ch.put(np.ones(POOLED_BYTES - 128, np.uint8), "results")  # as a file of the victim's
    ch.subscribe("h").close()
    with ch.subscribe("g", watch="polling") as sub:
        item = sub.get(timeout=0.5)
        item.close()
        _swap_for_link(Path(path) / ".ramxchg" / "groups" / "g" / "acks", precious)
        if how == "item":
            item.ack()  # our claim renamed to the ack: over the victim's file?
        else:
            ch.ack("results", "g")  # an ack written: over the victim's file?


@pytest.mark.parametrize("how", ["item", "name"])
def test_an_ack_never_follows_a_link(root: Path, precious: Path, how: str) -> None:
    outcome = _victim_in_a_plain_channel(root, precious, _ack_after_swap, how)
    assert outcome.startswith("UnsafeRoot:"), outcome  # on e1013d0: "results" overwritten


def _register_after_swap(path: str, precious: str, kind: str) -> None:
    """Open the channel and register group g, swap ``kind`` (``groups`` or ``groups/g``)
    for a link to ``precious`` while this handle holds the folders open, and register a
    group through it: a new one, or g again, whose registration is gone with the swap."""
    ch = Channel(path)
    ch.subscribe("g").close()
    _swap_for_link(Path(path) / ".ramxchg" / kind, precious)
    ch.subscribe("new" if kind == "groups" else "g").close()  # its folders made: where?


@pytest.mark.parametrize("kind", ["groups", "groups/g"])
def test_registering_a_group_never_follows_a_link(root: Path, precious: Path, kind: str) -> None:
    # On 9f66a3a: folders and group.json made in the victim's folder. Now refused, or
    # made in the folder the handle holds (the one moved away): never there.
    outcome = _victim_in_a_plain_channel(root, precious, _register_after_swap, kind)
    assert outcome.startswith(("ok:", "UnsafeRoot:")), outcome
