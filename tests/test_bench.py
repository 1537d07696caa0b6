"""``ramxchg bench --quick --json``: every transport has numbers or a reason it was skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ramxchg.bench.report import markdown_table
from ramxchg.bench.suite import TRANSPORT_NAMES, transports
from ramxchg.bench.transports_ray import MAX_STORE_BYTES, MIN_STORE_BYTES, RayTransport
from ramxchg.cli import main

pytestmark = pytest.mark.slow

SPREAD = {"median", "min", "max"}
#: What issues #7 and #15 ask to compare; the suite may add variants (huge pages...).
REQUIRED = {
    "ramxchg_put",
    "ramxchg_create",
    "ramxchg_hdf5",
    "queue",
    "pipe",
    "shared_memory",
    "npy_disk",
    "ray",
    "iceoryx2",
    "arrow_shm",
}
PEERS = {"iceoryx2", "ray", "npy_disk"}


def test_quick_bench_json_structure(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--quick", "--json", "--sizes", "1K", "64K", "--repeat", "1"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["version"] == 2
    assert result["memcpy_gbps"] > 0
    assert result["config"] == {"sizes": [1024, 65536], "repeat": 1, "quick": True}
    assert {"cpus", "memory_bytes", "kernel", "python", "numpy"} <= set(result["machine"])
    names = [entry["name"] for entry in result["transports"]]
    assert names == list(TRANSPORT_NAMES)
    assert set(names) >= REQUIRED
    for entry in result["transports"]:
        if entry["skipped"]:
            assert isinstance(entry["skipped"], str)
            assert entry["results"] == []
            continue
        assert [r["size"] for r in entry["results"]] == [1024, 65536], entry
        for item in entry["results"]:
            assert item["error"] is None, item
            for key in ("gbps", "p50_us", "p99_us"):
                assert set(item[key]) == SPREAD
                assert 0 < item[key]["min"] <= item[key]["median"] <= item[key]["max"]
            assert item["ratio_memcpy"] == pytest.approx(
                item["gbps"]["median"] / result["memcpy_gbps"]
            )
            assert item["ratio_queue"] > 0
            assert item["latency_vs_queue"] > 0
            if entry["name"].startswith("ramxchg"):
                assert set(item["vs_peers"]) == PEERS
                measured = {e["name"] for e in result["transports"] if not e["skipped"]}
                for peer, ratio in item["vs_peers"].items():
                    assert (ratio is not None) == (peer in measured), (peer, item)
            else:
                assert "vs_peers" not in item
    queue = next(e for e in result["transports"] if e["name"] == "queue")
    assert all(r["ratio_queue"] == pytest.approx(1.0) for r in queue["results"])
    assert "| ramxchg put | 1 KB |" in markdown_table(result)
    assert list(root.iterdir()) == []  # no channel left behind


def test_bench_only_selects_transports(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--quick", "--json", "--sizes", "1K", "--only", "pipe", "queue"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [e["name"] for e in result["transports"]] == ["queue", "pipe"]


def test_bench_refuses_bad_arguments() -> None:
    assert main(["bench", "--repeat", "0"]) == 2
    assert main(["bench", "--sizes", "lots"]) == 2
    assert main(["bench", "--only", "carrier-pigeon"]) == 2


def test_the_ray_store_is_sized_by_the_run() -> None:
    """Ray faults its whole store in as it starts, within 30 s: a quick run's is small,
    a run of 512 MB messages gets room for two in flight and as much again."""

    def store(sizes: tuple[int, ...]) -> int:
        [ray] = [t for t in transports(None, None, sizes) if isinstance(t, RayTransport)]
        return ray.store_bytes

    assert store((1024, 65536, 1 << 20)) == MIN_STORE_BYTES  # on f23ea27: 2 GiB for all
    assert store((32 << 20,)) == 1 << 30  # 16 in flight, twice
    assert store((1024, 512 << 20)) == MAX_STORE_BYTES
