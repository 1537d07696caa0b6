"""The libc-only C consumer in docs/examples/c/ receives and sums arrays published here."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel

SOURCE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "c" / "consume.c"
COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C compiler (cc or gcc)")


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert COMPILER is not None
    binary = tmp_path_factory.mktemp("c") / "consume"
    subprocess.run(
        [COMPILER, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, SOURCE],
        check=True,
    )
    return binary


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.standard_normal((100, 30)),
        rng.standard_normal(1000).astype("<f4"),
        np.arange(-500, 500, dtype="<i8"),
        np.arange(1000, dtype="<i4").reshape(10, 100).T,  # Fortran order on disk
        np.arange(60000, dtype="<u2"),
        np.arange(256, dtype="<u1"),
        np.array([True, False, True, True]),
        np.zeros((0, 3)),
    ]


def _read_lines(proc: subprocess.Popen[str], out: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)


def test_c_consumer_catches_up_then_follows_in_order(root: Path, consumer: Path) -> None:
    channel = Channel("c")
    arrays = _arrays()
    early, late = arrays[:3], arrays[3:]
    expected = [channel.put(a).name for a in early]
    # A legacy file written in place by a program without ramxchg: delivered after close.
    env = {**os.environ, "RAMXCHG_MAX_ITEMS": str(len(arrays) + 1)}
    lines: list[str] = []
    with subprocess.Popen(
        [consumer, channel.path], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        reader = threading.Thread(target=_read_lines, args=(proc, lines))
        reader.start()
        try:
            expected += [channel.put(a).name for a in late]
            legacy = np.arange(12.0)
            np.save(channel.path / "legacy.npy", legacy)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
            reader.join()
    assert [line.split()[0] for line in lines] == [*expected, "legacy"]
    for line, array in zip(lines, [*arrays, legacy], strict=True):
        _, total = line.split()
        assert float(total) == pytest.approx(float(array.sum(dtype=np.float64)), rel=1e-9)


def test_c_consumer_without_arguments_prints_usage(consumer: Path) -> None:
    result = subprocess.run([consumer], check=False, capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage" in result.stderr
