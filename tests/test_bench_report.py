"""What ``ramxchg bench`` shows, from canned results (no benchmark runs here): the winner
per size, a quick table that fits 100 columns, and a plot that reads well."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ramxchg.bench import QUICK_SIZES
from ramxchg.bench.ratios import add_ratios
from ramxchg.bench.report import draw, markdown_table, plot, rich_tables, winners
from ramxchg.cli import main

REPO = Path(__file__).resolve().parent.parent
KB, MB = 1 << 10, 1 << 20


#: Transport names of the labels used here, where the name is not the label with "_"s.
NAMES = {"Ray object store": "ray", "np.save/load disk": "npy_disk"}


def _result(gbps: dict[str, dict[int, tuple[float, float, float]]]) -> dict[str, Any]:
    """A bench result: transport label -> size -> GB/s (min, median, max)."""
    transports = []
    for label, by_size in gbps.items():
        results = [
            {
                "size": size,
                "gbps": {"min": low, "median": mid, "max": high},
                "p50_us": {"min": 9.0, "median": 10.0, "max": 11.0},
                "p99_us": {"min": 19.0, "median": 20.0, "max": 21.0},
                "ratio_memcpy": mid / 10,
                "ratio_queue": None,
                "latency_vs_queue": None,
                "error": None,
            }
            for size, (low, mid, high) in by_size.items()
        ]
        name = NAMES.get(label, label.replace(" ", "_"))
        transports.append({"name": name, "label": label, "skipped": None, "results": results})
    return {
        "machine": {"cpus": 2, "kernel": "6.1"},
        "memcpy_gbps": 10.0,
        "config": {"sizes": [KB, MB, 64 * MB], "repeat": 3, "quick": False},
        "transports": transports,
    }


def _quick(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as ``--quick`` would have measured it: the quick sizes only."""
    quick = copy.deepcopy(result)
    quick["config"].update(sizes=list(QUICK_SIZES), repeat=2, quick=True)
    for entry in quick["transports"]:
        entry["results"] = [r for r in entry["results"] if r["size"] in QUICK_SIZES]
    return quick


@pytest.fixture
def measured() -> dict[str, Any]:
    """docs/bench.json: a real run with every transport (the longest labels), with the
    ratios of this version (a run recorded before iceoryx2 was added has none to it)."""
    result: dict[str, Any] = json.loads((REPO / "docs" / "bench.json").read_text())
    add_ratios(result["transports"], result["memcpy_gbps"])
    return result


def _rendered(result: dict[str, Any]) -> list[str]:
    console = Console(width=400, record=True)
    for table in rich_tables(result):
        console.print(table)
    return console.export_text().splitlines()


def test_one_line_per_size_names_the_winner_and_its_lead() -> None:
    result = _result(
        {
            "ramxchg put": {KB: (0.9, 1.0, 1.1), MB: (3.9, 4.0, 4.1)},
            "mp.Queue": {KB: (1.8, 2.0, 2.2), MB: (1.0, 1.0, 1.0)},
            "mp.Pipe bytes": {KB: (0.4, 0.5, 0.6), MB: (3.0, 3.2, 3.95)},
        }
    )
    result["transports"][2]["results"].append({"size": 64 * MB, "error": "timed out"})
    assert winners(result) == [
        "1 KB: mp.Queue won (2 GB/s), 2.00x ahead of ramxchg put",
        "1 MB: ramxchg put won (4 GB/s), 1.25x ahead of mp.Pipe bytes (ranges overlap)",
        "64 MB: no transport finished",
    ]
    result["transports"][0]["results"].append(
        {**result["transports"][0]["results"][0], "size": 64 * MB}
    )
    assert winners(result)[2] == "64 MB: ramxchg put won (1 GB/s), the only one measured"


def test_each_ramxchg_row_is_measured_against_the_peers() -> None:
    result = _result(
        {
            "ramxchg put": {KB: (0.9, 1.0, 1.1), MB: (3.9, 4.0, 4.1)},
            "iceoryx2": {KB: (1.9, 2.0, 2.1), MB: (7.9, 8.0, 8.1)},
            "Ray object store": {KB: (0.1, 0.1, 0.1)},
            "np.save/load disk": {KB: (0.4, 0.5, 0.6), MB: (1.9, 2.0, 2.1)},
        }
    )
    result["transports"][2]["results"].append({"size": MB, "error": "timed out"})
    add_ratios(result["transports"], 10.0)
    ours, iceoryx2, _, _ = result["transports"]
    assert [r["vs_peers"] for r in ours["results"]] == [
        {"iceoryx2": 0.5, "ray": 10.0, "npy_disk": 2.0},
        {"iceoryx2": 0.5, "ray": None, "npy_disk": 2.0},  # Ray failed at 1 MB
    ]
    assert "vs_peers" not in iceoryx2["results"][0]  # peers are not compared with peers
    assert winners(result)[:2] == [
        "1 KB: iceoryx2 won (2 GB/s), 2.00x ahead of ramxchg put",
        "  ramxchg put (1 GB/s): 0.50x iceoryx2, 10.00x Ray, 2.00x disk",
    ]
    assert winners(result)[3] == "  ramxchg put (4 GB/s): 0.50x iceoryx2, 2.00x disk"
    table = markdown_table(result)
    assert "| transport | size | GB/s | /iceoryx2 | /Ray | /disk |" in table
    assert "| ramxchg put | 1 MB | 4 | 0.50x | - | 2.00x |" in table


def test_no_peer_table_or_line_without_peers() -> None:
    result = _result({"ramxchg put": {KB: (0.9, 1.0, 1.1)}, "mp.Queue": {KB: (1.9, 2.0, 2.1)}})
    add_ratios(result["transports"], 10.0)
    assert winners(result) == [
        "1 KB: mp.Queue won (2 GB/s), 2.00x ahead of ramxchg put",
        "1 MB: no transport finished",
        "64 MB: no transport finished",
    ]
    assert len(rich_tables(result)) == 1
    assert "/iceoryx2" not in markdown_table(result)


def test_winners_of_a_real_run(measured: dict[str, Any]) -> None:
    lines = winners(measured)
    sizes = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert sizes == ["1 KB", "64 KB", "1 MB", "64 MB", "512 MB"]
    assert lines[:2] == [
        "1 KB: mp.Pipe bytes won (0.185 GB/s), 5.97x ahead of mp.Queue",
        "  ramxchg put, recycle (0.00359 GB/s): 4.07x Ray, 0.41x disk",
    ]


def test_the_quick_tables_fit_100_columns(measured: dict[str, Any]) -> None:
    lines = _rendered(_quick(measured))
    assert max(map(len, lines)) <= 100, "\n".join(lines)
    assert "(min-max)" not in "\n".join(lines)
    first = ["ramxchg", "create,", "huge", "tmpfs", "1", "KB"]
    huge = [line for line in lines if line.split()[:6] == first]
    assert len(huge) == 2  # in the table of every transport, and against the peers
    assert huge[1].split()[-3:] == ["-", "3.56x", "0.36x"]  # no iceoryx2 in that run
    full = _rendered(measured)
    assert any("(min-max)" in line for line in full)  # ranges when there are 3 repetitions


def test_cells_use_the_shared_size_and_time_units(measured: dict[str, Any]) -> None:
    table = markdown_table(measured)
    assert "| mp.Queue | 512 MB | 0.287 (0.282-0.321) | 0.03x | 1.00x | " in table
    assert "| 2.05 (1.89-2.14) s | 2.21 s | 1.00x |" in table
    assert "| mp.Pipe bytes | 1 KB | 0.185 (0.184-0.193) |" in table


def test_bench_command_ends_with_the_winners(
    measured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = _quick(measured)
    monkeypatch.setattr("ramxchg.cli._bench.run_bench", lambda config, tick: quick)
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = winners(quick)
    assert len(lines) == 2 * len(QUICK_SIZES)  # each size: the winner, ramxchg vs the peers
    assert out[-len(lines) :] == lines
    assert out[-len(lines) - 2].startswith("winner per size: most GB/s")
    assert max(map(len, out)) <= 100, "\n".join(out)  # piped: not squeezed to 80 either
    assert any(line.startswith(" ramxchg create, huge tmpfs   1 KB") for line in out)
    assert any(line.split()[:2] == ["transport", "size"] and "/Ray" in line for line in out)


def test_plot_labels_sizes_marks_winners_and_keeps_the_legend_off_the_data(
    measured: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib", reason="needs matplotlib (pip install 'ramxchg[plot]')")
    figure = draw(measured)
    left, right = figure.axes
    for axis in (left, right):
        assert [t.get_text() for t in axis.get_xticklabels()] == [
            "1 KB",
            "64 KB",
            "1 MB",
            "64 MB",
            "512 MB",
        ]
        assert axis.get_legend() is None  # the legend is the figure's, below the plots
        [rings] = axis.collections
        assert len(rings.get_offsets()) == 5  # one winner per size
    styles = [(str(line.get_color()), line.get_marker()) for line in left.get_lines()[:-1]]
    assert len(set(styles)) == len(styles) == len(measured["transports"])
    assert tuple(left.collections[0].get_offsets()[0]) == (1024, pytest.approx(0.185, rel=0.01))
    [legend] = figure.legends
    assert "best at that size" in [text.get_text() for text in legend.get_texts()]
    plot(measured, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
