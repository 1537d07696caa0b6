"""Folders of a channel opened without following a link: what every state walk goes through.

A channel may be shared with, or belong to, another user, who can swap any of its state
folders for a symlink to a folder of yours at any moment: a path would follow it, and
``gc`` would empty your folder. A folder opened with ``O_NOFOLLOW | O_DIRECTORY``
relative to its parent's descriptor is the real one, and names listed, removed or
renamed relative to that descriptor stay in it, whatever happens to the paths meanwhile.
A hard link planted in such a folder is only a name there: removing it leaves the file.

Where the OS has no ``openat`` (Windows), paths are used, each checked with ``lstat``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from pathlib import Path

from .._errors import ChannelNotFound, UnsafeRoot
from ..disks.files import replace_whole

log = logging.getLogger(__name__)

_DIR_FD_CALLS = {os.open, os.stat, os.unlink, os.rename, os.rmdir, os.mkdir}
#: Work relative to folder descriptors (POSIX); else paths checked with lstat (Windows).
DIR_FD = os.supports_dir_fd >= _DIR_FD_CALLS and os.listdir in os.supports_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


class SafeDir:
    """One open folder: every name is looked up in it, never through a link.

    `open` the channel folder, then `sub` the folders in it. With ``owners`` set, a
    sub-folder that belongs to anyone else is refused (`UnsafeRoot`).
    """

    def __init__(self, path: Path, fd: int | None, owners: frozenset[int] | None) -> None:
        self.path = path
        self.fd = fd
        self.owners = owners
        #: its inode, when a `StateTree` opened it through a descriptor (else None): which
        #: folder it is, after the descriptor is closed too
        self.ino: int | None = None

    @classmethod
    def open(cls, path: Path, *, check_owner: bool = False) -> SafeDir:
        """Open the folder ``path`` itself (`UnsafeRoot` if it is a symlink or no folder).

        ``check_owner``: folders below it must belong to its owner, or to us.
        """
        found = cls(path, _open_dir(path, os.fspath(path), None), None)
        me = _euid()
        if check_owner and me is not None:
            found.owners = frozenset({found.stat().st_uid, me})
        return found

    def sub(self, name: str) -> SafeDir | None:
        """The folder ``name`` in this one; None if there is none.

        Raises `UnsafeRoot` for a symlink, anything but a folder, or (with owners) a folder
        that belongs to someone else.
        """
        path = self.path / name
        try:
            found = SafeDir(path, _open_dir(path, name, self.fd), self.owners)
        except FileNotFoundError:
            return None
        if self.owners is not None:
            uid = found.stat().st_uid
            if uid not in self.owners:
                found.close()
                raise UnsafeRoot(
                    f"{path} belongs to uid {uid}, neither to the channel's owner nor to "
                    "you; not ours to walk",
                    path=path,
                    owner_uid=uid,
                )
        return found

    def make_sub(self, name: str, mode: int = 0o700) -> SafeDir:
        """The folder ``name`` in this one, created (with ``mode``) if missing."""
        try:
            os.mkdir(self._name(name), mode, dir_fd=self.fd)
        except FileExistsError:
            pass
        except OSError as exc:
            _full_names(exc, self, None)
            raise
        found = self.sub(name)
        if found is None:  # removed again at once: as if it never was
            raise FileNotFoundError(errno.ENOENT, "vanished while created", str(self.path / name))
        return found

    def stat(self) -> os.stat_result:
        """This folder's own stat."""
        return os.stat(self.fd) if self.fd is not None else os.lstat(self.path)

    def names(self) -> list[str]:
        """Every name in the folder (hidden ones too)."""
        return os.listdir(self.fd if self.fd is not None else self.path)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (a link is not followed); None if missing."""
        try:
            return os.stat(self._name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _full_names(exc, self, None)
            raise

    def unlink(self, name: str) -> bool:
        """Remove the entry ``name`` (a link itself, never its target); False if missing."""
        try:
            os.unlink(self._name(name), dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            _full_names(exc, self, None)
            raise
        return True

    def rmdir(self, name: str) -> None:
        """Remove the empty folder ``name``, if it is still there."""
        try:
            os.rmdir(self._name(name), dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _full_names(exc, self, None)
            raise

    def rename(self, name: str, target: SafeDir, new_name: str) -> bool:
        """Move ``name`` to ``new_name`` in ``target`` (replacing it); False if missing."""
        try:
            self.replace(name, target, new_name)
        except FileNotFoundError:
            return False
        return True

    def discard(self, name: str) -> None:
        """Remove a file of ours, if it is still there; one that stays (still mapped on
        Windows, say) is logged and left to the sweeps and ``gc``."""
        try:
            self.unlink(name)
        except OSError as exc:
            if self.has(name):  # a read-only disk says EROFS for a missing file too
                log.warning("could not remove %s: %s", self.entry(name), exc)

    def open_file(self, name: str, flags: int, mode: int = 0o666) -> int:
        """``os.open`` of the file ``name`` in this folder; a symlink is never followed."""
        try:
            return os.open(self._name(name), flags | _NOFOLLOW, mode, dir_fd=self.fd)
        except OSError as exc:
            _full_names(exc, self, None)
            raise

    def link(self, name: str, target: SafeDir, new_name: str) -> None:
        """Hard-link the entry ``name`` itself (a symlink is never followed) as
        ``new_name`` in ``target``; FileExistsError if that name is taken."""
        try:
            os.link(
                self._name(name),
                target._name(new_name),
                src_dir_fd=self.fd,
                dst_dir_fd=target.fd,
                follow_symlinks=False,
            )
        except OSError as exc:
            _full_names(exc, self, target)
            raise

    def link_from(
        self, source: str | os.PathLike[str], name: str, *, src_dir_fd: int | None = None
    ) -> None:
        """Hard-link ``source`` (a name in the folder ``src_dir_fd``, if given; a symlink
        is linked as itself) as ``name`` in this folder."""
        try:
            os.link(
                source,
                self._name(name),
                src_dir_fd=src_dir_fd,
                dst_dir_fd=self.fd,
                follow_symlinks=False,
            )
        except OSError as exc:
            _full_names(exc, None, self)
            raise

    def replace(self, name: str, target: SafeDir, new_name: str) -> None:
        """`rename`, raising FileNotFoundError when ``name`` is missing."""
        try:
            os.replace(
                self._name(name), target._name(new_name), src_dir_fd=self.fd, dst_dir_fd=target.fd
            )
        except OSError as exc:
            _full_names(exc, self, target)
            raise

    def has(self, name: str) -> bool:
        """Is there an entry ``name``, of any kind (a link is not followed)?"""
        return lexists(self._name(name), self.fd)

    def entry(self, name: str) -> str:
        """The full path of ``name`` in this folder, for messages."""
        return f"{self.path}{os.sep}{name}"

    def clear(self) -> None:
        """Remove everything in the folder, folders in it too, without following a link."""
        for name in self.names():
            info = self.lstat(name)
            if info is None:
                continue
            if not stat.S_ISDIR(info.st_mode):
                self.unlink(name)
                continue
            inner = self.sub(name)
            if inner is not None:
                with inner:
                    inner.clear()
                self.rmdir(name)

    def write_whole(self, name: str, data: bytes) -> None:
        """Set the file ``name`` to ``data`` in one rename (`replace_whole`)."""
        replace_whole(self.entry(name), data, dir_fd=self.fd)

    def _name(self, name: str) -> str:
        """What to pass to a call: the bare name with a descriptor, else the full path."""
        return name if self.fd is not None else os.fspath(self.path / name)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _open_dir(path: Path, name: str, dir_fd: int | None) -> int | None:
    """A descriptor of the folder ``name`` (in ``dir_fd``), never through a link.

    Without descriptors (``DIR_FD`` False): checks ``path`` with lstat and returns None.
    """
    if not DIR_FD:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise _refused(path)
        return None
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refused(path) from exc
        exc.filename = os.fspath(path)  # not the bare name: say which folder
        raise


def _full_names(exc: OSError, first: SafeDir | None, second: SafeDir | None) -> None:
    """Make ``exc`` name its files by their full paths, not by the bare names passed with
    the descriptors of the folders ``first`` and ``second`` (a message must say which
    folder it was)."""
    if first is not None and first.fd is not None and isinstance(exc.filename, str):
        exc.filename = first.entry(exc.filename)
    if second is not None and second.fd is not None and isinstance(exc.filename2, str):
        exc.filename2 = second.entry(exc.filename2)


def lexists(path: str, dir_fd: int | None = None) -> bool:
    """Is there an entry at ``path`` (a name in the folder ``dir_fd``, if given), of any
    kind (a link is not followed)?

    Asked with faccessat where it tells the truth (`_faccessat_sees`): no exception for
    the common "not there" answer, unlike lstat. Judged with the effective ids
    (AT_EACCESS), as lstat and open are: not the real ones, which a setuid helper or a
    service given CAP_DAC_OVERRIDE has without the rights to look.
    """
    if _faccessat_sees():
        return os.access(path, os.F_OK, dir_fd=dir_fd, effective_ids=True, follow_symlinks=False)
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@functools.cache
def _faccessat_sees() -> bool:
    """Does faccessat(AT_EACCESS | AT_SYMLINK_NOFOLLOW) find what is there (asked once,
    of "/", and again in a forked child)? Not where the OS has no such call (Windows,
    some BSDs), nor where a seccomp filter of an older container runtime fails
    faccessat2 with EPERM, which glibc does not fall back from: there every answer
    would be "not there"."""
    supported = os.supports_dir_fd & os.supports_follow_symlinks & os.supports_effective_ids
    return os.access in supported and os.access(
        "/", os.F_OK, effective_ids=True, follow_symlinks=False
    )


if hasattr(os, "register_at_fork"):  # a child may install a seccomp filter of its own
    os.register_at_fork(after_in_child=_faccessat_sees.cache_clear)


def _refused(path: Path) -> UnsafeRoot:
    return UnsafeRoot(f"{path} is a symlink or not a folder; refusing to follow it", path=path)


class StateTree:
    """A channel's state folder and the folders in it, opened on first use, closed on exit.

    ``folder("groups", "g", "acks")`` is ``<channel>/.ramxchg/groups/g/acks``, reached one
    descriptor at a time from the channel folder. ``check_owner``: every folder must
    belong to the channel folder's owner, or to us.
    """

    def __init__(self, channel: Path, state_name: str, *, check_owner: bool = False) -> None:
        self._channel = channel
        self._state_name = state_name
        self._check_owner = check_owner
        #: each folder looked up (None: missing); one opened through a descriptor carries
        #: its inode (`SafeDir.ino`), what `_still_there` checks
        self._opened: dict[tuple[str, ...], SafeDir | None] = {}
        #: folders held from an earlier operation, not yet checked in this one
        self._unchecked: set[tuple[str, ...]] = set()
        self._top: SafeDir | None = None

    @property
    def channel(self) -> SafeDir:
        """The channel folder itself."""
        if self._top is None:
            self._top = SafeDir.open(self._channel, check_owner=self._check_owner)
        return self._top

    def folder(self, *parts: str) -> SafeDir | None:
        """The state folder, or a folder below it; None if it (or one above) is missing.

        Raises `UnsafeRoot` as `SafeDir.sub` does (each call: nothing unsafe is kept).
        """
        if parts in self._unchecked:
            self._unchecked.discard(parts)
            if not self._still_there(parts):
                self._drop(parts)
        if parts in self._opened:
            return self._opened[parts]
        if parts:
            parent = self.folder(*parts[:-1])
            found = None if parent is None else parent.sub(parts[-1])
        else:
            try:
                found = self.channel.sub(self._state_name)
            except FileNotFoundError:  # the channel folder itself is gone
                found = None
        self._opened[parts] = found
        if found is not None and found.fd is not None:
            found.ino = found.stat().st_ino
        return found

    def existing(self, *parts: str) -> SafeDir:
        """`folder`, which must be there: `ChannelNotFound` (a FileNotFoundError) naming
        it when it, or a folder above it, is missing (the channel was dropped, or its
        state removed). Raises `UnsafeRoot` as `folder` does."""
        found = self.folder(*parts)
        if found is None:
            path = self._channel.joinpath(self._state_name, *parts)
            raise ChannelNotFound(
                f"{path} is missing: the channel was dropped, or its state folders removed, "
                "since it was opened; open it again (a new Channel) to go on",
                path=path,
                name=self._channel.name,
            )
        return found

    def close_except(self, keep: frozenset[tuple[str, ...]], hold: int = 0) -> None:
        """End an operation: close the folders opened so far but those in ``keep`` (and
        the channel's), and but the first ``hold`` others, which are checked before the
        next operation uses them.

        A held folder is checked with one ``lstat`` of its name in its parent: still that
        inode (which our descriptor keeps from being reused), it is still the folder of
        that name; else (removed, made anew: a group dropped and registered again) it is
        opened afresh. Missing folders (kept ones too: one may be made meanwhile) and
        folders reached by path are never held.
        """
        for parts in [p for p, found in self._opened.items() if p not in keep or found is None]:
            if hold > 0 and _inode(self._opened[parts]) is not None:
                hold -= 1
                self._unchecked.add(parts)
                continue
            opened = self._opened.pop(parts)
            self._unchecked.discard(parts)
            if opened is not None:
                opened.close()

    def _still_there(self, parts: tuple[str, ...]) -> bool:
        """Is the held folder ``parts`` still the one of that name (see `close_except`)?"""
        parent = self.folder(*parts[:-1]) if parts else self.channel
        info = None if parent is None else parent.lstat(parts[-1] if parts else self._state_name)
        # (a parent opened afresh just now has closed this one: no inode left to match)
        return info is not None and info.st_ino == _inode(self._opened.get(parts))

    def _drop(self, parts: tuple[str, ...]) -> None:
        """Close the held folder ``parts`` and those below it."""
        for held in [held for held in self._opened if held[: len(parts)] == parts]:
            opened = self._opened.pop(held)
            self._unchecked.discard(held)
            if opened is not None:
                opened.close()

    def close(self) -> None:
        for opened in self._opened.values():
            if opened is not None:
                opened.close()
        self._opened.clear()
        self._unchecked.clear()
        if self._top is not None:
            self._top.close()
            self._top = None

    def __enter__(self) -> StateTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _inode(folder: SafeDir | None) -> int | None:
    """The inode of a folder opened through a descriptor; None for a missing one, or
    one reached by path."""
    return None if folder is None else folder.ino
