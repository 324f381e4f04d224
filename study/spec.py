"""A study file: what to train, which knobs to search, what to optimise, how much to spend.

Everything is validated here, before Ray starts; every error names the file and the field.

    name: dilation_cpu
    trainable: train                      # or probe: train, then fit probes to every state
    base: seed_dilation_cpu               # preset name or config YAML path; a list of them is
                                          # searched as one more categorical ("base")
    overrides: {training.train_steps: 600}
    scientific: {training.loop_dilation: [1, 2, 3, 4]}   # optional: the values compared (study/design.py);
                                          # or a list of points, fields that change together:
                                          # [{model.family: standard, model.n_layer: 6}, ...]
    compare_at: equal_steps               # or equal_compute: each value's training.train_steps
                                          # scaled so its training FLOPs match the first value's
    space: dilation                       # a shipped space, or an inline mapping (the nuisance
                                          # parameters when `scientific` is given)
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
                                          # optional, for a cluster; see study/storage/stores.py
"""
from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

import search_spaces
from trainables.config import Config, ConfigError, apply_overrides, from_dict, load_config
from trainables.schema import build, did_you_mean, read_yaml

from analysis.confounds import compute_comparison, confounds
from analysis.layout import EQUAL_COMPUTE, EQUAL_STEPS, scientific_fields
from analysis.sequential_plan import HorizonBudget, Question

from . import design
from .objectives import METRICS, is_reported, unreported
from .errors import StudyError
from .storage.databases import check_sqlite_store
from .storage.stores import Storage, Stores

SAMPLERS = ("tpe", "random", "brute_force")    # study.searcher maps each to its Optuna sampler
BASE = "base"                 # the searched choice among several bases
STUDY_FILE = "study.yaml"     # the copy kept in the results folder, for resume and status


# Each section checks its own values (`problems`: the config engine names the field in full);
# what depends on the resolved configs or on other sections is checked by parse_study.

def _below(section, **least) -> list[tuple[str, str]]:
    """(field, "must be >= N") for each field of `section` below its least value."""
    return [(name, f"must be >= {low}") for name, low in least.items() if getattr(section, name) < low]


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Literal["min", "max"] = "min"


@dataclass(frozen=True)
class Budget:
    num_samples: int
    max_concurrent: int = 1
    time_limit_s: float | None = None
    max_failures: int = 1

    def problems(self):
        yield from _below(self, num_samples=1, max_concurrent=1, max_failures=0)
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            yield "time_limit_s", "must be > 0"


@dataclass(frozen=True)
class Scheduler:
    grace_period: int
    reduction_factor: int = 2

    def problems(self):
        return _below(self, grace_period=1, reduction_factor=2)


@dataclass(frozen=True)
class Resources:
    cpu: float = 1
    gpu: float = 0

    def problems(self):
        if self.cpu <= 0:
            yield "cpu", f"must be > 0, got {self.cpu}"
        if self.gpu < 0:
            yield "gpu", f"must be >= 0, got {self.gpu}"
        elif self.gpu > 1 and not float(self.gpu).is_integer():
            yield "gpu", (f"{self.gpu}: Ray shares a GPU only in fractions below 1 (0.5, 0.25: trials per "
                          "GPU); above 1 it must be a whole number of GPUs")


@dataclass(frozen=True)
class Replicates:
    top_k: int = 2       # the best distinct configs (all searched values but the seed)
    seeds: int = 3       # fresh training seeds each, none used by the search

    def problems(self):
        yield from _below(self, top_k=1)
        if self.seeds < 2:
            yield "seeds", "must be >= 2 (an interval needs two seeds)"


@dataclass(frozen=True)
class StudyFile:
    """A study file's fields, as written (the module's docstring shows one)."""
    name: str
    base: str | list[str]
    space: str | dict
    objectives: list[Objective]
    budget: Budget
    trainable: Literal["train", "probe", "synthetic"] = "train"
    overrides: dict = field(default_factory=dict)
    scheduler: Scheduler | None = None
    resources: Resources = field(default_factory=Resources)
    seeds_per_config: int = 1
    replicates: Replicates | None = None
    results_dir: str | None = None
    sampler: Literal["tpe", "random", "brute_force"] = "tpe"
    sampler_seed: int | None = None
    storage: Storage = field(default_factory=Storage)
    scientific: dict | list[dict] | None = None
    compare_at: Literal["equal_steps", "equal_compute"] = EQUAL_STEPS
    question: dict | None = None      # sequential replicate rounds (study/replicate_rounds.py)

    def problems(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            yield "name", f"must be letters, digits, '_', '-' or '.', got {self.name!r}"
        if isinstance(self.base, list) and (not self.base or len(set(self.base)) < len(self.base)):
            yield "base", ("must be a preset name or a config YAML path, or a list of distinct ones, "
                           f"got {self.base!r}")
        if not self.objectives:
            yield "objectives", "must be a non-empty list of {metric, mode}"
        for i, objective in enumerate(self.objectives):
            if not is_reported(self.trainable, objective.metric):
                yield (f"objectives[{i}].metric", f"{objective.metric!r} is not reported by {self.trainable} "
                                                  f"({', '.join(METRICS[self.trainable])})")
        if self.seeds_per_config < 1:
            yield "seeds_per_config", f"must be an integer >= 1, got {self.seeds_per_config!r}"
        elif self.seeds_per_config > 1 and self.scheduler is not None:
            yield "scheduler", ("and 'seeds_per_config' > 1 do not mix: ASHA judges single trials, so stopping "
                                "one seed would prune its whole config; drop the scheduler or search the seed instead")
        if self.sampler_seed is not None and not 0 <= self.sampler_seed < 2**32:
            yield "sampler_seed", f"must be in [0, 2**32), got {self.sampler_seed}"
        if self.scientific is not None and not self.scientific:
            yield "scientific", ("is empty: give the values compared ({field: [values]}, or a list of "
                                 "points [{field: value}, ...]), or leave it out")
        if self.scientific and isinstance(self.base, list) and len(self.base) > 1:
            yield "scientific", "needs a single 'base'"
        if self.compare_at == EQUAL_COMPUTE and not self.scientific:
            yield "compare_at", "equal_compute needs 'scientific': it scales the compared values' training steps"


@dataclass
class StudySpec:
    """A validated study: the file's sections, its space, and each base's resolved config."""
    name: str
    base: str | list[str]
    space: search_spaces.Space
    objectives: list[Objective]
    budget: Budget
    base_configs: dict[str, Config]                # base -> base config with the study's overrides
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
    scientific: dict | list = field(default_factory=dict)  # as the file gives it: study/design.py
    compared: dict[str, Config] = field(default_factory=dict)   # label -> config (study/design.py)
    confounds: list[str] = field(default_factory=list)          # what else differs between them
    compare_at: str = EQUAL_STEPS
    compute: list[str] = field(default_factory=list)  # their training compute (analysis/confounds.py)
    question: Question | None = None    # what answers the study: its replicates run in rounds until it does

    @property
    def phases(self) -> list[design.Phase]:
        """The search phases; compared at equal compute, each with its own training steps."""
        steps = {label: c.training.train_steps for label, c in self.compared.items()} \
            if self.compare_at == EQUAL_COMPUTE else None
        return design.phases(self.scientific, steps)

    @property
    def bases(self) -> list[str]:
        return self.base if isinstance(self.base, list) else [self.base]

    @property
    def config(self) -> Config:
        """The (first) base config with the study's overrides (before any sampled value)."""
        return self.base_configs[self.bases[0]]

    @property
    def max_steps(self) -> int:
        """A trial's last `step`: its training steps, and then its probe steps for `probe` (of
        the first phase; compared at equal compute, each phase has its own: phase_max_steps)."""
        return self.phase_max_steps(self.phases[0])

    def phase_max_steps(self, phase: design.Phase) -> int:
        return max_steps(self.trainable, self.compared[phase.label] if phase.label else self.config)

    def define_by_run(self, point: dict | None = None):
        """The searcher's define-by-run function over the space, for one scientific `point`
        (fixed like an override): draws a trial and returns {"params": the space's dotted values
        (and "base" when the study draws one of several), "config": the trial's resolved config
        mapping}. The base is drawn first."""
        overrides = {**self.overrides, **(point or {})}
        samplers = {base: self.space.sampler(base, overrides) for base in self.bases}

        def define_by_run(trial) -> dict:
            base = trial.suggest_categorical(BASE, self.bases) if len(self.bases) > 1 else self.bases[0]
            params, config = samplers[base](trial)
            return {"params": {**params, **({BASE: base} if len(self.bases) > 1 else {})},
                    "config": config.to_dict()}

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


def resolved(config: dict, changes: dict) -> dict:
    """A resolved config mapping with dotted `changes` applied (e.g. another training.seed)."""
    return from_dict(apply_overrides(config, changes)).to_dict()


# ---------------------------------------------------------------- parsing

def max_steps(trainable: str, config: Config) -> int:
    return config.training.train_steps + (config.probe.steps if trainable == "probe" else 0)


def _check(where: str, ok: bool, message: str) -> None:
    if not ok:
        raise StudyError(f"{where}: {message}")


def parse_study(data, where: str = "<study>") -> StudySpec:
    """Validate a study mapping completely: each section checks its own fields (StudyFile and
    its sections), then what needs the resolved configs: bases, space, scientific points, steps."""
    _check(where, isinstance(data, dict), "a study file must be a mapping at the top level")
    try:
        file = build(StudyFile, data, noun="field")
        configs = _base_configs(file)
        space = search_spaces.load_space(file.space)
        for base in configs:
            space.check(base, file.overrides)
    except search_spaces.SpaceError as exc:
        raise StudyError(f"{where}: 'space': {exc}") from None
    except ConfigError as exc:
        raise StudyError(f"{where}: {exc}") from None
    trainable, overrides, bases = file.trainable, file.overrides, list(configs)
    steps = {base: max_steps(trainable, c) for base, c in configs.items()}
    _check(where, len(set(steps.values())) == 1,
           f"'base': the bases run different step counts {steps}; set training.train_steps "
           "(and probe.steps) in 'overrides'")
    scientific, compare_at = file.scientific or {}, file.compare_at
    compared = _compared_configs(file, space, configs, where)
    for i, objective in enumerate(file.objectives):
        why = unreported(objective.metric, {**configs, **compared}, list(space.params))
        _check(where, why is None, f"'objectives[{i}].metric' {objective.metric!r}: {why}")
    _check_scheduler(file, space, configs, compared, where)
    _check(where, not scientific or file.replicates is None or "top_k" not in data["replicates"]
           or file.replicates.top_k == 1,
           "'replicates.top_k': with 'scientific', each value's best nuisance config is replicated "
           "(top_k 1); drop top_k")
    question = _question(file, data, configs[bases[0]], where)
    errors = file.storage.errors()
    _check(where, not errors, "; ".join(errors))
    shared = Path(file.storage.storage_path) / file.name if file.storage.storage_path else None
    results_dir = (shared or Path(file.results_dir or Path("results") / file.name)).resolve()
    return StudySpec(name=file.name, base=file.base, space=space, objectives=file.objectives, budget=file.budget,
                     base_configs=configs, trainable=trainable, overrides=dict(overrides),
                     scheduler=file.scheduler, resources=file.resources, seeds_per_config=file.seeds_per_config,
                     replicates=file.replicates, results_dir=results_dir, sampler=file.sampler,
                     sampler_seed=file.sampler_seed, storage=file.storage, source=dict(data),
                     scientific=scientific, compared=compared, confounds=confounds(compared, compare_at),
                     compare_at=compare_at, compute=compute_comparison(compared, compare_at),
                     question=question)


def _compared_configs(file: StudyFile, space, configs: dict[str, Config], where: str) -> dict[str, Config]:
    """Each scientific value's config (study/design.py), its steps scaled at equal compute;
    checked against the space and, at equal steps, for one step count."""
    scientific, base = file.scientific or {}, next(iter(configs))
    try:
        design.check_scientific(scientific)
    except ConfigError as exc:
        raise StudyError(f"{where}: {exc}") from None
    both = set(scientific_fields(scientific)) & set(space.params)
    _check(where, not both, f"'scientific' and 'space' both hold {sorted(both)}: a parameter is either "
                            "compared (scientific) or tuned (space)")
    try:
        compared = design.compared_configs(scientific, space, base, file.overrides)
        for point in design.phases(scientific) if scientific else []:
            space.check(base, {**file.overrides, **point.point})
        if file.compare_at == EQUAL_COMPUTE:
            return design.at_equal_compute(compared, list(space.params))
    except (ConfigError, search_spaces.SpaceError) as exc:
        raise StudyError(f"{where}: {exc}") from None
    steps = max_steps(file.trainable, configs[base])
    _check(where, len({max_steps(file.trainable, c) for c in compared.values()} | {steps}) == 1,
           "'scientific': the compared values run different step counts; fix training.train_steps "
           "in 'overrides'")
    return compared


def _check_scheduler(file: StudyFile, space, configs: dict[str, Config], compared: dict[str, Config],
                     where: str) -> None:
    """ASHA's grace period against every trial's steps and curriculum; one eval_every for all."""
    scheduler, trainable = file.scheduler, file.trainable
    if scheduler is None:
        return
    what = "the training and probe steps" if trainable == "probe" else "training.train_steps"
    for label, config in {"": next(iter(configs.values())), **compared}.items():
        last = max_steps(trainable, config)
        _check(where, scheduler.grace_period < last,
               f"'scheduler.grace_period' must be in [1, {what}={last}){' for ' + label if label else ''}, "
               f"got {scheduler.grace_period}")
    _check(where, "training.eval_every" not in space.params,
           "'scheduler' needs one training.eval_every for every trial (it is searched in 'space')")
    problem = design.grace_period_problem(scheduler.grace_period, {**configs, **compared})
    _check(where, problem is None, f"'scheduler.grace_period' ({scheduler.grace_period}) {problem}")


def _question(file: StudyFile, data: dict, config: Config, where: str) -> Question | None:
    """The study's `question` (analysis/sequential_plan.py), checked with the sections it needs:
    `scientific` values to compare, no fixed `replicates` (the rounds decide the seeds), and the
    first horizon, the study's training.train_steps (resolved into the question: the horizons
    are planned before anything runs)."""
    if file.question is None:
        return None
    _check(where, bool(file.scientific), "'question' needs 'scientific': it asks whether the compared values "
                                         "differ from the first (the reference)")
    _check(where, len(design.phases(file.scientific)) >= 2,
           "'question' needs two or more 'scientific' values (each is compared with the first)")
    _check(where, file.replicates is None, "'question' and 'replicates' do not mix: with a question the "
                                          "replicates run in rounds until it is answered (question.seeds: "
                                          "start, step, max); drop 'replicates'")
    try:
        question = Question.from_mapping(data["question"])
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        raise StudyError(f"{where}: '{name}': {message}") from None
    steps, horizon = config.training.train_steps, question.horizon
    _check(where, horizon.start in (None, steps),
           f"'question.horizon.start': the replicates train the study's training.train_steps={steps}; "
           f"got {horizon.start} (set training.train_steps in 'overrides' instead)")
    longest = steps if horizon.max is None else horizon.max
    _check(where, longest >= steps, f"'question.horizon.max': expected an integer >= horizon.start ({steps}), "
                                    f"got {horizon.max}")
    _check(where, longest == steps or file.trainable != "probe",
           f"'question.horizon.max': a probe trial is not continued to a longer horizon (its probes are fitted "
           f"after training); got {horizon.max} (leave it out, or set it to {steps})")
    return dataclasses.replace(question, horizon=HorizonBudget(steps, longest))


def _base_configs(file: StudyFile) -> dict[str, Config]:
    """Each base's config with the study's overrides."""
    configs = {}
    for base in file.base if isinstance(file.base, list) else [file.base]:
        try:
            configs[base] = load_config(base, file.overrides)
        except ConfigError as exc:
            raise ConfigError(f"'base'/'overrides': {exc}") from None
    return configs


def _read(path: Path) -> dict:
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        return read_yaml(path)
    except ConfigError as exc:          # not UTF-8, not YAML: the message starts with the path
        raise StudyError(str(exc)) from None


def read_study_file(path: str | Path) -> StudySpec:
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
    """The study kept in a results folder: NAME (under results_root) or the folder's path; its
    embedded SQLite stores are checked (read only) before any library opens them."""
    folder = Path(name_or_dir)
    if not (folder / STUDY_FILE).is_file():
        folder = Path(results_root) / str(name_or_dir)
    plain_name = Path(str(name_or_dir)).name == str(name_or_dir)
    stamped = sorted(Path(results_root).glob(f"{name_or_dir}-*/{STUDY_FILE}"), key=lambda p: p.parent.name) \
        if plain_name else []
    if not (folder / STUDY_FILE).is_file() and stamped:
        folder = stamped[-1].parent       # `make demo` writes NAME-<time>: NAME means the newest
        print(f"study '{name_or_dir}': the newest of {len(stamped)} folders, {folder}", file=sys.stderr)
    if not (folder / STUDY_FILE).is_file():
        found = sorted(p.parent.name for p in Path(results_root).glob(f"*/{STUDY_FILE}"))
        hint = did_you_mean(name_or_dir, found)
        raise StudyError(f"no study '{name_or_dir}': {folder / STUDY_FILE} does not exist{hint} (studies "
                         f"in {results_root}: {', '.join(found) or 'none'}); run it first with `loopstudy run "
                         "STUDY.yaml`, or give --results-root")
    spec = read_study_file(folder / STUDY_FILE)
    spec.results_dir = folder.resolve()
    stores = Stores.of(spec)
    check_sqlite_store(stores.optuna_url, "studies", "Optuna")
    check_sqlite_store(stores.mlflow_uri, "experiments", "MLflow")
    return spec
