"""A channel's durable groups as a whole: every registered one, one by name, dropping
one, their states for an item, and what a deleted item leaves in them and in the state
folder (`ramxchg._store.groups` is one group's state)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from functools import partial
from typing import Literal

from .._errors import InvalidName, UnsafeRoot
from .groups import Group
from .layout import ChannelLayout
from .safedir import SafeDir, StateTree
from .steps import try_each

log = logging.getLogger(__name__)


def list_groups(layout: ChannelLayout) -> list[Group]:
    """Every registered group of the channel (folders are never followed through a link)."""
    with layout.open_state() as state:
        folder = state.folder("groups")
        groups = []
        for name in sorted(folder.names()) if folder is not None else []:
            if name.startswith("."):
                continue
            try:
                group = Group(layout, name)
            except InvalidName:
                log.info("%s is no group's folder; skipped", folder.path / name)
                continue
            try:
                group_folder = state.folder("groups", name)
            except UnsafeRoot:  # a link, or no folder: no group (as `Retention.registered`)
                continue
            if group_folder is not None and group_folder.lstat("group.json") is not None:
                groups.append(group)
        return groups


def registered_group(layout: ChannelLayout, name: str) -> Group:
    """The group called ``name``; `GroupNotFound` if no such group is registered."""
    group = Group(layout, name)
    if group.info() is None:
        raise group._not_found()
    return group


#: A dropped group's folder, renamed away in ``groups/`` before it is emptied.
_DROPPED = re.compile(r"^\..+\.dropped\.[0-9]+\.[0-9a-f]{8}$")


def drop(layout: ChannelLayout, name: str) -> None:
    """Remove a group and its state; `ItemNotFound` if there is no such group.

    Its folder is renamed to a hidden name first, in one step: retention stops waiting
    for the group at once, and a member registering the group again meanwhile makes a
    folder of its own (emptied in place, the folder could be left registered without
    ``claims/`` or ``acks/``). Then it is emptied and removed, with any other dropped
    folder a drop killed half-way left.
    """
    registered_group(layout, name)
    with layout.open_state() as state:
        groups = state.folder("groups")
        away = f".{name}.dropped.{os.getpid()}.{os.urandom(4).hex()}"
        if groups is None or not groups.rename(name, groups, away):
            return  # dropped meanwhile by another process
        remove_dropped(groups)


def remove_dropped(groups: SafeDir) -> int:
    """Empty and remove the folders of dropped groups in ``groups`` (the one `drop` just
    renamed away, and any a drop killed half-way or a member's late claim left); how
    many went. A link in their place is left alone, never followed."""
    removed = 0
    for dropped in [n for n in groups.names() if _DROPPED.match(n)]:
        try:
            with groups.sub(dropped) or contextlib.nullcontext() as folder:
                if folder is not None:
                    folder.clear()
            groups.rmdir(dropped)
            removed += 1
        except (OSError, UnsafeRoot) as exc:  # another drop's at work, or no folder
            log.info("dropped group folder %s left: %s", groups.entry(dropped), exc)
    return removed


def item_group_states(
    layout: ChannelLayout, name: str
) -> dict[str, Literal["pending", "claimed", "acked"]]:
    """Each registered group's state for the item ``name`` (see `Channel.group_states`)."""
    states: dict[str, Literal["pending", "claimed", "acked"]] = {}
    for group in list_groups(layout):
        if group.is_claimed(name):
            states[group.name] = "claimed"
        else:
            states[group.name] = "acked" if group.is_acked(name) else "pending"
    return states


def forget_everywhere(name: str, state: StateTree, groups: list[Group]) -> None:
    """Remove every group's claims and acks and the sidecar of the deleted item ``name``,
    each tried even when another fails (`try_each`): a claim left would hold back the
    next item of that name."""
    try_each(
        [
            *(partial(group.forget, name, state) for group in groups),
            partial(_forget_sidecar, name, state),
        ]
    )


def _forget_sidecar(name: str, state: StateTree) -> None:
    if (meta := state.folder("meta")) is not None:
        meta.unlink(f"{name}.json")
