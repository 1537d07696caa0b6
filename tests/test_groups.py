"""Durable groups: a claim and an ack are for one item, not one name; full disks, dropped
groups and coarse timestamps (issue #12)."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import (
    Channel,
    GroupNotFound,
    Item,
    ItemNotFound,
    RamDiskFull,
    Subscription,
    UnsafeRoot,
)
from ramxchg._store import claims, groups
from ramxchg._store.groups import Group
from ramxchg._store.retention import Retention
from ramxchg._store.safedir import SafeDir, StateTree
from ramxchg._store.sequence import PublishLock
from ramxchg._store.steps import try_each
from ramxchg.formats.locks import try_lock
from tests.conftest import before_the_next_lock, mounted, mounted_tmpfs


def _frame(ch: Channel, value: int) -> int:
    """Publish ``frame`` holding ``value``; its seq."""
    seq = ch.put(np.full(4, value), "frame", attrs={"value": value}).seq
    assert seq is not None
    return seq


def _fill(path: Path) -> int:
    """Write ``path`` until its disk is full; the errno that stopped it."""
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(b"x" * 4096)
            except OSError as exc:
                return exc.errno or 0


def _group_folder(ch: Channel, group: str) -> Path:
    return ch.path / ".ramxchg" / "groups" / group


def test_a_late_ack_leaves_a_new_item_of_the_same_name_alone(root: Path) -> None:
    ch = Channel("reuse")
    with ch.subscribe("g") as sub:
        _frame(ch, 1)
        old = sub.get(timeout=5)
        ch.delete("frame")
        second = _frame(ch, 2)
        acked = old.ack()
        assert "frame" in ch, "the old item's ack deleted the new one"
        assert acked is False  # already gone: nothing changed
        new = sub.get(timeout=5)
        assert (new.seq, int(new.array[0])) == (second, 2)
        assert new.ack() is True
    assert "frame" not in ch


def test_a_late_ack_does_not_mark_a_new_item_done_for_its_group(root: Path) -> None:
    ch = Channel("reuse2")
    with ch.subscribe("a") as a, ch.subscribe("b") as b:
        _frame(ch, 1)
        old = a.get(timeout=5)
        ch.delete("frame")
        second = _frame(ch, 2)
        old.ack()
        assert {g.name: g.backlog for g in ch.groups()} == {"a": 1, "b": 1}
        b.get(timeout=5).ack()
        assert "frame" in ch, "deleted before group a received it"
        new = a.get(timeout=5)
        assert new.seq == second
        new.ack()
    assert "frame" not in ch


def test_a_member_never_delivers_an_item_replaced_under_its_name(root: Path) -> None:
    ch = Channel("stale")
    ch.subscribe("g").close()
    _frame(ch, 1)
    # Both members list frame #1 as they start; the first takes and acks it (deleting it),
    # then frame is published again while the second still has #1 queued.
    with ch.subscribe("g") as first, ch.subscribe("g") as second:
        first.get(timeout=5).ack()
        again = _frame(ch, 2)
        got = second.get(timeout=5)
        assert (got.seq, got.attrs, int(got.array[0])) == (again, {"value": 2}, 2)
        got.ack()
        with pytest.raises(TimeoutError):
            first.get(timeout=0.3)
    assert len(ch) == 0
    assert list((_group_folder(ch, "g") / "claims").iterdir()) == []


def test_a_dropped_group_gives_group_not_found_to_its_running_member(root: Path) -> None:
    ch = Channel("dropped")
    with ch.subscribe("g") as sub:
        ch.put(np.arange(3), "one")
        ch.put(np.arange(3), "two")
        item = sub.get(timeout=5)
        Channel("dropped").drop_group("g")  # e.g. `ramxchg` in another shell
        with pytest.raises(GroupNotFound, match="subscribe again") as info:
            item.ack()
        assert (info.value.group, info.value.path) == ("g", str(ch.path))
        assert isinstance(info.value, ItemNotFound)
        with pytest.raises(GroupNotFound, match="group 'g'"):
            sub.get(timeout=5)
    with pytest.raises(GroupNotFound, match="no group 'g'"):
        ch.ack("two", "g")


def test_a_delete_clears_the_acks_of_a_group_dropped_and_registered_again(root: Path) -> None:
    """A handle keeps a group's folders open between items: once the group is dropped
    and registered again, its deletes must clear the new folder, not the removed one."""
    ch = Channel("again")
    ch.subscribe("g").close()
    ch.subscribe("other").close()  # keeps items until it acks them too
    ch.put(np.arange(3), "x")
    ch.delete("x")  # the handle now holds groups/g/{acks,claims} open
    other = Channel("again")  # e.g. `ramxchg` in another shell
    other.drop_group("g")
    with other.subscribe("g") as sub:
        ch.put(np.arange(3), "y")
        got = sub.get(timeout=5)
        assert got.ack()
    assert (_group_folder(ch, "g") / "acks" / "y").exists()
    ch.delete("y")
    assert list((_group_folder(ch, "g") / "acks").iterdir()) == [], "the ack of y stayed"


@pytest.mark.root
def test_a_full_ram_disk_gives_ramdiskfull_and_leaves_no_claim(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", 1 << 20) as mountpoint:
        ch = Channel("full", root=mountpoint)
        with ch.subscribe("g") as sub:
            item = ch.put(np.arange(10))
            filler = mountpoint / "filler"
            assert _fill(filler) == errno.ENOSPC
            with pytest.raises(RamDiskFull):
                sub.get(timeout=5)
            claims = _group_folder(ch, "g") / "claims"
            assert list(claims.iterdir()) == [], "a claim (or its temporary file) was left"
            filler.unlink()
            got = sub.get(timeout=5)  # the item was not lost by the failed claim
            assert got.name == item.name
            got.ack()
        assert len(ch) == 0


@pytest.mark.root
def test_an_ack_on_a_full_ram_disk_says_which_folder_is_full(tmp_path: Path) -> None:
    """An ack written as a file of its own (group g acks, keeper has yet to) on a full
    disk: `RamDiskFull` names the acks folder and the file, and the ack works once there
    is room."""
    with mounted_tmpfs(tmp_path / "small", 1 << 20) as mountpoint:
        ch = Channel("fullack", root=mountpoint)
        for group in ("g", "keeper"):
            ch.subscribe(group).close()
        item = ch.put(np.arange(10))
        filler = mountpoint / "filler"
        assert _fill(filler) == errno.ENOSPC
        acks = _group_folder(ch, "g") / "acks"
        with pytest.raises(RamDiskFull, match=f"^{acks} is full: no room for {item.name} "):
            ch.ack(item.name, "g")  # on 9f66a3a: "its folder is full", path "frame"
        assert ch.group_states(item.name) == {"g": "pending", "keeper": "pending"}
        filler.unlink()
        ch.ack(item.name, "g")
        assert ch.group_states(item.name) == {"g": "acked", "keeper": "pending"}


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: directory timestamps of one clock tick (coarse, unlike tmpfs now)."""
    with mounted("ramfs", tmp_path / "ramfs", "mode=0700") as mountpoint:
        yield mountpoint


@pytest.mark.root
def test_a_group_registered_within_one_timestamp_tick_holds_retention(ramfs: Path) -> None:
    ch = Channel("tick", root=ramfs)
    with ch.subscribe("first") as first:
        for round_ in range(20):
            ch.put(np.arange(3))
            first.get(timeout=5).ack()  # lists the groups
            late = Channel("tick", root=ramfs).subscribe(f"late{round_}")  # same tick
            held = ch.put(np.arange(3))
            first.get(timeout=5).ack()
            assert held.name in ch, f"round {round_}: deleted before late{round_} acked it"
            got = late.get(timeout=5)
            assert got.name == held.name
            got.ack()
            late.close()
            ch.drop_group(f"late{round_}")
            assert len(ch) == 0


@pytest.mark.parametrize("deletion", ["ack", "Channel.delete"])
def test_a_deletion_clears_the_claim_of_a_group_registered_while_it_waited_for_the_lock(
    root: Path, monkeypatch: pytest.MonkeyPatch, deletion: str
) -> None:
    """An ack weighs whether it is the item's last before it takes the publish lock (to
    hold the lock for less), `Channel.delete` (keep_last, ttl: the same path) decides
    before it too; the deletion must still clear every group there is once it holds the
    lock. Here group "late" is registered, and claims the item, while the deletion goes
    for the lock: the item is not its to ack (it came before the group), so it is
    deleted, and must not leave "late"'s claim behind on the name (a later item of that
    name would wait for it)."""
    ch = Channel("late-group")
    with ch.subscribe("early") as early, ExitStack() as closing:
        _frame(ch, 1)
        item = early.get(timeout=5)

        def register_and_claim() -> None:
            late = closing.enter_context(ch.subscribe("late", start="earliest"))
            assert late.get(timeout=5).name == "frame"  # claimed by "late"

        ran = before_the_next_lock(monkeypatch, ch._retention.counter, register_and_claim)
        if deletion == "ack":
            assert item.ack() is True
        else:
            ch.delete("frame")
        assert ran == [None], "the deletion took no publish lock"
        assert "frame" not in ch
        claims = _group_folder(ch, "late") / "claims"
        assert sorted(p.name for p in claims.iterdir()) == [], "late's claim outlived the item"


def test_the_last_of_two_acks_at_once_recycles_the_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group "a" lists the groups, sees "b" has not acked, and waits for the publish
    lock while "b" acks: "a"'s ack is the last one after all, and the item's file goes
    into the pool, not away (a producer would allocate its pages again)."""
    ch = Channel("two-acks")
    with ch.subscribe("a") as a, ch.subscribe("b") as b:
        _frame(ch, 1)
        first, second = a.get(timeout=5), b.get(timeout=5)
        # "b" acks as "a" goes for the lock
        acked = before_the_next_lock(monkeypatch, a._retention.counter, second.ack)
        assert first.ack() is True
        assert acked == [True]
        assert "frame" not in ch
        assert len(list((ch.path / ".ramxchg" / "pool").iterdir())) == 1, "not recycled"


def test_the_last_ack_deletes_the_item_with_its_claim_still_locked_and_no_ack_written(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ack that makes an item done for every group deletes it at once: its claim is
    removed by the deletion, never renamed to an ack first, and stays locked until it is
    gone (a claim seen unlocked is a dead member's, which a sweep would hand out again).
    An earlier group's ack stays until then."""
    ch = Channel("last-ack")
    seen: list[tuple[str, bool, bool]] = []
    forget = Group.forget

    def look_then_forget(group: Group, item: str, state: StateTree) -> None:
        claim = _group_folder(ch, group.name) / "claims" / item
        ack = _group_folder(ch, group.name) / "acks" / item
        locked = False
        if claim.exists():
            fd = os.open(claim, os.O_RDONLY)
            try:
                locked = not try_lock(fd)
            finally:
                os.close(fd)
        seen.append((group.name, locked, ack.exists()))
        forget(group, item, state)

    with ch.subscribe("a") as a, ch.subscribe("b") as b:
        _frame(ch, 1)
        assert a.get(timeout=5).ack() is True
        assert (_group_folder(ch, "a") / "acks" / "frame").exists(), "a's ack not kept"
        monkeypatch.setattr(Group, "forget", look_then_forget)
        assert b.get(timeout=5).ack() is True
    assert "frame" not in ch
    assert sorted(seen) == [("a", False, True), ("b", True, False)]
    for group in ("a", "b"):
        for kind in ("acks", "claims"):
            assert list((_group_folder(ch, group) / kind).iterdir()) == [], (group, kind)


#: A member of a group, in a process of its own: gets one item (or none in 1.5 s), acks
#: it if told to, and prints what happened.
_MEMBER = """
import sys
from ramxchg import Channel
group, ack = sys.argv[1], sys.argv[2] == "ack"
with Channel("probed").subscribe(group) as sub:
    try:
        item = sub.get(timeout=1.5)
    except TimeoutError:
        print("nothing")
    else:
        print(item.name, item.ack() if ack else "held")
"""

#: Where faccessat answers "not there" for a file that is: root's real uid dropped (the
#: effective one kept, as in a setuid helper), and a seccomp filter of older container
#: runtimes that fails faccessat2 with EPERM (glibc does not fall back).
_BLIND_FACCESSAT = {
    "real uid not root": ["setpriv", "--ruid", "65534"],
    "faccessat2 refused": [
        *("strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=faccessat2"),
        *("-e", "inject=faccessat2:error=EPERM"),
    ],
}


@pytest.mark.parametrize("wrapper", list(_BLIND_FACCESSAT.values()), ids=list(_BLIND_FACCESSAT))
def test_an_acked_item_stays_acked_where_faccessat_cannot_see_it(
    root: Path, wrapper: list[str]
) -> None:
    """The probes for acks and claims answer as lstat would: an item acked by group a is
    not delivered to a again, and group b's ack, the last, deletes it."""
    if os.geteuid() != 0 and wrapper[0] == "setpriv":
        pytest.skip("needs root to set another real uid")
    if shutil.which(wrapper[0]) is None:
        pytest.skip(f"needs {wrapper[0]}")
    ch = Channel("probed")
    for group in ("a", "b"):
        ch.subscribe(group).close()
    _frame(ch, 1)
    with ch.subscribe("a") as sub:
        assert sub.get(timeout=5).ack() is True
    member = [*wrapper, sys.executable, "-c", _MEMBER]
    again = subprocess.run([*member, "a", "hold"], capture_output=True, text=True, check=True)
    assert again.stdout.split() == ["nothing"], again
    last = subprocess.run([*member, "b", "ack"], capture_output=True, text=True, check=True)
    assert last.stdout.split() == ["frame", "True"], last
    assert "frame" not in ch


def _open_claims(ch: Channel) -> list[str]:
    """The claim files this process holds open (linked or not) in ``ch``'s groups."""
    claims = f"{ch.path}/.ramxchg/groups/"
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith(claims) and "/claims/" in link]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see descriptors")
def test_a_late_ack_gives_back_no_claim_on_a_newer_item_of_its_name(root: Path) -> None:
    """A member holding an item whose name was deleted and published again, and then the
    new item too: the old item's ack leaves the claim on the new one alone (no other
    member gets it), and no descriptor of the old claim stays open."""
    ch = Channel("renamed")
    with _one_held(ch) as (sub, other, old):
        ch.delete("frame")
        second = _frame(ch, 2)
        new = sub.get(timeout=5)
        assert new.seq == second
        assert len(_open_claims(ch)) == 1  # the old claim went with its item
        assert old.ack() is False  # that item is gone: nothing changed
        assert ch.group_states("frame") == {"g": "claimed"}
        with pytest.raises(TimeoutError):
            other.get(timeout=1.5)  # still ours
        assert new.ack() is True
    assert "frame" not in ch
    assert _open_claims(ch) == []


def _fail_once(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, error: BaseException
) -> None:
    """Make ``owner.name`` raise ``error`` at its next call, and be itself after that."""
    real = getattr(owner, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(owner, name, real)
        raise error

    monkeypatch.setattr(owner, name, failing)


@contextmanager
def _one_held(ch: Channel) -> Iterator[tuple[Subscription, Subscription, Item]]:
    """Two members of group g; the first holds the item ``frame`` just published."""
    with ch.subscribe("g") as sub, ch.subscribe("g") as other:
        _frame(ch, 1)
        yield sub, other, sub.get(timeout=5)


def test_a_last_ack_that_fails_half_way_leaves_no_claim_to_block_the_name(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion of a last ack fails after the item's file went (an I/O error clearing
    the group's claim): the ack raises, and our claim, still locked by this live member,
    does not stay to block the next item of that name."""
    ch = Channel("halfway")
    with _one_held(ch) as (_, other, item):
        _fail_once(monkeypatch, Group, "forget", OSError(errno.EIO, "injected"))
        with pytest.raises(OSError, match="injected"):
            item.ack()
        assert "frame" not in ch  # the file went before the failure
        second = _frame(ch, 2)
        taken = other.get(timeout=2)  # not held back by a claim on the deleted item
        assert (taken.seq, int(taken.array[0])) == (second, 2)
        assert taken.ack() is True


def test_a_close_that_fails_to_give_one_claim_back_gives_back_the_others(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a member holding two items, the publish lock cannot be taken for the first
    (an I/O error): the error is raised after the second went back, and neither claim's
    descriptor stays open; both items reach another member (the first once a sweep finds
    its claim dead)."""
    ch = Channel("closing")
    for name in ("a", "b"):
        ch.put(np.zeros(4), name)
    other = ch.subscribe("g")
    sub = ch.subscribe("g")
    taken = {sub.get(timeout=5).name, sub.get(timeout=5).name}
    assert taken == {"a", "b"}
    _fail_once(monkeypatch, PublishLock, "__enter__", OSError(errno.EIO, "injected"))
    with pytest.raises(OSError, match="injected"):
        sub.close()
    assert _open_claims(ch) == []
    with other:
        assert {other.get(timeout=5).name, other.get(timeout=5).name} == {"a", "b"}


def test_a_dead_letter_whose_details_are_no_json_moves_nothing(root: Path) -> None:
    ch = Channel("letters")
    with ch.subscribe("g") as sub:
        _frame(ch, 1)
        item = sub.get(timeout=5)
        with pytest.raises(TypeError, match="not JSON serializable"):
            sub.dead_letter(item, "bad frame", gain=np.float32(2))
        assert "frame" in ch  # still there, still ours: to ack or set aside again
        assert ch.group_states("frame") == {"g": "claimed"}
        assert item.ack() is True
    assert "frame" not in ch


def test_a_dead_letter_that_fails_after_the_move_leaves_no_claim_to_block_the_name(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the reason file once the item is in dead/: the error is raised, and
    the item's sidecar and claim go as for any deletion, so the next item of that name
    is delivered at once."""
    ch = Channel("letters")
    with _one_held(ch) as (sub, other, item):
        write_whole = SafeDir.write_whole

        def full(folder: SafeDir, name: str, data: bytes) -> None:
            if name.endswith(".reason.json"):
                raise OSError(errno.ENOSPC, "injected", name)
            write_whole(folder, name, data)

        monkeypatch.setattr(SafeDir, "write_whole", full)
        with pytest.raises(OSError, match="injected"):
            sub.dead_letter(item, "bad frame")
        monkeypatch.setattr(SafeDir, "write_whole", write_whole)
        assert "frame" not in ch
        assert sorted(p.name for p in (ch.path / ".ramxchg" / "dead").iterdir()) == ["frame.npy"]
        assert list((ch.path / ".ramxchg" / "meta").iterdir()) == []
        assert _open_claims(ch) == []
        second = _frame(ch, 2)
        assert other.get(timeout=2).seq == second


def _hold_publish_lock(seq_file: str, held: Any, done: Any) -> None:
    """Hold the channel's publish lock until ``done`` is set (30 s at most)."""
    import fcntl

    fd = os.open(seq_file, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.set()
    done.wait(30)


def test_one_interrupt_ends_a_close_waiting_for_the_publish_lock(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while closing a member that holds three claims, another process holding the
    publish lock: close() raises at once, without waiting for the lock for each other
    claim, and every claim's descriptor is closed (left to the sweeps)."""
    ch = Channel("interrupted")
    for name in ("a", "b", "c"):
        ch.put(np.zeros(4), name)
    sub = ch.subscribe("g")
    assert sorted(sub.get(timeout=5).name for _ in range(3)) == ["a", "b", "c"]
    ctx = mp.get_context("spawn")
    held, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(
        target=_hold_publish_lock, args=(str(ch.path / ".ramxchg" / "seq"), held, done)
    )
    holder.start()
    try:
        assert held.wait(30)
        _fail_once(monkeypatch, PublishLock, "__enter__", KeyboardInterrupt())  # while waiting
        with pytest.raises(KeyboardInterrupt):
            sub.close()
        assert holder.is_alive()  # still holding the lock: close() did not wait for it
        assert _open_claims(ch) == []
    finally:
        done.set()
        holder.join(30)


def test_an_ack_that_fails_before_the_deletion_keeps_the_item_and_can_be_done_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last ack's deletion fails before the file goes (an I/O error): the item and
    the member's claim stay (no other member gets it), and the same item acked again is
    deleted."""
    ch = Channel("retried")
    with _one_held(ch) as (_, other, item):
        _fail_once(monkeypatch, Retention, "_pool_or_unlink", OSError(errno.EIO, "injected"))
        with pytest.raises(OSError, match="injected"):
            item.ack()
        assert "frame" in ch
        assert ch.group_states("frame") == {"g": "claimed"}
        with pytest.raises(TimeoutError):
            other.get(timeout=1.5)  # still ours
        assert item.ack() is True
    assert "frame" not in ch


def test_an_ack_after_its_group_was_dropped_and_registered_again_leaves_a_new_claim_alone(
    root: Path,
) -> None:
    """Member a holds an item; the group is dropped and registered again, and member c of
    the new group claims the item: a's ack must not rename c's claim into an ack."""
    ch = Channel("redropped")
    ch.subscribe("keeper").close()  # another group, so that the item outlives g's ack
    a = ch.subscribe("g")
    _frame(ch, 1)
    held = a.get(timeout=5)
    ch.drop_group("g")
    with ch.subscribe("g", start="earliest") as c:
        taken = c.get(timeout=5)
        assert taken.name == "frame"
        held.ack()
        claims = _group_folder(ch, "g") / "claims"
        assert [p.name for p in claims.iterdir()] == ["frame"]  # c's claim, still there
        assert ch.group_states("frame")["g"] == "claimed"
        assert taken.ack() is True
    a.close()


def test_an_ack_whose_rename_fails_keeps_the_claim_locked_and_can_be_done_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acking for one group of two, the claim cannot be renamed into an ack (an I/O
    error): the ack raises, the claim stays ours and locked (no other member gets the
    item, even after a sweep), and the ack done again succeeds."""
    ch = Channel("renamefails")
    ch.subscribe("keeper").close()
    with _one_held(ch) as (_, other, item):
        replace = os.replace

        def failing(source: Any, target: Any, **kwargs: Any) -> None:
            if os.path.basename(source) == "frame":  # the claim (by name in claims/)
                monkeypatch.setattr(os, "replace", replace)  # once
                raise OSError(errno.EIO, "injected", source)
            replace(source, target, **kwargs)

        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="injected"):
            item.ack()
        other.sweep()
        with pytest.raises(TimeoutError):
            other.get(timeout=1.5)
        assert item.ack() is True
        assert ch.group_states("frame") == {"g": "acked", "keeper": "pending"}


def test_a_claim_check_that_fails_gives_the_fresh_claim_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between making a claim and checking the item is still there: get() raises,
    and the claim is not left locked by this live member, so another member gets the
    item at once."""
    ch = Channel("checked")
    with ch.subscribe("g") as sub, ch.subscribe("g") as other:
        _frame(ch, 1)
        _fail_once(monkeypatch, groups, "is_current", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            sub.get(timeout=5)
        assert ch.group_states("frame") == {"g": "pending"}
        assert other.get(timeout=5).ack() is True


def test_try_each_tries_every_step_and_raises_the_first_failure_an_interrupt_first() -> None:
    done: list[int] = []

    def step(n: int, error: BaseException | None = None) -> None:
        done.append(n)
        if error is not None:
            raise error

    with pytest.raises(OSError, match="first"):
        try_each([partial(step, 1, OSError("first")), partial(step, 2, OSError("second"))])
    with pytest.raises(KeyboardInterrupt):
        try_each([partial(step, 3, OSError("error")), partial(step, 4, KeyboardInterrupt())])
    try_each([partial(step, 5)])
    assert done == [1, 2, 3, 4, 5]


def test_a_latest_only_member_whose_pass_over_fails_keeps_its_queue(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing the older of three items over fails once (an I/O error acking it): get()
    raises, and the next get() passes both older items over and delivers the newest."""
    ch = Channel("latest")
    with ch.subscribe("g", latest_only=True) as sub:
        for name in ("a", "b", "c"):
            ch.put(np.zeros(4), name)
        _fail_once(monkeypatch, Retention, "ack", OSError(errno.EIO, "injected"))
        with pytest.raises(OSError, match="injected"):
            sub.get(timeout=5)
        newest = sub.get(timeout=5)
        assert newest.name == "c"
        assert newest.ack() is True
    assert [name for name in ("a", "b", "c") if name in ch] == []


@pytest.mark.parametrize("locks", [True, False])
def test_a_release_never_takes_a_newer_claim_of_the_same_process(
    root: Path, monkeypatch: pytest.MonkeyPatch, locks: bool
) -> None:
    """One process, two members of g: the first holds the item, the group is dropped and
    registered again, and the second claims the same item. The first giving its claim
    back (close) leaves the second's claim in place: so no third member gets the item.
    ``locks=False``: claims held without a descriptor (Windows), told apart by bytes."""
    monkeypatch.setattr(groups, "LOCKS_CLAIMS", locks)
    monkeypatch.setattr(claims, "LOCKS_CLAIMS", locks)
    ch = Channel("twice")
    first = ch.subscribe("g")
    _frame(ch, 1)
    held = first.get(timeout=5)
    ch.drop_group("g")
    with ch.subscribe("g") as second, ch.subscribe("g") as third:
        again = second.get(timeout=5)
        assert again.name == held.name
        held.close()
        first.close()  # gives back its claim: the first one, gone with the group
        assert ch.group_states("frame") == {"g": "claimed"}  # on e4b6ce5, False: "pending"
        with pytest.raises(TimeoutError):
            third.get(timeout=1.5)
        assert again.ack() is True


#: In a forked child, after `lexists` was asked in its parent: a seccomp filter failing
#: faccessat2 (syscall 439 on every Linux architecture) with EPERM, then `lexists` of a
#: file that is there. Exits 0 when it answers "there".
_FORKED_UNDER_FILTER = """
import ctypes, os, struct, sys
from ramxchg._store.safedir import lexists

path = sys.argv[1]
assert lexists(path)  # the parent's probe: faccessat sees
pid = os.fork()
if pid == 0:
    def op(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    program = ctypes.create_string_buffer(
        op(0x20, 0, 0, 0)  # load the syscall number
        + op(0x15, 0, 1, 439)  # faccessat2?
        + op(0x06, 0, 0, 0x00050000 | 1)  # fail it with EPERM
        + op(0x06, 0, 0, 0x7FFF0000)  # allow everything else
    )
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    filtered = Program(4, ctypes.cast(program, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(filtered), 0, 0):
        os._exit(3)  # PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP refused
    os._exit(0 if lexists(path) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp filters are Linux's")
def test_a_forked_child_asks_again_whether_faccessat_sees(tmp_path: Path) -> None:
    """A child forked after its parent probed faccessat, which installs a seccomp filter
    failing faccessat2, still finds a file that is there (by lstat)."""
    there = tmp_path / "ack"
    there.write_bytes(b"{}")
    done = subprocess.run([sys.executable, "-c", _FORKED_UNDER_FILTER, str(there)], check=False)
    if done.returncode == 3:
        pytest.skip("this kernel refused the seccomp filter")
    assert done.returncode == 0  # on 6760531: 1, the answer cached from the parent


def test_a_link_in_the_groups_folder_is_no_group_and_blocks_nothing(root: Path) -> None:
    """Whoever may write a shared channel's groups/ plants a link there (to a folder
    that is not there, or to one of someone else's): puts, deliveries, acks and gc go
    on, the link is never followed, and a group of its name cannot be registered."""
    ch = Channel("planted")
    with ch.subscribe("g") as sub:
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        (_group_folder(ch, "g").parent / "zz").symlink_to(elsewhere)
        (_group_folder(ch, "g").parent / "gone").symlink_to(root / "missing")
        ch.put(np.arange(3), "a")
        assert sub.get(timeout=5).ack() is True  # on 2d2dced: UnsafeRoot
        assert "a" not in ch
        assert ch.gc()["unsafe_folders"] == 2  # the links, left alone and counted
        with pytest.raises(UnsafeRoot):
            ch.subscribe("zz")
    assert list(elsewhere.iterdir()) == []


def test_a_group_registers_where_groups_is_missing(root: Path) -> None:
    """A channel without groups/ (a foreign producer may make none; or removed under an
    open handle): registering a group makes it, at the first try, and the group works."""
    ch = Channel("nogroups")
    ch.subscribe("g").close()  # the handle holds groups/ now
    shutil.rmtree(_group_folder(ch, "g").parent)
    with ch.subscribe("h") as sub:  # on e50fe93: ChannelNotFound ("dropped ... open again")
        ch.put(np.arange(3), "a")
        assert sub.get(timeout=5).ack() is True
    assert "a" not in ch  # h's ack, the last, deleted it


def test_a_group_registered_again_while_it_is_dropped_is_whole(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drops g while B registers it again, B's registration landing between A's steps
    (while A empties the folder): g stays registered whole, B's member gets and acks."""
    a = Channel("race")
    a.subscribe("g").close()
    b = Channel("race")
    real_clear = SafeDir.clear
    members: list[Subscription] = []

    def clear_while_b_registers(folder: SafeDir) -> None:
        monkeypatch.setattr(SafeDir, "clear", real_clear)
        members.append(b.subscribe("g"))  # finds no registration: registers g anew
        real_clear(folder)

    monkeypatch.setattr(SafeDir, "clear", clear_while_b_registers)
    a.drop_group("g")
    assert len(members) == 1
    with members[0] as sub:
        a.put(np.arange(3), "y")
        assert sub.get(timeout=5).ack() is True  # on e50fe93: g emptied under B
    assert "y" not in a
    assert sorted(os.listdir(_group_folder(a, "g"))) == ["acks", "claims", "group.json"]


def test_gc_removes_what_a_drop_killed_half_way_left(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop interrupted while it empties the renamed-away folder leaves it, hidden and
    holding the group's state; gc removes it (a link of that name stays, unfollowed)."""
    ch = Channel("halfdropped")
    with ch.subscribe("g") as sub:
        ch.put(np.arange(3), "a")
        sub.get(timeout=5)  # a claim in g's folder
        groups = _group_folder(ch, "g").parent
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "precious").write_bytes(b"keep")
        (groups / ".h.dropped.1.0123abcd").symlink_to(elsewhere)

        def interrupted(folder: SafeDir) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(SafeDir, "clear", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ch.drop_group("g")
        monkeypatch.undo()
    left = [p for p in groups.iterdir() if p.name.startswith(".g.dropped.")]
    assert len(left) == 1
    assert (left[0] / "group.json").exists()
    assert ch.gc()["dropped_groups"] == 1  # on b6f35e1: no such count, the folder stays
    assert sorted(p.name for p in groups.iterdir()) == [".h.dropped.1.0123abcd"]
    assert (elsewhere / "precious").read_bytes() == b"keep"
