"""One size formatter: what people read (bench, demo, status, errors) and what ``mount``
and ``--size`` read back, both from `ramxchg.disks.format_size`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ramxchg import Channel
from ramxchg.cli._demo import summary_table
from ramxchg.demo import DemoSummary
from ramxchg.disks import format_size, parse_size
from ramxchg.disks.probe import info
from tests.conftest import run_cli

PACKAGE = Path(__file__).resolve().parent.parent / "ramxchg"
KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
#: What `format_size` shows people.
SIZE = r"(\d+ B|\d+(\.\d+)? [KMGTPE]B)"


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (KB, "1 KB"),
        (64 * KB, "64 KB"),
        (1000 * KB, "1000 KB"),
        (MB - 1, "1 MB"),  # not "1024 KB"
        (8 * MB, "8 MB"),
        (65568 * KB, "64 MB"),  # the demo's peak RAM-disk use, once "65568K"
        (int(65.6 * MB), "65.6 MB"),
        (int(104.0 * MB), "104 MB"),  # status, once "104.0 MiB"
        (512 * MB, "512 MB"),
        (1536 * MB, "1.5 GB"),
        (5 * 1024 * GB, "5 TB"),
    ],
)
def test_sizes_for_people(nbytes: int, text: str) -> None:
    assert format_size(nbytes) == text
    if nbytes:  # what people read, they can type back (rounded to 3 digits)
        assert abs(parse_size(text) - nbytes) <= nbytes * 0.005


def test_exact_sizes_read_back_by_mount_and_parse_size() -> None:
    assert format_size(8 * GB, exact=True) == "8G"
    assert format_size(1536 * MB, exact=True) == "1536M"
    assert format_size(65568 * KB, exact=True) == "65568K"
    assert format_size(1000, exact=True) == "1000"
    for text in ("8G", "512M", "3K", "1000"):
        assert format_size(parse_size(text), exact=True) == text


def _functions_formatting_bytes(tree: ast.AST) -> list[str]:
    """Functions whose body walks a list of byte units: a formatter of their own."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            texts = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)}
            if texts & {"KiB", "MiB", "KB", "MB", " KB", " MB"}:
                found.append(node.name)
    return found


def test_no_other_module_formats_sizes_itself() -> None:
    others = {
        str(path.relative_to(PACKAGE)): names
        for path in PACKAGE.rglob("*.py")
        if path.name != "units.py"
        and (names := _functions_formatting_bytes(ast.parse(path.read_text())))
    }
    assert others == {}


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_demo_summary_shows_sizes_like_everything_else() -> None:
    summary = DemoSummary(
        channel="demo-1", format="npy", shape=[2048, 2048], dtype="uint16",
        frame_bytes=8 * MB, seconds=10.0, published=9, received=9, lost=0, duplicates=0,
        corrupt=0, gbps=1.5, frames_per_second=180.0, latency_p50_ms=1.0,
        latency_p99_ms=2.0, latency_max_ms=3.0, peak_ram_disk_bytes=65568 * KB,
        mean_of_means=1.0, left_behind=False,
    )  # fmt: skip
    text = _text(summary_table(summary))
    assert "2048x2048 uint16 (8 MB), npy" in text
    assert re.search(r"peak RAM-disk use\W+64 MB ", text), text


def test_status_shows_sizes_like_everything_else(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Channel("cam").put(np.zeros(1000, np.uint8))
    code, out, _ = run_cli(capsys, "status")
    assert code == 0
    # piped: exact bytes, for programs (a terminal shows them for people: test_cli_output)
    assert re.search(rf"^size\t{info(root).total_bytes}$", out, re.M), out
    assert re.search(r"^channel\tcam\t1\t\d+\t", out, re.M), out
