"""A live progress table while a study runs: redrawn in place on a terminal, printed as plain
periodic lines otherwise (logs, CI); and one line per event of a trial: its first result (with
the Ray node it runs on, again when a retry moves it) and its end (state, step, objective)."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from analysis.layout import fmt, table

from .outcome import classify
from .tracking import trial_name

STATE = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "ended",
         "ERROR": "failed"}


class ProgressCallback(Callback):
    def __init__(self, metrics: list[str], max_steps: int, total: int, every_s: float | None = None):
        self.metrics, self.max_steps, self.total = metrics, max_steps, total
        self.every_s = every_s
        self._names: dict[str, str] = {}
        self._nodes: dict[str, str] = {}        # Tune trial id -> the node its last result came from
        self._last = self._lines = 0
        self._started = time.monotonic()

    def __getstate__(self):
        return {**self.__dict__, "_names": {}, "_nodes": {}, "_lines": 0}

    def _name(self, trial) -> str:
        if trial.trial_id not in self._names:
            self._names[trial.trial_id] = trial_name(trial.config)
        return self._names[trial.trial_id]

    def render(self, trials) -> str:
        rows = []
        for trial in trials:
            result = trial.last_result or {}
            state = STATE.get(trial.status, trial.status.lower())
            if trial.status == "TERMINATED":
                state = classify(result, False, self.max_steps)[0]
            rows.append([self._name(trial), state, f"{result.get('step', 0)}/{self.max_steps}",
                         *(f"{result[m]:.4g}" if m in result else "-" for m in self.metrics)])
        elapsed = int(time.monotonic() - self._started)
        head = f"[{elapsed // 60}m{elapsed % 60:02d}s] {len(trials)}/{self.total} trials"
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
        result = trial.last_result or {}
        state, reason = classify(result, False, self.max_steps)
        values = ", ".join(f"{m} {fmt(result[m])}" for m in self.metrics if m in result)
        self._event(trials, trial, f"{state}: {reason}" + (f"; {values}" if values else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event(trials, trial, "failed: the trial raised an error (see `loopstudy status`)")

    def on_step_end(self, iteration, trials, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials, force=True)
