"""The README's quickstart and the examples in docs/ run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ramxchg._store.config import DEFAULT_RECYCLE
from ramxchg._store.layout import STATE_DIR

REPO = Path(__file__).resolve().parent.parent


def _run(code: str | Path, root: Path) -> str:
    """Run code (or a script file: spawn needs an importable __main__) with its own root."""
    env = {**os.environ, "RAMXCHG_ROOT": str(root)}
    args = [str(code)] if isinstance(code, Path) else ["-c", code]
    result = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _left_behind(root: Path) -> list[str]:
    """Items, sidecars, temporary files and the like left in the root's channels.

    Pooled files are not leftovers: recycling (on by default) keeps a few deleted item
    files for later items, at most ``DEFAULT_RECYCLE`` per channel.
    """
    for pool in root.glob(f"*/{STATE_DIR}/pool"):
        assert len(os.listdir(pool)) <= DEFAULT_RECYCLE, pool
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file()
        and path.parent.name != "pool"
        and (
            path.suffix in (".npy", ".h5") or path.parent.name in ("meta", "tmp", "claims", "acks")
        )
    )


def test_readme_quickstart_runs_twice_and_leaves_nothing(root: Path) -> None:
    readme = (REPO / "README.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", readme, re.S)
    for _ in range(2):  # a second run meets what the first left
        out = _run(code, root)
        assert "(2048, 2048) uint16 42.0 {}" in out
        assert _left_behind(root) == []


def test_readme_has_exactly_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, re.S)
    assert [c.strip() for c in commands] == [
        "pip install . && ramxchg demo",
        'pip install -e ".[test]" && python -m pytest',
    ]
    assert commands[1].strip() in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("example", ["quickstart.py"])
def test_docs_examples_run_twice_and_leave_nothing(root: Path, example: str) -> None:
    for _ in range(2):
        out = _run(REPO / "docs" / "examples" / example, root)
        assert out.count("got ") == 3
        assert _left_behind(root) == []


def test_architecture_names_only_modules_that_exist() -> None:
    """docs/architecture.md stays true to the tree: every module it names is there."""
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:ramxchg/)?[\w/]+\.py)`", text))
    assert len(named) > 30
    modules = [path.relative_to(REPO).as_posix() for path in (REPO / "ramxchg").rglob("*.py")]
    missing = [name for name in sorted(named) if not any(m.endswith(name) for m in modules)]
    assert missing == []
    core = [m for m in modules if m.split("/")[1] in ("_store", "_delivery", "formats", "disks")]
    unnamed = [m for m in core if not m.endswith("__init__.py") and m.split("/")[-1] not in text]
    assert unnamed == [], "docs/architecture.md should say where these modules belong"
