"""The public API reads well: `help(Channel)`, `ChannelNotFound`, typed signatures."""

from __future__ import annotations

import inspect
import pickle
import pydoc
import typing
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import ramxchg
from ramxchg import Channel, ChannelFull, ChannelNotFound, Item, ItemNotFound, RamDiskFull


def test_a_missing_channel_opened_for_reading_is_channel_not_found(root: Path) -> None:
    with pytest.raises(ChannelNotFound, match="no channel 'typo'") as caught:
        Channel("typo", create=False)
    error = caught.value
    # the classes callers already catch, and the facts
    assert isinstance(error, ItemNotFound)
    assert isinstance(error, FileNotFoundError)
    assert (error.path, error.name) == (str(root / "typo"), "typo")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.path) == (ChannelNotFound, str(error), error.path)
    assert not (root / "typo").exists()


def test_a_missing_root_is_named_as_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ChannelNotFound, match=r"the root .*nowhere does not exist"):
        Channel("cam", root=missing, create=False)
    assert not missing.exists()


def test_a_missing_folder_named_by_path_is_channel_not_found(tmp_path: Path) -> None:
    with pytest.raises(ChannelNotFound, match="no channel folder"):
        Channel(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_help_shows_the_mode_in_octal_and_the_choices_of_start() -> None:
    text = pydoc.render_doc(Channel, renderer=pydoc.plaintext)
    assert "mode: 'int' = 0o700" in text
    assert "start: \"Literal['earliest', 'latest']\" = 'earliest'" in text
    assert "watch: \"Literal['auto', 'events', 'polling']\" = 'auto'" in text


def test_signatures_name_real_types_not_any() -> None:
    create = inspect.signature(Channel.create)
    assert create.return_annotation == "Iterator[np.ndarray]"
    assert create.parameters["shape"].annotation == "ShapeInput"
    assert create.parameters["dtype"].annotation == "DTypeLike"
    assert inspect.signature(Channel.put).parameters["array"].annotation == "ArrayInput"


@pytest.mark.parametrize("cls", [Channel, Item])
def test_every_public_annotation_resolves_to_a_type(cls: type) -> None:
    """What `typing.get_type_hints` (and so type checkers, IDEs and Sphinx) read: a
    name imported only for type checking would raise NameError here."""
    for name, member in vars(cls).items():
        function = member.fget if isinstance(member, property) else member
        if (name == "__init__" or not name.startswith("_")) and callable(function):
            typing.get_type_hints(function)


def test_the_types_people_read_in_help(root: Path) -> None:
    assert typing.get_type_hints(Channel.subscribe)["start"] == Literal["earliest", "latest"]
    assert typing.get_type_hints(Channel.create)["return"] == Iterator[np.ndarray]
    assert typing.get_type_hints(Channel.get)["return"] is Item
    assert typing.get_type_hints(Channel.put)["return"] is Item
    channel = Channel("cam")
    creating = channel.create((2, 3), "f4", name="a")
    assert isinstance(creating, AbstractContextManager)  # used as `with ... as array`
    with creating as array:
        assert isinstance(array, np.ndarray)
        array[:] = 1
    assert channel.get("a").array.sum() == 6


def test_the_octal_default_is_a_plain_int(root: Path) -> None:
    default = inspect.signature(Channel).parameters["mode"].default
    assert default == 0o700
    assert isinstance(default, int)
    channel = Channel("cam")
    assert channel.path.stat().st_mode & 0o777 == 0o700
    channel.put(np.zeros(1))
    assert "ChannelNotFound" in ramxchg.__all__


def test_full_channel_and_disk_errors_give_sizes_for_people(root: Path) -> None:
    bounded = Channel("bounded", max_bytes=1 << 20)
    bounded.put(np.zeros(600 << 10, np.uint8))
    with pytest.raises(ChannelFull) as full:
        bounded.put(np.zeros(600 << 10, np.uint8), timeout=0)
    message = str(full.value)
    assert "600 KB" in message
    assert "max_bytes=1 MB" in message
    assert full.value.max_bytes == 1 << 20  # the exact numbers stay on the error
    reserved = Channel("reserved", reserve_bytes=1 << 50)
    with pytest.raises(RamDiskFull) as short:
        reserved.put(np.zeros(10, np.uint8), timeout=0)
    assert "the reserve of 1 PB" in str(short.value)
    assert short.value.reserve_bytes == 1 << 50
