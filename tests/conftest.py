import os

# nothing we launch may wait on an unreachable host
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402

from trainables.config import load_config  # noqa: E402

TINY = ["model.n_embd=16", "model.n_head=2", "model.n_dims=4", "curriculum.dims.start=4",
        "curriculum.dims.end=4", "curriculum.points.start=6", "curriculum.points.end=6",
        "training.batch_size=8", "eval.n_prompts=32", "eval.bootstrap=50"]


@pytest.fixture
def tiny_config():
    """A toy looped config that trains in well under a second per step."""
    def make(*overrides, preset="paper_linear_regression_looped_cpu"):
        return load_config(preset, TINY + list(overrides))
    return make
