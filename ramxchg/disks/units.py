"""Byte sizes, read and shown one way everywhere: binary units, 1 KB = 1024 bytes.

`parse_size` reads what people type (``8G``, ``512M``, ``1.5GiB``, ``64 MB``);
`format_size` shows a size to people (``64 MB``, ``1.5 GB``, ``512 B``) or, with
``exact=True``, spells it the way ``mount -o size=``, ImDisk and ``--size`` read it back
(``8G``, ``65568K``). Both use the units of ``mount``, ``docker --shm-size`` and ImDisk,
which are binary.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = "KMGTPE"


def parse_size(text: str | int) -> int:
    """Bytes in ``text`` such as ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"64 MB"`` or ``"4096"``.

    Units are binary (K = 1024), as ``mount -o size=``, ``docker --shm-size`` and
    ImDisk read them; ``B``/``iB`` suffixes are accepted and ignored.
    """
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.fullmatch(text)
        if not match:
            raise ValueError(f"not a size: {text!r} (use e.g. 8G, 512M, 1.5GiB or bytes)")
        number, unit, _ = match.groups()
        scale = 1024 ** (_UNITS.index(unit.upper()) + 1) if unit else 1
        value = int(float(number) * scale)
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def format_size(nbytes: int, *, exact: bool = False) -> str:
    """``nbytes`` for people: ``"512 B"``, ``"1 KB"``, ``"65.6 MB"``, ``"1.5 GB"``.

    Three significant digits, binary units (what `parse_size` reads back, rounded).
    ``exact=True``: the shortest exact spelling without a space, ``"8G"``, ``"65568K"``,
    ``"1000"``, for ``mount -o size=``, ImDisk ``-s`` and ``--size`` options.
    """
    if exact:
        for power in range(len(_UNITS), 0, -1):
            scale = 1024**power
            if nbytes >= scale and nbytes % scale == 0:
                return f"{nbytes // scale}{_UNITS[power - 1]}"
        return str(nbytes)
    if abs(nbytes) < 1024:
        return f"{nbytes} B"
    value, unit = float(nbytes), -1
    # 1023.5 KB would round to "1024 KB": show it as "1 MB" instead.
    while abs(value) >= 1023.5 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    digits = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{digits} {_UNITS[unit]}B"
