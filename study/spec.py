"""A study file: what to train, which knobs to search, what to optimise, how much to spend.

Everything is validated here, before Ray starts; every error names the file and the field.

    name: dilation_cpu
    trainable: train                      # or probe: train, then fit probes to every state
    base: seed_dilation_cpu               # preset name or config YAML path; a list of them is
                                          # searched as one more categorical ("base")
    overrides: {training.train_steps: 600}
    space: dilation                       # a shipped space, or an inline mapping
    objectives: [{metric: eval/err_last, mode: min}]
    budget: {num_samples: 8, max_concurrent: 2, time_limit_s: 600, max_failures: 1}
    scheduler: {grace_period: 100, reduction_factor: 2}   # ASHA on `step`; null = none
    resources: {cpu: 1, gpu: 0}           # per trial; gpu: 0.25 = four trials share a GPU
    seeds_per_config: 1
    replicates: {top_k: 2, seeds: 3}      # after the search: the 2 best configs again, 3 fresh seeds each
    sampler: tpe                          # tpe | random | brute_force (each discrete combination once)
    sampler_seed: 0
    results_dir: results/dilation_cpu     # default ./results/<name>; <storage_path>/<name> when set
    storage: {storage_path: /shared/ls, optuna: journal:///shared/ls/optuna.log, mlflow: http://h:5001}
                                          # optional, for a cluster; see study/stores.py
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import search_spaces
import trainables
from trainables.config import Config, ConfigError, load_config

from .stores import Storage

TRAINABLES = ("train", "probe")
SAMPLERS = ("tpe", "random", "brute_force")
# what `trainables.train` reports; objectives must be among them
TRAIN_METRICS = ("eval/err_last", "eval/err_mean", "train/loss", "compute/gflop_per_step",
                 "perf/steps_per_s")
# what the probe trainable reports once probing (its training reports TRAIN_METRICS first)
PROBE_METRICS = ("probe/err_min", "probe/err_argmin", "probe/err_first_state", "probe/err_last_state",
                 "probe/control_err_min", "probe/selectivity")
METRICS = {"train": TRAIN_METRICS, "probe": PROBE_METRICS}
BASE = "base"                 # the searched choice among several bases
STUDY_FILE = "study.yaml"     # the copy kept in the results folder, for resume and status


class StudyError(ConfigError):
    """An invalid study file or results folder; the message names the file and the field."""


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "min"


@dataclass(frozen=True)
class Budget:
    num_samples: int
    max_concurrent: int = 1
    time_limit_s: float | None = None
    max_failures: int = 1


@dataclass(frozen=True)
class Scheduler:
    grace_period: int
    reduction_factor: int = 2


@dataclass(frozen=True)
class Resources:
    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class Replicates:
    top_k: int = 2       # the best distinct configs (all searched values but the seed)
    seeds: int = 3       # fresh training seeds each, none used by the search


@dataclass
class StudySpec:
    name: str
    base: str | list[str]
    space: search_spaces.Space
    objectives: list[Objective]
    budget: Budget
    trainable: str = "train"
    overrides: dict = field(default_factory=dict)
    scheduler: Scheduler | None = None
    resources: Resources = field(default_factory=Resources)
    seeds_per_config: int = 1
    replicates: Replicates | None = None
    results_dir: Path = Path()
    sampler: str = "tpe"
    sampler_seed: int | None = None
    storage: Storage = field(default_factory=Storage)
    source: dict = field(default_factory=dict)     # the file's mapping, as written

    @property
    def bases(self) -> list[str]:
        return self.base if isinstance(self.base, list) else [self.base]

    @property
    def config(self) -> Config:
        """The (first) base config with the study's overrides (before any sampled value)."""
        return load_config(self.bases[0], self.overrides)

    @property
    def max_steps(self) -> int:
        """A trial's last `step`: its training steps, and then its probe steps for `probe`."""
        return max_steps(self.trainable, self.config)

    def define_by_run(self):
        """The searcher's define-by-run function over the space; with several bases the base
        is drawn first (a categorical named "base") and the space is sampled for it."""
        samplers = {base: self.space.sampler(base, self.overrides) for base in self.bases}
        if len(self.bases) == 1:
            return samplers[self.bases[0]]

        def define_by_run(trial) -> dict:
            base = trial.suggest_categorical(BASE, self.bases)
            return {BASE: base, **samplers[base](trial)}

        return define_by_run

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def to_yaml(self) -> str:
        storage = self.storage.given()
        return yaml.safe_dump({**self.source, "results_dir": str(self.results_dir),
                               **({"storage": storage} if storage else {})}, sort_keys=False)


# ---------------------------------------------------------------- parsing

_REQUIRED = ("name", "base", "space", "objectives", "budget")
_FIELDS = [f.name for f in dataclasses.fields(StudySpec) if f.name != "source"]


def _typed(label: str, value, kind: str):
    """`value` checked against a dataclass field's annotation (int, float, str, optional)."""
    if value is None and "None" in kind:
        return None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith("int") and numeric and float(value).is_integer():
        return int(value)
    if kind.startswith("float") and numeric or kind.startswith("str") and isinstance(value, str):
        return value
    raise StudyError(f"{label} must be {kind.replace(' | None', ' or null')}, got {value!r}")


def _section(where: str, cls, data, name: str):
    """Build a frozen dataclass from a mapping, naming unknown/missing keys and bad types."""
    if not isinstance(data, dict):
        raise StudyError(f"{where}: '{name}' must be a mapping, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{name}.{close[0]}'?" if close else ""
            raise StudyError(f"{where}: unknown field '{name}.{key}'{hint} (allowed: {', '.join(known)})")
    missing = [k for k, f in known.items() if k not in data and f.default is dataclasses.MISSING]
    if missing:
        raise StudyError(f"{where}: '{name}.{missing[0]}' is required")
    return cls(**{key: _typed(f"{where}: '{name}.{key}'", value, str(known[key].type))
                  for key, value in data.items()})


def max_steps(trainable: str, config: Config) -> int:
    return config.training.train_steps + (config.probe.steps if trainable == "probe" else 0)


def _check(where: str, ok: bool, message: str) -> None:
    if not ok:
        raise StudyError(f"{where}: {message}")


def parse_study(data, where: str = "<study>") -> StudySpec:
    """Validate a study mapping completely: fields, base config, space, objectives, ranges."""
    _check(where, isinstance(data, dict), "a study file must be a mapping at the top level")
    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise StudyError(f"{where}: unknown field '{key}'{hint} (allowed: {', '.join(_FIELDS)})")
    for key in _REQUIRED:
        _check(where, key in data, f"'{key}' is required")
    name = data["name"]
    _check(where, isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name),
           f"'name' must be letters, digits, '_', '-' or '.', got {name!r}")
    trainable = data.get("trainable", "train")
    _check(where, trainable in TRAINABLES, f"'trainable' must be one of {TRAINABLES}, got {trainable!r}")
    _check(where, callable(getattr(trainables, trainable, None)),
           f"'trainable': this version of trainables has no '{trainable}'")
    overrides = data.get("overrides") or {}
    _check(where, isinstance(overrides, dict), "'overrides' must map dotted config fields to values")
    bases = data["base"] if isinstance(data["base"], list) else [data["base"]]
    _check(where, bases and all(isinstance(b, str) for b in bases) and len(set(bases)) == len(bases),
           "'base' must be a preset name or a config YAML path, or a list of distinct ones, "
           f"got {data['base']!r}")
    configs = {}
    for base in bases:
        try:
            configs[base] = load_config(base, overrides)
        except ConfigError as exc:
            raise StudyError(f"{where}: 'base'/'overrides': {exc}") from None
    steps = {base: max_steps(trainable, c) for base, c in configs.items()}
    _check(where, len(set(steps.values())) == 1,
           f"'base': the bases run different step counts {steps}; set training.train_steps "
           "(and probe.steps) in 'overrides'")
    config = configs[bases[0]]

    try:
        space = search_spaces.load_space(data["space"])
        for base in bases:
            space.check(base, overrides)
    except search_spaces.SpaceError as exc:
        raise StudyError(f"{where}: 'space': {exc}") from None

    objectives = data["objectives"]
    _check(where, isinstance(objectives, list) and objectives,
           "'objectives' must be a non-empty list of {metric, mode}")
    objectives = [_section(where, Objective, o, f"objectives[{i}]") for i, o in enumerate(objectives)]
    for i, o in enumerate(objectives):
        _check(where, o.mode in ("min", "max"), f"'objectives[{i}].mode' must be min or max, got {o.mode!r}")
        _check(where, o.metric in METRICS[trainable], f"'objectives[{i}].metric' {o.metric!r} is not "
               f"reported by {trainable} ({', '.join(METRICS[trainable])})")

    budget = _section(where, Budget, data["budget"], "budget")
    _check(where, budget.num_samples >= 1, "'budget.num_samples' must be >= 1")
    _check(where, budget.max_concurrent >= 1, "'budget.max_concurrent' must be >= 1")
    _check(where, budget.max_failures >= 0, "'budget.max_failures' must be >= 0")
    _check(where, budget.time_limit_s is None or budget.time_limit_s > 0, "'budget.time_limit_s' must be > 0")

    scheduler = data.get("scheduler")
    if scheduler is not None:
        scheduler = _section(where, Scheduler, scheduler, "scheduler")
        steps = max_steps(trainable, config)
        what = "the training and probe steps" if trainable == "probe" else "training.train_steps"
        _check(where, 1 <= scheduler.grace_period < steps,
               f"'scheduler.grace_period' must be in [1, {what}={steps}), got {scheduler.grace_period}")
        _check(where, scheduler.reduction_factor >= 2, "'scheduler.reduction_factor' must be >= 2")

    resources = _section(where, Resources, data.get("resources") or {}, "resources")
    _check(where, resources.cpu > 0 and resources.gpu >= 0, "'resources' needs cpu > 0 and gpu >= 0")
    _check(where, resources.gpu <= 1 or float(resources.gpu).is_integer(),
           f"'resources.gpu' {resources.gpu}: Ray shares a GPU only in fractions below 1 (0.5, 0.25: "
           "trials per GPU); above 1 it must be a whole number of GPUs")
    seeds = data.get("seeds_per_config", 1)
    _check(where, isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1,
           f"'seeds_per_config' must be an integer >= 1, got {seeds!r}")
    _check(where, seeds == 1 or scheduler is None,
           "'scheduler' and 'seeds_per_config' > 1 do not mix: ASHA judges single trials, so stopping "
           "one seed would prune its whole config; drop the scheduler or search the seed instead")
    replicates = data.get("replicates")
    if replicates is not None:
        replicates = _section(where, Replicates, replicates, "replicates")
        _check(where, replicates.top_k >= 1, "'replicates.top_k' must be >= 1")
        _check(where, replicates.seeds >= 2, "'replicates.seeds' must be >= 2 (an interval needs two seeds)")
    sampler = data.get("sampler", "tpe")
    _check(where, sampler in SAMPLERS, f"'sampler' must be one of {SAMPLERS}, got {sampler!r}")
    sampler_seed = data.get("sampler_seed")
    _check(where, sampler_seed is None or isinstance(sampler_seed, int), "'sampler_seed' must be an integer")
    storage = _section(where, Storage, data.get("storage") or {}, "storage")
    errors = storage.errors()
    _check(where, not errors, "; ".join(errors))
    shared = Path(storage.storage_path) / name if storage.storage_path else None
    results_dir = (shared or Path(data.get("results_dir") or Path("results") / name)).resolve()
    return StudySpec(name=name, base=data["base"], space=space, objectives=objectives, budget=budget,
                     trainable=trainable, overrides=dict(overrides), scheduler=scheduler,
                     resources=resources, seeds_per_config=seeds, replicates=replicates, results_dir=results_dir,
                     sampler=sampler, sampler_seed=sampler_seed, storage=storage, source=dict(data))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML: {exc}") from None


def load_study(path: str | Path) -> StudySpec:
    """A study file; a relative `base` YAML path is taken relative to the study file."""
    path = Path(path)
    data = _read(path)
    if isinstance(data, dict) and isinstance(data.get("base"), (str, list)):
        given = data["base"] if isinstance(data["base"], list) else [data["base"]]
        bases = [str((path.parent / b).resolve()) if isinstance(b, str) and b.endswith((".yaml", ".yml"))
                 and (path.parent / b).is_file() else b for b in given]
        data["base"] = bases if isinstance(data["base"], list) else bases[0]
    return parse_study(data, str(path))


def find_study(name_or_dir: str | Path, results_root: str | Path = "results") -> StudySpec:
    """The study kept in a results folder: NAME (under results_root) or the folder's path."""
    folder = Path(name_or_dir)
    if not (folder / STUDY_FILE).is_file():
        folder = Path(results_root) / str(name_or_dir)
    if not (folder / STUDY_FILE).is_file():
        raise StudyError(f"no study '{name_or_dir}': {folder / STUDY_FILE} does not exist "
                         "(run it first with `loopstudy run STUDY.yaml`)")
    spec = load_study(folder / STUDY_FILE)
    spec.results_dir = folder.resolve()
    return spec
