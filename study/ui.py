"""`loopstudy ui NAME`: a lean MLflow UI (one worker, no job runner) on the study's stores, or
optuna-dashboard with `--optuna`; both on 127.0.0.1, in the foreground until Ctrl+C or SIGTERM,
which stop the server with every process it started. A study tracked on an MLflow server
(cluster) gets that server's URL instead.

The URL opens the study's view (MLflow keeps a shared view as an experiment tag,
`mlflow.sharedViewState.<id>`, and the URL names it with `viewStateShareKey`): the trial and
replicate runs, best first, with a column for each objective, compared and searched parameter,
the seed, the loop count b the run trained at its last step, its role and its state, in the
model-training mode of the UI (`workflowType=machine_learning`), not the GenAI one.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from analysis.layout import B_TRAINED, PARENT, REASON, ROLE, STATE, STEPS, scientific_fields

from .cluster.mlflow_server import LEAN_ENV, mlflow_server_command, run_until_signal
from .errors import StudyError
from .spec import StudySpec
from .storage.stores import SERVERS, Stores
from .storage.credentials import redact
from .tracking.trial_run import CURVES

VIEW_ID = "loopstudy"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"          # the experiment's description in the UI
RUN_NAME_COLUMN = "attributes.`Run Name`"


def column(kind: str, key: str) -> str:
    """MLflow's id of a runs-table column, e.g. metrics.`eval/err_last`."""
    return f"{kind}.`{key}`"


def shown_params(spec: StudySpec) -> list[str]:
    """The compared and searched config fields, then the seed (once each)."""
    keys = [*scientific_fields(spec.scientific), *spec.space.searched, "training.seed"]
    return [k for i, k in enumerate(keys) if "." in k and k not in keys[:i]]


def runs_view(spec: StudySpec) -> dict:
    """The view's state as MLflow's runs page reads it: search facets and table layout."""
    objective = spec.objectives[0]
    widths = {RUN_NAME_COLUMN: 370}
    widths.update({column("metrics", o.metric): 120 for o in spec.objectives})
    widths[column("tags", STATE)] = 95
    widths.update({column("params", k): 150 for k in shown_params(spec)})
    widths.update({column("tags", k): w for k, w in ((B_TRAINED, 90), (ROLE, 125), (STEPS, 70), (REASON, 330))})
    return {"searchFilter": f"tags.{ROLE} != '{PARENT}'",
            "orderByKey": column("metrics", objective.metric), "orderByAsc": objective.mode == "min",
            "selectedColumns": list(widths)[1:], "columnOrder": list(widths), "columnWidths": widths,
            "runsHiddenMode": "SHOW_ALL",
            # the chart view opens on the science curves overlaid across runs (clear the box for all)
            "chartsSearchFilter": CURVES}


def study_note(spec: StudySpec) -> str:
    """The experiment's description: what the columns and metrics mean."""
    objectives = ", ".join(f"`{o.metric}` ({o.mode})" for o in spec.objectives)
    return (f"loopstudy study `{spec.name}` (trainable `{spec.trainable}`), objective {objectives}. "
            "`eval/err_*`: squared error divided by the task's normaliser (d for linear regression), "
            "so predicting 0 scores about 1; `train/loss` is the training mean squared error, not "
            "divided. Science curves, overlaid in the chart view: `curve/err_vs_k` (error vs "
            "in-context examples, step = k), `curve/err_vs_iteration` (last-point error vs loop "
            "iteration, step = iteration). Tags: `state` completed | pruned (stopped early, "
            "`state_reason` says by what) | failed; `loopstudy_role` trial | replicate (fresh "
            f"seeds of a best config); `{B_TRAINED}` the loop count at the run's last step.")


def publish_view(stores: Stores, spec: StudySpec) -> tuple[str, str | None]:
    """Write the study's view, mode and description to its MLflow experiment; its id and the
    study's (parent) run id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stores.mlflow_uri)
    experiment = client.get_experiment_by_name(stores.name)
    if experiment is None:
        raise StudyError(f"study '{spec.name}' has no MLflow experiment in {stores.mlflow_shown} yet")
    envelope = {"name": f"loopstudy: runs by {spec.objectives[0].metric}",
                "createdAt": int(time.time() * 1000), "state": json.dumps(runs_view(spec))}
    client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, json.dumps(envelope))
    client.set_experiment_tag(experiment.experiment_id, KIND_TAG, MODEL_TRAINING)
    note = experiment.tags.get(NOTE_TAG, "")
    if not note or note.startswith("loopstudy study"):
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, study_note(spec))
    parents = client.search_runs([experiment.experiment_id], f"tags.{ROLE} = '{PARENT}'", max_results=1)
    return experiment.experiment_id, parents[0].info.run_id if parents else None


def runs_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The study's view, or with `run_id` that run's page, in the model-training mode."""
    page = f"runs/{run_id}?" if run_id else "runs?" + urlencode({"viewStateShareKey": VIEW_ID}) + "&"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/{page}workflowType=machine_learning"


def serve(spec: StudySpec, optuna: bool = False, port: int = 5000) -> None:
    stores = Stores.of(spec)
    private = None
    if optuna:
        # the storage URL, password included, goes in a file of ours, not on the command line
        # (which every user of the machine can read in /proc/PID/cmdline)
        private = Path(tempfile.mkdtemp(prefix="loopstudy-ui-"))     # 0700: for this user only
        config = private / "optuna-dashboard.toml"
        config.touch(mode=0o600)
        config.write_text(f"[optuna_dashboard]\nstorage = {json.dumps(stores.optuna_url)}\n")  # a TOML string
        command = [str(Path(sys.executable).parent / "optuna-dashboard"), "--from-config", str(config),
                   "--host", "127.0.0.1", "--port", str(port), "--quiet"]
        health = f"http://127.0.0.1:{port}/dashboard/"
        ready = f"open {health}   (Ctrl+C stops the server)"
    else:
        experiment_id, parent_id = publish_view(stores, spec)
        remote = stores.mlflow_uri.startswith(SERVERS)
        base = redact(stores.mlflow_shown).rstrip("/") if remote else f"http://127.0.0.1:{port}"
        ready = f"open {runs_url(base, experiment_id)}" + "   (Ctrl+C stops the server)" * (not remote)
        if parent_id:
            ready += f"\nthe study's own run (its answer): {runs_url(base, experiment_id, parent_id)}"
        if remote:
            print(ready, flush=True)
            return
        command = mlflow_server_command(stores.mlflow_uri, stores.artifacts, port=port)
        health = f"{base}/health"
    try:
        code = run_until_signal(command, LEAN_ENV, health, ready)
    finally:
        if private:
            shutil.rmtree(private, ignore_errors=True)
    if code:
        raise SystemExit(code)
