"""One typed config schema for model, task, curriculum, training, evaluation and probing.

YAML in, YAML out, dotted overrides (`training.loop_dilation=2`). Defaults are the reference
values of SPEC.md. Unknown keys and impossible combinations raise ConfigError naming the field.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

TASKS = ("linear_regression", "noisy_linear_regression", "sparse_linear_regression",
         "relu_2nn_regression", "decision_tree")


class ConfigError(ValueError):
    """A config value or key that is not allowed; the message names the dotted field."""


@dataclass
class ModelConfig:
    family: str = "looped"            # "standard" | "looped"
    n_layer: int = 1
    n_head: int = 8
    n_embd: int = 256
    n_dims: int = 20
    n_positions: int = 101            # most points a prompt may hold


@dataclass
class TaskConfig:
    name: str = "linear_regression"
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
    precision: str = "fp32"           # "fp32" | "bf16"
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 100


@dataclass
class EvalConfig:
    n_prompts: int = 1280
    seed: int = 20231120              # independent of training.seed
    loops: list[int] = field(default_factory=list)   # extra iteration counts for looped models
    bootstrap: int = 1000


@dataclass
class ProbeConfig:
    target: str = "wols"              # "wols" | "grad"
    control: bool = False
    steps: int = 10_000
    batch_size: int = 1280
    learning_rate: float = 1e-3
    hidden: int = 64
    n_loops: int = 0                  # looped model iterations to probe; 0 = its trained b
    seed: int = 0
    eval_every: int = 500
    chunk: int = 8                    # states probed together (bounds memory)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def n_loops(self) -> int:
        """The loop budget b: the loop curriculum's end."""
        return self.curriculum.loops.end

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, object]:
        """Dotted-key view, e.g. {'training.loop_dilation': 1, ...} (lists kept whole)."""
        return flatten(self.to_dict())


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------- building from plain data

def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def did_you_mean(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def _unknown_key(path: str, key: str, known) -> ConfigError:
    hint = did_you_mean(key, known, path)
    return ConfigError(f"unknown config key '{path}{key}'{hint} (allowed: {', '.join(known)})")


def _coerce(path: str, kind, value):
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a mapping of {kind.__name__} fields, got {value!r}")
        return _build(kind, value, path + ".")
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {value!r}")
        (item,) = typing.get_args(kind)
        return [_coerce(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{path}' must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int)
                                           or isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"'{path}' must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, str):      # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{path}' must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {kind} at {path}")


def _build(cls, data: dict, path: str = ""):
    types = _field_types(cls)
    for key in data:
        if key not in types:
            raise _unknown_key(path, key, types)
    missing = [name for name in types if name not in data]
    if missing:
        raise ConfigError(f"'{path}{missing[0]}' is required")
    return cls(**{name: _coerce(path + name, kind, data[name]) for name, kind in types.items()})


def from_dict(data: dict) -> Config:
    """Build and validate a Config from a nested mapping (missing keys take defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    data = _merge(Config().to_dict(), data)
    loops = data["curriculum"].get("loops")
    if isinstance(loops, dict) and loops.get("start") is None:
        # null start = the window's span T*s (the reference starts at T; the seed at 15*s)
        training = data["training"]
        loops["start"] = training["n_loop_window"] * training["loop_dilation"]
    config = _build(Config, data)
    validate(config)
    return config


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(tree: dict, key: str, value) -> None:
    """Set `a.b.c` in a nested mapping, checking every part names a real field."""
    parts = key.split(".")
    kind, node, path = Config, tree, ""
    for i, part in enumerate(parts):
        types = _field_types(kind) if dataclasses.is_dataclass(kind) else {}
        if part not in types:
            raise _unknown_key(path, part, types) if types else ConfigError(
                f"'{path.rstrip('.')}' has no sub-field '{part}'")
        kind = types[part]
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            path += part + "."


def parse_override(text: str) -> tuple[str, object]:
    """'training.loop_dilation=2' -> ('training.loop_dilation', 2); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. training.loop_dilation=2")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: dict[str, object] | list[str]) -> dict:
    data = _merge({}, data)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value)
    return data


# ---------------------------------------------------------------- presets and files

PRESET_DIR = resources.files("trainables") / "presets"
CPU_SUFFIX = "_cpu"   # every preset NAME has a CPU-sized variant NAME_cpu (its file's `cpu:` block)


def _preset_files() -> list[str]:
    return sorted(p.name[:-5] for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml"))


def preset_names() -> list[str]:
    return sorted(n + suffix for n in _preset_files() for suffix in ("", CPU_SUFFIX))


def _read_yaml(path, label: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at the top level")
    return data


def _preset_layers(name: str) -> tuple[dict, dict, str]:
    """(full-size mapping, CPU overrides, description) of a preset file, `extends` resolved."""
    data = _read_yaml(PRESET_DIR / f"{name}.yaml", f"preset {name}")
    description = data.pop("description", "")
    cpu = data.pop("cpu", {})
    parent = data.pop("extends", None)
    if parent:
        parent_full, parent_cpu, _ = _preset_layers(parent)
        data, cpu = _merge(parent_full, data), _merge(parent_cpu, cpu)
    return data, cpu, description


def preset_data(name: str) -> tuple[dict, str]:
    """A preset's config mapping and its one-line description."""
    if name not in preset_names():
        hint = did_you_mean(name, preset_names())
        raise ConfigError(f"no preset or file named '{name}'{hint} (see `loopstudy presets`)")
    if name.endswith(CPU_SUFFIX) and name not in _preset_files():
        full, cpu, description = _preset_layers(name[:-len(CPU_SUFFIX)])
        return _merge(full, cpu), f"CPU-sized variant (minutes on 2 cores) of: {description}"
    full, _, description = _preset_layers(name)
    return full, description


def source_data(source: str | Path) -> dict:
    """Config mapping from a preset name or a YAML path (a path may also use `extends`)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        data = _read_yaml(path, str(path))
        data.pop("description", None)
        parent = data.pop("extends", None)
        return _merge(preset_data(parent)[0], data) if parent else data
    return preset_data(str(source))[0]


def load_config(source: str | Path | dict | None = None,
                overrides: dict[str, object] | list[str] = ()) -> Config:
    """Resolve a preset name, YAML path or mapping, apply dotted overrides, validate."""
    if source is None:
        data = {}
    elif isinstance(source, dict):
        data = source
    else:
        data = source_data(source)
    return from_dict(apply_overrides(data, overrides))


# ---------------------------------------------------------------- validation

def _positive(path: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"'{path}' must be positive, got {value}")


def validate(config: Config) -> None:
    m, t, c, tr, ev, pr = (config.model, config.task, config.curriculum, config.training,
                           config.eval, config.probe)
    if m.family not in ("standard", "looped"):
        raise ConfigError(f"'model.family' must be 'standard' or 'looped', got '{m.family}'")
    for name in ("n_layer", "n_head", "n_embd", "n_dims", "n_positions"):
        _positive(f"model.{name}", getattr(m, name))
    if m.n_embd % m.n_head:
        raise ConfigError(f"'model.n_embd' ({m.n_embd}) must be divisible by 'model.n_head' ({m.n_head})")
    if t.name not in TASKS:
        hint = did_you_mean(t.name, TASKS)
        raise ConfigError(f"'task.name' must be one of {', '.join(TASKS)}, got '{t.name}'{hint}")
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
    if tr.precision not in ("fp32", "bf16"):
        raise ConfigError(f"'training.precision' must be 'fp32' or 'bf16', got '{tr.precision}'")
    if m.family == "looped":
        span = (tr.n_loop_window - 1) * tr.loop_dilation + 1
        if c.loops.start < span:
            raise ConfigError(
                f"'curriculum.loops.start' ({c.loops.start}) is below (T-1)*s+1 = {span} for "
                f"'training.n_loop_window' T={tr.n_loop_window} and 'training.loop_dilation' "
                f"s={tr.loop_dilation}: every step needs b >= (T-1)*s+1 loop iterations")
    _positive("eval.n_prompts", ev.n_prompts)
    _positive("eval.bootstrap", ev.bootstrap)
    for i, n in enumerate(ev.loops):
        _positive(f"eval.loops[{i}]", n)
    if pr.target not in ("wols", "grad"):
        raise ConfigError(f"'probe.target' must be 'wols' or 'grad', got '{pr.target}'")
    for name in ("steps", "batch_size", "hidden", "eval_every", "chunk"):
        _positive(f"probe.{name}", getattr(pr, name))
    _positive("probe.learning_rate", pr.learning_rate)
    if pr.n_loops < 0:
        raise ConfigError(f"'probe.n_loops' must be >= 0 (0 = the trained b), got {pr.n_loops}")
