"""The science: looped/standard transformer training and probe fitting. Plain Python and torch:
no Ray, no MLflow (the one Ray Tune adapter, trainables.ray_adapter, is imported only by study).

`train`, `probe` and `supervised_iterations` load torch on first use, so that reading configs
(the study service's `status`, `report`) does not pay for it."""
from .config import Config, ConfigError, load_config

_LAZY = {"probe": ".probing", "train": ".training", "supervised_iterations": ".training"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'trainables' has no attribute '{name}'")


__all__ = ["Config", "ConfigError", "load_config", "probe", "supervised_iterations", "train"]
