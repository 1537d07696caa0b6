"""The reliability suite's switches: the fast (CI) or full profile, and the figures it records.

Select the full profile with ``pytest tests/reliability --profile=full`` or the
environment variable ``RAMXCHG_RELIABILITY=full``. Set ``RAMXCHG_RELIABILITY_FIGURES``
to a file to append one JSON line per scenario (the rows of docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROFILE_ENV = "RAMXCHG_RELIABILITY"
FIGURES_ENV = "RAMXCHG_RELIABILITY_FIGURES"


@dataclass(frozen=True)
class Profile:
    """How hard each scenario pushes: runs, items and sizes."""

    name: str
    #: soak: items per producer (two producers), largest item in bytes
    soak_items: int
    soak_max_bytes: int
    #: producer crash: SIGKILLs during put/create
    producer_kills: int
    #: consumer crash: SIGKILLs between delivery and ack
    consumer_kills: int
    #: full RAM disk: fill-up/free cycles
    full_cycles: int
    #: event overflow: items in one burst
    burst_items: int
    #: legacy writers: files per kind of writer and watch mode
    legacy_runs: int


PROFILES = {
    "fast": Profile("fast", 200, 1 << 20, 12, 8, 3, 5_000, 2),
    "full": Profile("full", 10_000, 4 << 20, 100, 50, 20, 100_000, 20),
}


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> Profile:
    """The selected profile: --profile, else $RAMXCHG_RELIABILITY, else fast."""
    name = request.config.getoption("--profile") or os.environ.get(PROFILE_ENV) or "fast"
    if name not in PROFILES:
        raise pytest.UsageError(f"${PROFILE_ENV} must be one of {sorted(PROFILES)}, not {name!r}")
    return PROFILES[name]


@dataclass
class Figures:
    """One row of docs/reliability.md, filled in by a scenario as it runs."""

    scenario: str
    profile: str
    runs: str = ""
    faults: str = ""
    lost: int = 0
    partial: int = 0
    #: -1: not audited (only scenarios that run strace set it)
    outside: int = -1
    seconds: float = 0.0


@pytest.fixture
def figures(request: pytest.FixtureRequest, profile: Profile) -> Iterator[Figures]:
    """A row for this scenario; written to $RAMXCHG_RELIABILITY_FIGURES when the test passes."""
    row = Figures(request.node.name, profile.name)
    start = time.monotonic()
    yield row
    row.seconds = round(time.monotonic() - start, 1)
    target = os.environ.get(FIGURES_ENV)
    report = getattr(request.node, "rep_call", None)
    if target and report is not None and report.passed:
        with Path(target).open("a") as out:
            out.write(json.dumps(row.__dict__) + "\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
