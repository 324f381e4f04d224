"""Calling again until a deadline: the one retry loop of the service (an Optuna database
restarting, a tracking server away)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until_deadline(call: Callable[[], T], retry_if: Callable[[Exception], bool], deadline: float,
                   pause_s: float = 1.0, timed_out: Callable[[Exception], Exception] | None = None) -> T:
    """call()'s value; while it raises an error that `retry_if` accepts, called again after
    `pause_s` until time.monotonic() passes `deadline`, then `timed_out(error)` is raised (or,
    without it, the error itself). Any other error is raised at once."""
    while True:
        try:
            return call()
        except Exception as error:
            if not retry_if(error):
                raise
            if time.monotonic() >= deadline:
                if timed_out is None:
                    raise
                raise timed_out(error) from None
            time.sleep(pause_s)
