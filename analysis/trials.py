"""A finished study read back from its stores as a tidy list of trials. Read-only; Ray need
not run. MLflow holds what people browse (names, params, curves, artifacts); Optuna the search."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow import MlflowClient

from study.stores import Stores
from study.tracking import NUMBER, REPLICATE, ROLE, TRIAL

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in reports

# MLflow params are strings: the schema's types come back through the config loader
from trainables.config import Config, from_dict


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

    def value(self, metric: str) -> float | None:
        return self.objectives.get(metric)


@dataclass
class StudyRecord:
    stores: Stores
    parent: dict                     # the parent run: {"run_id", "params", "tags"}
    objectives: list[tuple[str, str]]  # (metric, mode)
    trials: list[Trial]              # the search's trials
    replicates: list[Trial] = field(default_factory=list)  # the replicate phase's runs, if any

    @property
    def name(self) -> str:
        return self.stores.name

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.stores.mlflow_uri)

    def optuna_study(self) -> optuna.Study:
        return self.stores.optuna_study()

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
        """A JSON artifact of a trial's run (e.g. summary.json), or None if it has none."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client().download_artifacts(trial.run_id, name, tmp)
            except Exception:  # MLflow raises its own and OSError types for a missing artifact
                return None
            return json.loads(Path(path).read_text())

    def metric_history(self, trial: Trial, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client().get_metric_history(trial.run_id, metric)]


def _config_from_params(params: dict[str, str]) -> Config:
    import yaml

    tree: dict = {}
    for key, text in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return from_dict(tree)


def load_study(stores: Stores) -> StudyRecord:
    client = MlflowClient(tracking_uri=stores.mlflow_uri)
    experiment = client.get_experiment_by_name(stores.name)
    if experiment is None:
        raise FileNotFoundError(f"no MLflow experiment '{stores.name}' in {stores.mlflow_uri}")
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get(ROLE) == "parent"]
    if not parents:
        raise FileNotFoundError(f"study '{stores.name}' has no parent run in {stores.mlflow_uri}")
    parent = parents[0]
    objectives = [tuple(o.rsplit(":", 1)) for o in parent.data.params["objectives"].split(",")]
    found: dict[str, list[Trial]] = {TRIAL: [], REPLICATE: []}
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE) not in found:
            continue
        found[tags[ROLE]].append(Trial(
            number=int(tags[NUMBER]), name=run.info.run_name, state=tags.get("state", "running"),
            reason=tags.get("state_reason", ""), sampled=json.loads(tags.get("sampled", "{}")),
            config=_config_from_params(run.data.params),
            objectives={m: run.data.metrics[m] for m, _ in objectives if m in run.data.metrics},
            steps=int(tags.get("steps", 0)), run_id=run.info.run_id,
            repeat=int(tags.get("repeat", 0)), tags=dict(tags)))
    for trials in found.values():
        trials.sort(key=lambda t: (t.number, t.repeat))
    return StudyRecord(stores, {"run_id": parent.info.run_id, "params": dict(parent.data.params),
                                "tags": dict(parent.data.tags)}, objectives, found[TRIAL], found[REPLICATE])
