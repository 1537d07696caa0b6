"""The shell and JavaScript examples of docs/cross-language.md run as written, against a
real channel: each ``sh`` block under dash, bash and zsh, the ``js`` block under node."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import wait_for

DOC = Path(__file__).resolve().parent.parent / "docs" / "cross-language.md"
SHELLS = ["dash", "bash", "zsh"]


def _blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks under the heading ``## section``."""
    text = DOC.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _shell_block(first_line: str) -> str:
    [block] = [b for b in _blocks("Shell", "sh") if b.startswith(first_line)]
    return block


def _fill(root: Path) -> Channel:
    """Channel "camera" with two items: an .npy with an exposure, an HDF5 file without."""
    camera = Channel("camera", root)
    attrs = {"exposure": 0.5, "note": "two\nlines, a tab\t* and a \\"}  # what echo breaks
    camera.put(np.arange(6.0).reshape(2, 3), "frame-a", attrs=attrs)
    camera.put({"image": np.ones(4, np.uint16)}, "scan-b", format="hdf5")
    return camera


@contextmanager
def _running(
    argv: list[str], cwd: Path, root: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``argv`` in its own process group, output to a file; stopped like Ctrl-C at the end."""
    out = cwd / "out.txt"
    env = {
        **os.environ,
        "RAMXCHG_ROOT": str(root),
        # the ramxchg of this interpreter first, as after `pip install`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with out.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process, out
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs {name} (apt-get install {name})")
    return path


def _script(tmp_path: Path, text: str, name: str) -> tuple[Path, Path]:
    """(working folder, script file) for one run."""
    script = tmp_path / name
    script.write_text(text)
    return tmp_path, script


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_one_line_per_item(root: Path, tmp_path: Path, shell: str) -> None:
    work, script = _script(tmp_path, _shell_block("# one line per item"), "lines.sh")
    _fill(root)
    with _running([_shell(shell), str(script)], work, root) as (_, out):
        wait_for(lambda: out.read_text().count("\n") >= 2, 30, "two lines")
    lines = out.read_text().splitlines()
    assert lines[:2] == [
        f"got frame-a: seq 1, 2x3 <f8, {root}/camera/frame-a.npy",
        f"got scan-b: seq 2, 4 <u2, {root}/camera/scan-b.h5",
    ]


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_exec_per_item_in_a_group(root: Path, tmp_path: Path, shell: str) -> None:
    work, script = _script(tmp_path, _shell_block("# run a program per item"), "cp.sh")
    camera = _fill(root)
    with _running([_shell(shell), str(script)], work, root):
        copies = work / "archive"
        acked = lambda: [g.backlog for g in camera.status().groups] == [0]  # noqa: E731
        wait_for(acked, 30, "both items acked")
    assert sorted(p.name for p in copies.iterdir()) == ["frame-a.npy", "scan-b.h5"]
    np.testing.assert_array_equal(np.load(copies / "frame-a.npy"), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_exec_reads_the_environment(root: Path, tmp_path: Path, shell: str) -> None:
    if shutil.which("jq") is None:
        pytest.skip("needs jq (apt-get install jq)")
    work, script = _script(tmp_path, _shell_block("# metadata is in"), "env.sh")
    _fill(root)
    with _running([_shell(shell), str(script)], work, root) as (_, out):
        wait_for(lambda: out.read_text().split() == ["0.5", "null"], 30, "both exposures")


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_exec_reads_big_attrs_from_a_file(root: Path, tmp_path: Path, shell: str) -> None:
    if shutil.which("jq") is None:
        pytest.skip("needs jq (apt-get install jq)")
    work, script = _script(tmp_path, _shell_block("# attrs (or arrays) over 32 KiB"), "big.sh")
    camera = _fill(root)
    camera.put(np.zeros(2), "big", attrs={"exposure": 2.5, "notes": "x" * (64 << 10)})
    with _running([_shell(shell), str(script)], work, root) as (_, out):
        wait_for(lambda: out.read_text().split() == ["0.5", "null", "2.5"], 30, "3 exposures")


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_put_publishes_files(root: Path, tmp_path: Path, shell: str) -> None:
    work, script = _script(tmp_path, _shell_block("# publish existing files"), "put.sh")
    np.save(work / "frame.npy", np.arange(3))
    with h5py.File(work / "scan.h5", "w") as h5file:
        h5file["x"] = np.ones(2)
    with _running([_shell(shell), str(script)], work, root) as (process, out):
        assert process.wait(timeout=60) == 0, out.read_text()
    camera = Channel("camera", root)
    assert camera.names() == ["frame", "scan"]
    assert camera.get("frame").seq == 1


def test_javascript_consumer_catches_up_then_follows(root: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node (apt-get install nodejs)")
    [code] = _blocks("JavaScript (Node.js)", "js")
    work, script = _script(tmp_path, code, "consume.mjs")
    camera = _fill(root)
    camera.put(np.array([1, 2, 3], np.int64), "frame-c")
    with _running([node, str(script)], work, root) as (process, out):
        wait_for(lambda: out.read_text().count("\n") >= 2 or process.poll() is not None, 30)
        camera.put(np.full((2, 2), 7, np.uint16), "frame-d")  # while it watches
        wait_for(lambda: out.read_text().count("\n") >= 3 or process.poll() is not None, 30)
    assert out.read_text().splitlines() == [
        "frame-a 1 [2,3] <f8 15",
        "frame-c 3 [3] <i8 6",
        "frame-d 4 [2,2] <u2 28",
    ]
