"""An item whose sidecar is not valid is legacy, for the listing and for `Item` alike.

docs/protocol.md, section 3: a sidecar that is not valid JSON or has fields of the
wrong type makes its item legacy: no sequence number, the publish time of a legacy
file, delivered after the sequenced items.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ramxchg import Channel, Item
from ramxchg._store.scan import Entry, look
from ramxchg._store.sidecar import MAX_SIDECAR_BYTES
from tests.conftest import file_clock_passes

GOOD = {"version": 1, "seq": 1, "format": "npy", "published_ns": 1, "attrs": {"k": 1}}

BAD_SIDECARS = {
    "seq_text": json.dumps({**GOOD, "seq": "1"}),
    "seq_zero": json.dumps({**GOOD, "seq": 0}),
    "seq_float": json.dumps({**GOOD, "seq": 1.0}),
    "published_text": json.dumps({**GOOD, "published_ns": "yesterday"}),
    "published_bool": json.dumps({**GOOD, "published_ns": True}),
    "format_number": json.dumps({**GOOD, "format": 3}),
    "attrs_list": json.dumps({**GOOD, "attrs": [1, 2]}),
    "missing_seq": json.dumps({key: v for key, v in GOOD.items() if key != "seq"}),
    "not_an_object": json.dumps([1, 2, 3]),
    "not_json": "{seq: 1",
    "oversized": " " * (MAX_SIDECAR_BYTES + 1),
}


def _listed(ch: Channel, name: str) -> Entry:
    """The item as the channel's listing classifies it."""
    found = look(ch._layout, f"{name}.npy")
    assert isinstance(found, Entry)
    return found


def _assert_legacy(item: Item, listed: Entry) -> None:
    assert item.sidecar is None
    assert item.seq is None
    assert item.published_ns == listed.published_ns
    assert item.attrs == {}
    assert "seq=None" in repr(item)
    np.testing.assert_array_equal(item.array, np.arange(5))


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_an_item_with_a_bad_sidecar_is_legacy_everywhere(root: Path, case: str) -> None:
    ch = Channel("bad-sidecar")
    good = ch.put(np.arange(3), "good")
    file_clock_passes(good.published_ns, root / "probe")  # "bad" arrives after "good"
    ch.put(np.arange(5), "bad")
    (ch.path / ".ramxchg" / "meta" / "bad.json").write_text(BAD_SIDECARS[case])
    listed = _listed(ch, "bad")
    assert listed.seq is None

    _assert_legacy(ch.get("bad"), listed)
    # ordered as legacy, by arrival (after "good"), and the item built from the listing
    # (which carries no sidecar) agrees
    items = ch.items()
    assert [item.name for item in items] == ["good", "bad"]
    _assert_legacy(items[1], listed)
    latest = ch.latest()
    assert latest is not None
    _assert_legacy(latest, listed)


def test_a_group_member_acks_an_item_with_a_bad_sidecar(root: Path) -> None:
    ch = Channel("bad-sidecar-group")
    ch.subscribe(group="other").close()
    with ch.subscribe(group="g", settle=0.0) as sub:
        ch.put(np.arange(5), "bad")
        (ch.path / ".ramxchg" / "meta" / "bad.json").write_text(BAD_SIDECARS["seq_text"])
        item = sub.get(timeout=30)
        assert item.name == "bad"
        _assert_legacy(item, _listed(ch, "bad"))
        item.ack()
    # the channel-level ack reads the item's seq and publish time too
    assert ch.ack("bad", "other") is True
    assert ch.names() == []
