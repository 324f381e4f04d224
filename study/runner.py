"""Run and resume a study on Ray Tune: OptunaSearch on a persistent Optuna storage, ASHA on
the trainer's `step`, checkpoints at evaluations, retries, our MLflow layout; then, when the
study asks for it, the replicate phase (study/replicate_plan.py) as a second Tune experiment.

The driver starts a local Ray, or joins the cluster in RAY_ADDRESS (set for a Ray Job's
driver by `loopstudy submit`); on a cluster every node is first checked against the stores.

Ray Tune returns normally from `fit()` after a SIGINT (with a partial result), so whether the
study finished is decided here from the stores: any trial whose MLflow run is still open, or
fewer trials than the budget, means interrupted (resume with `loopstudy resume NAME`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from optuna.trial import TrialState

from analysis.layout import (COMPARE_AT, COMPUTE, CONFOUNDS, POINTS, REPLICATE, RUNNING, SCIENTIFIC_VALUES, STATE,
                             TRIAL, TUNE_ID)
from analysis.library_internals import TUNER_FILE
from trainables.config import first_difference, from_dict
from trainables.run_folder import KEEP_CHECKPOINTS

from . import quiet_environment, quiet_libraries
from .cluster.nodes import READY, alive_nodes, check_nodes, check_trial_fits
from .design import Phase
from .errors import StudyError
from .replicate_plan import PlannedTrials, make_plan, read_plan, write_plan
from .replicate_rounds import run_rounds
from .searcher import StudySearch, fail_running
from .spec import StudySpec, max_steps
from .stop_signals import fitting, stop_handlers, stop_requested
from .storage import disk_checks, disk_guard
from .storage.stores import Stores
from .storage.study_lock import StudyLock
from .tracking.delivery import TrackingCallback, wait_limit_s
from .tracking.runs import Tracker


@dataclass
class StudyResult:
    finished: bool
    states: dict[str, int] = field(default_factory=dict)     # Optuna state name -> count
    replicates: dict[str, int] = field(default_factory=dict) # replicate run state -> count
    wall_s: float = 0.0          # Tuner.fit(), this driver's
    trials_s: float = 0.0        # the trials' own time in this driver (Tune's time_total_s), summed
    concurrency: int = 1

    @property
    def overhead(self) -> float:
        """Share of the wall time not explained by the trials' time / concurrency."""
        return 1 - self.trials_s / self.concurrency / self.wall_s if self.wall_s else 0.0


BASE_CONFIGS = "base_configs.yaml"   # each base's resolved config when the study started


def _write_base_configs(spec: StudySpec, stores: Stores) -> None:
    (stores.root / BASE_CONFIGS).write_text(yaml.safe_dump(
        {b: c.to_dict() for b, c in spec.base_configs.items()}, sort_keys=False))


def _check_base_configs(spec: StudySpec, stores: Stores) -> None:
    """On resume, refuse a base whose resolved config changed since the study started (an edited
    preset or base file would silently change the trials drawn from now on)."""
    path = stores.root / BASE_CONFIGS
    if not path.is_file():
        return
    kept = yaml.safe_load(path.read_text())
    for base, config in spec.base_configs.items():
        difference = first_difference(from_dict(kept[base]), config) if base in kept else None
        if difference:
            raise StudyError(f"{path}: base '{base}' resolves to another config than when the study "
                             f"started ({difference}): restore the preset or base file, or start a "
                             "new study")


def _start_ray(stores: Stores, num_gpus: int | None = None) -> dict[str, float]:
    """Join the cluster in RAY_ADDRESS, checking that every node reaches the stores, or start a
    local Ray on loopback (with `num_gpus` GPUs declared; None: the ones Ray detects). Returns
    the CPUs and GPUs Ray has ({"CPU": 2.0, "GPU": 1.0}).

    Where a local Ray listens follows its node IP alone: 127.0.0.1 makes every process (GCS,
    raylet, agents, workers, this driver) bind loopback; any other address makes them bind all
    interfaces. Ray maps a given 127.0.0.1 back to the routable address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before it was imported (study.LOCAL_RAY_ENV), so
    that is checked here, before anything listens."""
    import ipaddress

    import ray

    if not ray.is_initialized() and os.environ.get("RAY_ADDRESS"):
        if num_gpus is not None:
            raise StudyError("--num-gpus declares GPUs to a local Ray; a cluster's nodes declare their own "
                             "(`ray start --num-gpus`)")
        ray.init(address="auto", log_to_driver=False, logging_level=logging.WARNING)
        errors = stores.storage.cluster_errors() if len(alive_nodes()) > 1 else []
        if errors:
            raise StudyError(f"{stores.name}: a multi-node cluster needs shared stores:\n  " + "\n  ".join(errors))
        print(f"{READY} ({check_nodes(stores)} nodes)", flush=True)
    elif not ray.is_initialized():
        node_ip = ray.util.get_node_ip_address()
        if not ipaddress.ip_address(node_ip).is_loopback:
            raise StudyError(f"{stores.name}: a local Ray would listen on {node_ip}, not only on 127.0.0.1: "
                             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER must be 0 before Ray is imported (the "
                             "loopstudy CLI sets it; in Python call study.quiet_environment() first)")
        ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=num_gpus, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    return {key: ray.cluster_resources().get(key, 0.0) for key in ("CPU", "GPU")}


def _adapter(spec: StudySpec):
    """The Tune function trainable for the study's `trainable` (train_trainable, ...)."""
    from trainables.ray_adapter import TRAINABLES

    return TRAINABLES[spec.trainable]


def _tuner(spec: StudySpec, stores: Stores, tracker: Tracker, resume: bool, phase: Phase | None,
           plan: list[dict] | None = None, experiment: Path | None = None):
    """A search phase's Tuner (one per scientific point: its own Optuna study, its own ASHA), or
    with a `plan` the replicate phase's (no scheduler, no time limit), in `experiment` when given
    (a replicate round's: study/replicate_rounds.py)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from .progress_table import ProgressCallback

    experiment = stores.experiment_of(phase.experiment_name(spec.name)) if plan is None \
        else experiment or stores.replicate_experiment
    trainable = tune.with_resources(disk_guard.stops_on_full_disk(_adapter(spec)),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    param_space = {"run_root": str(experiment), "repeats": spec.seeds_per_config,
                   "phase": TRIAL if plan is None else REPLICATE,
                   **(phase.trial_fields() if plan is None else {})}
    if resume:
        try:
            return tune.Tuner.restore(str(experiment), trainable, resume_errored=True, param_space=param_space)
        except ValueError as exc:       # Tune wants the keys it started with: a folder from before "value"
            if "value" not in param_space or "param_space" not in str(exc):
                raise
            return tune.Tuner.restore(str(experiment), trainable, resume_errored=True,
                                      param_space={k: v for k, v in param_space.items() if k != "value"})
    scheduler, time_limit = FIFOScheduler(), None
    # a trial's last step: its phase's (compared at equal compute, each value trains its own
    # steps); a replicate round, without early stopping, counts a trial complete from the fewest
    # steps of its plan (a question's longer horizon trains more)
    steps = spec.phase_max_steps(phase) if plan is None else \
        min(max_steps(spec.trainable, from_dict(t["config"])) for t in plan)
    if plan is not None:
        searcher, total = PlannedTrials(plan, spec.metrics[0], spec.modes[0]), len(plan)
    else:
        searcher = StudySearch(spec.define_by_run(phase.fixed), metrics=spec.metrics, modes=spec.modes,
                               storage=stores.optuna_storage(), study_name=phase.study_name(spec.name),
                               max_steps=steps, seeds_per_config=spec.seeds_per_config,
                               base_seed=spec.config.training.seed, sampler=spec.sampler,
                               sampler_seed=spec.sampler_seed, point=phase.point)
        total, time_limit = spec.budget.num_samples * spec.seeds_per_config, spec.budget.time_limit_s
        if spec.scheduler:
            scheduler = ASHAScheduler(time_attr="step", metric=spec.metrics[0], mode=spec.modes[0],
                                      max_t=steps, grace_period=spec.scheduler.grace_period,
                                      reduction_factor=spec.scheduler.reduction_factor)
    callbacks = [TrackingCallback(tracker, steps), ProgressCallback(spec.metrics, steps, total)]
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total,
                                    max_concurrent_trials=spec.budget.max_concurrent,
                                    time_budget_s=time_limit, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=str(stores.ray), callbacks=callbacks, verbose=0,
            stop=disk_guard.DiskGuard(),       # sees each result first: stops the study before its disk fills
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures)))


def _fit(spec: StudySpec, stores: Stores, tracker: Tracker, resume: bool, phase: Phase | None,
         plan: list[dict] | None = None, experiment: Path | None = None) -> tuple[bool, float, float]:
    """Run (or resume) one phase; (finished, wall seconds, the trials' own seconds summed).

    A phase is finished when every trial it should run has a closed MLflow run (or the study's
    time limit, which applies to each search phase, ended it)."""
    if stop_requested():            # a signal between two fits: this one does not start
        return False, 0.0, 0.0
    started = time.monotonic()
    tuner = _tuner(spec, stores, tracker, resume, phase, plan, experiment)
    # the trials' time before this driver (a restored trial's clock goes on from its checkpoint)
    before = sum(r.metrics.get("time_total_s", 0) for r in tuner.get_results()) if resume else 0.0
    with fitting():
        grid = tuner.fit()
    wall = time.monotonic() - started
    runs = tracker.children(TRIAL, phase.label) if plan is None else tracker.children(REPLICATE)
    open_runs = {r.data.tags[TUNE_ID] for r in runs if r.info.status == RUNNING.upper()}
    known = {r.data.tags[TUNE_ID] for r in runs}
    ids = [os.path.basename(r.path) for r in grid]
    unfinished = [i for i in ids if i in open_runs or i not in known]
    total = len(plan) if plan is not None else spec.budget.num_samples * spec.seeds_per_config
    time_up = plan is None and spec.budget.time_limit_s is not None and wall >= spec.budget.time_limit_s
    if time_up:
        fail_running(stores.optuna_storage(), phase.study_name(spec.name),
                     lambda t: f"stopped early by the study's time limit at step "
                               f"{max(t.intermediate_values, default=0)} of {spec.phase_max_steps(phase)}", TrialState.PRUNED)
    finished = time_up or not unfinished and len(ids) >= total
    return finished, wall, sum(r.metrics.get("time_total_s", 0) for r in grid) - before


PHASES_DONE = "phases_done.yaml"    # the search phases (scientific points) that have finished


def _search(spec: StudySpec, stores: Stores, tracker: Tracker, result: StudyResult) -> bool:
    """Each search phase in turn (resumed where it has Ray state, skipped when done); whether
    all finished."""
    done_file = stores.root / PHASES_DONE
    done = yaml.safe_load(done_file.read_text()) if done_file.is_file() else []
    for phase in spec.phases:
        if phase.label in done:
            continue
        if phase.label:
            steps = f", {phase.train_steps} training steps (equal compute)" if phase.train_steps else ""
            print(f"search: {phase.label} ({spec.budget.num_samples} configs of the nuisance parameters "
                  f"{', '.join(spec.space.searched) or '(none)'}{steps})", flush=True)
        resume = (stores.experiment_of(phase.experiment_name(spec.name)) / TUNER_FILE).is_file()
        finished, wall, trials_s = _fit(spec, stores, tracker, resume, phase)
        result.wall_s, result.trials_s = result.wall_s + wall, result.trials_s + trials_s
        if not finished:
            return False
        study_name = phase.study_name(spec.name)
        fail_running(stores.optuna_storage(), study_name, "lost: never reported back to the searcher")
        tracker.reconcile(stores.optuna_study(study_name), phase.label)
        done.append(phase.label)
        done_file.write_text(yaml.safe_dump(done))
    return True


def run_study(spec: StudySpec, resume: bool = False, num_gpus: int | None = None) -> StudyResult:
    """Run `spec` (or resume it after an interruption or a crash): the search, then the
    replicate phase when the study asks for one. Returns whether both finished. `num_gpus`:
    the GPUs a local Ray declares (None: the ones it detects)."""
    quiet_environment()
    quiet_libraries()
    stores = Stores.of(spec)
    started_before = any((stores.experiment_of(p.experiment_name(spec.name)) / TUNER_FILE).is_file()
                         for p in spec.phases)
    if resume and not started_before:
        raise StudyError(f"{stores.ray}: nothing to resume (no Ray experiment state of study '{spec.name}')")
    if not resume and (started_before or stores.study_file.exists()):
        raise StudyError(f"{stores.root} already holds study '{spec.name}': resume it with "
                         f"`loopstudy resume {stores.root}` (on a cluster, add --address), or delete "
                         "the folder to start again")
    StudyLock(stores.root, spec.name).refuse_if_held()    # before reading what a running driver writes
    if resume:
        _check_base_configs(spec, stores)
    # writable, with room, Tune's saved state whole: refused before Ray starts
    experiments = [stores.experiment_of(p.experiment_name(spec.name)) for p in spec.phases]
    rounds = sorted(stores.ray.glob(f"{spec.name}-replicates-r*"))     # a question's (study/replicate_rounds.py)
    created = disk_checks.check_locations(stores, resume, experiments + [stores.replicate_experiment] + rounds)
    try:
        resources = _start_ray(stores, num_gpus)
        check_trial_fits(spec.resources.cpu, spec.resources.gpu)
    except StudyError:              # e.g. a cluster node that cannot reach a store: nothing started
        disk_checks.remove_created(created)
        raise
    from .status import loopstudy_command

    resume_command = f"{loopstudy_command()} resume {stores.root}"
    # stop_handlers after ray.init, which installs its own for SIGTERM
    with stop_handlers(), StudyLock(stores.root, spec.name), \
            disk_guard.guarded(stores, spec.budget.max_concurrent, resume_command):
        return _run_locked(spec, stores, resources)      # one driver per study; released however it ends


def _run_locked(spec: StudySpec, stores: Stores, resources: dict[str, float]) -> StudyResult:
    stores.root.mkdir(parents=True, exist_ok=True)
    if not (stores.root / BASE_CONFIGS).is_file():
        _write_base_configs(spec, stores)
    stores.study_file.write_text(spec.to_yaml())
    tracker = Tracker(stores, wait_s=wait_limit_s())    # waits out a tracking server's outage
    tracker.start_parent(spec)
    tracker.tag_parent({SCIENTIFIC_VALUES: json.dumps(spec.scientific), CONFOUNDS: json.dumps(spec.confounds),
                        POINTS: json.dumps([p.label for p in spec.phases if p.label]),
                        COMPARE_AT: spec.compare_at, COMPUTE: json.dumps(spec.compute)})
    try:
        return _run_phases(spec, stores, tracker, resources)
    except KeyboardInterrupt:       # a second signal forced the stop: the parent run still says so
        tracker.end_parent("interrupted", {})
        raise


def _run_phases(spec: StudySpec, stores: Stores, tracker: Tracker, resources: dict[str, float]) -> StudyResult:
    # how many trials Ray can run at once: the study's cap, the CPUs and the GPUs it has
    slots = [resources["CPU"] // spec.resources.cpu] + ([resources["GPU"] // spec.resources.gpu]
                                                         if spec.resources.gpu else [])
    result = StudyResult(True, concurrency=int(min(spec.budget.max_concurrent, *slots)) or 1)
    for line in spec.confounds:
        print(f"confound: {line} (besides the compared values; their comparison is not fair)", flush=True)
    for line in spec.compute:
        print(f"compute: {line}", flush=True)
    plan = read_plan(stores)
    if plan is None:             # the search has not finished yet
        result.finished = _search(spec, stores, tracker, result)
        if result.finished and spec.replicates:
            plan = make_plan(spec, stores)
            write_plan(stores, plan)
    if result.finished and plan == []:
        print("replicates: no completed trial to replicate", flush=True)
    if result.finished and plan:
        what = ("the best learning config of each scientific value" if spec.scientific
                else f"the {spec.replicates.top_k} best configs")
        print(f"replicates: {what}, on {spec.replicates.seeds} fresh seeds shared by all "
              f"({len(plan)} trials, no early stopping)", flush=True)
        resume_phase = (stores.replicate_experiment / TUNER_FILE).is_file()
        finished, wall, trials_s = _fit(spec, stores, tracker, resume_phase, None, plan)
        result.finished = finished
        result.wall_s, result.trials_s = result.wall_s + wall, result.trials_s + trials_s
    if result.finished and spec.question:
        result.finished, wall, trials_s = run_rounds(spec, stores, tracker, lambda plan, experiment, resume: _fit(
            spec, stores, tracker, resume, None, plan, experiment))
        result.wall_s, result.trials_s = result.wall_s + wall, result.trials_s + trials_s
    for phase in spec.phases:
        try:
            trials = stores.optuna_study(phase.study_name(spec.name)).get_trials(deepcopy=False)
        except KeyError:        # interrupted before this phase asked for its first trial
            trials = []
        for t in trials:
            result.states[t.state.name] = result.states.get(t.state.name, 0) + 1
    for run in tracker.children(REPLICATE):
        state = run.data.tags.get(STATE, RUNNING)
        result.replicates[state] = result.replicates.get(state, 0) + 1
    summary = {f"trials_{k.lower()}": v for k, v in result.states.items()}
    summary.update({f"replicates_{k}": v for k, v in result.replicates.items()})
    summary.update(wall_s=round(result.wall_s, 1), trials_s=round(result.trials_s, 1),
                   overhead=round(result.overhead, 3))
    tracker.end_parent("finished" if result.finished else "interrupted", summary)
    return result
