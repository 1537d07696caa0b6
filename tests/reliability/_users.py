"""Running test code as another user: a fork of the test process that drops to a uid.

A fork, not 'spawn': another user cannot execute this interpreter (it lives under /root).
The tests that use it need root (mark them ``root``).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from multiprocessing.connection import Connection
from typing import Any

import pytest

from ramxchg.cli import build_parser, main

#: Two users besides root: 65534 is "nobody"; the other needs no passwd entry.
NOBODY = 65534
OTHER = 61001
FORK = mp.get_context("fork")

build_parser()  # imports every subcommand's module here: the other user cannot read them


def _run(uid: int, target: Callable[..., Any], args: tuple[Any, ...], out: Connection) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        out.send(("ok", target(*args)))
    except Exception as exc:  # reported to the test, which decides
        out.send((type(exc).__name__, str(exc)))


def as_user(uid: int, target: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """``target(*args)`` in a child running as ``uid`` (no supplementary groups).

    Returns ``("ok", its result)``, or ``(exception class name, message)`` if it raised.
    """
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_run, args=(uid, target, args, send))
    child.start()
    try:
        if not receive.poll(120):
            pytest.fail(f"the child running as uid {uid} gave no answer in 120 s")
        result: tuple[str, Any] = receive.recv()
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    return result


def cli(*argv: str) -> tuple[int, str, str]:
    """``ramxchg <argv>`` in this process: (exit code, stdout, stderr), log lines included."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()
