"""What the ``ramxchg`` command prints when it fails: one line, the path and the fix.

`main` catches our exceptions (`RamxchgError`) and every `OSError` once, at the top,
and prints `failure_line`: the message (or ``path: strerror`` of an OSError), then what
to do about it, chosen by the exception's class or errno. Commands that know better
raise `explained` errors with a precise fix instead.
"""

from __future__ import annotations

import errno
import os

from .. import (
    ChannelFull,
    ChannelNotFound,
    ConfigMismatch,
    ItemExists,
    ItemNotFound,
    RamDiskFull,
    RamxchgError,
    UnsafeRoot,
)

_FULL = "consume or delete items ('ramxchg gc' applies retention), or make the RAM disk bigger"
_NO_ACCESS = (
    "you (uid {uid}) may not change it: use a channel or --root of your own (a channel "
    "made with mode=0o750 lets a group you are in read it, not write it)"
)

#: What to do about an OSError, by errno ({uid} and {mount} are filled in).
FIXES: dict[int, str] = {
    errno.ENOENT: "check the path; a --root must be an existing folder you can write "
    "('ramxchg setup' makes a RAM disk for it)",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
    errno.EROFS: "the file system is mounted read-only: remount it read-write "
    "(mount -o remount,rw {mount}) or choose another --root",
    errno.ENOSPC: _FULL,
    errno.EDQUOT: "your disk quota is used up: " + _FULL,
    errno.ENAMETOOLONG: "use a shorter path or name",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ENFILE: "the system has too many open files: close some programs and retry",
    errno.EEXIST: "remove it or choose another name",
}

#: What to do about our errors whose message says what went wrong but not the fix.
HINTS: dict[type[RamxchgError], str] = {
    ChannelNotFound: "check the name ('ramxchg status' lists the channels); "
    "'ramxchg watch --create' waits for a channel that is not made yet",
    ItemNotFound: "'ramxchg status' lists the channels and groups, 'ramxchg ls CHANNEL' the items",
    ItemExists: "publish it under another name (--name), or replace it (--replace)",
    ConfigMismatch: "open it with the settings it was created with, or use another channel",
    ChannelFull: _FULL,
    RamDiskFull: _FULL,
}


def failure_line(exc: BaseException) -> str:
    """One line: what failed, on which path, and what to do about it."""
    if isinstance(exc, RamxchgError):
        text = str(exc)
        hint = next((h for kind, h in HINTS.items() if isinstance(exc, kind)), None)
        if isinstance(exc, UnsafeRoot) and getattr(exc, "owner_uid", None) is None:
            hint = "check the path, or choose another folder"  # owned: its message says
        if hint:
            text = f"{text}; {hint}"
    elif isinstance(exc, OSError):
        text = _described(exc)
        fix = FIXES.get(exc.errno or 0, "check the path and its permissions")
        text = f"{text}; {_filled(fix, exc)}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message held


def explained(exc: OSError, fix: str) -> RamxchgError:
    """``exc`` with a precise ``fix`` in place of the generic one (``raise ... from exc``)."""
    return RamxchgError(f"{_described(exc)}; {_filled(fix, exc)}", path=exc.filename)


def _described(exc: OSError) -> str:
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    what = exc.strerror or str(exc)
    return f"{' -> '.join(paths)}: {what}" if paths else what


def _filled(fix: str, exc: OSError) -> str:
    uid = os.geteuid() if hasattr(os, "geteuid") else "?"
    mount = _mount_point(os.fsdecode(exc.filename)) if exc.filename is not None else "MOUNT"
    return fix.format(uid=uid, mount=mount)


def _mount_point(path: str) -> str:
    """The mount point holding ``path`` (its nearest existing ancestor that is one)."""
    current = os.path.abspath(path)
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current
