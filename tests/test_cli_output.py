"""What ``ls``, ``info``, ``watch`` and ``status`` print: a table with a header on a
terminal (run on a pseudo-terminal), stable tab-separated lines when piped; every string
from outside printed as text, never as rich markup."""

from __future__ import annotations

import io
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


def test_status_of_a_file_is_an_error_not_a_ram_disk(tmp_path: Path) -> None:
    done = ramxchg("status", "--root", "/dev/null")
    assert (done.code, done.out) == (1, "")
    assert done.err.startswith("ramxchg: error: /dev/null: not a folder")
    assert "Traceback" not in done.err


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
