"""attrs people pass: converted to JSON by the rules of docs/protocol.md section 3, the same
for both formats, read back as plain Python values; what has no JSON form is refused
with `InvalidAttrs` naming the key, before anything is written."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import pickle
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np
import pytest

from ramxchg import Channel, InvalidAttrs
from ramxchg._store.sidecar import MAX_ATTR_ARRAY_ELEMENTS, MAX_ATTRS_DEPTH, MAX_SIDECAR_BYTES
from ramxchg.formats.hdf5 import JSON_ATTRS
from tests.conftest import run_cli, tmp_files

REPO = Path(__file__).resolve().parent.parent
FORMATS = ["npy", "hdf5"]
CET = dt.timezone(dt.timedelta(hours=1))

#: (what people pass, what every reader gets back): one row per rule of the table.
CONVERTED: dict[str, tuple[Any, Any]] = {
    "np.float32": (np.float32(5), 5.0),
    "np.float32 shortest": (np.float32(0.1), 0.1),
    "np.float16": (np.float16(0.5), 0.5),
    "np.float64": (np.float64(2.5), 2.5),
    "np.int16": (np.int16(-3), -3),
    "np.uint64 max": (np.uint64(2**64 - 1), 2**64 - 1),
    "np.bool_": (np.bool_(True), True),
    "np.str_": (np.str_("left"), "left"),
    "array 2-d int": (np.array([[1, 2], [3, 4]], np.int32), [[1, 2], [3, 4]]),
    "array float32": (np.array([0.5, 0.1], np.float32), [0.5, 0.1]),
    "array bool": (np.array([True, False]), [True, False]),
    "array 0-d": (np.array(7, np.uint8), 7),
    "array of text": (np.array(["a", "bc"]), ["a", "bc"]),
    "array limit": (np.zeros(MAX_ATTR_ARRAY_ELEMENTS, np.int8), [0] * MAX_ATTR_ARRAY_ELEMENTS),
    "datetime aware": (
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=CET),
        "2024-05-06T07:08:09.123456+01:00",
    ),
    "datetime naive": (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
    "date": (dt.date(2024, 5, 6), "2024-05-06"),
    "time": (dt.time(7, 8, 9), "07:08:09"),
    "np.datetime64 ms": (np.datetime64("2024-05-06T07:08:09.123"), "2024-05-06T07:08:09.123"),
    "np.datetime64 ns": (
        np.datetime64("2024-05-06T07:08:09.123456789", "ns"),
        "2024-05-06T07:08:09.123456789",
    ),
    "np.datetime64 day": (np.datetime64("2024-05-06"), "2024-05-06"),
    "datetime64 array": (
        np.array(["2024-05-06", "2024-05-07"], "M8[D]"),
        ["2024-05-06", "2024-05-07"],
    ),
    "tuple": ((1, (2, "x")), [1, [2, "x"]]),
    "path": (PurePosixPath("/data/run7"), "/data/run7"),
    "nested": (
        {"gain": np.float32(2), "roi": (np.int64(1), 2), "when": [dt.date(2024, 1, 2)]},
        {"gain": 2.0, "roi": [1, 2], "when": ["2024-01-02"]},
    ),
    "big int": (1 << 70, 1 << 70),
    "none": (None, None),
}

#: (attrs, the key path the error names, words the message must contain).
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    "nan": ({"x": float("nan")}, "attrs['x']", "NaN"),
    "infinity": ({"x": -float("inf")}, "attrs['x']", "Infinity"),
    "np.float32 nan": ({"x": np.float32("nan")}, "attrs['x']", "NaN"),
    "nan in a list": ({"x": [1.0, float("nan")]}, "attrs['x'][1]", "NaN"),
    "nan in an array": (
        {"calib": {"m": np.array([[1.0, 2.0], [np.inf, 4.0]])}},
        "attrs['calib']['m'][1][0]",
        "Infinity",
    ),
    "nat": ({"t": np.datetime64("NaT")}, "attrs['t']", "NaT"),
    "nat in an array": ({"t": np.array(["2024-01-01", "NaT"], "M8[D]")}, "attrs['t'][1]", "NaT"),
    "bytes": ({"raw": b"\x00\x01"}, "attrs['raw']", "decode"),
    "np.bytes_": ({"raw": np.bytes_(b"ab")}, "attrs['raw']", "decode"),
    "bytes array": ({"raw": np.array([b"ab"])}, "attrs['raw']", "bytes"),
    "large array": (
        {"big": np.zeros(MAX_ATTR_ARRAY_ELEMENTS + 1)},
        "attrs['big']",
        "as data",
    ),
    "complex": ({"z": 1 + 2j}, "attrs['z']", "complex"),
    "complex array": ({"z": np.ones(2, np.complex64)}, "attrs['z']", "complex"),
    "timedelta": ({"dt": dt.timedelta(seconds=3)}, "attrs['dt']", "seconds"),
    "set": ({"s": {1, 2}}, "attrs['s']", "set"),
    "object": ({"o": object()}, "attrs['o']", "object"),
    "empty key": ({"": 1}, "attrs['']", "empty"),
    "reserved key": ({JSON_ATTRS: 1}, f"attrs[{JSON_ATTRS!r}]", "reserved"),
    "int key": ({"d": {1: "a"}}, "attrs['d']", "keys must be strings"),
    "too deep": (
        {"deep": json.loads("[" * (MAX_ATTRS_DEPTH + 1) + "]" * (MAX_ATTRS_DEPTH + 1))},
        "attrs['deep']",
        "deeper than",
    ),
}


def _shape_of(value: Any) -> Any:
    """The value with every leaf replaced by its exact type: equal values of other types
    (True and 1, 5 and 5.0, a numpy float and a float) compare unequal."""
    if isinstance(value, dict):
        return {key: _shape_of(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_shape_of(v) for v in value]
    return type(value)


def _assert_plain(got: Any, expected: Any) -> None:
    assert got == expected
    assert _shape_of(got) == _shape_of(expected)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rule", list(CONVERTED))
def test_attrs_are_converted_by_the_documented_rules(root: Path, fmt: str, rule: str) -> None:
    given, expected = CONVERTED[rule]
    ch = Channel("attrs", format=fmt)
    item = ch.put(np.zeros(2), "a", attrs={"v": given})
    with ch.get("a") as again:
        _assert_plain(item.attrs, {"v": expected})
        _assert_plain(again.attrs, {"v": expected})
    if fmt == "hdf5":  # the file alone, without its sidecar, says the same
        shutil.copyfile(item.path, ch.path / "copy.h5")
        with ch.get("copy") as copy:
            assert copy.sidecar is None
            _assert_plain(copy.attrs, {"v": expected})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(REFUSED))
def test_attrs_without_a_json_form_are_refused_naming_the_key(
    root: Path, fmt: str, case: str
) -> None:
    attrs, key_path, words = REFUSED[case]
    ch = Channel("attrs", format=fmt)
    with pytest.raises(InvalidAttrs) as info:
        ch.put(np.zeros(2), "a", attrs=attrs)
    assert info.value.key_path == key_path
    assert key_path in str(info.value)
    assert words in str(info.value)
    with pytest.raises(InvalidAttrs), ch.create(2, "f8", name="a", attrs=attrs):
        pass
    assert ch.names() == []
    assert tmp_files(ch) == []


def test_invalid_attrs_are_value_and_type_errors_that_pickle() -> None:
    ch_error = InvalidAttrs("attrs['x'] is NaN", key_path="attrs['x']")
    assert isinstance(ch_error, ValueError)
    assert isinstance(ch_error, TypeError)  # what json.dumps raised for unknown types
    again = pickle.loads(pickle.dumps(ch_error))
    assert (type(again), str(again), again.key_path) == (InvalidAttrs, str(ch_error), "attrs['x']")


@pytest.mark.parametrize("depth", [MAX_ATTRS_DEPTH + 1, 100_000])
def test_deeply_nested_and_circular_attrs_give_our_error(root: Path, depth: int) -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    circular: dict[str, Any] = {}
    circular["self"] = circular
    ch = Channel("attrs")
    for attrs in ({"deep": deep}, {"loop": circular}):
        with pytest.raises(InvalidAttrs, match="deeper than"):
            ch.put(np.zeros(2), attrs=attrs)


def test_nesting_up_to_the_limit_is_kept(root: Path) -> None:
    text = "[" * MAX_ATTRS_DEPTH + "]" * MAX_ATTRS_DEPTH
    ch = Channel("attrs", format="hdf5")
    assert ch.put(np.zeros(2), attrs={"deep": json.loads(text)}).attrs == {"deep": json.loads(text)}


def test_attrs_that_are_not_a_mapping_are_refused(root: Path) -> None:
    with pytest.raises(InvalidAttrs, match="must be a dict"):
        Channel("attrs").put(np.zeros(2), attrs=[("a", 1)])  # type: ignore[arg-type]


def _publish_numpy_attrs(root: str, fmt: str) -> None:
    """In a spawned process: what a user would naturally pass."""
    import os

    os.environ["RAMXCHG_ROOT"] = root
    Channel("spawned", format=fmt).put(
        np.arange(3),
        name=f"from-{fmt}",
        attrs={
            "exposure": np.float32(0.01),
            "frame": np.int64(7),
            "ok": np.bool_(False),
            "roi": np.array([1, 2, 3, 4], np.uint16),
            "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
            "stamp": np.datetime64("2024-05-06T07:08:09", "s"),
            "shape": (2048, 2048),
        },
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_attrs_round_trip_through_another_process(root: Path, fmt: str) -> None:
    process = mp.get_context("spawn").Process(target=_publish_numpy_attrs, args=(str(root), fmt))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    with Channel("spawned").get(f"from-{fmt}") as item:
        _assert_plain(
            item.attrs,
            {
                "exposure": 0.01,
                "frame": 7,
                "ok": False,
                "roi": [1, 2, 3, 4],
                "when": "2024-05-06T07:08:09+00:00",
                "stamp": "2024-05-06T07:08:09",
                "shape": [2048, 2048],
            },
        )


def test_foreign_hdf5_array_attributes_read_as_lists(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "foreign.h5"
    with h5py.File(outside, "w") as h5file:
        h5file["data"] = np.arange(3)
        h5file["data"].attrs["scale"] = np.array([1.0, 2.0], np.float64)
        h5file.attrs["roi"] = np.array([[1, 2], [3, 4]], np.int32)
        h5file.attrs["gain"] = np.float32(2)
    ch = Channel("foreign")
    shutil.copyfile(outside, ch.path / "foreign.h5")
    with ch.get("foreign") as item:
        _assert_plain(item.attrs, {"roi": [[1, 2], [3, 4]], "gain": 2.0})
        _assert_plain(item.dataset_attrs["data"], {"scale": [1.0, 2.0]})
    code, out, err = run_cli(capsys, "info", "foreign", "foreign", "--json")
    assert code == 0, err
    assert json.loads(out)["attrs"] == {"roi": [[1, 2], [3, 4]], "gain": 2.0}


def test_cli_put_names_the_refused_key(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "frame.npy"
    np.save(source, np.zeros(2))
    code, _, err = run_cli(capsys, "put", "cam", str(source), "--attrs", '{"gain": [1, NaN]}')
    assert code == 2
    assert "attrs['gain'][1] is NaN" in err


def test_the_documented_limits_are_the_real_ones() -> None:
    protocol = (REPO / "docs" / "protocol.md").read_text()
    readme = (REPO / "README.md").read_text()
    assert f"numpy array of at most {MAX_ATTR_ARRAY_ELEMENTS} elements" in protocol
    assert f"more than {MAX_ATTR_ARRAY_ELEMENTS} elements" in protocol
    assert f"deeper than {MAX_ATTRS_DEPTH} levels" in protocol
    assert f"attrs over {MAX_SIDECAR_BYTES // 2 // 1024} KiB as JSON" in protocol
    assert f"numpy arrays up to {MAX_ATTR_ARRAY_ELEMENTS} elements" in readme
