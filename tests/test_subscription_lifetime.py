"""Subscriptions dropped without close() release what they hold, with a ResourceWarning.

A notebook cell run again, or a ``return`` out of ``for item in ch.subscribe()``, drops
a subscription unclosed. Each one held three descriptors and an inotify instance (a user
has 128 by default): a few hundred of them made every other process of the user fall
back to polling. Like Python's files, a collected subscription now closes itself.
"""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from watchdog.events import FileSystemEvent

from ramxchg import Channel, Subscription
from ramxchg._delivery.notifiers import ObserverNotifier

DROPPED = 200
CHECK_EVERY = 10
INOTIFY = "anon_inode:inotify"


def _fd_targets() -> list[str]:
    """What each open descriptor of this process points at."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    return targets


def _drop_many(drop_one: Callable[[], None]) -> None:
    """Run ``drop_one`` `DROPPED` times; fail as soon as descriptors or inotify instances
    are left open after a collection (checked every `CHECK_EVERY` runs, so a leak fails
    the test long before it uses up the user's inotify instances, which other
    processes need)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to count descriptors")
    gc.collect()
    before = _fd_targets()
    for run in range(1, DROPPED + 1):
        drop_one()
        if run % CHECK_EVERY == 0:
            gc.collect()
            after = _fd_targets()
            assert after.count(INOTIFY) <= before.count(INOTIFY), f"inotify leaked ({run} runs)"
            assert len(after) <= len(before), f"{len(after) - len(before)} descriptors leaked"


def _warm_up(ch: Channel) -> None:
    """Whatever opens once per process (imports, caches) is opened before counting."""
    with ch.subscribe(start="latest") as sub, pytest.raises(TimeoutError):
        sub.get(timeout=0.0)


@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_dropped_subscriptions_release_descriptors_and_warn(root: Path, watch: str) -> None:
    ch = Channel("dropped")
    ch.put(np.zeros(3), "x")
    _warm_up(ch)
    refs = []

    def drop_one() -> None:
        sub = ch.subscribe(watch=watch)
        assert sub.get(timeout=5).name == "x"
        refs.append(weakref.ref(sub))
        # returning drops it, unclosed: a notebook cell run again

    with pytest.warns(ResourceWarning) as warned:
        _drop_many(drop_one)
    assert all(ref() is None for ref in refs), "dropped subscriptions stay reachable"
    unclosed = [w for w in warned if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == DROPPED
    assert str(ch.path) in str(unclosed[0].message)


def _first_name(ch: Channel) -> str:
    for item in ch.subscribe():
        return item.name  # leaves the subscription behind, unclosed
    raise AssertionError("the subscription ended")


def _check_first_name(ch: Channel) -> None:
    assert _first_name(ch) == "x"


def test_return_from_a_for_loop_releases_the_subscription(root: Path) -> None:
    ch = Channel("loop")
    ch.put(np.zeros(3), "x")
    _warm_up(ch)
    with pytest.warns(ResourceWarning, match="unclosed"):
        _drop_many(lambda: _check_first_name(ch))


def test_released_at_once_without_the_cycle_collector(root: Path) -> None:
    """Nothing it holds refers back to it: the last reference going frees it at once
    (in the thread that dropped it), not at some later collection."""
    ch = Channel("refcount")
    _warm_up(ch)
    gc.disable()
    try:
        sub = ch.subscribe()
        ref = weakref.ref(sub)
        with pytest.warns(ResourceWarning):
            del sub
        assert ref() is None
    finally:
        gc.enable()


def _drop_and_collect(held: list[Subscription]) -> None:
    held.clear()
    gc.collect()


def test_a_collected_group_member_gives_its_claims_back(root: Path) -> None:
    ch = Channel("claims")
    ch.subscribe("g").close()
    ch.put(np.zeros(1), "x")
    ch.put(np.zeros(1), "y")
    members = [ch.subscribe("g")]
    assert members[0].get(timeout=5).name == "x"  # claimed; the item is dropped unacked
    with pytest.warns(ResourceWarning, match="group='g'"):
        _drop_and_collect(members)
    with ch.subscribe("g") as other:
        got = [other.get(timeout=5), other.get(timeout=5)]
        assert sorted(item.name for item in got) == ["x", "y"]
        for item in got:
            item.ack()
    assert len(ch) == 0


def test_close_warns_nothing_and_a_second_close_is_harmless(root: Path) -> None:
    ch = Channel("closed")
    sub = ch.subscribe("g")
    sub.close()
    sub.close()
    del sub
    gc.collect()  # filterwarnings=error: a ResourceWarning here would fail the test


def test_a_watch_that_fails_half_way_leaves_no_inotify_instance(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors after inotify_init (the state leaked subscriptions cause):
    the inotify instance is closed again, and the subscription polls."""
    ch = Channel("half-way")
    _warm_up(ch)
    inotify_before = _fd_targets().count(INOTIFY)

    def no_pipe() -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pipe", no_pipe)
    with ch.subscribe() as sub:
        assert sub.watching == "polling"
    assert _fd_targets().count(INOTIFY) == inotify_before


def test_an_observer_notifier_closes_from_its_own_thread(tmp_path: Path) -> None:
    """A collection runs on whatever thread allocates, also watchdog's while it
    dispatches an event under the notifier's lock: a dropped subscription's finalizer
    closing the notifier there must neither deadlock nor join its own thread."""
    notifier = ObserverNotifier(tmp_path)
    closed = threading.Event()

    def dispatch(event: FileSystemEvent) -> None:
        with notifier._cond:  # where a collection may strike: in dispatch, lock held
            notifier.close()
        closed.set()

    notifier.dispatch = dispatch  # type: ignore[method-assign]
    (tmp_path / "a.npy").write_bytes(b"x")
    assert closed.wait(10), "close() on the observer's thread deadlocked"
    notifier._observer.join(10)
    assert not notifier._observer.is_alive()


#: A child: a group member holding the claim on "x" is dropped in a reference cycle, and
#: the collection that frees it runs in the thread that has just taken the publish lock
#: (as an allocation may trigger it anywhere), during ``argv[2]``. flock locks belong to
#: the open file, so a finalizer that waited for the lock on a descriptor of its own would
#: wait for its own thread, forever. Prints "free" or "locked": the claim left behind.
COLLECTED_UNDER_THE_LOCK = textwrap.dedent(
    """
    import fcntl, gc, os, sys, warnings
    import numpy as np
    import ramxchg.formats.locks as locks
    from ramxchg import Channel

    root, operation = sys.argv[1:]
    warnings.simplefilter("ignore", ResourceWarning)
    gc.disable()  # the collection comes where the test says, not earlier
    ch = Channel("collected", root=root)
    ch.subscribe("g").close()
    ch.put(np.zeros(1), "x")
    ch.put(np.zeros(1), "y")
    sub = ch.subscribe("g")
    assert sub.get(timeout=10).name == "x"  # claimed, never acked
    sub.cycle = sub  # unreachable from here on, but freed only by the cycle collector
    del sub
    other = ch.subscribe("g")
    taken = other.get(timeout=10)
    assert taken.name == "y"
    real_lock_file = locks.lock_file

    def lock_file_then_collect(fd):
        real_lock_file(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/.ramxchg/seq"):
            locks.lock_file = real_lock_file  # once
            gc.collect()

    locks.lock_file = lock_file_then_collect
    if operation == "put":
        ch.put(np.zeros(1), "z")
    elif operation == "delete":
        ch.delete("y")
    else:
        taken.ack()
    assert locks.lock_file is real_lock_file, "the publish lock was never taken"
    claim = os.path.join(ch.path, ".ramxchg", "groups", "g", "claims", "x")
    if os.path.exists(claim):
        fd = os.open(claim, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free", flush=True)
        except BlockingIOError:
            print("locked", flush=True)
        finally:
            os.close(fd)
    else:
        print("given back", flush=True)
    names = set()  # after "z" perhaps: the item comes back once a sweep reclaims it
    while "x" not in names:
        names.add(other.get(timeout=10).name)  # TimeoutError: it never came back
    other.close()
    print("ok", flush=True)
    """
)


@pytest.mark.parametrize("operation", ["put", "delete", "ack"])
def test_a_member_collected_inside_the_publish_lock_does_not_deadlock(
    root: Path, operation: str
) -> None:
    """The claim of a member collected while its own thread holds the publish lock is
    left for the sweeps, its lock dropped (so it is dead), and its item comes back."""
    argv = [sys.executable, "-c", COLLECTED_UNDER_THE_LOCK, str(root), operation]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{operation}: hung for 30 s (the finalizer waited for its own lock)")
    assert result.returncode == 0, result.stderr
    left, done = result.stdout.split()
    assert (left, done) == ("free", "ok"), result.stdout
