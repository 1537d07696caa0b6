"""What `Channel.put` and `Channel.create` accept, as types and as checked values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .formats.base import check_dtype

#: What ``put`` publishes: an array (anything `numpy.asarray` takes), or for HDF5 a
#: mapping of dataset name to array.
ArrayInput = ArrayLike | Mapping[str, ArrayLike]
#: What ``create`` allocates: a shape (``int`` or a sequence of them), or for HDF5 a
#: mapping of dataset name to ``(shape, dtype)``.
ShapeInput = int | Sequence[int] | Mapping[str, tuple[Sequence[int], DTypeLike]]

Layout = dict[str, tuple[tuple[int, ...], np.dtype[Any]]]


def as_arrays(array: ArrayInput) -> dict[str, np.ndarray]:
    """``{name: array}`` of what ``put`` got (``"data"`` for a single array), checked."""
    if isinstance(array, Mapping):
        arrays = {str(key): np.asarray(value) for key, value in array.items()}
    else:
        arrays = {"data": np.asarray(array)}
    for key, value in arrays.items():
        check_dtype(value.dtype, f"array {key!r}")
    return arrays


def as_layout(shape: ShapeInput, dtype: DTypeLike) -> Layout:
    """``{name: (shape, dtype)}`` of what ``create`` got (``"data"`` for one array), checked."""
    if isinstance(shape, Mapping):
        spec = {str(key): (tuple(s), np.dtype(d)) for key, (s, d) in shape.items()}
    else:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        spec = {"data": (dims, np.dtype(dtype if dtype is not None else np.float64))}
    for key, (dims, dt) in spec.items():
        if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in dims):
            raise ValueError(f"shape of {key!r} must be non-negative integers, got {dims!r}")
        check_dtype(dt, f"array {key!r}")
    return {key: (tuple(int(n) for n in dims), dt) for key, (dims, dt) in spec.items()}
