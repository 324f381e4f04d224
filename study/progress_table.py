"""A live progress table while a study runs: redrawn in place on a terminal, printed as plain
periodic lines otherwise (logs, CI); and one line per event of a trial: its first result (with
the Ray node it runs on, again when a retry moves it) and its end (state, step, objective).

Past FULL_TABLE trials the table holds the unfinished trials and the SHOWN_ENDED that ended
last, under a count by state: every ended trial already printed its own line, and a table of
every trial grows with the study (bench/results/design_figures.md)."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from analysis.layout import INTERRUPTED, fmt, table

from .outcome import classify
from .tracking.trial_run import trial_name

STATE = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "ended",
         "ERROR": "failed"}
FULL_TABLE = 20      # up to this many trials the table shows every one
SHOWN_ENDED = 5      # above it: the trials that ended last, besides the unfinished ones


class ProgressCallback(Callback):
    def __init__(self, metrics: list[str], max_steps: int, total: int, every_s: float | None = None):
        self.metrics, self.max_steps, self.total = metrics, max_steps, total
        self.every_s = every_s
        self._names: dict[str, str] = {}
        self._nodes: dict[str, str] = {}        # Tune trial id -> the node its last result came from
        self._ended: dict[str, None] = {}       # Tune trial ids in the order they ended
        self._ran: set[str] = set()             # Tune trial ids seen running in this driver
        self._interrupted: set[str] = set()     # those an interrupt stopped (at the experiment's end)
        self._last = self._lines = 0
        self._started = time.monotonic()

    def __getstate__(self):
        return {**self.__dict__, "_names": {}, "_nodes": {}, "_ended": {}, "_ran": set(), "_interrupted": set(),
                "_lines": 0}

    def __setstate__(self, state: dict) -> None:     # a tuner.pkl older than _ran and _interrupted
        self.__dict__.update({"_ran": set(), "_interrupted": set(), **state})

    def _name(self, trial) -> str:
        if trial.trial_id not in self._names:
            self._names[trial.trial_id] = trial_name(trial.config)
        return self._names[trial.trial_id]

    def _state(self, trial) -> str:
        if trial.trial_id in self._interrupted:
            return INTERRUPTED
        if trial.status == "TERMINATED":
            return classify(trial.last_result or {}, False, self.max_steps)[0]
        return STATE.get(trial.status, trial.status.lower())

    def render(self, trials) -> str:
        shown = list(trials)
        elapsed = int(time.monotonic() - self._started)
        head = f"[{elapsed // 60}m{elapsed % 60:02d}s] {len(shown)}/{self.total} trials"
        if len(shown) > FULL_TABLE:
            counts: dict[str, int] = {}
            for state in map(self._state, shown):
                counts[state] = counts.get(state, 0) + 1
            last = set(list(self._ended)[-SHOWN_ENDED:])
            shown = [t for t in shown if t.status not in ("TERMINATED", "ERROR") or t.trial_id in last]
            head += (": " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                     + f" (below: the unfinished and the {SHOWN_ENDED} that ended last)")
        rows = []
        for trial in shown:
            result = trial.last_result or {}
            rows.append([self._name(trial), self._state(trial), f"{result.get('step', 0)}/{self.max_steps}",
                         *(f"{result[m]:.4g}" if m in result else "-" for m in self.metrics)])
        return head + "\n" + table(rows, ["trial", "state", "step", *self.metrics])

    def _show(self, trials, force: bool = False) -> None:
        stream = sys.stdout
        tty = stream.isatty()
        every = self.every_s if self.every_s is not None else (1.0 if tty else 30.0)
        now = time.monotonic()
        if not trials or not force and now - self._last < every:
            return
        self._last = now
        text = self.render(trials)
        if tty and self._lines:
            stream.write(f"\033[{self._lines}F\033[J")   # back to the table's first line, clear
        stream.write(text + "\n")
        stream.flush()
        self._lines = text.count("\n") + 1 if tty else 0

    def _event(self, trials, trial, text: str) -> None:
        """One line about `trial`, above the table (which a terminal then redraws below it)."""
        stream = sys.stdout
        if stream.isatty() and self._lines:
            stream.write(f"\033[{self._lines}F\033[J")
            self._lines = 0
        stream.write(f"{self._name(trial)}: {text}\n")
        stream.flush()
        if stream.isatty():
            self._show(trials, force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        node = result.get("node_id")
        if node and self._nodes.get(trial.trial_id) != node:
            self._nodes[trial.trial_id] = node
            self._event(trials, trial, f"running on node {node[:12]} (step {result.get('step', 0)})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended[trial.trial_id] = None
        result = trial.last_result or {}
        state, reason = classify(result, False, self.max_steps)
        values = ", ".join(f"{m} {fmt(result[m])}" for m in self.metrics if m in result)
        self._event(trials, trial, f"{state}: {reason}" + (f"; {values}" if values else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended[trial.trial_id] = None
        self._event(trials, trial, "failed: the trial raised an error (see `loopstudy status`)")

    def on_step_end(self, iteration, trials, **info):
        self._ran |= {t.trial_id for t in trials if t.status == "RUNNING"}
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        # Tune stops the trials still running without a completion (fit() was interrupted):
        # they end TERMINATED short of their steps, which would read as pruned
        self._interrupted = {t.trial_id for t in trials if t.status == "TERMINATED"
                             and t.trial_id in self._ran and t.trial_id not in self._ended}
        self._show(trials, force=True)
