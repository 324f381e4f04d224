"""Shared by the service and cluster tiers: a tiny study file, the CLI as a subprocess, and a
wait on a driver's output lines (the events it prints) instead of polling the stores."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# a toy model whose curriculum is complete by step 3, so that ASHA may judge it from step 10
TINY = {"model.n_embd": 16, "model.n_head": 2, "training.train_steps": 40, "training.eval_every": 10,
        "training.checkpoint_every": 10, "training.log_every": 10, "eval.n_prompts": 64,
        "eval.bootstrap": 50, "curriculum.dims.interval": 1, "curriculum.points.interval": 1,
        "curriculum.loops.interval": 1}


def write_study(tmp_path: Path, name: str, **fields) -> Path:
    study = {"name": name, "base": "paper_linear_regression_looped_cpu", "overrides": TINY,
             "space": {"training.loop_dilation": {"categorical": [1, 2]},
                       "training.learning_rate": {"float": [1.0e-6, 1.0e-2], "log": True},
                       "curriculum.loops.start": None},
             "objectives": [{"metric": "eval/err_last", "mode": "min"}],
             "budget": {"num_samples": 4, "max_concurrent": 2},
             "scheduler": {"grace_period": 10, "reduction_factor": 2},
             "sampler_seed": 0, "results_dir": str(tmp_path / name), **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def cli_error(capsys, *args: str) -> str:
    """The CLI in this process (the code of `loopstudy ...`): it must exit 2 with one error line."""
    from study.cli import main

    assert main(list(args)) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopstudy: error: "), err
    return lines[0]


def cli(*args: str, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


class Lines:
    """A process's merged stdout/stderr, read by a thread; `wait_for` blocks until a line
    matches (an event the process printed), the process ends, or the timeout passes."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.seen = process, []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, count: int = 1, timeout_s: float = 240) -> list[re.Match]:
        """The first `count` matches of `pattern` (a regex, searched in each line)."""
        found = [m for m in map(re.compile(pattern).search, self.seen) if m]
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {count} lines matching {pattern!r} within {timeout_s:.0f} s:\n"
                                     + "\n".join(self.seen[-40:])) from None
            if line is None:
                raise AssertionError(f"the process ended before {count} lines matched {pattern!r}:\n"
                                     + "\n".join(self.seen[-40:]))
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                found.append(match)
        return found[:count]

    def rest(self, timeout_s: float = 120) -> str:
        """Everything printed, once the process has ended."""
        self.process.wait(timeout=timeout_s)
        while (line := self._queue.get(timeout=timeout_s)) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (what a killed driver leaves behind: Ray's agents and workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def start_cli(*args: str, cwd: Path, env: dict | None = None, prefix: list[str] = ()) -> Lines:
    """The CLI as a running process, its output line by line."""
    process = subprocess.Popen([*prefix, sys.executable, "-m", "study.cli", *args], cwd=cwd, env=env or ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Lines(process)
