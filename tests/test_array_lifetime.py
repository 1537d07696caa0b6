"""Arrays outlive their item: used after close, delete or ack, they still read the data.

Like ``np.load(mmap_mode="r")``, a mapping lives until the last array over it is freed;
``item.close()`` only drops the item's own reference. A mapping unmapped under a live
array kills the process with SIGSEGV, so every case runs in its own process and must
exit 0 with the right values.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Runs first in the child: a channel with the 8 MB item "x" (each case adds to ``arr``).
PROLOGUE = """
import gc, sys
import numpy as np
import ramxchg

fmt = sys.argv[1]
ch = ramxchg.Channel("life", format=fmt)
data = np.arange(1_000_000, dtype=np.float64)
ch.put(data if fmt == "npy" else {"data": data}, name="x")
expect = data
"""

#: Runs last: everything else is freed, other memory is mapped, then ``arr`` is read.
EPILOGUE = """
gc.collect()
other = [np.ones(1_000_000) for _ in range(8)]  # reuses unmapped address space, if any
assert np.array_equal(arr, expect), "the array changed after its item was released"
print("ok", float(arr.sum()))
"""

CASES = {
    "with_block": """
        with ch.get("x") as item:
            arr = item.array
    """,
    "close": """
        item = ch.get("x")
        arr = item.array
        item.close()
        del item
    """,
    "item_dropped": """
        arr = ch.get("x").array
    """,
    "delete_then_close": """
        item = ch.get("x")
        arr = item.array
        ch.delete("x")
        item.close()
        del item
    """,
    "group_ack": """
        with ch.subscribe(group="g", start="latest") as sub:
            ch.put(data if fmt == "npy" else {"data": data}, name="z")
            item = sub.get(timeout=10)
            arr = item.array
            item.ack()  # the only group that saw it published: it is deleted now
            item.close()
        del item, sub
        assert ch.names() == ["x"]
    """,
    "views": """
        with ch.get("x") as item:
            arr = item.array[::3].reshape(-1, 1)[5:]
        expect = data[::3].reshape(-1, 1)[5:]
    """,
    "arrays_dict": """
        with ch.get("x") as item:
            arr = item.arrays[next(iter(item.arrays))]
    """,
    "copy_on_write": """
        with ch.get("x") as item:
            arr = item.open("c")
        arr[:10] = -1
        expect = data.copy()
        expect[:10] = -1
        assert np.array_equal(ch.get("x").array, data), "copy-on-write reached the file"
    """,
    "create_escaped": """
        layout = data.shape if fmt == "npy" else {"data": (data.shape, data.dtype)}
        with ch.create(layout, data.dtype, name="y") as made:
            arr = made if fmt == "npy" else made["data"]
            arr[...] = data
        del made
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_array_stays_valid_after_its_item_is_released(root: Path, fmt: str, case: str) -> None:
    script = PROLOGUE + textwrap.dedent(CASES[case]) + EPILOGUE
    result = subprocess.run(
        [sys.executable, "-c", script, fmt],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{case}/{fmt}: exit {result.returncode} (-11/139 is SIGSEGV)\n{result.stderr}"
    )
    assert result.stdout.startswith("ok"), result.stdout
