"""One typed config schema for model, task, curriculum, training, evaluation and probing.

YAML in, YAML out, dotted overrides (`training.loop_dilation=2`). Defaults are the reference
values of SPEC.md. Unknown keys and impossible combinations raise ConfigError naming the field.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .preset_files import is_config_file, source_data
from .schema import ConfigError, build, coerce, field_types, merged, parse_yaml, shown, unknown_key

TaskName = Literal["linear_regression", "noisy_linear_regression", "sparse_linear_regression",
                   "relu_2nn_regression", "decision_tree"]


def loop_span(window: int, dilation: int) -> int:
    """(T-1)*s+1: the iterations from the loss window's first supervised one to b. Every step
    of a looped model needs at least this many loop iterations."""
    return (window - 1) * dilation + 1


def default_loop_start(window: int, dilation: int) -> int:
    """What `curriculum.loops.start: null` means: T*s (the reference starts at T; the seed at 15*s)."""
    return window * dilation


def backprop_depth(training: TrainingConfig) -> int:
    """k: every step differentiates its last k loop iterations. `training.backprop_depth: 0`
    means the span (T-1)*s+1: gradient from the first supervised iteration on (the reference)."""
    return training.backprop_depth or loop_span(training.n_loop_window, training.loop_dilation)


def depth_bounds(config: Config) -> tuple[int, int]:
    """(fewest, most) loop iterations a training step can run (docs/loop_knobs.md). The curriculum:
    loops.start..loops.end. Sampled: training.depth_min (0 = max((T-1)*s+1, k)) ..
    training.depth_max (0 = b for `uniform`, ceil(3 * mean) for `poisson_lognormal`)."""
    tr, loops = config.training, config.curriculum.loops
    if tr.depth_sampling == "curriculum":
        return loops.start, loops.end
    low = tr.depth_min or max(loop_span(tr.n_loop_window, tr.loop_dilation), backprop_depth(tr))
    if tr.depth_max:
        return low, tr.depth_max
    return low, loops.end if tr.depth_sampling == "uniform" else math.ceil(3 * depth_mean(config))


def depth_mean(config: Config) -> float:
    """The mean of the Poisson-lognormal depth before clipping: training.depth_mean, 0 = b."""
    return config.training.depth_mean or config.loop_budget


@dataclass
class ModelConfig:
    family: Literal["standard", "looped"] = "looped"
    n_layer: int = 1
    n_head: int = 8
    n_embd: int = 256
    n_dims: int = 20
    n_positions: int = 101            # most points a prompt may hold
    injection: Literal["add", "none", "linear"] = "add"   # looped: how P enters each iteration


@dataclass
class TaskConfig:
    name: TaskName = "linear_regression"
    sparsity: int = 3                 # sparse_linear_regression
    noise_std: float = 0.1            # noisy_linear_regression
    hidden: int = 100                 # relu_2nn_regression
    depth: int = 4                    # decision_tree


@dataclass
class Schedule:
    start: int
    end: int
    inc: int
    interval: int

    def value(self, step: int) -> int:
        """The value used by 0-based training step `step` (after `step` updates)."""
        return min(self.start + (step // self.interval) * self.inc, self.end)

    def reaches_end_at(self) -> int | None:
        """The first step that uses `end` (0 if it starts there), None if it never gets there."""
        if self.start >= self.end:
            return 0
        return None if self.inc == 0 else -(-(self.end - self.start) // self.inc) * self.interval


@dataclass
class CurriculumConfig:
    dims: Schedule = field(default_factory=lambda: Schedule(5, 20, 1, 5000))
    points: Schedule = field(default_factory=lambda: Schedule(11, 41, 2, 5000))
    loops: Schedule = field(default_factory=lambda: Schedule(15, 20, 2, 500))


@dataclass
class TrainingConfig:
    train_steps: int = 500_000
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 42
    n_loop_window: int = 15           # T
    loop_dilation: int = 1            # s
    # the loop knobs of docs/loop_knobs.md; the defaults are the reference
    backprop_depth: int = 0           # k: gradient through the last k iterations; 0 = (T-1)*s+1
    loss_weights: Literal["uniform", "last", "geometric"] = "uniform"   # over the supervised iterations
    loss_weight_decay: float = 0.5    # geometric: weight gamma**(supervised iterations from the last)
    depth_sampling: Literal["curriculum", "uniform", "poisson_lognormal"] = "curriculum"
    depth_mean: float = 0.0           # poisson_lognormal: mean before clipping; 0 = b
    depth_sigma: float = 0.5          # poisson_lognormal: sigma of the log-normal rate
    depth_min: int = 0                # sampled depths: fewest iterations; 0 = max((T-1)*s+1, k)
    depth_max: int = 0                # sampled depths: most; 0 = b (uniform), ceil(3*mean) (poisson_lognormal)
    precision: Literal["fp32", "bf16"] = "fp32"
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 100


@dataclass
class EvalConfig:
    n_prompts: int = 1280
    seed: int = 20231120              # independent of training.seed
    iteration_counts: list[int] = field(default_factory=list)   # looped: also score at these
    depth_multiples: list[int] = field(default_factory=list)    # looped: ... and at these multiples of b
    bootstrap: int = 1000


@dataclass
class ProbeConfig:
    target: Literal["wols", "grad"] = "wols"
    control: bool = False
    steps: int = 10_000
    batch_size: int = 1280
    learning_rate: float = 1e-3
    hidden: int = 64
    loop_iterations: int = 0          # looped: iterations to probe; 0 = the loop budget b
    seed: int = 0
    eval_every: int = 500
    chunk: int = 8                    # states probed together (bounds memory)


@dataclass
class SyntheticConfig:
    """The known answer of the stand-in trainable (trainables/synthetic.py); nothing else reads it."""
    effect_per_dilation: float = 0.0  # objective change per unit of training.loop_dilation - 1
    seed_sd: float = 0.1              # noise drawn from training.seed alone: shared by every config
    noise_sd: float = 0.005           # noise of each (config, seed)
    eval_s: float = 0.0               # seconds each evaluation takes (time to interrupt a trial in)
    steps_to_learn: int | None = None  # the curve's time constant in steps (None: train_steps / 4)
    slowdown_per_dilation: float = 0.0  # its relative increase per unit of loop_dilation - 1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    @property
    def loop_budget(self) -> int:
        """b: the loop curriculum's end, the iterations a looped model trains towards."""
        return self.curriculum.loops.end

    def schedules(self) -> dict[str, Schedule]:
        """The curriculum's schedules that apply to this model (loops only for looped models)."""
        c = self.curriculum
        looped = {"curriculum.loops": c.loops} if self.model.family == "looped" else {}
        return {"curriculum.dims": c.dims, "curriculum.points": c.points, **looped}

    def curriculum_complete_at(self) -> tuple[int | None, str]:
        """(the first step at which every schedule has reached its end, or None when one never
        does within training.train_steps; the schedule that gets there last)."""
        last, name = 0, ""
        for key, schedule in self.schedules().items():
            at = schedule.reaches_end_at()
            if at is None or at >= self.training.train_steps:
                return None, key
            if at >= last:
                last, name = at, key
        return last, name

    def loops_trained(self) -> tuple[int, int]:
        """(first, last) loop iteration count the curriculum uses within training.train_steps."""
        loops = self.curriculum.loops
        return loops.value(0), loops.value(self.training.train_steps - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, object]:
        """Dotted-key view, e.g. {'training.loop_dilation': 1, ...} (lists kept whole)."""
        return flatten(self.to_dict())


EXTENDABLE = ("training.train_steps", "probe.steps")   # a run may continue past its old end


def first_difference(saved: Config, given: Config, ignore=()) -> str | None:
    """The first dotted field (but those in `ignore`) where two configs differ, as
    'field: saved -> given'."""
    old, new = saved.flat(), given.flat()
    for key in old:
        if key not in ignore and old[key] != new.get(key):
            return f"{key}: {old[key]!r} -> {new.get(key)!r}"
    return None


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------- building from plain data

def from_dict(data: dict) -> Config:
    """Build and validate a Config from a nested mapping (missing keys take defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    data = merged(Config().to_dict(), data)
    loops = data["curriculum"].get("loops") if isinstance(data["curriculum"], dict) else None
    if isinstance(loops, dict) and loops.get("start") is None:
        training = coerce("training", TrainingConfig, data["training"])
        loops["start"] = default_loop_start(training.n_loop_window, training.loop_dilation)
    config = build(Config, data)
    validate(config)
    return config


def field_kind(key: str):
    """The annotation of the dotted config field `key`; ConfigError naming its first unknown part."""
    kind, path = Config, ""
    for part in key.split("."):
        types = field_types(kind) if dataclasses.is_dataclass(kind) else {}
        if part not in types:
            raise unknown_key(path, part, types) if types else ConfigError(
                f"'{path.rstrip('.')}' has no sub-field '{part}'")
        kind, path = types[part], path + part + "."
    return kind


def set_dotted(tree: dict, key: str, value) -> None:
    """Set `a.b.c` in a nested mapping, checking every part names a real field."""
    field_kind(key)
    *sections, leaf = key.split(".")
    for i, part in enumerate(sections):
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"'{'.'.join(sections[:i + 1])}' must be a mapping to set '{key}' in it, "
                              f"got {shown(tree)}")
    tree[leaf] = value


def parse_override(text: str) -> tuple[str, object]:
    """'training.loop_dilation=2' -> ('training.loop_dilation', 2); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. training.loop_dilation=2")
    key, raw = text.split("=", 1)
    key = key.strip()
    field_kind(key)
    return key, parse_yaml(raw, f"'{key}' (override value {shown(raw)})") if raw.strip() else ""


def apply_overrides(data: dict, overrides: dict[str, object] | list[str]) -> dict:
    """A copy of `data` with the dotted overrides set (`data` itself is left as it was)."""
    data = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, str(key), value)
    return data


def load_config(source: str | Path | dict | None = None,
                overrides: dict[str, object] | list[str] = ()) -> Config:
    """Resolve a preset name, YAML path or mapping, apply dotted overrides, validate."""
    if source is None:
        data = {}
    elif isinstance(source, dict):
        data = source
    else:
        data = source_data(source)
    try:
        return from_dict(apply_overrides(data, overrides))
    except ConfigError as exc:
        if isinstance(source, dict) or source is None or not is_config_file(source):
            raise
        raise ConfigError(f"{source}{' with the overrides' if overrides else ''}: {exc}") from None


# ---------------------------------------------------------------- validation

def _positive(path: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"'{path}' must be positive, got {value}")


def validate(config: Config) -> None:
    m, t, c, tr, ev, pr = (config.model, config.task, config.curriculum, config.training,
                           config.eval, config.probe)
    for name in ("n_layer", "n_head", "n_embd", "n_dims", "n_positions"):
        _positive(f"model.{name}", getattr(m, name))
    if m.n_embd % m.n_head:
        raise ConfigError(f"'model.n_embd' ({m.n_embd}) must be divisible by 'model.n_head' ({m.n_head})")
    for name in ("sparsity", "hidden", "depth"):
        _positive(f"task.{name}", getattr(t, name))
    if t.noise_std < 0:
        raise ConfigError(f"'task.noise_std' must be >= 0, got {t.noise_std}")
    if t.sparsity > m.n_dims:
        raise ConfigError(f"'task.sparsity' ({t.sparsity}) cannot exceed 'model.n_dims' ({m.n_dims})")
    for name in ("dims", "points", "loops"):
        s: Schedule = getattr(c, name)
        p = f"curriculum.{name}"
        _positive(f"{p}.start", s.start)
        _positive(f"{p}.interval", s.interval)
        if s.inc < 0:
            raise ConfigError(f"'{p}.inc' must be >= 0, got {s.inc}")
        if s.end < s.start:
            raise ConfigError(f"'{p}.end' ({s.end}) must be >= '{p}.start' ({s.start})")
    if c.dims.end > m.n_dims:
        raise ConfigError(f"'curriculum.dims.end' ({c.dims.end}) cannot exceed 'model.n_dims' ({m.n_dims})")
    if c.points.end > m.n_positions:
        raise ConfigError(f"'curriculum.points.end' ({c.points.end}) is more points than "
                          f"'model.n_positions' ({m.n_positions}) allows")
    for name in ("train_steps", "batch_size", "n_loop_window", "loop_dilation", "eval_every",
                 "checkpoint_every", "log_every"):
        _positive(f"training.{name}", getattr(tr, name))
    _positive("training.learning_rate", tr.learning_rate)
    if tr.weight_decay < 0:
        raise ConfigError(f"'training.weight_decay' must be >= 0, got {tr.weight_decay}")
    if m.family == "looped":
        span = loop_span(tr.n_loop_window, tr.loop_dilation)
        if c.loops.start < span:
            raise ConfigError(
                f"'curriculum.loops.start' ({c.loops.start}) is below (T-1)*s+1 = {span} for "
                f"'training.n_loop_window' T={tr.n_loop_window} and 'training.loop_dilation' "
                f"s={tr.loop_dilation}: every step needs b >= (T-1)*s+1 loop iterations")
        _validate_loop_knobs(config, span)
    else:
        for key, default in LOOPED_ONLY.items():
            if config.flat()[key] != default:
                raise ConfigError(f"'{key}' applies to looped models only ('model.family' is 'standard')")
    _positive("eval.n_prompts", ev.n_prompts)
    _positive("eval.bootstrap", ev.bootstrap)
    for name in ("iteration_counts", "depth_multiples"):
        for i, n in enumerate(getattr(ev, name)):
            _positive(f"eval.{name}[{i}]", n)
    for name in ("steps", "batch_size", "hidden", "eval_every", "chunk"):
        _positive(f"probe.{name}", getattr(pr, name))
    _positive("probe.learning_rate", pr.learning_rate)
    if config.synthetic.steps_to_learn is not None:
        _positive("synthetic.steps_to_learn", config.synthetic.steps_to_learn)
    for name in ("seed_sd", "noise_sd", "eval_s", "slowdown_per_dilation"):
        if getattr(config.synthetic, name) < 0:
            raise ConfigError(f"'synthetic.{name}' must be >= 0, got {getattr(config.synthetic, name)}")
    if pr.loop_iterations < 0:
        raise ConfigError(f"'probe.loop_iterations' must be >= 0 (0 = the loop budget b), "
                          f"got {pr.loop_iterations}")


LOOPED_ONLY = {"model.injection": "add", "training.backprop_depth": 0,
               "training.loss_weights": "uniform", "training.depth_sampling": "curriculum"}


def _validate_loop_knobs(config: Config, span: int) -> None:
    """The knobs of docs/loop_knobs.md: every step must run at least k >= (T-1)*s+1 iterations."""
    tr, window = config.training, f"T={config.training.n_loop_window}, s={config.training.loop_dilation}"
    for name in ("backprop_depth", "depth_mean", "depth_min", "depth_max"):
        if getattr(tr, name) < 0:
            raise ConfigError(f"'training.{name}' must be >= 0 (0 = its rule, docs/loop_knobs.md), "
                              f"got {getattr(tr, name)}")
    _positive("training.depth_sigma", tr.depth_sigma)
    if not 0 < tr.loss_weight_decay <= 1:
        raise ConfigError(f"'training.loss_weight_decay' must be in (0, 1], got {tr.loss_weight_decay}")
    k = backprop_depth(tr)
    if k < span:
        raise ConfigError(
            f"'training.backprop_depth' (k={k}) is below the loss window's span (T-1)*s+1 = {span} "
            f"({window}): the earliest supervised iterations would get no gradient; set k >= {span} "
            "or 0 (gradient from the first supervised iteration)")
    low, high = depth_bounds(config)
    sampling = tr.depth_sampling != "curriculum"
    if sampling and low < span:
        raise ConfigError(f"'training.depth_min' ({low}) is below (T-1)*s+1 = {span} ({window}): every "
                          "step needs that many loop iterations")
    if k > low:
        raise ConfigError(f"'training.backprop_depth' (k={k}) exceeds "
                          f"{'training.depth_min' if sampling else 'curriculum.loops.start'!r} ({low}), the "
                          "fewest loop iterations a step runs: gradient cannot flow through more iterations than run")
    if not sampling:
        return
    if high < low:
        most = "'training.depth_max'" if tr.depth_max else (
            "'curriculum.loops.end' (b, what 'training.depth_max: 0' means for uniform)")
        raise ConfigError(f"{most} ({high}) is below 'training.depth_min' ({low})")
    if tr.depth_sampling == "poisson_lognormal" and not low <= depth_mean(config) <= high:
        raise ConfigError(f"'training.depth_mean' ({depth_mean(config)}; 0 = b) is outside the depths a "
                          f"step may draw, 'training.depth_min'..'training.depth_max' = {low}..{high}")
