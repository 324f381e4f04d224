"""Run and resume a study on Ray Tune: OptunaSearch on a persistent Optuna storage, ASHA on
the trainer's `step`, checkpoints at evaluations, retries, our MLflow layout.

The driver starts a local Ray, or joins the cluster in RAY_ADDRESS (set for a Ray Job's
driver by `loopstudy submit`); on a cluster every node is first checked against the stores.

Ray Tune returns normally from `fit()` after a SIGINT (with a partial result), so whether the
study finished is decided here from the stores: any trial whose MLflow run is still open, or
fewer trials than the budget, means interrupted (resume with `loopstudy resume NAME`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from optuna.trial import TrialState

from . import QUIET_ENV
from .cluster import READY, alive_nodes, check_nodes
from .outcome import RUNNING
from .searcher import StudySearch, fail_running
from .spec import StudyError, StudySpec
from .stores import Stores
from .tracking import TUNE_ID, Tracker, TrackingCallback


@dataclass
class StudyResult:
    finished: bool
    states: dict[str, int] = field(default_factory=dict)     # Optuna state name -> count
    wall_s: float = 0.0          # Tuner.fit()
    trials_s: float = 0.0        # the trials' own time (Tune's time_total_s), summed
    concurrency: int = 1

    @property
    def overhead(self) -> float:
        """Share of the wall time not explained by the trials' time / concurrency."""
        return 1 - self.trials_s / self.concurrency / self.wall_s if self.wall_s else 0.0


def _start_ray(stores: Stores) -> int:
    """Join the cluster in RAY_ADDRESS, checking that every node reaches the stores, or start a
    local Ray on loopback. Returns the CPUs Ray has."""
    import ray

    if not ray.is_initialized() and os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=False, logging_level=logging.WARNING)
        errors = stores.storage.cluster_errors() if len(alive_nodes()) > 1 else []
        if errors:
            raise StudyError(f"{stores.name}: a multi-node cluster needs shared stores:\n  " + "\n  ".join(errors))
        print(f"{READY} ({check_nodes(stores)} nodes)", flush=True)
    elif not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
    return int(ray.cluster_resources().get("CPU", 1))


def _adapter(spec: StudySpec):
    """The Tune function trainable for the study's `trainable` (train_trainable, ...)."""
    from trainables import ray_adapter

    function = getattr(ray_adapter, f"{spec.trainable}_trainable", None)
    if function is None:
        raise StudyError(f"{spec.results_dir}: 'trainable': trainables.ray_adapter has no "
                         f"'{spec.trainable}_trainable' yet")
    return function


def _tuner(spec: StudySpec, stores: Stores, tracker: Tracker, resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from .progress import ProgressCallback

    trainable = tune.with_resources(_adapter(spec), {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    param_space = {"base": spec.base, "overrides": spec.overrides, "run_root": str(stores.experiment),
                   "repeats": spec.seeds_per_config}
    if resume:
        return tune.Tuner.restore(str(stores.experiment), trainable, resume_errored=True,
                                  param_space=param_space)
    searcher = StudySearch(spec.space.sampler(spec.base, spec.overrides), metrics=spec.metrics,
                           modes=spec.modes, storage=stores.optuna_storage(), study_name=spec.name,
                           max_steps=spec.max_steps, seeds_per_config=spec.seeds_per_config,
                           base_seed=spec.config.training.seed, sampler=spec.sampler, sampler_seed=spec.sampler_seed)
    scheduler = FIFOScheduler()
    if spec.scheduler:
        scheduler = ASHAScheduler(time_attr="step", metric=spec.metrics[0], mode=spec.modes[0],
                                  max_t=spec.max_steps, grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    total = spec.budget.num_samples * spec.seeds_per_config
    callbacks = [TrackingCallback(tracker, spec.max_steps),
                 ProgressCallback(spec.metrics, spec.max_steps, total)]
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total,
                                    max_concurrent_trials=spec.budget.max_concurrent,
                                    time_budget_s=spec.budget.time_limit_s, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(stores.ray), callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures)))


def run_study(spec: StudySpec, resume: bool = False) -> StudyResult:
    """Run `spec` (or resume it after an interruption or a crash); returns whether it finished."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    stores = Stores.of(spec)
    _adapter(spec)
    started_before = (stores.experiment / "tuner.pkl").is_file()
    if resume and not started_before:
        raise StudyError(f"{stores.experiment}: nothing to resume (no Ray experiment state)")
    if not resume and (started_before or stores.study_file.exists()):
        raise StudyError(f"{stores.root} already holds study '{spec.name}': resume it with "
                         f"`loopstudy resume {stores.root}` (on a cluster, add --address), or delete "
                         "the folder to start again")
    cpus = _start_ray(stores)
    stores.root.mkdir(parents=True, exist_ok=True)
    stores.study_file.write_text(spec.to_yaml())
    tracker = Tracker(stores)
    tracker.start_parent(spec)
    tuner = _tuner(spec, stores, tracker, resume)
    started = time.monotonic()
    grid = tuner.fit()
    wall = time.monotonic() - started

    study = stores.optuna_study()
    children = tracker.children()
    open_runs = {r.data.tags[TUNE_ID] for r in children if r.info.status == RUNNING.upper()}
    known = {r.data.tags[TUNE_ID] for r in children}
    ids = [os.path.basename(r.path) for r in grid]
    unfinished = [i for i in ids if i in open_runs or i not in known]
    time_up = spec.budget.time_limit_s is not None and wall >= spec.budget.time_limit_s
    total = spec.budget.num_samples * spec.seeds_per_config
    finished = time_up or not unfinished and len(ids) >= total
    if finished:
        if time_up:
            fail_running(study, "stopped by the study's time limit", TrialState.PRUNED)
        fail_running(study, "lost: never reported back to the searcher")
        tracker.reconcile(study)
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    result = StudyResult(finished, states, wall, sum(r.metrics.get("time_total_s", 0) for r in grid),
                         min(spec.budget.max_concurrent, int(cpus // spec.resources.cpu) or 1))
    summary = {f"trials_{k.lower()}": v for k, v in states.items()}
    summary.update(wall_s=round(wall, 1), trials_s=round(result.trials_s, 1),
                   overhead=round(result.overhead, 3))
    tracker.end_parent("finished" if finished else "interrupted", summary)
    return result
