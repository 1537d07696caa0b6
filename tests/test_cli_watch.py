"""``ramxchg watch``: printing, --exec with acks, retries, dead letters and Ctrl-C."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shlex
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import pytest

from ramxchg import Channel, ItemNotFound
from ramxchg._store.aside import read_reason
from tests.conftest import run_cli

from .conftest import wait_for


def _acked(channel: Channel, group: str, name: str) -> bool:
    return (channel.path / ".ramxchg" / "groups" / group / "acks" / name).exists()


def _claims(channel: Channel, group: str) -> list[str]:
    return os.listdir(channel.path / ".ramxchg" / "groups" / group / "claims")


def test_watch_prints_one_line_or_json_per_item(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = Channel("cam")
    channel.put(np.zeros((2, 3), "<i2"), attrs={"run": 7})
    channel.put({"a": np.ones(2), "b": np.ones(3)}, format="hdf5")
    code, out, _ = run_cli(capsys, "watch", "cam", "--count", "2")
    assert code == 0
    first, second = (line.split("\t") for line in out.splitlines())
    path = channel.path / "000000000001.npy"
    published_ns = channel.get("000000000001").published_ns
    published = datetime.fromtimestamp(published_ns // 10**9, timezone.utc).replace(
        microsecond=published_ns % 10**9 // 1000
    )
    assert first == [
        "000000000001",
        "1",
        "npy",
        str(path.stat().st_size),
        published.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "2x3",
        "<i2",
        str(path),
    ]
    assert second[:3] + second[5:7] == ["000000000002", "2", "hdf5", "-", "-"]
    code, out, _ = run_cli(capsys, "watch", "cam", "--count", "2", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0] == {
        "name": "000000000001",
        "seq": 1,
        "path": str(channel.path / "000000000001.npy"),
        "format": "npy",
        "bytes": path.stat().st_size,
        "published_ns": published_ns,
        "published": published.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "shape": [2, 3],
        "dtype": "<i2",
        "arrays": {"data": {"shape": [2, 3], "dtype": "<i2"}},
        "attrs": {"run": 7},
    }
    assert records[1]["arrays"] == {
        "a": {"shape": [2], "dtype": "<f8"},
        "b": {"shape": [3], "dtype": "<f8"},
    }


def test_exec_success_acks_with_placeholders_and_environment(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = Channel("cam")
    channel.subscribe(group="g").close()
    names = [channel.put(np.arange(4.0) * i, attrs={"i": i}).name for i in range(3)]
    report = tmp_path / "report"
    script = (
        "import json, os, sys; "
        f"open({str(report)!r}, 'a').write(json.dumps([sys.argv[1:], "
        "{k: v for k, v in os.environ.items() if k.startswith('RAMXCHG_')}]) + '\\n')"
    )
    command = shlex.join([sys.executable, "-c", script, "{path}", "{name}", "seq={seq}"])
    code, _, err = run_cli(
        capsys, "watch", "cam", "--group", "g", "--exec", command, "--count", "3", "--jobs", "2"
    )
    assert code == 0, err
    runs = sorted((json.loads(line) for line in report.read_text().splitlines()), key=str)
    for (argv, env), name, i in zip(runs, names, range(3), strict=True):
        path = str(channel.path / f"{name}.npy")
        assert argv == [path, name, f"seq={i + 1}"]
        assert env["RAMXCHG_NAME"] == name
        assert env["RAMXCHG_SEQ"] == str(i + 1)
        assert env["RAMXCHG_PATH"] == path
        assert json.loads(env["RAMXCHG_SHAPE"]) == [4]
        assert env["RAMXCHG_DTYPE"] == "<f8"
        assert json.loads(env["RAMXCHG_ATTRS"]) == {"i": i}
        assert env["RAMXCHG_GROUP"] == "g"
        assert env["RAMXCHG_ATTEMPT"] == "1"
    # Every group acked: retention deleted the items.
    assert channel.names() == []


def test_failing_command_is_retried_then_dead_lettered(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = Channel("cam")
    channel.subscribe(group="g").close()
    bad = channel.put(np.ones(3), name="bad", attrs={"why": "poison"})
    good = channel.put(np.ones(3), name="good")
    log = tmp_path / "attempts"
    command = f"sh -c 'echo $RAMXCHG_ATTEMPT >> {log}.{{name}}; test {{name}} = good || exit 3'"
    code, _, err = run_cli(
        capsys,
        *("watch", "cam", "--group", "g", "--exec", command),
        *("--retries", "2", "--retry-delay", "0", "--count", "2"),
    )
    assert code == 1  # something was dead-lettered
    assert Path(f"{log}.bad").read_text().split() == ["1", "2", "3"]
    assert Path(f"{log}.good").read_text().split() == ["1"]
    assert "attempt 3 of 3" in err
    dead = channel.path / ".ramxchg" / "dead" / "bad.npy"
    assert dead.exists()
    assert not os.path.exists(bad.path)
    reason = read_reason(dead)
    assert reason["reason"] == "exit status 3"
    assert reason["exit_status"] == 3
    assert reason["attempts"] == 3
    assert reason["name"] == "bad"
    assert reason["seq"] == 1
    assert reason["group"] == "g"
    assert reason["attrs"] == {"why": "poison"}
    assert reason["command"] == command
    assert not _acked(channel, "g", "bad")
    assert _claims(channel, "g") == []
    assert good.name not in channel  # acked, so released


def test_missing_program_is_a_failure_not_a_crash(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = Channel("cam")
    channel.put(np.ones(3), name="x")
    code, _, err = run_cli(
        capsys,
        *("watch", "cam", "--exec", "/nonexistent/tool {path}", "--retries", "0", "--count", "1"),
    )
    assert code == 1
    assert "cannot run '/nonexistent/tool'" in err
    assert (channel.path / ".ramxchg" / "dead" / "x.npy").exists()


def _watch_process(channel: Channel, command: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "ramxchg", "watch", str(channel.path), "--group", "g"]
    return subprocess.Popen(
        [*argv, "--exec", command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_finishes_the_running_command_and_takes_no_more(root: Path, tmp_path: Path) -> None:
    channel = Channel("cam")
    channel.subscribe(group="g").close()
    first = channel.put(np.ones(3)).name
    second = channel.put(np.ones(3)).name
    go = tmp_path / "go"
    command = f"sh -c 'touch {tmp_path}/started.{{name}}; while [ ! -e {go} ]; do sleep 0.02; done'"
    with _watch_process(channel, command) as proc:
        wait_for((tmp_path / f"started.{first}").exists, 30, "the command")
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        assert "finishing running commands" in proc.stderr.readline()
        go.touch()  # the running command now succeeds
        assert proc.wait(30) == 130
        proc.stderr.read()
    assert first not in channel  # acked by the only group: deleted
    assert second in channel
    assert not (tmp_path / f"started.{second}").exists()
    assert not _acked(channel, "g", second)
    assert _claims(channel, "g") == []


def test_second_ctrl_c_abandons_the_command_without_acking(root: Path, tmp_path: Path) -> None:
    channel = Channel("cam")
    channel.subscribe(group="g").close()
    name = channel.put(np.ones(3)).name
    pid_file = tmp_path / "pid"
    command = f"sh -c 'echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; exec sleep 60'"
    with _watch_process(channel, command) as proc:
        wait_for(pid_file.exists, 30, "the command to start")
        child = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        assert "finishing running commands" in proc.stderr.readline()
        assert psutil.pid_exists(child)  # the first Ctrl-C lets it run
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        proc.stderr.read()
    wait_for(lambda: not psutil.pid_exists(child), 10, "the command to be killed")
    assert name in channel
    assert not _acked(channel, "g", name)
    assert _claims(channel, "g") == []
    assert not (channel.path / ".ramxchg" / "dead").exists()


SPAWN = mp.get_context("spawn")


def _publish_fast(root: str, count: int) -> None:
    channel = Channel("fast", root=root)
    for index in range(count):
        channel.put(np.full(1000, index), name=f"i{index}")
    channel.put(np.ones(3), name="last")


def test_an_item_retired_before_it_is_read_raises_item_not_found(root: Path) -> None:
    channel = Channel("cam")
    channel.put(np.ones(3), name="a")
    channel.put({"x": np.ones(3)}, name="b", format="hdf5")
    with channel.subscribe() as subscription:
        items = [subscription.get(timeout=10), subscription.get(timeout=10)]
        for item in items:
            channel.delete(item.name)  # retention, between delivery and reading
            with pytest.raises(ItemNotFound, match="gone") as raised:
                item.layouts()
            assert raised.value.path == str(item.path)
            with pytest.raises(ItemNotFound):
                item.arrays  # noqa: B018


def test_watch_skips_items_retired_before_it_reads_them(root: Path, tmp_path: Path) -> None:
    """keep_last=1 and a fast producer: items vanish between delivery and reading."""
    Channel("fast", keep_last=1)
    out = tmp_path / "out"
    with (
        out.open("w") as stdout,
        subprocess.Popen(
            ["ramxchg", "watch", "fast", "--json"], stdout=stdout, stderr=subprocess.PIPE, text=True
        ) as watch,
    ):
        producer = SPAWN.Process(target=_publish_fast, args=(str(root), 2000))
        producer.start()
        producer.join(120)
        assert producer.exitcode == 0
        wait_for(lambda: '"last"' in out.read_text() or watch.poll() is not None, 60, "last")
        alive = watch.poll() is None
        watch.send_signal(signal.SIGTERM)
        assert watch.stderr is not None
        err = watch.stderr.read()
        assert alive, f"watch died: {err[-2000:]}"
        assert watch.wait(30) == 130
    assert "Traceback" not in err
    for line in err.splitlines():
        assert "was deleted before it was read" in line, line


def test_exec_with_big_attrs_passes_them_through_a_file(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Linux refuses one environment string over 128 KiB (E2BIG): a limit of ours, so
    the attrs go through a file and the item is never dead-lettered for it."""
    channel = Channel("cam")
    channel.subscribe(group="g").close()
    big = {"notes": "x" * (200 << 10), "n": 1}
    channel.put(np.ones(3), name="big", attrs=big)
    channel.put(np.ones(3), name="small", attrs={"n": 2})
    report = tmp_path / "report"
    script = (
        "import json, os, sys; env = os.environ; file = env.get('RAMXCHG_ATTRS_FILE'); "
        "attrs = json.load(open(file)) if file else json.loads(env['RAMXCHG_ATTRS']); "
        f"open({str(report)!r} + '.' + env['RAMXCHG_NAME'], 'w').write(json.dumps("
        "[attrs, 'RAMXCHG_ATTRS' in env, file]))"
    )
    command = shlex.join([sys.executable, "-c", script])
    code, _, err = run_cli(
        capsys, "watch", "cam", "--group", "g", "--exec", command, "--count", "2"
    )
    assert code == 0, err
    attrs, in_env, file = json.loads(Path(f"{report}.big").read_text())
    assert attrs == big
    assert not in_env
    assert not os.path.exists(file)  # removed once the command is done
    attrs, in_env, file = json.loads(Path(f"{report}.small").read_text())
    assert (attrs, in_env, file) == ({"n": 2}, True, None)
    assert not (channel.path / ".ramxchg" / "dead").exists()
    assert channel.names() == []  # both acked
