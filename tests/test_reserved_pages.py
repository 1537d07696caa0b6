"""A new item that ``create`` maps gets its pages up front, at no more than one system call
per page range: on ramfs, which has no ``fallocate``, glibc's ``posix_fallocate`` falls
back to writing a byte into every 4 KiB block (a ``pread`` and a ``pwrite`` per page)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import mounted

pytestmark = pytest.mark.root

#: Makes the 8 MiB item "x" with ``create`` in the channel root ``argv[1]``, format ``argv[2]``.
CREATE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ramxchg import Channel

    ch = Channel("new", root=sys.argv[1], format=sys.argv[2])
    shape = (8 << 20,)
    layout = shape if sys.argv[2] == "npy" else {"data": (shape, np.uint8)}
    with ch.create(layout, np.uint8, name="x") as made:
        (made if sys.argv[2] == "npy" else made["data"])[:] = 7
    assert int(ch.get("x").arrays["data"].sum()) == 7 * (8 << 20)
    """
)


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    with mounted("ramfs", tmp_path / "ramfs", "mode=0700") as mountpoint:
        yield mountpoint


def _calls(summary: str, syscall: str) -> int:
    """How many ``syscall`` calls an ``strace -c`` summary counts (0 if none)."""
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] == syscall:
            return int(fields[3])
    return 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to count system calls")
@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_new_item_on_ramfs_is_not_written_page_by_page(
    ramfs: Path, tmp_path: Path, fmt: str
) -> None:
    summary = tmp_path / "strace.txt"
    argv = ["strace", "-f", "-qq", "-c", "-e", "trace=pwrite64", "-o", str(summary)]
    result = subprocess.run(
        [*argv, sys.executable, "-c", CREATE, str(ramfs), fmt],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    writes = _calls(summary.read_text(), "pwrite64")
    assert writes < 100, f"{writes} pwrite calls for a new 8 MiB item (2048 pages)"
