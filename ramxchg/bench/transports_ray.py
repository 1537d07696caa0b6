"""Ray's object store (optional: ``pip install ramxchg[ray]``); skipped when Ray is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .transports import Receiver, Sender, Transport


class RayTransport(Transport):
    """``ray.put`` in the producer, the ObjectRef sent by pipe, ``ray.get`` in the consumer."""

    name = "ray"
    label = "Ray object store"

    def skip_reason(self) -> str | None:
        if importlib.util.find_spec("ray") is None:
            return "ray is not installed (pip install 'ramxchg[ray]')"
        return "the Ray transport is not implemented yet (ray is installed)"

    def open_link(self, ctx: Any, workdir: Path) -> Any:
        raise NotImplementedError

    def sender(self, link: Any) -> Sender:
        raise NotImplementedError

    def receiver(self, link: Any) -> Receiver:
        raise NotImplementedError


__all__ = ["RayTransport", "np"]
