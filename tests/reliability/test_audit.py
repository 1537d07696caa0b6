"""The strace audit's parser (`_audit.parse`), on canned strace lines: each name a call
takes is resolved in the folder of its own descriptor."""

from __future__ import annotations

import os

from tests.reliability._audit import parse


def _x(text: str) -> str:
    """``text`` as strace -xx prints it."""
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(text))


def test_each_name_of_a_two_folder_call_is_resolved_in_its_own_folder() -> None:
    renamed = (
        f'42 renameat(3<{_x("/chan/.ramxchg/tmp")}>, "{_x("a")}", '
        f'4<{_x("/elsewhere")}>, "{_x("b")}") = 0'
    )
    report = parse(renamed, ["/chan"])
    assert report.calls == 1
    assert report.paths_outside == ["/elsewhere/b"]  # not /chan/.ramxchg/tmp/b
    assert report.outside[0].writes


def test_a_link_of_an_unnamed_file_by_its_proc_entry_stays_in_the_channel() -> None:
    """``linkat(AT_FDCWD, "/proc/self/fd/N", claims, "item", AT_SYMLINK_FOLLOW)`` names
    an O_TMPFILE file: the /proc entry is only read, the new name is in the channel."""
    linked = (
        f'42 linkat(AT_FDCWD<{_x("/work")}>, "{_x("/proc/self/fd/15")}", '
        f'13<{_x("/chan/.ramxchg/groups/g/claims")}>, "{_x("item")}", AT_SYMLINK_FOLLOW) = 0'
    )
    assert parse(linked, ["/chan"]).outside == []
    # ... but a new name outside the channel counts, and so does a source outside that
    # is not a runtime file
    out = linked.replace(_x("/chan/.ramxchg/groups/g/claims"), _x("/tmp/x"))
    assert parse(out, ["/chan"]).paths_outside == ["/tmp/x/item"]
    secret = linked.replace(_x("/proc/self/fd/15"), _x("/home/victim/secret"))
    touched = parse(secret, ["/chan"]).outside
    assert [(t.path, t.writes) for t in touched] == [("/home/victim/secret", False)]
