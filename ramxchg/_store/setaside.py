"""Files a channel set aside (dead letters, quarantine): listed, published again, deleted.

See docs/protocol.md section 9 for the folders and their reason files. `requeue`
publishes a file again under its item name, with the attrs its reason file recorded, as
a new item (a new sequence number: every group receives it), and takes it out of the
folder only once it is published:

1. link the file into ``.ramxchg/tmp/`` (through the folder's descriptor, never a link);
2. check what was linked: a regular file with no name but these two (a hard link
   planted in the quarantine may share its data with a file outside the channel) whose
   header parses (`CorruptItem` for one that is still malformed);
3. publish it (section 4), then unlink it and its reason file from the folder.

A failure before step 3 leaves the file where it was and nothing in ``tmp/``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._errors import CorruptItem, InvalidName, ItemNotFound
from .._item import Item
from ..formats import Format, format_for
from .aside import REASON_SUFFIX
from .names import check_name
from .safedir import SafeDir
from .sidecar import encode_attrs
from .statefile import read_state
from .tmpfiles import HiddenFile, link_hidden

if TYPE_CHECKING:
    from .store import ChannelStore

#: How a requeued file is published: `Channel`'s own publishing, handed in.
Publish = Callable[[HiddenFile, Format, str, dict[str, Any]], Item]

log = logging.getLogger(__name__)

#: The two folders of set-aside files: ``.ramxchg/dead/`` and ``.ramxchg/quarantine/``.
SetAsideKind = Literal["dead", "quarantine"]
_MAX_REASON_BYTES = 1 << 20


@dataclass(frozen=True)
class SetAsideFile:
    """A file the channel set aside, as `SetAsideFolder.files` lists it."""

    #: its name in the folder: what `SetAsideFolder.requeue` and ``delete`` take
    file: str
    path: Path
    #: the item name it is published under again (its reason file's, else the file's stem)
    name: str
    #: the sequence number it had (dead letters), else None
    seq: int | None
    #: ``"npy"`` or ``"hdf5"`` (by its suffix), None for other files
    format: str | None
    #: bytes
    size: int
    #: when it was set aside, ns since the epoch
    set_aside_ns: int
    #: why, in words
    reason: str
    #: the whole reason record: ``command``, ``exit_status``, ``attempts``, ``group``,
    #: ``attrs`` for dead letters (docs/protocol.md section 9); empty without one
    details: dict[str, Any]


class SetAsideFolder:
    """The dead letters (`Channel.dead_letters`) or the quarantine (`Channel.quarantine`)
    of a channel: list the files (oldest first), publish them again or delete them."""

    def __init__(self, store: ChannelStore, kind: SetAsideKind, publish: Publish) -> None:
        self._store = store
        self._publish = publish
        self.kind = kind
        self.path = store.layout.state / kind

    def __repr__(self) -> str:
        return f"<SetAsideFolder {str(self.path)!r}>"

    def files(self) -> list[SetAsideFile]:
        """Every file in the folder, oldest first (reason files are not listed)."""
        found = []
        with self._store.layout.open_state() as state:
            folder = state.folder(self.kind)
            for file in folder.names() if folder is not None else []:
                listed = None if file.startswith(".") else _describe(folder, file)
                if listed is not None:
                    found.append(listed)
        return sorted(found, key=lambda f: (f.set_aside_ns, f.file))

    def __iter__(self) -> Iterator[SetAsideFile]:
        return iter(self.files())

    def __len__(self) -> int:
        return len(self.files())

    def requeue(self, file: str, *, timeout: float | None = None) -> Item:
        """Publish the set-aside ``file`` again, as a new item, and take it out of the folder.

        Its name and attrs are the ones its reason file recorded. Waits for room like
        `Channel.put` (``timeout``). Raises `ItemNotFound` when there is no such file,
        `CorruptItem` for one that is not a regular item file or still does not parse,
        `ItemExists` when an item of its name is published meanwhile (it then stays).
        """
        _checked(file, self.path)
        layout = self._store.layout
        with layout.open_state() as state:
            folder = state.folder(self.kind)
            listed = _describe(folder, file) if folder is not None else None
            if folder is None or listed is None:
                raise ItemNotFound(f"no file {file!r} in {self.path}", path=self.path, name=file)
            name = check_name(listed.name)
            fmt = format_for(file)
            if fmt is None:
                raise CorruptItem(f"{listed.path} is no .npy or .h5 file", path=listed.path)
            attrs = listed.details.get("attrs")
            meta = encode_attrs(attrs if isinstance(attrs, dict) else {})
            self._store.retention.wait_for_room(listed.size, timeout)
            before = folder.lstat(file)
            if before is None or not stat.S_ISREG(before.st_mode):  # never linked, nor opened
                raise CorruptItem(
                    f"{listed.path} is not a regular file; it cannot be an item", path=listed.path
                )
            # linkat without AT_SYMLINK_FOLLOW: a symlink swapped in meanwhile is linked as
            # itself, and refused
            held = self._store.retention.state
            hidden = link_hidden(held, layout, file, name, fmt.suffix, source_folder=folder)
            try:
                linked = hidden.made
                _check_linked(listed.path, linked)
                # still malformed: CorruptItem, and it stays there
                fmt.describe_open(hidden.fd, linked.st_size, hidden.path)
            except BaseException:
                hidden.discard()
                raise
            item = self._publish(hidden, fmt, name, meta)
            now = folder.lstat(file)
            if now is not None and now.st_ino == linked.st_ino:  # not another file meanwhile
                folder.unlink(file)
                folder.unlink(file + REASON_SUFFIX)
        log.info("requeued %s as item %s (seq %s)", listed.path, item.name, item.seq)
        return item

    def delete(self, file: str) -> None:
        """Remove the set-aside ``file`` and its reason file; `ItemNotFound` if missing."""
        _checked(file, self.path)
        with self._store.layout.open_state() as state:
            folder = state.folder(self.kind)
            if folder is None or not folder.unlink(file):
                raise ItemNotFound(f"no file {file!r} in {self.path}", path=self.path, name=file)
            folder.unlink(file + REASON_SUFFIX)


def _checked(file: str, folder: Path) -> str:
    """``file`` if it names a file in the folder itself (no path, not hidden)."""
    if not file or file.startswith(".") or "/" in file or os.sep in file:
        raise InvalidName(f"{file!r} is no file name in {folder}", name=file)
    return file


def _describe(folder: SafeDir, file: str) -> SetAsideFile | None:
    """What the folder says about ``file``; None if it is gone (or is a reason file)."""
    info = folder.lstat(file)
    if info is None or file.endswith(REASON_SUFFIX):
        return None
    details = _reason(folder, file)
    fmt = format_for(file)
    recorded = details.get("name")
    origin = details.get("file") if isinstance(details.get("file"), str) else file
    name = recorded if isinstance(recorded, str) else os.path.splitext(origin)[0]
    seq, when, reason = details.get("seq"), details.get("set_aside_ns"), details.get("reason")
    return SetAsideFile(
        file=file,
        path=folder.path / file,
        name=name,
        seq=seq if isinstance(seq, int) else None,
        format=fmt.name if fmt is not None else None,
        size=info.st_size,
        set_aside_ns=when if isinstance(when, int) else info.st_ctime_ns,
        reason=reason if isinstance(reason, str) else "",
        details=details,
    )


def _reason(folder: SafeDir, file: str) -> dict[str, Any]:
    """The reason record of ``file``; empty when it has none or it is not readable."""
    path = folder.path / (file + REASON_SUFFIX)
    try:
        raw = read_state(path, _MAX_REASON_BYTES, "reason file", dir_fd=folder.fd)
        record = json.loads(raw) if raw is not None else {}
    except (CorruptItem, ValueError) as exc:
        log.warning("%s is not a valid reason file (%s); listed without it", path, exc)
        return {}
    return record if isinstance(record, dict) else {}


def _check_linked(path: Path, linked: os.stat_result) -> None:
    """`CorruptItem` unless the file linked into tmp is a regular file with two names."""
    if not stat.S_ISREG(linked.st_mode):
        raise CorruptItem(f"{path} is not a regular file; it cannot be an item", path=path)
    if linked.st_nlink != 2:  # its place in the folder and in tmp/, nothing else
        raise CorruptItem(
            f"{path} has {linked.st_nlink - 1} names: its data may belong to a file outside "
            "the channel; publish a copy of it instead ('ramxchg put')",
            path=path,
        )
