"""The science: looped/standard transformer training and probe fitting. No Ray, no MLflow."""
from .config import Config, ConfigError, load_config
from .probe import probe
from .train import supervised_iterations, train

__all__ = ["Config", "ConfigError", "load_config", "probe", "supervised_iterations", "train"]
