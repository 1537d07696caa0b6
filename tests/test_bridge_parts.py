"""The bridge's parts that need no Ray cluster: node choice, the receiver, its ledger."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ramxchg import Channel, ItemExists
from ramxchg.bridge import NodeNotFound, resolve_node
from ramxchg.bridge._receiver import Ledger, Receiver, item_key
from tests.conftest import mounted_tmpfs, wait_for

A, B, C = "a" * 56, "b" * 56, "c" * 56
NODES = [
    {"NodeID": A, "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 4.0}},
    {"NodeID": B, "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {"gpu-box": 1.0}},
    {"NodeID": C, "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {"CPU": 1.0}},
    {"NodeID": "d" * 56, "NodeManagerAddress": "10.0.0.3", "Alive": False, "Resources": {}},
]


def test_a_node_is_named_by_id_ip_or_custom_resource() -> None:
    assert resolve_node(B.upper(), NODES) == B
    assert resolve_node("10.0.0.1", NODES) == A
    assert resolve_node("resource:gpu-box", NODES) == B


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10.0.0.2", f"2 Ray nodes have IP address 10.0.0.2: {B} at 10.0.0.2 (gpu-box); {C}"),
        ("10.0.0.3", "no live Ray node has IP address 10.0.0.3"),  # only a dead one
        ("resource:CPU", "2 Ray nodes have custom resource 'CPU'"),
        ("resource:tpu", "no live Ray node has custom resource 'tpu'"),
        ("gpu-box", "is not a node id (56 hex digits), an IP address or resource:NAME"),
    ],
)
def test_a_node_spec_that_is_not_one_live_node_is_refused(spec: str, message: str) -> None:
    with pytest.raises(NodeNotFound) as caught:
        resolve_node(spec, NODES)
    assert message in str(caught.value)


def _origin(name: str, seq: int | None = 3) -> dict[str, Any]:
    return {"host": "acq", "channel": "/dev/shm/r/cam", "name": name, "seq": seq, "published_ns": 5}


def _file(root: Path, array: np.ndarray) -> np.ndarray:
    """An item file's bytes, as the receiver gets them from Ray (made in a channel of
    ``root``, the test's RAM-disk root)."""
    item = Channel("src", root=root).put(array)
    return np.frombuffer(item.path.read_bytes(), np.uint8)


def test_a_copy_sent_again_is_delivered_once_even_after_it_was_consumed(
    root: Path, tmp_path: Path
) -> None:
    data = _file(root, np.arange(10))
    receiver = Receiver("cam", str(root), "b1", 100)
    assert receiver.deliver(data, "f", "npy", {"k": 1}, _origin("f")) == {
        "status": "published",
        "seq": 1,
    }
    dest = Channel("cam", root=root)
    assert dest.get("f").origin == _origin("f")
    # Sent again (the bridge was killed before its ack): the copy is there.
    assert receiver.deliver(data, "f", "npy", {"k": 1}, _origin("f"))["status"] == "present"
    # Consumed and deleted at the destination, then sent again by a restarted bridge.
    dest.delete("f")
    receiver.close()
    restarted = Receiver("cam", str(root), "b1", 100)
    assert restarted.deliver(data, "f", "npy", {"k": 1}, _origin("f"))["status"] == "present"
    assert "f" not in dest
    # Another bridge (another ledger) publishes it: its copy is its own business.
    other = Receiver("cam", str(root), "b2", 100)
    assert other.deliver(data, "f", "npy", {}, _origin("f"))["status"] == "published"
    for each in (restarted, other):
        each.close()


def test_another_item_of_the_same_name_is_a_conflict(root: Path, tmp_path: Path) -> None:
    Channel("cam", root=root).put(np.zeros(2), "f")  # published there by someone else
    receiver = Receiver("cam", str(root), "b1", 100)
    with pytest.raises(ItemExists) as caught:
        receiver.deliver(_file(root, np.ones(2)), "f", "npy", {}, _origin("f"))
    receiver.close()
    assert caught.value.existing_origin is None
    assert caught.value.origin == _origin("f")
    assert "not a copy of item 'f'" in str(caught.value)
    np.testing.assert_array_equal(Channel("cam", root=root).get("f").array, np.zeros(2))


def test_the_ledger_keeps_two_generations(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / ".bridge-x.ledger", lines=2)
    keys = [item_key(_origin(f"i{n}", n)) for n in range(5)]
    for key in keys:
        ledger.add(key)
    ledger.close()
    with (tmp_path / ".bridge-x.ledger").open("a") as cut:
        cut.write("9\t5\tcut-short")  # a kill in the middle of a line
    reopened = Ledger(tmp_path / ".bridge-x.ledger", lines=2)
    reopened.close()
    assert [key in reopened for key in keys] == [False, False, True, True, True]
    assert "9\t5\tcut-short" not in reopened
    assert item_key(_origin("legacy", None)) == "\t5\tlegacy"


def test_a_full_ram_disk_holds_the_item_back_until_room_is_made(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mounted_tmpfs(tmp_path / "ram", 2 << 20) as ram:
        dest = Channel("cam", root=ram)
        filler = dest.put(np.zeros(180_000))  # 1.4 MB of the 2 MB
        receiver = Receiver("cam", str(ram), "b1", 100)
        data = _file(root, np.arange(120_000.0))  # 0.96 MB: does not fit
        answers: list[dict[str, Any]] = []
        caplog.set_level(logging.WARNING, logger="ramxchg.bridge._receiver")
        sender = threading.Thread(
            target=lambda: answers.append(receiver.deliver(data, "f", "npy", {}, _origin("f")))
        )
        sender.start()
        wait_for(lambda: "waiting for room for f" in caplog.text, 10, "the receiver to wait")
        assert "f" not in dest
        dest.delete(filler.name)
        sender.join(10)
        receiver.close()
        assert answers == [{"status": "published", "seq": 2}]
        np.testing.assert_array_equal(dest.get("f").array, np.arange(120_000.0))


def test_without_ray_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "ray.py").write_text("raise ImportError('no Ray on this host')\n")
    result = subprocess.run(
        [sys.executable, "-m", "ramxchg", "bridge", "cam", "cam", "--node", "resource:x"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "RAMXCHG_ROOT": str(tmp_path / "root")},
        check=False,
    )
    assert result.returncode == 1
    assert 'pip install "ramxchg[ray]"' in result.stderr
