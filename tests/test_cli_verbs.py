"""The verbs people reach for, run through the real ``ramxchg`` executable: ``rm``,
``drop``, ``requeue`` and ``ls --dead``, ``ack --json``, a global ``--root``, ``watch`` of a
missing channel, ``put --replace``, ``demo`` interrupted, shell completion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, ChannelNotFound
from tests.cli_run import Done, Terminal, executable, ramxchg
from tests.conftest import wait_for


def _dead_letter(channel: Channel, group: str = "analysis") -> None:
    with channel.subscribe(group) as sub:
        item = sub.get(timeout=10)
        item.close()
        assert sub.dead_letter(item, "exit status 3", command="false", exit_status=3)


# -- a global --root --------------------------------------------------------------------------


def test_root_before_the_command_works_like_after_it(root: Path, tmp_path: Path) -> None:
    other = root / "other-root"
    Channel("cam", other).put(np.ones(3), "a")
    before = ramxchg("--root", str(other), "ls", "cam")  # on 1e11b05: usage error, exit 2
    after = ramxchg("ls", "cam", "--root", str(other))
    assert (before.code, before.err) == (0, "")
    assert before.out == after.out
    assert before.rows()[0][0] == "a"
    assert ramxchg("--root", str(other), "status").rows()[0] == ["root", str(other)]


def test_root_before_a_command_that_takes_none_is_a_usage_error(tmp_path: Path) -> None:
    done = ramxchg("--root", str(tmp_path), "setup", "--help")
    assert done.code == 0  # --help first
    done = ramxchg("--root", str(tmp_path), "teardown", str(tmp_path / "x"))
    assert done.code == 2
    assert "teardown takes no --root" in done.err


# -- rm ---------------------------------------------------------------------------------------


def test_rm_deletes_the_items_and_reports_the_missing_ones(root: Path) -> None:
    channel = Channel("cam")
    for name in ("a", "b", "c"):
        channel.put(np.ones(2), name)
    held = channel.get("a").array
    done = ramxchg("rm", "cam", "a", "nothing", "c", "--json")
    assert done.code == 1
    assert json.loads(done.out) == {"deleted": ["a", "c"], "missing": ["nothing"]}
    [line] = done.err.splitlines()
    assert line.startswith("ramxchg: error: no item 'nothing'")
    assert channel.names() == ["b"]
    assert held.tolist() == [1.0, 1.0]  # a reader keeps what it mapped
    assert ramxchg("rm", "cam", "b") == Done(0, "", "")  # quiet, like rm


# -- ls --dead, requeue, rm --dead ------------------------------------------------------------


def test_dead_letters_are_listed_requeued_and_deleted(root: Path) -> None:
    channel = Channel("cam")
    channel.subscribe("analysis").close()
    channel.put(np.arange(3.0), "frame", attrs={"run": 2})
    channel.put(np.arange(4.0), "other")
    _dead_letter(channel)
    _dead_letter(channel)
    listed = ramxchg("ls", "cam", "--dead")
    assert listed.code == 0, listed.err
    rows = listed.rows()
    assert [row[:3] for row in rows] == [["frame.npy", "1", "npy"], ["other.npy", "2", "npy"]]
    assert [row[5] for row in rows] == ["exit status 3", "exit status 3"]
    assert json.loads(ramxchg("ls", "cam", "--dead", "--json").out)[0]["details"]["command"] == (
        "false"
    )
    done = ramxchg("requeue", "cam", "frame")  # the item's name works too
    assert done.code == 0, done.err
    [row] = done.rows()
    assert row[:3] == ["frame", "3", "npy"]
    assert channel.get("frame").attrs == {"run": 2}
    assert ramxchg("rm", "cam", "other.npy", "--dead").code == 0
    assert ramxchg("ls", "cam", "--dead").out == ""
    missing = ramxchg("requeue", "cam", "frame.npy")
    assert missing.code == 1
    assert "ramxchg ls CHANNEL --dead" in missing.err


def test_requeue_all_and_a_quarantined_file_that_still_does_not_parse(root: Path) -> None:
    channel = Channel("cam")
    channel.subscribe("analysis").close()
    for name in ("a", "b"):
        channel.put(np.ones(2), name)
        _dead_letter(channel)
    done = ramxchg("requeue", "cam", "--all", "--json")
    assert done.code == 0, done.err
    assert [record["name"] for record in json.loads(done.out)] == ["a", "b"]
    assert ramxchg("requeue", "cam").code == 2  # neither FILEs nor --all
    os.symlink("/etc/passwd", channel.path / "evil.npy")
    channel.subscribe().close()  # quarantines it
    assert ramxchg("ls", "cam", "--quarantine").rows()[0][0] == "evil.npy"
    refused = ramxchg("requeue", "cam", "evil.npy", "--quarantine")
    assert refused.code == 1
    assert "not a regular file" in refused.err
    assert channel.names() == ["a", "b"]


# -- drop -------------------------------------------------------------------------------------


def test_drop_a_group_then_the_channel(root: Path) -> None:
    channel = Channel("cam")
    channel.subscribe("analysis").close()
    channel.put(np.ones(2), "a")
    done = ramxchg("drop", "cam", "--group", "analysis")
    assert done.code == 0, done.err
    assert channel.groups() == []
    assert ramxchg("drop", "cam", "--group", "analysis").code == 1  # gone already
    refused = ramxchg("drop", "cam")
    assert refused.code == 1
    assert "holds 1 items and 0 dead letters" in refused.err
    assert channel.names() == ["a"]
    done = ramxchg("drop", "cam", "--force", "--json")
    assert json.loads(done.out) == {"channel": str(channel.path), "items": 1, "dead_letters": 0}
    assert os.listdir(root) == []
    with pytest.raises(ChannelNotFound):
        Channel("cam", create=False)
    assert ramxchg("drop", "cam").code == 1


# -- ack ----------------------------------------------------------------------------------------


def test_ack_json_and_an_item_gone_already_is_done(root: Path) -> None:
    channel = Channel("cam")
    channel.subscribe("analysis").close()
    channel.put(np.ones(2), "a")
    done = ramxchg("ack", "cam", "a", "--group", "analysis", "--json")
    assert (done.code, json.loads(done.out)) == (
        0,
        {"name": "a", "group": "analysis", "outcome": "deleted"},
    )
    again = ramxchg("ack", "cam", "a", "--group", "analysis", "--json")  # 1e11b05: exit 1
    assert (again.code, json.loads(again.out)["outcome"]) == (0, "gone")
    text = ramxchg("ack", "cam", "a", "--group", "analysis")
    assert text.code == 0
    assert text.out == "a: already done (gone: deleted, or never published)\n"
    unknown = ramxchg("ack", "cam", "a", "--group", "nobody")
    assert unknown.code == 1
    assert "no group 'nobody'" in unknown.err


# -- watch of a channel that does not exist -----------------------------------------------------


def test_watch_of_a_missing_channel_is_refused_and_creates_nothing(root: Path) -> None:
    done = ramxchg("watch", "typo", "--count", "1")  # 1e11b05: created it and waited
    assert (done.code, done.out) == (1, "")
    [line] = done.err.splitlines()
    assert "no channel 'typo'" in line
    assert "--create" in line
    assert os.listdir(root) == []


def test_watch_create_waits_for_its_producer(root: Path) -> None:
    env = {**os.environ, "RAMXCHG_ROOT": str(root)}
    with subprocess.Popen(
        [executable(), "watch", "later", "--create", "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        wait_for((root / "later" / ".ramxchg").is_dir, 60, "watch to create it")
        Channel("later").put(np.ones(2), "first")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split("\t")[0] == "first"


# -- put --replace --------------------------------------------------------------------------------


def test_put_replace_publishes_over_the_name(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "frame.npy"
    np.save(source, np.zeros(3))
    assert ramxchg("put", "cam", str(source)).code == 0
    np.save(source, np.ones(3))
    taken = ramxchg("put", "cam", str(source))
    assert taken.code == 1
    assert "--replace" in taken.err
    done = ramxchg("put", "cam", str(source), "--replace")
    assert done.code == 0, done.err
    assert done.rows()[0][:3] == ["frame", "2", "npy"]
    assert Channel("cam").get("frame").array.tolist() == [1.0, 1.0, 1.0]


# -- demo interrupted -------------------------------------------------------------------------


def test_demo_interrupted_prints_the_summary_so_far(root: Path) -> None:
    env = {**os.environ, "RAMXCHG_ROOT": str(root)}
    argv = [executable(), "demo", "--seconds", "300", "--shape", "256x256", "--json"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:

        def streaming() -> bool:
            seq_files = list(root.glob("demo-*/.ramxchg/seq"))
            return bool(seq_files) and int(seq_files[0].read_text() or 0) >= 20

        wait_for(streaming, 120, "the demo to stream 20 frames")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # 1e11b05: "ramxchg: interrupted" and no summary
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["ok"] is False
    assert summary["received"] >= 20
    assert (summary["lost"], summary["corrupt"], summary["duplicates"]) == (0, 0, 0)
    assert summary["left_behind"] is False
    assert os.listdir(root) == []


# -- shell completion -----------------------------------------------------------------------------


def _complete(shell_script: str, words: list[str], root: Path) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being typed)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"{shell_script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _ramxchg; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        [bash, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "RAMXCHG_ROOT": str(root)},
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_bash_completion_of_commands_options_and_channels(root: Path) -> None:
    Channel("camera")
    Channel("cells")
    (root / "not-a-channel").mkdir()
    script = ramxchg("completion", "bash").out
    assert _complete(script, ["ramxchg", "re"], root) == ["requeue"]
    assert set(_complete(script, ["ramxchg", "ls", "--"], root)) >= {"--dead", "--json", "--root"}
    assert _complete(script, ["ramxchg", "ls", "c"], root) == ["camera", "cells"]
    assert _complete(script, ["ramxchg", "--root", str(root), "watch", "ca"], root) == ["camera"]
    assert _complete(script, ["ramxchg", "watch", "--group", "g", "ce"], root) == ["cells"]


def _shell_on_a_terminal(argv: list[str]) -> Terminal:
    """An interactive shell on a pseudo-terminal that reads no start-up file."""
    shell = shutil.which(argv[0])
    if shell is None:
        pytest.skip(f"needs {argv[0]}")
    return Terminal(*argv[1:], program=[shell])


def _typed_tab(terminal: Terminal, line: str, shown: str) -> str:
    """Type ``line`` then Tab; what the terminal shows once ``shown`` appears after it."""
    before = len(terminal.text)
    terminal.press(line + "\t")
    text = terminal.read_until(lambda text: shown in text[before:].replace("\x08", ""))
    terminal.press("\x15")  # Ctrl-U: the line is not run
    return text


@pytest.mark.parametrize(
    ("argv", "load"),
    [
        (["bash", "--norc", "--noprofile", "-i"], 'eval "$(ramxchg completion bash)"'),
        (
            ["zsh", "-f", "-i"],
            'autoload -U compinit && compinit -u && eval "$(ramxchg completion zsh)"',
        ),
    ],
    ids=["bash", "zsh"],
)
def test_the_shell_completes_a_command_on_tab(
    argv: list[str], load: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: no file name completes instead
    with _shell_on_a_terminal(argv) as shell:
        shell.press(f"PS1='$ '; PROMPT='$ '; {load} && echo loaded-$((6 * 7))\n")
        shell.read_until(lambda text: "loaded-42" in text)  # the shell's output, not the echo
        if argv[0] == "bash":
            shell.press("complete -p ramxchg\n")
            shell.read_until(lambda text: "complete -o default -F _ramxchg ramxchg" in text)
        _typed_tab(shell, "ramxchg re", "ramxchg requeue")
        _typed_tab(shell, "ramxchg ls --de", "ramxchg ls --dead")
        shell.press("exit\n")
        assert shell.wait().code == 0


# -- docs ---------------------------------------------------------------------------------------


def test_every_command_is_in_docs_cli_and_the_readme() -> None:
    from ramxchg.cli import build_parser
    from ramxchg.cli._completion import commands_of

    repo = Path(__file__).resolve().parent.parent
    cli_doc = (repo / "docs" / "cli.md").read_text()
    readme = (repo / "README.md").read_text().split("## Command line", 1)[1].split("\n## ")[0]
    for verb in commands_of(build_parser()):
        assert f"`{verb}" in cli_doc, verb
        assert f"`{verb}" in readme or f"`ramxchg {verb}" in readme, verb
