"""How a driver stops: SIGINT (Ctrl-C) and SIGTERM end a study cleanly in any phase.

One handler of ours takes both signals while a driver runs a study (`stop_handlers`):
- the first asks the study to stop: inside Tune's fit() by calling Tune's own stop handler
  (which checkpoints the experiment, stops the trials and makes fit() return), outside it
  (between phases, between replicate rounds, while a plan is written) by the study not starting
  its next fit (`stop_requested`);
- a second forces: KeyboardInterrupt, which the runner and the CLI still end with the parent run
  marked interrupted and the resume command.
Tune's own SIGINT handler is turned off (analysis/library_internals.TUNE_DISABLE_SIGINT): after a fit that ended
normally it stays installed and swallows a later Ctrl-C. Ray's core worker, started in the
driver by ray.init, would print a native stack on SIGTERM and abort (exit 1, nothing saved).
`timeout`, Slurm, `docker stop` and job stoppers send SIGTERM.

The exit code follows the signal a shell expects: 130 for SIGINT, 143 for SIGTERM."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from analysis.library_internals import TUNE_DISABLE_SIGINT, TUNE_INTERRUPT_HANDLER

_received: list[int] = []       # the signals that stopped this driver
_state = {"stop": False, "in_fit": False}


@contextlib.contextmanager
def stop_handlers():
    """SIGINT and SIGTERM ours inside the block (entered after ray.init), the handlers from before
    it afterwards; the main thread only, as Python requires."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    tune_env = os.environ.get(TUNE_DISABLE_SIGINT)
    os.environ[TUNE_DISABLE_SIGINT] = "1"       # read by each fit() as it starts
    _received.clear()
    _state.update(stop=False, in_fit=False)
    for sig in before:
        signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if tune_env is None:
            os.environ.pop(TUNE_DISABLE_SIGINT)
        else:
            os.environ[TUNE_DISABLE_SIGINT] = tune_env


def tune_stop_handler():
    """Tune's handler that ends fit() after saving its state, while a fit runs; else None."""
    handler = signal.getsignal(signal.SIGUSR1)
    return handler if _state["in_fit"] and getattr(handler, "__name__", "") == TUNE_INTERRUPT_HANDLER else None


def _on_signal(signum: int, frame) -> None:
    _received.append(signum)
    if _state["stop"]:
        raise KeyboardInterrupt
    _state["stop"] = True
    stop_fit = tune_stop_handler()
    if stop_fit:
        stop_fit(signal.SIGUSR1, frame)     # logs "Stop signal received": study.quiet_libraries hides it
    else:
        print("loopstudy: stopping before the next phase starts (again: stop at once)", file=sys.stderr,
              flush=True)


def stop_requested() -> bool:
    """Whether a signal asked the study to stop before its next fit."""
    return _state["stop"]


@contextlib.contextmanager
def fitting():
    """Around Tune's fit(): afterwards, the SIGUSR1 handler from before it (Tune leaves its own)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGUSR1) if main else None
    _state["in_fit"] = True
    try:
        yield
    finally:
        _state["in_fit"] = False
        if main:
            signal.signal(signal.SIGUSR1, before)


def interrupted_exit_code() -> int:
    """143 when a SIGTERM stopped the study, else 130 (SIGINT)."""
    return 128 + signal.SIGTERM if signal.SIGTERM in _received else 128 + signal.SIGINT
