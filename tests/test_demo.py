"""``ramxchg demo``: frames flow between real processes, none lost or corrupt, nothing left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ramxchg.cli import main
from ramxchg.demo import make_bases, stamp, verify_frame

from .cli_run import Terminal, ramxchg
from .conftest import wait_for


def test_demo_streams_two_seconds_without_loss(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--seconds", "2", "--shape", "512x512", "--root", str(root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["ok"] is True
    assert summary["received"] > 0
    assert summary["received"] == summary["published"]
    assert summary["lost"] == summary["corrupt"] == summary["duplicates"] == 0
    assert summary["latency_p50_ms"] > 0
    assert summary["peak_ram_disk_bytes"] >= summary["frame_bytes"]
    assert summary["left_behind"] is False
    assert list(root.iterdir()) == []  # the channel folder is gone


def test_demo_default_frames_with_hdf5(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--seconds", "1", "--format", "hdf5", "--root", str(root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["shape"] == [2048, 2048]
    assert summary["received"] > 0
    assert summary["lost"] == summary["corrupt"] == 0
    assert list(root.iterdir()) == []


def test_demo_rejects_frames_it_cannot_stamp(root: Path) -> None:
    assert main(["demo", "--shape", "3", "--dtype", "uint8", "--root", str(root)]) == 2
    assert main(["demo", "--shape", "2048xfoo"]) == 2


def test_verify_frame_detects_a_changed_byte_and_a_stale_frame() -> None:
    (frame, middle), (other, other_middle) = make_bases((64, 64), "uint16", count=2)
    attrs = {"frame": 5, "sum": stamp(frame, middle, 5)}
    assert verify_frame(frame, attrs, (64, 64), "uint16") is None
    flipped = frame.copy()
    flipped.reshape(-1).view(np.uint8)[1000] ^= 1
    assert "checksum" in str(verify_frame(flipped, attrs, (64, 64), "uint16"))
    stamp(other, other_middle, 4)
    assert "counters" in str(verify_frame(other, attrs, (64, 64), "uint16"))
    assert "shape" in str(verify_frame(frame[:32], attrs, (64, 64), "uint16"))


def test_demo_interrupted_removes_its_channel(root: Path) -> None:
    env = {**os.environ, "RAMXCHG_ROOT": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ramxchg", "demo", "--seconds", "60", "--shape", "256x256"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: any(any(p.glob("*.npy")) for p in root.iterdir()), 30, "frames")
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.wait(timeout=1) == 130, process.stderr.read() if process.stderr else ""
    process.stderr.close()  # type: ignore[union-attr]
    assert list(root.iterdir()) == []


def test_ctrl_c_on_a_terminal_prints_the_summary_so_far(root: Path) -> None:
    """Ctrl-C typed on the terminal reaches the demo and its producer and consumer."""
    with Terminal("demo", "--seconds", "300", "--shape", "256x256", root=root) as terminal:
        terminal.read_until(lambda text: re.search(r"\b[1-9]\d+ frames\b", text) is not None)
        terminal.interrupt()
        done = terminal.wait()
    assert done.code == 130, done.out
    summary = done.out[done.out.index("ramxchg demo:") :]
    assert "INTERRUPTED: the frames streamed until Ctrl-C" in summary
    received, published = map(int, re.findall(r"(\d+) received / (\d+) published", summary)[0])
    assert received == published >= 10
    assert re.search(r"lost / duplicated / corrupt\W+0 / 0 / 0\b", summary), summary
    assert "(removed)" in summary
    assert "Traceback" not in done.out
    assert os.listdir(root) == []


def test_a_root_on_disk_is_warned_about_once_in_one_line(tmp_path: Path) -> None:
    done = ramxchg("demo", "--seconds", "1", "--shape", "64x64", "--root", str(tmp_path))
    assert done.code == 0, done.err
    # on 28845df: then twice more, from the producer and the consumer, as Python's
    # "demo.py:190: NotRamBackedWarning" with the source line
    [line] = done.err.splitlines()
    assert line.startswith("ramxchg: warning: "), done.err
    assert "not in RAM" in line
