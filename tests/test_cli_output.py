"""What ``ls``, ``info``, ``watch`` and ``status`` print: a table with a header on a
terminal (run on a pseudo-terminal), stable tab-separated lines when piped; every string
from outside printed as text, never as rich markup."""

from __future__ import annotations

import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ramxchg import Channel
from ramxchg.bench.report import rich_table
from ramxchg.disks import format_size
from tests.cli_run import Terminal, on_terminal, ramxchg

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _utc(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 10**9, timezone.utc).replace(
        microsecond=ns % 10**9 // 1000
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def camera(root: Path) -> Channel:
    """Channel "cam": an npy item of 1.22 MB, an HDF5 item, a group."""
    channel = Channel("cam")
    channel.subscribe("viewers").close()
    channel.put(np.zeros((400, 400)), "frame", attrs={"run": 7})
    channel.put({"a": np.ones(3), "b": np.ones(2)}, "scan", format="hdf5")
    return channel


def test_ls_piped_is_name_seq_format_bytes_and_publish_time(root: Path, camera: Channel) -> None:
    done = ramxchg("ls", "cam", root=root)
    assert done.code == 0, done.err
    frame, scan = (camera.get(name) for name in ("frame", "scan"))
    assert done.rows() == [
        ["frame", "1", "npy", str(frame.path.stat().st_size), _utc(frame.published_ns)],
        ["scan", "2", "hdf5", str(scan.path.stat().st_size), _utc(scan.published_ns)],
    ]


def test_ls_on_a_terminal_is_a_table_with_a_header_sizes_and_times(
    root: Path, camera: Channel
) -> None:
    done = on_terminal("ls", "cam", root=root)
    assert done.code == 0, done.out
    header = next(line for line in done.out.splitlines() if "NAME" in line)
    assert re.findall(r"[A-Z]+", header) == ["NAME", "SEQ", "FORMAT", "SIZE", "PUBLISHED"]
    [frame_row] = [line for line in done.out.splitlines() if " frame " in line]
    assert format_size(camera.get("frame").path.stat().st_size) == "1.22 MB"
    assert "1.22 MB" in frame_row
    assert LOCAL_TIME.search(frame_row)


def test_info_piped_is_one_field_per_line_in_the_order_of_ls(root: Path, camera: Channel) -> None:
    done = ramxchg("info", "cam", "frame", root=root)
    assert done.code == 0, done.err
    frame = camera.get("frame")
    assert done.rows() == [
        ["name", "frame"],
        ["seq", "1"],
        ["format", "npy"],
        ["size", str(frame.path.stat().st_size)],
        ["published", _utc(frame.published_ns)],
        ["path", str(frame.path)],
        ["array", "data", "400x400", "<f8"],
        ["attrs", '{"run": 7}'],
        ["group", "viewers", "pending"],
    ]


def test_info_on_a_terminal_shows_sizes_and_times_for_people(root: Path, camera: Channel) -> None:
    done = on_terminal("info", "cam", "frame", root=root)
    assert done.code == 0, done.out
    lines = done.out.splitlines()
    assert re.match(r"size\s+1\.22 MB", next(line for line in lines if line.startswith("size")))
    assert LOCAL_TIME.search(next(line for line in lines if line.startswith("published")))


def test_watch_piped_starts_with_the_columns_of_ls(root: Path, camera: Channel) -> None:
    done = ramxchg("watch", "cam", "--count", "2", root=root)
    assert done.code == 0, done.err
    assert done.err == ""  # no "waiting on" when stderr is no terminal
    listed = ramxchg("ls", "cam", root=root).rows()
    frame, scan = done.rows()
    assert frame[:5] == listed[0]
    assert frame[5:] == ["400x400", "<f8", str(camera.get("frame").path)]
    assert scan[:5] == listed[1]
    assert scan[5:] == ["-", "-", str(camera.get("scan").path)]
    assert ISO_UTC.match(frame[4])


def test_watch_on_a_terminal_says_what_it_waits_on_and_stops_on_ctrl_c(
    root: Path, camera: Channel
) -> None:
    with Terminal("watch", "cam", root=root) as terminal:
        shown = terminal.read_until(lambda text: re.search(r"^scan ", text, re.M) is not None)
        assert f"waiting on {camera.path} (Ctrl-C to stop)" in shown
        header = next(line for line in shown.splitlines() if "NAME" in line)
        assert re.findall(r"[A-Z]+", header) == [
            "NAME",
            "SEQ",
            "FORMAT",
            "SIZE",
            "PUBLISHED",
            "SHAPE",
            "DTYPE",
            "PATH",
        ]
        assert "1.22 MB" in next(line for line in shown.splitlines() if line.startswith("frame"))
        terminal.interrupt()
        assert terminal.wait().code == 130


def test_status_piped_is_fields_then_channels(root: Path, camera: Channel) -> None:
    done = ramxchg("status", root=root)
    assert done.code == 0, done.err
    rows = done.rows()
    assert [row[0] for row in rows[:11]] == [
        "root",
        "filesystem",
        "mount_point",
        "device",
        "ram_backed",
        "size",
        "used",
        "free",
        "huge_pages",
        "pages",
        "options",
    ]
    assert rows[0] == ["root", str(root)]
    status = camera.status()
    assert rows[-1] == ["channel", "cam", "2", str(status.bytes), "0", "viewers:2", "-"]


def test_status_on_a_terminal_has_a_channel_table(root: Path, camera: Channel) -> None:
    done = on_terminal("status", root=root)
    assert done.code == 0, done.out
    header = next(line for line in done.out.splitlines() if "CHANNEL" in line)
    assert re.findall(r"[A-Z]+", header) == [
        "CHANNEL",
        "ITEMS",
        "SIZE",
        "POOLED",
        "GROUPS",
        "ERROR",
    ]
    assert re.search(r"cam\W+2\W+1\.22 MB\W+0 B\W+viewers:2", done.out)


def test_status_prints_a_root_with_brackets_as_it_is(root: Path) -> None:
    odd = root / "run[bold]"
    odd.mkdir()
    Channel("cam", odd).put(np.ones(3))
    done = on_terminal("status", "--root", str(odd))
    assert done.code == 0, done.out
    [shown] = [line for line in done.out.splitlines() if line.split()[:1] == ["root"]]
    assert shown.split()[-1] == str(odd)  # on 1e11b05: ".../run", "[bold]" read as markup
    assert f"channels in {odd}" in done.out


@pytest.mark.parametrize(
    "argv",
    [("status",), ("ls", "cam"), ("info", "cam", "x"), ("gc",), ("put", "cam", "{file}")],
    ids=lambda argv: argv[0],
)
@pytest.mark.parametrize("kind", ["device", "file"])
def test_a_root_that_is_no_folder_is_one_line_naming_it_and_the_fix(
    tmp_path: Path, argv: tuple[str, ...], kind: str
) -> None:
    frame = tmp_path / "frame.npy"
    np.save(frame, np.ones(3))
    bad = "/dev/null" if kind == "device" else str(frame)
    filled = [word.replace("{file}", str(frame)) for word in argv]
    for done in (ramxchg("--root", bad, *filled), ramxchg(*filled, "--root", bad)):
        # on 28845df: status "RAM-backed yes" once, then "a part of the path is a file";
        # ls "no channel 'cam'; check the name"; gc nothing at all, exit 0
        assert (done.code, done.out) == (1, ""), done
        [line] = done.err.splitlines()
        assert line.startswith(f"ramxchg: error: {bad}: not a folder; "), line
        assert "--root must be a folder" in line
        assert "ramxchg setup" in line


def test_the_columns_are_those_help_promises_on_a_terminal_and_piped(
    root: Path, camera: Channel
) -> None:
    """``--help`` lists the columns; the terminal's header and the piped rows have them."""
    with camera.subscribe("viewers") as viewers:  # one dead letter, for ls --dead
        frame = viewers.get(timeout=10)
        frame.close()
        assert viewers.dead_letter(frame, "exit status 3", command="false", exit_status=3)
    camera.put(np.ones(3), "extra")
    for argv, first in [
        (("ls", "cam"), "NAME"),
        (("ls", "cam", "--dead"), "FILE"),
        (("watch", "cam", "--count", "2"), "NAME"),
        (("status",), "CHANNEL"),
    ]:
        shown = on_terminal(*argv, root=root)
        assert shown.code == 0, shown.out
        header = next(line for line in shown.out.splitlines() if f" {first} " in f" {line} ")
        columns = re.findall(r"[A-Z][A-Z-]*[A-Z]", header)
        promised = " ".join(ramxchg(argv[0], "--help").out.split())
        assert " ".join(columns) in promised, (argv, columns)  # 28845df: status, no POOLED
        rows = ramxchg(*argv, root=root).rows()
        if argv[0] == "status":  # after the disk's fields: "channel", then the columns
            rows = [row[1:] for row in rows if row[0] == "channel"]
        assert rows
        assert all(len(row) == len(columns) for row in rows), (argv, rows)


def test_a_skip_reason_with_brackets_keeps_them() -> None:
    result = {
        "machine": {"cpus": 2, "kernel": "6.1"},
        "config": {"quick": True},
        "memcpy_gbps": 10.0,
        "transports": [
            {
                "label": "ray",
                "skipped": "ray is not installed (pip install 'ramxchg[ray]')",
                "results": [],
            }
        ],
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(rich_table(result))
    assert "pip install 'ramxchg[ray]'" in console.file.getvalue()


def test_a_skip_reason_with_brackets_keeps_them_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ramxchg bench`` where Ray is not installed, on a terminal (rich's output)."""
    no_ray = tmp_path / "no-ray"
    no_ray.mkdir()
    # Imported by every Python started with this path: "import ray" fails, as uninstalled.
    (no_ray / "sitecustomize.py").write_text('import sys\n\nsys.modules["ray"] = None\n')
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(no_ray), os.environ.get("PYTHONPATH", "")])
    )
    done = on_terminal("bench", "--quick", "--only", "ray")
    shown = " ".join(done.out.split())
    assert "skipped: ray is not installed" in shown, done.out
    assert "(pip install 'ramxchg[ray]')" in shown, done.out
