"""The shipped presets (trainables/presets/*.yaml, each with a CPU-sized variant NAME_cpu) and
config files: the mappings a config is built from (trainables.config.load_config)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .schema import ConfigError, did_you_mean, merged, read_yaml

PRESET_DIR = resources.files("trainables") / "presets"
CPU_SUFFIX = "_cpu"   # every preset NAME has a CPU-sized variant NAME_cpu (its file's `cpu:` block)


def _preset_files() -> list[str]:
    return sorted(p.name[:-5] for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml"))


def preset_names() -> list[str]:
    return sorted(n + suffix for n in _preset_files() for suffix in ("", CPU_SUFFIX))


def _read_yaml(path, label: str) -> dict:
    data = read_yaml(path, label)
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
        data, cpu = merged(parent_full, data), merged(parent_cpu, cpu)
    return data, cpu, description


def preset_data(name: str) -> tuple[dict, str]:
    """A preset's config mapping and its one-line description."""
    if name not in preset_names():
        hint = did_you_mean(name, preset_names())
        raise ConfigError(f"no preset or file named '{name}'{hint} (presets: {', '.join(preset_names())})")
    if name.endswith(CPU_SUFFIX) and name not in _preset_files():
        full, cpu, description = _preset_layers(name[:-len(CPU_SUFFIX)])
        return merged(full, cpu), f"CPU-sized variant (minutes on 2 cores) of: {description}"
    full, _, description = _preset_layers(name)
    return full, description


def is_config_file(source: str | Path) -> bool:
    """Whether a config source names a YAML file (else a preset; a folder of the same name, e.g.
    a study's results folder `--results depth_sampling_cpu`, does not hide the preset)."""
    return Path(source).suffix in (".yaml", ".yml") or Path(source).is_file()


def source_data(source: str | Path) -> dict:
    """Config mapping from a preset name or a YAML path (a path may also use `extends`)."""
    path = Path(source)
    if is_config_file(source):
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        data = _read_yaml(path, str(path))
        data.pop("description", None)
        parent = data.pop("extends", None)
        return merged(preset_data(parent)[0], data) if parent else data
    return preset_data(str(source))[0]
