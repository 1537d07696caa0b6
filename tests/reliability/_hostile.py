"""Hostile files an outsider can drop into a channel, each built by one function."""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: kind -> (file name in the channel, builder(path, outside_folder))
Builder = Callable[[Path, Path], None]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header(text: bytes, payload: bytes = b"", version: int = 1) -> bytes:
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text + payload


class _Marker:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mknod, (self.path,))


def _pickle_bomb(path: Path, outside: Path) -> None:
    payload = pickle.dumps(_Marker(str(outside / "PICKLE-EXECUTED")), protocol=2)
    text = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    path.write_bytes(_header(text.ljust(117) + b"\n", payload))


def _h5(build: Callable[[object, Path], None]) -> Builder:
    def make(path: Path, outside: Path) -> None:
        import h5py

        scratch = outside / f"build-{path.name}"
        with h5py.File(scratch, "w") as h5file:
            h5file["inside"] = np.arange(3)
            build(h5file, outside)
        path.write_bytes(scratch.read_bytes())
        scratch.unlink()

    return make


def _external_link(h5file: object, outside: Path) -> None:
    import h5py

    h5file["x"] = h5py.ExternalLink(str(outside / "secret.h5"), "/x")  # type: ignore[index]


def _external_storage(h5file: object, outside: Path) -> None:
    raw = [(str(outside / "secret.bin"), 0, 128)]
    h5file.create_dataset("x", shape=(16,), dtype="<i8", external=raw)  # type: ignore[attr-defined]


def _virtual(h5file: object, outside: Path) -> None:
    import h5py

    layout = h5py.VirtualLayout(shape=(16,), dtype="<i8")
    layout[:] = h5py.VirtualSource(str(outside / "secret.h5"), "x", shape=(16,))
    h5file.create_virtual_dataset("x", layout)  # type: ignore[attr-defined]


def _socket(path: Path, outside: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def _good_h5_bytes() -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5file:
        h5file["a"] = np.arange(100_000, dtype=np.float64)
    return buffer.getvalue()


GOOD = _npy(np.arange(100, dtype=np.int64))
V1 = b"{'descr': '<f8', 'fortran_order': False, 'shape': (%s,), }"

#: Sidecar-less files with an item suffix: the subscriber must quarantine each.
MALFORMED: dict[str, tuple[str, Builder]] = {
    "npy-truncated-data": ("t1.npy", lambda p, o: p.write_bytes(GOOD[:-8])),
    "npy-header-length-past-end": ("t2.npy", lambda p, o: p.write_bytes(GOOD[:8] + b"\xff\xff")),
    "npy-promises-more-bytes": ("t3.npy", lambda p, o: p.write_bytes(_header(V1 % b"1000000"))),
    "npy-pickle-payload": ("t4.npy", _pickle_bomb),
    "npy-huge-header": (
        "t5.npy",
        lambda p, o: p.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{"),
    ),
    "npy-zero-bytes": ("t6.npy", lambda p, o: p.write_bytes(b"")),
    "npy-bad-magic": ("t7.npy", lambda p, o: p.write_bytes(b"PK\x03\x04" + bytes(200))),
    "npy-code-in-header": (
        "t8.npy",
        lambda p, o: p.write_bytes(_header(b"__import__('os').mknod('" + bytes(o) + b"/CODE')\n")),
    ),
    "npy-negative-shape": ("t9.npy", lambda p, o: p.write_bytes(_header(V1 % b"-1"))),
    "npy-bad-descr": (
        "t10.npy",
        lambda p, o: p.write_bytes(
            _header(b"{'descr': 'zz', 'fortran_order': False, 'shape': ()}")
        ),
    ),
    "npy-unknown-version": (
        "t11.npy",
        lambda p, o: p.write_bytes(b"\x93NUMPY\x09\x00" + bytes(99)),
    ),
    "npy-header-not-a-dict": ("t12.npy", lambda p, o: p.write_bytes(_header(b"[1, 2, 3]\n"))),
    "npy-shape-overflows": ("t13.npy", lambda p, o: p.write_bytes(_header(V1 % b"2**70"))),
    "npy-shape-product-overflows": (
        "t14.npy",
        lambda p, o: p.write_bytes(_header(V1 % b"4611686018427387904, 4")),
    ),
    "npy-header-not-utf8": (
        "t15.npy",
        lambda p, o: p.write_bytes(_header(b"\xff\xfe{}", version=2)),
    ),
    "npy-only-magic": ("t16.npy", lambda p, o: p.write_bytes(b"\x93NUMPY")),
    "h5-garbage": ("g1.h5", lambda p, o: p.write_bytes(os.urandom(4096))),
    "h5-zero-bytes": ("g2.h5", lambda p, o: p.write_bytes(b"")),
    "h5-truncated": ("g3.h5", lambda p, o: p.write_bytes(_good_h5_bytes()[:3000])),
    "h5-npy-inside": ("g4.h5", lambda p, o: p.write_bytes(GOOD)),
    "h5-external-link": ("g5.h5", _h5(_external_link)),
    "h5-external-storage": ("g6.h5", _h5(_external_storage)),
    "h5-virtual-dataset": ("g7.h5", _h5(_virtual)),
}

#: Not regular files, or names no item can have: the subscriber must set them aside too.
NOT_FILES: dict[str, tuple[str, Builder]] = {
    "symlink-to-file-outside": ("s1.npy", lambda p, o: p.symlink_to(o / "secret.npy")),
    "symlink-to-folder-outside": ("s2.npy", lambda p, o: p.symlink_to(o)),
    "dangling-symlink": ("s3.h5", lambda p, o: p.symlink_to(o / "missing.h5")),
    "hard-link-to-file-outside": ("s4.npy", lambda p, o: os.link(o / "secret.npy", p)),
    "fifo": ("s5.npy", lambda p, o: os.mkfifo(p)),
    "socket": ("s6.npy", _socket),
    "folder-named-npy": ("s7.npy", lambda p, o: p.mkdir()),
    "folder-named-h5": ("s8.h5", lambda p, o: p.mkdir()),
    "non-utf8-name": ("bad\udcff.npy", lambda p, o: p.write_bytes(GOOD)),
    "name-with-space": ("has space.npy", lambda p, o: p.write_bytes(GOOD)),
}


def plant_outside(outside: Path) -> list[Path]:
    """Files outside the channel that hostile files point at; their atime is set to 0."""
    import h5py

    with h5py.File(outside / "secret.h5", "w") as h5file:
        h5file["x"] = np.full(16, 7777, dtype=np.int64)
    (outside / "secret.bin").write_bytes(np.full(16, 7777, dtype=np.int64).tobytes())
    (outside / "secret.npy").write_bytes(GOOD)
    planted = [outside / "secret.h5", outside / "secret.bin", outside / "secret.npy"]
    for path in planted:
        os.utime(path, ns=(0, os.stat(path).st_mtime_ns))  # any read now sets the atime
    return planted
