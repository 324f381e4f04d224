"""A declarative search space (YAML) turned into an Optuna define-by-run function.

A space maps dotted config fields to either a distribution or a fixed value:

    training.loop_dilation: {categorical: [1, 2, 3, 4]}
    training.n_loop_window: {int: [5, 20], step: 5}
    training.learning_rate: {float: [1.0e-5, 1.0e-3], log: true}
    curriculum.loops.start: null          # fixed; the config loader resolves null to T*s

The config's constraints are built into the ranges when sampling, so no invalid config is
proposed: the loop budget b (`curriculum.loops.end`) and a sampled `curriculum.loops.start`
are drawn from at least (T-1)*s+1 (and b from at least the loop start), and `model.n_embd`
from multiples of `model.n_head`. What cannot be built into a range is rejected with
`optuna.TrialPruned(reason)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import optuna

from trainables.config import Config, ConfigError, default_loop_start, field_kind, flatten, load_config, loop_span
from trainables.preset_files import source_data
from trainables.schema import build, coerce, shown

KINDS = ("categorical", "int", "float")
FLOAT_STEPS = 1e15          # most steps in a float range: a float holds about 15 significant digits
LOOP_START, LOOP_END, N_EMBD = "curriculum.loops.start", "curriculum.loops.end", "model.n_embd"


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the space and the field."""


@dataclass(frozen=True)
class Param:
    kind: str                       # "categorical" | "int" | "float" | "fixed"
    choices: tuple = ()             # categorical
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    value: object = None            # fixed

    def suggest(self, trial: optuna.Trial, name: str):
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class _RangeOptions:
    """What may stand beside `int: [low, high]` or `float: [low, high]`."""
    step: float | None = None
    log: bool = False


def _check_values(label: str, key: str, values) -> None:
    """Each of `values` must be a value the config field `key` takes (null too for the loop start)."""
    for value in values:
        if not (key == LOOP_START and value is None):   # null: the loader resolves it to T*s
            try:
                coerce(key, field_kind(key), value)
            except ConfigError as exc:
                raise SpaceError(f"{label}: {exc}") from None


def parse_param(label: str, key: str, spec) -> Param:
    """One entry of a space: a {categorical|int|float: ...} mapping, or a fixed plain value."""
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise SpaceError(f"{label}: a list is ambiguous; write {{categorical: {spec}}} to search it")
        _check_values(label, key, [spec])
        return Param("fixed", value=spec)
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise SpaceError(f"{label}: needs exactly one of {', '.join(KINDS)}, got keys {sorted(spec)}")
    kind = kinds[0]
    options = {k: v for k, v in spec.items() if k != kind}
    if kind == "categorical":
        choices = spec[kind]
        if options:
            raise SpaceError(f"{label}: unknown option(s) {sorted(options)} for a categorical parameter")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{label}: categorical needs a non-empty list of choices")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise SpaceError(f"{label}: categorical choices must be plain values, got {shown(choices)}")
        _check_values(label, key, choices)
        return Param("categorical", choices=tuple(choices))
    if kind == "float" and field_kind(key) is int:
        raise SpaceError(f"{label}: an integer field: search it with int: [low, high]")
    number = int if kind == "int" else float
    try:
        parsed = build(_RangeOptions, options, f"{key}.", noun="option")
        bounds = coerce(f"{key}.{kind}", list[number], spec[kind])
        step = None if parsed.step is None else coerce(f"{key}.step", number, parsed.step)
    except ConfigError as exc:
        raise SpaceError(f"{label}: {exc}") from None
    if len(bounds) != 2:
        raise SpaceError(f"{label}: {kind} needs [low, high], got {shown(spec[kind])}")
    low, high = bounds
    _check_values(label, key, bounds)
    if low > high:
        raise SpaceError(f"{label}: low {low} is above high {high}")
    if step is not None and step <= 0:
        raise SpaceError(f"{label}: step must be positive, got {step}")
    if not math.isfinite(high - low):
        raise SpaceError(f"{label}: the range [{low}, {high}] is wider than a float can hold")
    if kind == "float" and step is not None and (high - low) / step > FLOAT_STEPS:
        raise SpaceError(f"{label}: step {step} cuts [{low}, {high}] finer than a float resolves")
    if parsed.log and (low <= 0 or step not in (None, 1)):
        raise SpaceError(f"{label}: a log range needs low > 0 and no step")
    return Param(kind, low=low, high=high, step=step, log=parsed.log)


# ---------------------------------------------------------------- constraints built into ranges

def _on_grid(param: Param, low: int) -> Param:
    """`param` with its lower bound raised to at least `low`, staying on its step grid."""
    step = int(param.step or 1)
    start = int(param.low) + max(0, math.ceil((low - param.low) / step)) * step
    if start > param.high:
        raise optuna.TrialPruned(f"no value of the range [{int(param.low)}, {int(param.high)}] "
                                 f"is >= the required {low}")
    return replace(param, low=start, high=start + (int(param.high) - start) // step * step)


def _loop_span(values: dict) -> int:
    """The window's span for looped models (every step needs that many loops), else 1."""
    if values["model.family"] != "looped":
        return 1
    return loop_span(values["training.n_loop_window"], values["training.loop_dilation"])


def _loop_start(values: dict) -> int:
    start = values[LOOP_START]
    if start is None:
        return default_loop_start(values["training.n_loop_window"], values["training.loop_dilation"])
    return start


def _constrain(name: str, param: Param, values: dict) -> Param:
    """The range `name` may be drawn from, given the values fixed or drawn so far."""
    if name in (LOOP_START, LOOP_END) and param.kind == "int" and not param.log:
        low = _loop_span(values) if name == LOOP_START else max(_loop_span(values), _loop_start(values))
        return _on_grid(param, low)
    if name == N_EMBD and values["model.n_head"] <= 0:
        raise optuna.TrialPruned(f"model.n_head={values['model.n_head']} must be positive")
    if name == N_EMBD and param.kind == "categorical":
        choices = tuple(c for c in param.choices if isinstance(c, int) and c % values["model.n_head"] == 0)
        if not choices:
            raise optuna.TrialPruned(f"no choice of {name} {list(param.choices)} is a multiple "
                                     f"of model.n_head={values['model.n_head']}")
        return replace(param, choices=choices)
    if name == N_EMBD and param.kind == "int" and not param.log:
        head = values["model.n_head"]
        low, high = math.ceil(param.low / head) * head, math.floor(param.high / head) * head
        if low > high:
            raise optuna.TrialPruned(f"no multiple of model.n_head={head} lies in "
                                     f"[{int(param.low)}, {int(param.high)}]")
        return replace(param, low=low, high=high, step=head)
    return param


CONSTRAINED = (LOOP_START, LOOP_END, N_EMBD)   # drawn last, in this order


# ---------------------------------------------------------------- the space

@dataclass
class Space:
    name: str
    params: dict[str, Param]
    description: str = ""

    @classmethod
    def from_mapping(cls, data, name: str = "inline") -> "Space":
        if not isinstance(data, dict):
            raise SpaceError(f"space '{name}': expected a mapping, got {type(data).__name__}")
        data = dict(data)
        description = data.pop("description", "")
        params = data
        if "params" in data:
            params = data.pop("params")
            if data:
                raise SpaceError(f"space '{name}': unknown top-level key(s) {sorted(data)} "
                                 "(allowed: description, params)")
        if not isinstance(params, dict) or not params:
            raise SpaceError(f"space '{name}': 'params' must map dotted config fields to values")
        parsed = {}
        for key, spec in params.items():
            label = f"space '{name}', field '{key}'"
            try:
                field_kind(str(key))
            except ConfigError as exc:
                raise SpaceError(f"{label}: {exc}") from None
            parsed[str(key)] = parse_param(label, str(key), spec)
        return cls(name, parsed, str(description))

    @property
    def searched(self) -> list[str]:
        return [k for k, p in self.params.items() if p.kind != "fixed"]

    def _order(self) -> list[str]:
        free = [k for k in self.params if k not in CONSTRAINED]
        # n_embd choices may only be filtered when n_head is constant over the study;
        # with n_head searched too, a bad pair is rejected after drawing.
        return free + [k for k in CONSTRAINED if k in self.params]

    def sampler(self, base: str | dict, overrides: dict | None = None
                ) -> Callable[[optuna.Trial], tuple[dict, Config]]:
        """A define-by-run function: draws a trial's values and returns (all of the space's
        dotted overrides, fixed and drawn; the trial's resolved config). Raises
        optuna.TrialPruned with a reason when the drawn values cannot form a valid config."""
        base_data = source_data(base) if isinstance(base, str) else base
        overrides = dict(overrides or {})
        defaults = {**Config().flat(), **flatten(base_data), **flatten(overrides)}
        head_searched = "model.n_head" in self.searched

        def define_by_run(trial: optuna.Trial) -> tuple[dict, Config]:
            chosen: dict = {}
            for name in self._order():
                param = self.params[name]
                if param.kind == "fixed":
                    chosen[name] = param.value
                    continue
                values = {**defaults, **flatten(chosen)}
                if not (name == N_EMBD and head_searched and param.kind == "categorical"):
                    param = _constrain(name, param, values)
                chosen[name] = param.suggest(trial, name)
            try:
                return chosen, load_config(base_data, {**overrides, **chosen})
            except ConfigError as exc:
                raise optuna.TrialPruned(f"invalid config: {exc}") from None

        return define_by_run

    def check(self, base: str | dict, overrides: dict | None = None, draws: int = 16) -> None:
        """Dry-run `draws` random samples; a space that yields no valid config is an error."""
        sample = self.sampler(base, overrides)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        finally:
            optuna.logging.set_verbosity(verbosity)
        reasons = []
        for _ in range(draws):
            trial = study.ask()
            try:
                sample(trial)
                return
            except optuna.TrialPruned as exc:
                reasons.append(str(exc))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        raise SpaceError(f"space '{self.name}' proposed no valid config in {draws} draws on this "
                         f"base; first reason: {reasons[0]}")
