"""Where channels live: the default root and the safety checks on folders we create."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from .._errors import UnsafeRoot
from ..disks.probe import warn_if_not_ram

ROOT_ENV = "RAMXCHG_ROOT"


def default_root(*, create: bool = True) -> Path:
    """Return the folder that holds channels by default, creating it with mode 0700.

    ``$RAMXCHG_ROOT`` if set; on Linux ``/dev/shm/ramxchg-<uid>`` (tmpfs, no root
    needed); elsewhere a per-user folder in the temp directory. Warns once
    (`NotRamBackedWarning`) when it is not on a RAM disk, e.g. an exported root left on
    disk after a teardown. Raises `UnsafeRoot` if the folder is a symlink or owned by
    another user. ``create=False``: only where it is (for readers), neither made nor
    warned about.
    """
    if not create:
        return find_default_root(create=False)
    root = find_default_root()
    warn_if_not_ram(root, stacklevel=2)  # once: not RAM, or a 64 MB Docker /dev/shm
    return root


def find_default_root(*, create: bool = True) -> Path:
    """`default_root` without the warning (callers warn themselves, or say it otherwise).

    ``create=False``: a missing folder is returned as it is, not made (for readers).
    """
    configured = os.environ.get(ROOT_ENV)
    shm = Path("/dev/shm")
    if configured:
        root = Path(configured)
    elif sys.platform.startswith("linux") and shm.is_dir():
        root = shm / f"ramxchg-{os.getuid()}"
    else:
        root = Path(tempfile.gettempdir()) / f"ramxchg-{_user_tag()}"
    if create:
        ensure_dir(root)
    elif os.path.lexists(root):
        check_safe_dir(root)
    return root


def _user_tag() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    return os.environ.get("USERNAME", "user")


def ensure_dir(path: Path, mode: int = 0o700, *, owner_check: bool = True) -> Path:
    """Create ``path`` (and parents) if missing, then check it is safe to use.

    The folder itself gets ``mode``; it must not be a symlink and must belong to the
    current user (or be a root-owned sticky folder such as a shared RAM-disk mount).
    """
    try:
        path.mkdir(mode=mode, parents=True)
        if hasattr(os, "getuid"):
            os.chmod(path, mode)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    check_safe_dir(path, owner_check=owner_check)
    return path


def check_safe_dir(path: Path, *, owner_check: bool = True) -> None:
    """Raise `UnsafeRoot` unless ``path`` is a real folder we may trust.

    A world-writable parent such as ``/dev/shm`` lets anyone pre-create our folder's
    name or swap it for a symlink, so both are refused. ``owner_check=False`` accepts
    another user's folder (one shared on purpose and named by its path), never a symlink.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError as exc:
        raise UnsafeRoot(f"{path} does not exist", path=path) from exc
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRoot(f"{path} is a symlink; refusing to follow it", path=path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRoot(f"{path} is not a folder", path=path)
    if not owner_check or not hasattr(os, "geteuid"):
        return
    me = os.geteuid()
    shared_mount = info.st_uid == 0 and info.st_mode & stat.S_ISVTX
    if info.st_uid != me and not shared_mount:
        raise UnsafeRoot(
            f"{path} is owned by uid {info.st_uid}, not by you (uid {me}); someone else may "
            "have created it. Remove it or choose another root.",
            path=path,
            owner_uid=info.st_uid,
            uid=me,
        )
