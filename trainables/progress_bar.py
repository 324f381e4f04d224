"""Progress for long loops: a live bar on a terminal, plain periodic lines otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int = 0, label: str = "", every_s: float = 10.0,
                 stream=sys.stderr):
        self.total, self.start, self.label = total, start, label
        self.stream, self.every_s = stream, every_s
        self.tty = stream.isatty()
        self.t0 = self.last = time.monotonic()

    def update(self, step: int, **fields) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        line = (f"{self.label} {step}/{self.total} ({100 * step / self.total:3.0f}%) {text} "
                f"{rate:.1f} steps/s ETA {_duration(eta)}")
        if self.tty:
            width = 30
            filled = int(width * step / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"
