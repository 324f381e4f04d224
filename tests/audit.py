"""The audit every fault test ends with: Optuna, MLflow, the run folders and Ray's experiment
state tell the same story, and nothing was lost or written twice.

Used by the PostgreSQL, MLflow-outage and storage-fault tests on studies whose trials all run to
the end (no scheduler): `Stores` names where one study keeps them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from ray.tune import ExperimentAnalysis

from analysis.layout import NUMBER, REASON, ROLE, STATE, TUNE_ID

METRIC = "eval/err_last"


@dataclass(frozen=True)
class StudyStores:
    """Where one study lies: its name, Optuna's and MLflow's URIs, and its Ray experiment folder
    (each trial's run folder is `<experiment>/<Tune trial id>`)."""
    name: str
    optuna: str
    mlflow: str
    experiment: Path

    @classmethod
    def embedded(cls, results: Path, name: str) -> "StudyStores":
        """A study with the embedded defaults, in results folder `results`."""
        return cls(name, f"sqlite:///{results / 'optuna.db'}", f"sqlite:///{results / 'mlflow.db'}",
                   results / "ray" / name)


def finished_trials(stores: StudyStores) -> dict[int, dict]:
    """What the stores hold of every trial finished in both: Optuna's state, value and
    intermediate values, MLflow's run (status, state tag, the curve, the artifacts)."""
    study = optuna.load_study(study_name=stores.name, storage=stores.optuna)
    client = MlflowClient(stores.mlflow)
    experiment = client.get_experiment_by_name(stores.name).experiment_id
    runs = {int(r.data.tags[NUMBER]): r for r in client.search_runs([experiment], f"tags.{ROLE} = 'trial'")}
    found = {}
    for trial in study.get_trials(deepcopy=False):
        run = runs.get(trial.number)
        if trial.state.is_finished() and run and run.info.status != "RUNNING":
            curve = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, METRIC)]
            artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
            found[trial.number] = {"optuna": (trial.state, trial.value, trial.intermediate_values),
                                   "mlflow": (run.info.run_id, run.info.status, run.data.tags[STATE], curve,
                                              artifacts)}
    return found


def audit(stores: StudyStores, n_trials: int, steps: list[int]) -> dict[int, dict]:
    """`n_trials` trials COMPLETE in Optuna with a value at each of `steps`; each has one
    finished MLflow run under the one finished parent run, with every step once, the same curve
    as its run folder's metrics.jsonl and its artifacts; a TERMINATED Tune trial at the last
    step; no Optuna trial left RUNNING. A trial lost with a crashed driver (begun after Tune's
    last snapshot) is FAIL in Optuna with a 'lost' reason, its MLflow run (if it has one)
    failed, and Tune does not know it. Returns `finished_trials`."""
    trials = {t.number: t for t in optuna.load_study(study_name=stores.name, storage=stores.optuna).trials}
    complete = {n for n, t in trials.items() if t.state == TrialState.COMPLETE}
    lost = {n: (t.state, t.user_attrs.get(REASON, "")) for n, t in trials.items() if n not in complete}
    assert len(complete) == n_trials, lost
    assert all(state == TrialState.FAIL and reason.startswith("lost") for state, reason in lost.values()), lost
    client = MlflowClient(stores.mlflow)
    experiment = client.get_experiment_by_name(stores.name).experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get(ROLE) == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].data.tags[STATE] == "finished"
    children = {int(r.data.tags[NUMBER]): r for r in runs if r.data.tags.get(ROLE) == "trial"}
    tune_ids = {r.data.tags[TUNE_ID] for r in children.values()}
    assert len(runs) - 1 == len(children) == len(tune_ids), "duplicate MLflow runs"      # one per trial
    assert complete <= set(children) <= set(trials)
    for number in set(children) - complete:
        assert (children[number].info.status, children[number].data.tags[STATE]) == ("FAILED", "failed")
    tune_trials = {t.trial_id: t for t in ExperimentAnalysis(str(stores.experiment)).trials}
    assert set(tune_trials) == {children[n].data.tags[TUNE_ID] for n in complete}
    for number in complete:
        run, tune_id = children[number], children[number].data.tags[TUNE_ID]
        assert run.info.status == "FINISHED" and run.data.tags[STATE] == "completed", run.info.run_name
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        curve = client.get_metric_history(run.info.run_id, METRIC)
        assert [m.step for m in curve] == steps, f"{run.info.run_name}: steps missing or logged twice"
        assert curve[-1].value == pytest.approx(trials[number].value)
        assert sorted(trials[number].intermediate_values) == steps
        assert {"config.yaml", "summary.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        lines = [json.loads(line) for line in (stores.experiment / tune_id / "metrics.jsonl").open()]
        assert [(r["step"], r[METRIC]) for r in lines] == [(m.step, pytest.approx(m.value)) for m in curve]
        assert tune_trials[tune_id].status == "TERMINATED" and tune_trials[tune_id].last_result["step"] == steps[-1]
    return finished_trials(stores)
