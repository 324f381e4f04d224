"""The science: looped/standard transformer training and probe fitting. Plain Python and torch:
no Ray, no MLflow (the one Ray Tune adapter, trainables.ray_adapter, is imported only by study)."""
from .config import Config, ConfigError, load_config
from .probing import probe
from .train import supervised_iterations, train

__all__ = ["Config", "ConfigError", "load_config", "probe", "supervised_iterations", "train"]
