"""search_spaces: YAML spaces -> Optuna define-by-run, constraints built into the ranges."""
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402

from search_spaces import Space, SpaceError, load_space, space_names  # noqa: E402
from trainables.config import load_config  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
CPU = "paper_linear_regression_looped_cpu"     # n_head 4, T 5, b 12


def draws(space: Space, base=CPU, overrides=None, n=200):
    """(values, rejection reasons) of n random draws."""
    sample = space.sampler(base, overrides)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values, reasons = [], []
    for _ in range(n):
        trial = study.ask()
        try:
            values.append(sample(trial)[0])
            study.tell(trial, 0.0)
        except optuna.TrialPruned as exc:
            reasons.append(str(exc))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return values, reasons


@pytest.mark.parametrize("name, base", [("dilation", "seed_dilation_cpu"), ("window_budget", CPU),
                                        ("width", CPU), ("lr", CPU)])
def test_shipped_spaces_propose_only_valid_configs(name, base):
    space = load_space(name)
    space.check(base)
    values, reasons = draws(space, base, n=60)
    assert not reasons
    for v in values:
        load_config(base, v)                 # raises on an invalid config
    assert set(space_names()) == {"dilation", "window_budget", "width", "lr"}


def test_dilation_space_searches_s_and_leaves_the_loop_start_to_the_loader():
    values, _ = draws(load_space("dilation"), "seed_dilation_cpu", n=40)
    assert {v["training.loop_dilation"] for v in values} == {1, 2, 3, 4}
    for v in values:
        config = load_config("seed_dilation_cpu", v)
        assert config.curriculum.loops.start == config.training.n_loop_window * v["training.loop_dilation"]


def test_loop_budget_is_drawn_above_the_window_span():
    space = Space.from_mapping({
        "training.n_loop_window": {"int": [2, 10]},
        "training.loop_dilation": {"int": [1, 4]},
        "curriculum.loops.start": {"int": [1, 50]},
        "curriculum.loops.end": {"int": [1, 100], "step": 3},
    })
    values, reasons = draws(space)
    assert not reasons and len(values) == 200
    for v in values:
        span = (v["training.n_loop_window"] - 1) * v["training.loop_dilation"] + 1
        assert v["curriculum.loops.start"] >= span
        assert v["curriculum.loops.end"] >= v["curriculum.loops.start"]
        assert (v["curriculum.loops.end"] - 1) % 3 == 0          # still on the declared grid
    # without the constraint a draw from [1, 100] would often fall below the span
    assert min(v["curriculum.loops.end"] for v in values) > 1


def test_width_is_drawn_from_multiples_of_the_head_count():
    categorical = Space.from_mapping({"model.n_embd": {"categorical": [30, 32, 40, 64, 96]}})
    values, reasons = draws(categorical, n=80)        # the CPU preset has 4 heads
    assert not reasons and {v["model.n_embd"] for v in values} == {32, 40, 64, 96}
    ranged = Space.from_mapping({"model.n_embd": {"int": [20, 70]}})
    values, reasons = draws(ranged, overrides={"model.n_head": 8}, n=80)
    assert not reasons and {v["model.n_embd"] for v in values} <= {24, 32, 40, 48, 56, 64}


def test_a_constraint_that_no_range_can_meet_is_rejected_with_a_reason():
    space = Space.from_mapping({"training.loop_dilation": {"categorical": [1, 3]},
                                "curriculum.loops.end": {"int": [5, 10]}})
    values, reasons = draws(space, n=40)              # T=5: s=3 needs b >= 13
    assert values and all(v["training.loop_dilation"] == 1 for v in values)
    assert reasons and all("is >= the required" in r for r in reasons)
    searched_heads = Space.from_mapping({"model.n_head": {"categorical": [3, 4]},
                                         "model.n_embd": {"categorical": [32, 48]}})
    values, reasons = draws(searched_heads, n=60)
    assert all(v["model.n_embd"] % v["model.n_head"] == 0 for v in values)
    assert reasons and all("divisible" in r for r in reasons)


def test_check_refuses_a_space_with_no_valid_config():
    impossible = Space.from_mapping({"training.loop_dilation": 3, "curriculum.loops.end": {"int": [5, 10]}})
    with pytest.raises(SpaceError, match="no valid config"):
        impossible.check(CPU)


@pytest.mark.parametrize("params, message", [
    ({"training.loop_dilaton": {"categorical": [1]}}, "did you mean 'training.loop_dilation'"),
    ({"model.n_embd.x": 3}, "no sub-field 'x'"),
    ({"training.seed": {"int": [5]}}, r"needs \[low, high\]"),
    ({"training.seed": {"int": [1, 2], "categorical": [1]}}, "exactly one of"),
    ({"training.seed": {"int": [9, 2]}}, "above high"),
    ({"training.seed": {"int": [1.5, 2]}}, r"'training.seed.int\[0\]' must be an integer"),
    ({"training.learning_rate": {"float": [0, 1], "log": True}}, "low > 0"),
    ({"training.seed": {"int": [1, 2], "stride": 1}}, "unknown option"),
    ({"training.seed": [1, 2]}, "ambiguous"),
    ({"training.seed": {"categorical": []}}, "non-empty list"),
])
def test_invalid_spaces_name_the_field(params, message):
    with pytest.raises(SpaceError, match=message) as info:
        Space.from_mapping(params, "bad")
    assert "space 'bad'" in str(info.value)


def test_space_files_and_inline_forms():
    assert load_space({"params": {"training.seed": 3}, "description": "x"}).params["training.seed"].value == 3
    yaml_floats = Space.from_mapping({"training.learning_rate": {"float": ["1e-5", "1e-3"], "log": True}})
    assert yaml_floats.params["training.learning_rate"].low == 1e-5
    with pytest.raises(SpaceError, match="did you mean 'dilation'"):
        load_space("dilaton")
    with pytest.raises(SpaceError, match="unknown top-level"):
        Space.from_mapping({"params": {"training.seed": 1}, "extra": 1})


def test_search_spaces_imports_neither_ray_nor_mlflow():
    code = "import sys, search_spaces; sys.exit(bool({'ray', 'mlflow'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0
