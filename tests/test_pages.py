"""``ramxchg status`` says which pages items get and what ``ramxchg setup`` would gain."""

from __future__ import annotations

import pytest

from ramxchg.disks import RamDiskInfo
from ramxchg.disks.probe import pages


def _disk(huge: str | None) -> RamDiskInfo:
    return RamDiskInfo("/r", "/r", "tmpfs", 1 << 30, 1 << 30, True, huge_pages=huge)


@pytest.mark.parametrize(
    ("huge", "gets", "setup_gains"),
    [
        ("never", "4 KiB pages", True),
        ("advise", "for create()", True),
        ("within_size", "items of 2 MiB and more", False),
        ("always", "2 MiB huge pages", False),
        ("deny", "denied by the kernel", False),
        ("force", "forced by the kernel", False),
    ],
)
def test_pages_follow_the_mounts_huge_policy(huge: str, gets: str, setup_gains: bool) -> None:
    said = pages(_disk(huge))
    assert said is not None
    assert gets in said
    assert ("ramxchg setup" in said) is setup_gains


def test_no_pages_line_off_tmpfs() -> None:
    assert pages(_disk(None)) is None
