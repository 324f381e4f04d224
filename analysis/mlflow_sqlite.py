"""An embedded (SQLite) MLflow store read with sqlite3 alone, for `read_record`: the runs of an
experiment with their tags, params and latest metrics, as MLflow's own search returns them.

Importing MLflow and opening its SQLAlchemy store costs most of what `loopstudy status` takes
(bench/results/design_figures.md); these queries take milliseconds. The tables and columns read
are MLflow's tracking schema (analysis/library_internals.py: MLFLOW_TABLES, checked by
tests/test_library_internals.py); tests/test_load_scaling.py checks both readers agree on a real
store.
A tracking server, or any other URI, is read through MLflow's client.
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

SQLITE = "sqlite:///"
ACTIVE = "active"            # lifecycle_stage of runs and experiments not deleted


@dataclass
class RunRow:
    """What read_record uses of an MLflow run."""
    run_id: str
    run_name: str
    artifact_uri: str
    tags: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)      # the latest value of each metric

    @classmethod
    def of(cls, run) -> "RunRow":
        """From an MLflow Run (a search through the client)."""
        return cls(run.info.run_id, run.info.run_name, run.info.artifact_uri, dict(run.data.tags),
                   dict(run.data.params), dict(run.data.metrics))


def sqlite_file(tracking_uri: str) -> Path | None:
    """The file of an embedded SQLite store (sqlite:///PATH), else None."""
    return Path(tracking_uri[len(SQLITE):]) if tracking_uri.startswith(SQLITE) else None


def read_runs(path: Path, experiment: str) -> list[RunRow] | None:
    """The active runs of `experiment` in the store at `path`; None when there is no such
    experiment (or no store). sqlite3.DatabaseError for a file that is not MLflow's store."""
    if not path.is_file():
        return None
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
        found = db.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = ?",
                           (experiment, ACTIVE)).fetchone()
        if found is None:
            return None
        runs = {run_id: RunRow(run_id, name or "", artifact_uri or "") for run_id, name, artifact_uri in db.execute(
            "SELECT run_uuid, name, artifact_uri FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?",
            (found[0], ACTIVE))}
        of_runs = "run_uuid IN (SELECT run_uuid FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?)"
        for table, attribute in (("tags", "tags"), ("params", "params")):
            for run_id, key, value in db.execute(f"SELECT run_uuid, key, value FROM {table} WHERE {of_runs}",
                                                 (found[0], ACTIVE)):
                getattr(runs[run_id], attribute)[key] = value
        for run_id, key, value, is_nan in db.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE {of_runs}", (found[0], ACTIVE)):
            runs[run_id].metrics[key] = float("nan") if is_nan else float(value)
    return list(runs.values())
