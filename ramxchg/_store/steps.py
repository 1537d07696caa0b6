"""Clean-up steps that must all be tried: one failing must not leave the others undone."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def try_each(steps: Iterable[Callable[[], object]]) -> None:
    """Call every step, even after one fails; then raise the first failure (an interrupt
    in preference to an error)."""
    failure: BaseException | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            failure = failure or exc
        except BaseException as exc:
            failure = exc if failure is None or isinstance(failure, Exception) else failure
    if failure is not None:
        raise failure
