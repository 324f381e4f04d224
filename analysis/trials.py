"""A finished study read back from its stores as a tidy list of trials. Read-only; Ray need
not run. MLflow holds what people browse (names, params, curves, artifacts); Optuna the search.

`stores` is anything with the study's `name`, `mlflow_uri`, `optuna_url`, `experiment` (the Ray
experiment folder) and `optuna_study()`: the service's study.storage.stores.Stores is one.
"""
from __future__ import annotations

import copy
import functools
import json
import posixpath
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import yaml

from trainables.config import Config, from_dict
from trainables.errors import ConfigError, UserError

from .layout import (CONFOUNDS, HORIZON, NUMBER, PARENT, POINT, POINTS, REASON, REPEAT, REPLICATE, ROLE, RUNNING,
                     SAMPLED, SCIENTIFIC_VALUES, STATE, STEPS, TRIAL, params_text, phase_study_name,
                     scientific_points)
from .mlflow_sqlite import RunRow, read_runs, sqlite_file

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class Trial:
    number: int                      # Optuna trial number
    name: str                        # the MLflow run name, e.g. "t003 s=2 T=4 b=16 D=64"
    state: str                       # completed | pruned | failed | running
    reason: str
    sampled: dict                    # the searched values, dotted keys
    config: Config
    objectives: dict[str, float]     # last reported value of each objective metric
    steps: int
    run_id: str
    repeat: int = 0
    tags: dict = field(default_factory=dict)
    artifact_uri: str = ""           # where its artifacts lie (read without asking for the run again)

    def value(self, metric: str) -> float | None:
        return self.objectives.get(metric)

    @property
    def point(self) -> str:
        """The scientific point it trains ("s=1"), "" in a study without `scientific`."""
        return self.tags.get(POINT, "")

    @property
    def seed(self) -> int:
        return self.config.training.seed


@dataclass
class StudyRecord:
    stores: object                   # the study's stores (see the module's docstring)
    parent: dict                     # the parent run: {"run_id", "params", "tags"}
    objectives: list[tuple[str, str]]  # (metric, mode)
    trials: list[Trial]              # the search's trials
    replicates: list[Trial] = field(default_factory=list)  # the replicate phase's runs, if any
    # a question's replicates continued past a shorter horizon: `replicates` are the longest
    # horizon's (what the answer, the figures and exports judge), these the shorter ones'
    shorter_horizons: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.stores.name

    @property
    def every_replicate(self) -> list[Trial]:
        """The replicate runs of every horizon."""
        return self.shorter_horizons + self.replicates

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient       # imported when a run's files are read, not for `status`

        return MlflowClient(tracking_uri=self.stores.mlflow_uri)

    def optuna_study(self, point: str = "") -> optuna.Study:
        """The Optuna study of the search (of one scientific point's search)."""
        return self.stores.optuna_study(phase_study_name(self.name, point))

    @functools.cached_property
    def scientific(self) -> dict | list:
        """The compared parameters and their values, as the study file gives them (a grid or a
        list of points: study/design.py); {} in a study without `scientific` (read from the
        parent run's tag, or its study.yaml artifact where the tag is missing)."""
        if SCIENTIFIC_VALUES in self.parent["tags"]:
            return json.loads(self.parent["tags"][SCIENTIFIC_VALUES])
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client().download_artifacts(self.parent["run_id"], "study.yaml", tmp)
            return yaml.safe_load(Path(path).read_text()).get("scientific") or {}

    @functools.cached_property
    def points(self) -> list[str]:
        """The scientific points' labels in the order listed (the first is the reference)."""
        if POINTS in self.parent["tags"]:
            return json.loads(self.parent["tags"][POINTS])
        return [params_text(point) for point in scientific_points(self.scientific)]

    @property
    def confounds(self) -> list[str]:
        return json.loads(self.parent["tags"].get(CONFOUNDS, "[]"))

    def by_state(self, trials: list[Trial] | None = None) -> dict[str, int]:
        """Trials (default: the search's) counted by state."""
        counts: dict[str, int] = {}
        for trial in self.trials if trials is None else trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def ranked(self, states=("completed",), trials: list[Trial] | None = None) -> list[Trial]:
        """Trials (default: the search's) in `states` with the first objective, best first."""
        metric, mode = self.objectives[0]
        scored = [t for t in (self.trials if trials is None else trials)
                  if t.state in states and t.value(metric) is not None]
        return sorted(scored, key=lambda t: t.value(metric), reverse=(mode == "max"))

    def artifact_json(self, trial: Trial, name: str) -> dict | None:
        """A JSON artifact of a trial's run (e.g. summary.json), or None if it has none.

        Read from the run's artifact URI (from the search that built the record): asking by run
        id costs MLflow two reads of the whole run per call (run and logged-model lookups;
        bench/results/design_figures.md)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if not trial.artifact_uri:
            trial.artifact_uri = self.client().get_run(trial.run_id).info.artifact_uri
        repository = get_artifact_repository(trial.artifact_uri, tracking_uri=self.stores.mlflow_uri)
        folder = posixpath.dirname(name) or None
        if name not in {a.path for a in repository.list_artifacts(folder)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(repository.download_artifacts(name, tmp)).read_text())

    def metric_history(self, trial: Trial, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client().get_metric_history(trial.run_id, metric)]


def _config_from_params(params: dict[str, str]) -> Config:
    """MLflow params are strings: the schema's types come back through the config loader. A
    trial's run leaves out the fields its trainable and task never read when they are at their
    defaults (study.tracking.logged_params), so the defaults filled in here rebuild its exact
    config."""
    tree: dict = {}
    for key, text in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        value = _param_value(text)
        node[leaf] = copy.deepcopy(value) if isinstance(value, (list, dict)) else value
    return from_dict(tree)


@functools.lru_cache(maxsize=65_536)
def _param_value(text: str):
    """A param's text parsed once: runs share most values (a few hundred distinct texts in
    500 runs of 37 params; bench/results/design_figures.md)."""
    return yaml.safe_load(text)


class NoRecord(UserError):
    """The study has no MLflow experiment or parent run yet (it never started a trial)."""
    EXIT_CODE = 66          # EX_NOINPUT: nothing to read yet


def _shown(stores) -> str:
    """The tracking URI as it may be printed (the service's Stores keep any password out of it)."""
    return getattr(stores, "mlflow_shown", stores.mlflow_uri)


PAGE = 10_000      # runs per search request (MLflow servers refuse more than 50 000)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str = "", page: int | None = None) -> list:
    """Every run of the experiment matching the filter: one search answers at most `page` runs
    and a token for the rest, so this follows the tokens (a single call truncated silently)."""
    runs, token = [], None
    while True:
        found = client.search_runs([experiment_id], filter_string, max_results=page or PAGE, page_token=token)
        runs += found
        token = found.token
        if not token:
            return runs


def _runs(stores) -> list[RunRow]:
    """The study's MLflow runs: an embedded SQLite store read directly (mlflow_sqlite.py), a
    tracking server through MLflow's client."""
    path = sqlite_file(stores.mlflow_uri)
    if path:
        try:
            runs = read_runs(path, stores.name)
        except sqlite3.DatabaseError as exc:        # "file is not a database", no MLflow tables, ...
            raise ConfigError(f"{_shown(stores)}: not a readable MLflow store ({exc})") from None
    else:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=stores.mlflow_uri)
        experiment = client.get_experiment_by_name(stores.name)
        runs = [RunRow.of(r) for r in search_all(client, experiment.experiment_id)] if experiment else None
    if runs is None:
        raise NoRecord(f"no MLflow experiment '{stores.name}' in {_shown(stores)}")
    return runs


def read_record(stores) -> StudyRecord:
    runs = _runs(stores)
    parents = [r for r in runs if r.tags.get(ROLE) == PARENT]
    if not parents:
        raise NoRecord(f"study '{stores.name}' has no parent run in {_shown(stores)}")
    parent = parents[0]
    objectives = [tuple(o.rsplit(":", 1)) for o in parent.params["objectives"].split(",")]
    found: dict[str, list[Trial]] = {TRIAL: [], REPLICATE: []}
    for run in runs:
        tags = run.tags
        if tags.get(ROLE) not in found:
            continue
        found[tags[ROLE]].append(Trial(
            number=int(tags[NUMBER]), name=run.run_name, state=tags.get(STATE, RUNNING),
            reason=tags.get(REASON, ""), sampled=json.loads(tags.get(SAMPLED, "{}")),
            config=_config_from_params(run.params),
            objectives={m: run.metrics[m] for m, _ in objectives if m in run.metrics},
            steps=int(tags.get(STEPS, 0)), run_id=run.run_id,
            repeat=int(tags.get(REPEAT, 0)), tags=dict(tags), artifact_uri=run.artifact_uri))
    for trials in found.values():
        trials.sort(key=lambda t: (t.number, t.repeat))
    # untagged runs (a study from before horizons) trained the first horizon, as tagged ones of it
    tagged = {int(t.tags[HORIZON]) for t in found[REPLICATE] if HORIZON in t.tags}
    at_longest = [len(tagged) < 2 or t.tags.get(HORIZON) == str(max(tagged)) for t in found[REPLICATE]]
    return StudyRecord(stores, {"run_id": parent.run_id, "params": dict(parent.params),
                                "tags": dict(parent.tags)}, objectives, found[TRIAL],
                       [t for t, kept in zip(found[REPLICATE], at_longest) if kept],
                       [t for t, kept in zip(found[REPLICATE], at_longest) if not kept])
