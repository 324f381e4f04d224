"""SIGTERM ends a study as Ctrl-C does. `timeout`, Slurm, `docker stop` and job stoppers send
SIGTERM; Ray's core worker, started in the driver by ray.init, handles it by printing a native
stack and aborting (exit 1, nothing saved). After ray.init the driver's SIGTERM is forwarded to
whatever handles SIGINT at that moment: during Tune's fit() its handler (checkpoint the
experiment, then return), a second signal Python's own (KeyboardInterrupt: force). The exit
code follows the signal a shell expects: 130 for SIGINT, 143 for SIGTERM."""
from __future__ import annotations

import signal
import threading

_received: list[int] = []


def forward_sigterm() -> None:
    """Install the forwarding handler (the main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame) -> None:
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:                                   # SIG_IGN or SIG_DFL: end as the default SIGINT would
        raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """143 when a SIGTERM stopped the study, else 130 (SIGINT)."""
    return 128 + signal.SIGTERM if _received else 128 + signal.SIGINT
