"""Our MLflow layout, written from the driver only.

One experiment per study; a parent run for the study (spec, space, versions, git commit); a
child run per Tune trial, named for a human (`t007 s=2 T=15 b=60 D=64`), with the config fields
its trainable and task read as params (the whole config is its config.yaml), the curves at the
training step, the science curves at its end (`curve/...`, stepped by k or by iteration), the
loop count it trained at its last step (`b_trained`), the node it ran on (`node_id`, `node_ip`;
`nodes` lists every node of a trial retried elsewhere) and the GPUs Ray gave it (`gpu_ids`, set
once it had any), a `state` tag (completed, pruned, failed,
with `state_reason`), and config.yaml, eval.png, summary.json (and a probe trial's
probe/probe.png, probe/summary.json) as artifacts. Every write is one batched
request (`log_batch`). Runs are found again by tag, so a resumed study re-attaches to them
instead of creating duplicates.

While a tracking server is away, trial events go to a backlog instead and are sent when it
answers again (study/tracking/delivery.py, the Tracker's other half).
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict
from functools import cached_property
from importlib import metadata
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from analysis.layout import (B_TRAINED, CONFIG_HASH, CONTINUED_FROM, FAILED, HORIZON, GPU_IDS, NUMBER, PARENT, POINT, REASON, REPEAT, ROLE,
                             RUNNING, SAMPLED, STATE, STEPS, TRIAL, TUNE_ID, VERSIONED)
from analysis.trials import search_all
from trainables.probing import PROBE_FOLDER

from ..outcome import MLFLOW_STATUS, state_of
from ..storage.stores import Stores
from .delivery import Delivery, needs_mlflow
from .trial_run import CURVES, logged_params, loops_trained, science_curves, trial_config, trial_name

SEARCH_BEST = "search_best"     # tag of the best search trial (of each scientific point): one seed


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _batched(items: list, size: int = 100):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Tracker(Delivery):
    """MLflow reads and writes for one study. Picklable (Tune pickles its callbacks)."""

    def __init__(self, stores: Stores, wait_s: float = 0.0):
        self.__setstate__({"stores": stores, "wait_s": wait_s})

    def __getstate__(self):
        return {"stores": self.stores, "wait_s": self.wait_s}

    def __setstate__(self, state):
        self.stores, self.wait_s = state["stores"], state.get("wait_s", 0.0)   # a study started before wait_s
        self._client: MlflowClient | None = None
        self._ids: dict[str, str] = {}           # "experiment", "parent" -> id
        self._runs: dict[str, str] = {}          # Tune trial id -> run id
        self._last_step: dict[str, int] = {}     # run id -> last step already logged
        self._nodes: dict[str, list[str]] = {}   # run id -> Ray node ids it ran on, in order
        self._gpus: dict[str, str] = {}          # run id -> the GPU ids Ray gave it last ("" without)
        self._closed: set[str] = set()           # runs that ended before a resume: left as they are
        self._start_delivery()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.stores.mlflow_uri)
        return self._client

    def _apply(self, event: dict) -> None:
        """One trial event (TrackingCallback's), written to MLflow; idempotent."""
        tune_id, tune_config = event["tune_id"], event.get("config")
        if event["event"] == "start":
            self.child(tune_id, tune_config)
        elif event["event"] == "result":
            self.log_result(tune_id, tune_config, event["result"])
        else:
            self.end_child(self.child(tune_id, tune_config), event["state"], event["reason"],
                           Path(event["run_dir"]) if event.get("run_dir") else None)


    # ------------------------------------------------------------ the study's experiment

    @property
    def experiment_id(self) -> str:
        if "experiment" not in self._ids:
            found = self.client.get_experiment_by_name(self.stores.name)
            self._ids["experiment"] = found.experiment_id if found else self.client.create_experiment(
                self.stores.name, artifact_location=self.stores.artifact_location)
        return self._ids["experiment"]

    def _find(self, **tags) -> list:
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        return search_all(self.client, self.experiment_id, where)     # every page: one search stops at 10 000

    @needs_mlflow()
    def children(self, role: str = TRIAL, point: str = "") -> list:
        """The runs of the search's trials (or of the replicates, role=REPLICATE); with `point`,
        only those of that scientific point ("s=1")."""
        return self._find(**{ROLE: role, **({POINT: point} if point else {})})

    # ------------------------------------------------------------ the study's parent run

    def parent_id(self) -> str | None:
        if "parent" not in self._ids:
            found = self._find(**{ROLE: PARENT})
            if not found:
                return None
            self._ids["parent"] = found[0].info.run_id
        return self._ids["parent"]

    @needs_mlflow(at_start=True)
    def start_parent(self, spec) -> str:
        """The study's parent run: created once, set RUNNING again on resume."""
        run_id = self.parent_id()
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(STATE, RUNNING)])
            return run_id
        tags = {ROLE: PARENT, STATE: RUNNING, "git_commit": _git("rev-parse", "HEAD"),
                "git_dirty": str(bool(_git("status", "--porcelain"))), "python": platform.python_version()}
        tags.update({f"version.{p}": metadata.version(p) for p in VERSIONED})
        run_id = self.client.create_run(self.experiment_id, run_name=spec.name, tags=tags).info.run_id
        self._ids["parent"] = run_id
        params = {"trainable": spec.trainable, "base": ",".join(spec.bases), "space": spec.space.name,
                  "searched": ",".join(spec.space.searched), "seeds_per_config": spec.seeds_per_config,
                  "objectives": ",".join(f"{o.metric}:{o.mode}" for o in spec.objectives),
                  **{f"override.{k}": v for k, v in spec.overrides.items()},
                  # as the study gives them: a password only ever as its ${VARIABLE} (study/storage/credentials.py)
                  **{f"storage.{k}": v for k, v in spec.storage.given().items()}}
        for section in ("budget", "scheduler", "resources"):
            value = getattr(spec, section)
            params.update({f"{section}.{k}": v for k, v in (asdict(value) if value else {}).items()})
        for chunk in _batched([Param(k, str(v)) for k, v in params.items()]):
            self.client.log_batch(run_id, params=chunk)
        self.client.log_text(run_id, spec.to_yaml(), "study.yaml")
        self.client.log_text(run_id, json.dumps({k: asdict(p) for k, p in spec.space.params.items()},
                                                indent=1, default=str), "space.json")
        return run_id

    @needs_mlflow()
    def tag_parent(self, tags: dict[str, str], metrics: dict[str, float] | None = None, step: int = 0) -> None:
        """Tags (and metrics, at `step`) on the study's parent run, in one request."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_id(), tags=[RunTag(k, str(v)) for k, v in tags.items()],
                              metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()])

    @needs_mlflow()
    def end_parent(self, state: str, summary: dict) -> None:
        run_id = self.parent_id()
        tags = [RunTag(STATE, state)] + [RunTag(k, str(v)) for k, v in summary.items()]
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FINISHED" if state == "finished" else "KILLED")

    # ------------------------------------------------------------ one child run per trial

    def child(self, tune_id: str, tune_config: dict | None) -> str:
        """The run of a Tune trial: found by tag (also after a resume), else created (from its
        Tune config)."""
        if tune_id in self._runs:
            return self._runs[tune_id]
        found = self._find(**{TUNE_ID: tune_id})
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != RUNNING.upper():
                self._closed.add(run_id)
            elif not found[0].data.params or "config.yaml" not in {a.path for a in self.client.list_artifacts(run_id)}:
                self._describe(run_id, tune_config)     # created, then the server went away or the disk filled
            self._last_step[run_id] = int(found[0].data.tags.get(STEPS, -1))   # set with each logged batch
            self._nodes[run_id] = [n for n in found[0].data.tags.get("nodes", "").split(",") if n]
            self._gpus[run_id] = found[0].data.tags.get(GPU_IDS, "")
        else:
            run_id = self._create_child(tune_id, tune_config)
        self._runs[tune_id] = run_id
        return run_id

    def _create_child(self, tune_id: str, tune_config: dict) -> str:
        tags = {"mlflow.parentRunId": self.parent_id(), ROLE: tune_config.get("phase", TRIAL),
                TUNE_ID: tune_id, NUMBER: str(tune_config["trial"]), REPEAT: str(tune_config["repeat"]),
                STATE: RUNNING, STEPS: "0", SAMPLED: json.dumps(tune_config["sampled"]),
                **({POINT: tune_config["scientific"]} if tune_config.get("scientific") else {}),
                **{tag: str(tune_config[tag]) for tag in (HORIZON, CONTINUED_FROM) if tag in tune_config},
                CONFIG_HASH: tune_config[CONFIG_HASH]}
        run_id = self.client.create_run(self.experiment_id, run_name=trial_name(tune_config),
                                        tags=tags).info.run_id
        self._last_step[run_id] = -1
        self._nodes[run_id] = []
        self._gpus[run_id] = ""
        self._describe(run_id, tune_config)
        return run_id

    def _describe(self, run_id: str, tune_config: dict) -> None:
        """A trial run's params and config.yaml (idempotent: the same values again)."""
        config = trial_config(tune_config)
        # None as YAML reads it back: analysis/trials.py rebuilds the config from the params
        params = [Param(k, "null" if v is None else str(v)) for k, v in logged_params(config, self.trainable).items()]
        for chunk in _batched(params):
            self.client.log_batch(run_id, params=chunk)
        self.client.log_text(run_id, config.to_yaml(), "config.yaml")

    def _tag_node(self, run_id: str, result: dict) -> None:
        """Tag the node and the GPUs a result came from, when they are not the ones already tagged."""
        node, seen = result.get("node_id"), self._nodes[run_id]
        if node and (not seen or seen[-1] != node):
            self.client.log_batch(run_id, tags=[RunTag("node_id", node), RunTag("nodes", ",".join(seen + [node])),
                                                RunTag("node_ip", str(result.get("node_ip", "")))])
            seen.append(node)
        gpus = str(result.get(GPU_IDS, ""))
        if gpus != self._gpus.get(run_id, ""):
            self.client.log_batch(run_id, tags=[RunTag(GPU_IDS, gpus)])
            self._gpus[run_id] = gpus

    def log_result(self, tune_id: str, tune_config: dict | None, result: dict) -> None:
        run_id = self.child(tune_id, tune_config)
        step = int(result.get("step", 0))
        if run_id in self._closed:
            return
        self._tag_node(run_id, result)
        if step <= self._last_step.get(run_id, -1):
            return                       # logged before the driver went down, or a retry replaying
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if "/" in k and not k.startswith("config/") and isinstance(v, (int, float))]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(STEPS, str(step))])
        self._last_step[run_id] = step

    @cached_property
    def trainable(self) -> str:
        """The study's trainable (train, probe, synthetic), as its parent run records it."""
        return self.client.get_run(self.parent_id()).data.params["trainable"]

    def end_child(self, run_id: str, state: str, reason: str, run_dir: Path | None = None) -> None:
        """Close a trial's run: its state and reason, the loop count b it trained at its last
        step, its science curves (from summary.json, once) and its files."""
        if run_id in self._closed:
            return
        run = self.client.get_run(run_id)
        tags = [RunTag(STATE, state), RunTag(REASON, reason)]
        b = loops_trained(run.data.params, int(run.data.tags.get(STEPS, 0)))
        tags += [RunTag(B_TRAINED, str(b))] if b is not None else []
        self.client.log_batch(run_id, tags=tags)
        curves_logged = any(key.startswith(CURVES) for key in run.data.metrics)   # before the server went away
        for chunk in _batched(science_curves(run_dir) if run_dir and not curves_logged else [], 1000):
            self.client.log_batch(run_id, metrics=chunk)
        for folder, name in [("", "eval.png"), ("", "summary.json"),
                             (PROBE_FOLDER, "probe.png"), (PROBE_FOLDER, "summary.json")]:
            if run_dir and (run_dir / folder / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / folder / name), folder or None)
        self.client.set_terminated(run_id, MLFLOW_STATUS[state])
        self._closed.add(run_id)

    # ------------------------------------------------------------ after the run

    @needs_mlflow()
    def reconcile(self, study: optuna.Study, point: str = "") -> None:
        """Close every child run (of scientific `point`) still RUNNING from its Optuna trial's
        final state and reason, and tag the search's best trial (one objective: `search_best`,
        on one seed) or the Pareto set (several: `pareto`)."""
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if len(study.directions) > 1:
            front = {t.number for t in study.best_trials}
            tag = "pareto"
        else:
            complete = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
            front = {study.best_trial.number} if complete else set()
            tag = SEARCH_BEST
        for run in self.children(point=point):
            frozen = trials.get(int(run.data.tags[NUMBER]))
            if run.info.status == "RUNNING":
                state = state_of(frozen, FAILED) if frozen else FAILED
                reason = frozen.user_attrs.get(REASON, "lost") if frozen else "no Optuna trial"
                self.end_child(run.info.run_id, state, reason)
            on_front = frozen is not None and frozen.number in front
            self.client.log_batch(run.info.run_id, tags=[RunTag(tag, str(on_front).lower())])
