"""Every CLI failure is one line on stderr naming the path and the fix, exit 1.

The real ``ramxchg`` executable runs in a subprocess. As another user the command runs
in a fork that drops to uid 65534 and calls ``ramxchg.cli.main`` as the executable does:
that user cannot run this interpreter (it lives under /root), and a traceback would
reach stderr all the same.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel
from tests.conftest import mounted_tmpfs

NOBODY = 65534
RAMXCHG = Path(sys.executable).with_name("ramxchg")


def _ramxchg(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the real executable: (exit code, stderr)."""
    if not RAMXCHG.exists():
        pytest.skip(f"needs the ramxchg executable beside {sys.executable}")
    done = subprocess.run(
        [str(RAMXCHG), *argv], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    return done.returncode, done.stderr


def _one_line(code: int, err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ramxchg: error: "), err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_put_of_a_missing_file(root: Path) -> None:
    missing = root / "nothing.npy"
    _one_line(*_ramxchg("put", "cam", str(missing)), str(missing), "no such file", "FILE")


def test_status_of_a_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    code, err = _ramxchg("status", "--root", str(missing))
    _one_line(code, err, str(missing), "ramxchg setup")


def test_put_under_proc(root: Path) -> None:
    source = root / "frame.npy"
    np.save(source, np.ones(3))
    code, err = _ramxchg("put", "--root", "/proc", "cam", str(source))
    _one_line(code, err, "/proc", "--root")


@pytest.fixture
def read_only_root(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs holding channel 'cam' (item 'a', group 'g'), remounted read-only."""
    # 256 MB: not small enough to be warned about, so the error is all stderr says
    with mounted_tmpfs(tmp_path / "ro", 256 << 20) as mount:
        channel = Channel("cam", root=mount)
        channel.put(np.ones(3), name="a")
        channel.subscribe(group="g").close()
        np.save(tmp_path / "b.npy", np.ones(3))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount


@pytest.mark.root
@pytest.mark.parametrize(
    "argv",
    [
        ("put", "cam", "{tmp}/b.npy"),
        ("put", "new", "{tmp}/b.npy"),
        ("ack", "cam", "a", "--group", "g"),
        ("gc", "cam"),
        ("watch", "cam", "--group", "g", "--count", "1"),
    ],
    ids=lambda argv: "-".join(argv[:2]),
)
def test_read_only_root(read_only_root: Path, tmp_path: Path, argv: tuple[str, ...]) -> None:
    filled = [word.replace("{tmp}", str(tmp_path)) for word in argv]
    env = {**os.environ, "RAMXCHG_ROOT": str(read_only_root)}
    code, err = _ramxchg(*filled, env=env)
    _one_line(code, err, str(read_only_root), "read-only", "remount")


# -- as another user --------------------------------------------------------------------------


def _main_as_nobody(argv: list[str], err_path: str) -> None:
    from ramxchg.cli import main

    with open(err_path, "w") as err:
        os.dup2(err.fileno(), 2)
    sys.stderr = open(2, "w", closefd=False)  # not pytest's capture: the file, as fd 2  # noqa: SIM115
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    sys.exit(main(argv))  # an exception escaping main prints a traceback, as the executable


def _as_nobody(tmp_path: Path, *argv: str) -> tuple[int, str]:
    import h5py  # noqa: F401  (imported while this interpreter's files are readable)

    from ramxchg.cli import build_parser

    build_parser()  # imports every subcommand's module
    err = tmp_path / "stderr"
    proc = mp.get_context("fork").Process(target=_main_as_nobody, args=(list(argv), str(err)))
    proc.start()
    proc.join(60)
    assert proc.exitcode is not None
    return proc.exitcode, err.read_text()


@pytest.fixture
def shared(root: Path) -> Path:
    """Channel 'shared' of root's, readable by others (mode 0o755), with a file to put."""
    os.chmod(root, 0o755)
    channel = Channel("shared", mode=0o755)
    channel.put(np.ones(3), name="a")
    np.save(root / "b.npy", np.ones(3))
    os.chmod(root / "b.npy", 0o644)
    return channel.path


@pytest.mark.root
def test_put_into_another_users_channel(shared: Path, tmp_path: Path) -> None:
    code, err = _as_nobody(tmp_path, "put", str(shared), str(shared.parent / "b.npy"))
    _one_line(code, err, str(shared), "Permission denied", "uid 65534", "mode=0o750")


@pytest.mark.root
def test_watch_group_on_another_users_channel(shared: Path, tmp_path: Path) -> None:
    code, err = _as_nobody(tmp_path, "watch", str(shared), "--group", "g", "--count", "1")
    _one_line(code, err, str(shared), "Permission denied", "without --group")


@pytest.mark.root
def test_gc_of_another_users_channel(shared: Path, tmp_path: Path) -> None:
    code, err = _as_nobody(tmp_path, "gc", str(shared))
    _one_line(code, err, str(shared), "Permission denied", "uid 65534")


def test_negative_seconds_are_a_usage_error(root: Path) -> None:
    code, err = _ramxchg("watch", "cam", "--settle", "-1", "--count", "1")
    assert code == 2
    assert "Traceback" not in err
    assert "--settle: must be 0 or more seconds" in err


def test_a_reader_that_leaves_early_is_not_a_traceback(root: Path) -> None:
    channel = Channel("many")
    for index in range(2000):  # ls --json prints more than a pipe holds (64 KiB)
        channel.put(np.ones(1), name=f"item{index}")
    if not RAMXCHG.exists():
        pytest.skip(f"needs the ramxchg executable beside {sys.executable}")
    with subprocess.Popen(
        [str(RAMXCHG), "ls", "many", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.read(10)
        proc.stdout.close()  # like 'ramxchg ls many --json | head -c 10'
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 1
    assert err == ""


def test_a_warning_is_one_line_too(tmp_path: Path) -> None:
    disk = tmp_path / "on-disk"  # pytest's tmp_path is not on a RAM disk here
    disk.mkdir()
    frame = tmp_path / "frame.npy"
    np.save(frame, np.arange(3))
    code, err = _ramxchg("put", "cam", str(frame), "--root", str(disk))
    assert code == 0, err
    [line] = err.splitlines()
    assert line.startswith("ramxchg: warning: "), err
    assert "not in RAM" in line
