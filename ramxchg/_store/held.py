"""A channel handle's state folders, kept open across its operations (`HeldState`).

Opening ``.ramxchg/`` and the folders in it one descriptor at a time (`StateTree`) for
every item would cost more system calls than the item's own files: a handle opens them
once per `HeldState.max_age` seconds instead, and a forked child opens its own.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .safedir import SafeDir, StateTree

_T = TypeVar("_T")


class HeldState:
    """A channel handle's `StateTree`, kept open across its operations: the folders are
    opened once per `max_age` seconds instead of once per item.

    The folders in ``keep`` are trusted as they are. Of the others (a group's), the first
    ``hold`` opened stay open too, checked to still be the folder of their name before
    each operation that uses them (`StateTree.close_except`), since a group dropped and
    registered again is a new folder at once (a stale one would keep an ack of a deleted
    item's name); the rest are opened per operation. A held descriptor is safe by
    construction: it names the folder it was opened on (without following a link)
    whatever happens to the names afterwards, so a state folder swapped for a link
    meanwhile is never followed. What it may be is stale (the folder was moved or
    removed): the tree is opened afresh once it is `max_age` old, after any operation
    through it that raised, and after one that found it stale (`invalidate`). ``use()``
    blocks of several threads are serialised; a forked child opens its own. The publish
    lock's file is opened through the held state folder (`in_folder`), but its lock is
    waited for only once that block has ended: never wait for it inside a ``use()``
    block, where a thread would keep the folders from the thread that holds the lock and
    needs them to finish (publishing, deleting, acking).
    """

    def __init__(
        self,
        open_tree: Callable[[], StateTree],
        max_age: float,
        keep: frozenset[tuple[str, ...]] = frozenset(),
        hold: int = 0,
    ) -> None:
        self._open_tree = open_tree
        self.max_age = max_age
        self._keep = keep
        self._hold = hold
        self._tree: StateTree | None = None
        self._expires = 0.0
        self._stale = False
        self._depth = 0
        self._lock = threading.RLock()
        HELD.add(self)
        weakref.finalize(self, _close_tree, self.__dict__)

    def use(self) -> HeldState:
        """The tree, for one operation: ``with held.use() as tree``; nested blocks (in
        one thread) share it."""
        return self  # no generator-based context manager: this runs several times per item

    def __enter__(self) -> StateTree:
        self._lock.acquire()
        try:
            if self._depth == 0 and (self._tree is None or time.monotonic() >= self._expires):
                self.close()
                self._tree = self._open_tree()
                self._expires = time.monotonic() + self.max_age
        except BaseException:
            self._lock.release()
            raise
        self._depth += 1
        return self._tree  # type: ignore[return-value]

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:
            if exc_type is not None:
                self._stale = True
            self._depth -= 1
            if self._depth == 0 and self._stale:
                self.close()  # only now: an outer block still works through it
            elif self._depth == 0:
                self._tree.close_except(self._keep, self._hold)  # type: ignore[union-attr]
        finally:
            self._lock.release()

    def in_folder(self, parts: tuple[str, ...], make: Callable[[SafeDir], _T]) -> _T:
        """``make(folder)`` in the held folder ``parts`` (`StateTree.existing`), in a
        ``use()`` block of its own; once more in the folder opened afresh when the held
        one was removed since (a ``tmp/`` made again, a channel dropped and made again),
        as a path would have found it. Raises what ``make`` and `StateTree.existing` raise.
        """
        with self.use() as tree:
            folder = tree.existing(*parts)
            try:
                return make(folder)
            except FileNotFoundError:
                if folder.fd is None or folder.stat().st_nlink > 0:
                    raise  # the folder is there: what ``make`` needed is missing
                self.invalidate()
        with self.use() as tree:
            return make(tree.existing(*parts))

    def invalidate(self) -> None:
        """The folders are stale: open them again once the current `use` ends."""
        self._stale = True

    def close(self) -> None:
        """Close the folders (the next `use` opens them again)."""
        with self._lock:
            _close_tree(self.__dict__)

    def _after_fork(self) -> None:
        # Another thread of the parent may have held the lock: the child's is new.
        self._lock = threading.RLock()
        self._depth = 0
        self._expires = 0.0  # its descriptors are the parent's: open the child's own


def _close_tree(fields: dict[str, Any]) -> None:
    tree, fields["_tree"] = fields["_tree"], None
    fields["_stale"] = False
    if tree is not None:
        tree.close()


#: Every live `HeldState` of this process (a fork's child opens its own folders).
HELD: weakref.WeakSet[HeldState] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [held._after_fork() for held in list(HELD)])
