"""Named, declarative search spaces (YAML) turned into Optuna define-by-run functions.

Knows Optuna and the config schema, nothing of Ray or MLflow.
"""
from __future__ import annotations

from importlib import resources

import yaml

from trainables.schema import did_you_mean

from .space import Param, Space, SpaceError

SPACE_DIR = resources.files("search_spaces")


def space_names() -> list[str]:
    return sorted(p.name[:-5] for p in SPACE_DIR.iterdir() if p.name.endswith(".yaml"))


def load_space(space: str | dict) -> Space:
    """A shipped space by name, or an inline mapping ({description?, params} or dotted keys)."""
    if isinstance(space, dict):
        return Space.from_mapping(space)
    if space not in space_names():
        hint = did_you_mean(space, space_names())
        raise SpaceError(f"no shipped space named '{space}'{hint} (shipped: {', '.join(space_names())})")
    try:
        data = yaml.safe_load((SPACE_DIR / f"{space}.yaml").read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"space '{space}': not valid YAML: {exc}") from None
    return Space.from_mapping(data, space)


__all__ = ["Param", "Space", "SpaceError", "load_space", "space_names"]
