"""Depth per step (docs/loop_knobs.md): the curriculum (default) or a depth drawn from
(training.seed, step) alone; which depth each step ran, the distributions, exact resume."""
import collections
import math

import pytest
import torch

from trainables import train
from trainables.config import ConfigError, depth_bounds
from trainables.depth import depth_distribution, depth_of_step, expected_depth
from trainables.run_folder import read_metrics
from trainables.training import train_step


def sampled(tiny_config, *overrides):
    return tiny_config("training.depth_sampling=poisson_lognormal", *overrides)


def test_the_default_is_the_loop_curriculum(tiny_config):
    config = tiny_config("curriculum.loops.interval=3")
    assert [depth_of_step(config, s) for s in range(0, 15, 3)] == [5, 7, 9, 11, 12]
    assert [depth_of_step(config, s) for s in range(15)] == [config.curriculum.loops.value(s) for s in range(15)]


def test_a_drawn_depth_depends_only_on_seed_and_step(tiny_config):
    config = sampled(tiny_config)
    first = [depth_of_step(config, s) for s in range(200)]
    torch.manual_seed(123)                            # the global RNGs play no part
    __import__("random").seed(5)
    assert [depth_of_step(config, s) for s in range(200)] == first
    assert [depth_of_step(config, s) for s in reversed(range(200))] == first[::-1]
    other_lr = sampled(tiny_config, "training.learning_rate=0.01")   # paired seeds stay paired
    assert [depth_of_step(other_lr, s) for s in range(200)] == first
    other_seed = sampled(tiny_config, "training.seed=7")
    assert [depth_of_step(other_seed, s) for s in range(200)] != first
    assert len(set(first)) > 5                         # it does vary from step to step


def test_poisson_lognormal_draws_follow_the_published_definition(tiny_config):
    config = sampled(tiny_config)                      # mean b = 12, sigma 0.5, clipped to 5..36
    assert depth_bounds(config) == (5, 36)
    pmf = depth_distribution(config)
    assert sum(pmf.values()) == pytest.approx(1, abs=1e-9)
    # hand integration of P(N = 12), N ~ Poisson(e^tau), tau ~ N(log 12 - 0.125, 0.5), by Monte Carlo quadrature
    gen = torch.Generator().manual_seed(0)
    rates = torch.exp(math.log(12) - 0.125 + 0.5 * torch.randn(400_000, generator=gen, dtype=torch.float64))
    assert pmf[12] == pytest.approx(torch.exp(12 * rates.log() - rates - math.lgamma(13)).mean().item(), rel=0.01)
    counts = collections.Counter(depth_of_step(config, s) for s in range(20_000))
    for depth in (5, 8, 12, 20, 36):                   # 5 and 36 hold the clipped mass
        assert counts[depth] / 20_000 == pytest.approx(pmf[depth], abs=0.006)
    assert set(counts) <= set(range(5, 37))
    assert expected_depth(config) == pytest.approx(sum(counts.elements()) / 20_000, abs=0.1)


def test_uniform_draws_every_depth_of_its_range(tiny_config):
    config = tiny_config("training.depth_sampling=uniform", "training.depth_min=6", "training.depth_max=9")
    counts = collections.Counter(depth_of_step(config, s) for s in range(4000))
    assert sorted(counts) == [6, 7, 8, 9] and all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values())
    assert expected_depth(config) == 7.5
    assert depth_bounds(tiny_config("training.depth_sampling=uniform")) == (5, 12)   # (T-1)s+1 .. b


def test_each_training_step_runs_its_drawn_depth(tiny_config, tmp_path, monkeypatch):
    config = sampled(tiny_config, "training.train_steps=6", "training.eval_every=6", "training.log_every=3")
    ran = []

    def recording_step(model, optimizer, config, xs, ys, n_iterations, autocast):
        ran.append(n_iterations)
        return train_step(model, optimizer, config, xs, ys, n_iterations, autocast)

    monkeypatch.setattr("trainables.training.train_step", recording_step)
    train(config, out_dir=tmp_path / "run", num_threads=1)
    assert ran == [depth_of_step(config, s) for s in range(6)]
    logged = [e for e in read_metrics(tmp_path / "run") if "train/loss" in e]
    assert [e["train/mean_depth"] for e in logged] == [sum(ran[:3]) / 3, sum(ran[3:]) / 3]


def test_resume_with_sampled_depth_is_bitwise_identical(tiny_config, tmp_path):
    config = sampled(tiny_config, "training.train_steps=8", "training.checkpoint_every=4", "training.eval_every=4",
                     "training.depth_min=5", "training.depth_max=9", "training.depth_mean=7")
    train(config, out_dir=tmp_path / "straight", num_threads=1)
    half = config.__class__(**{**config.__dict__,
                               "training": config.training.__class__(**{**config.training.__dict__, "train_steps": 4})})
    train(half, out_dir=tmp_path / "split", num_threads=1)
    train(config, out_dir=tmp_path / "split", num_threads=1,
          resume_from=tmp_path / "split" / "checkpoints" / "step_00000004")
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000008" / "state.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoints" / "step_00000008" / "state.pt", weights_only=True)
    for name, value in straight["model"].items():
        assert torch.equal(value, split["model"][name]), name


UNIFORM, POISSON = "training.depth_sampling=uniform", "training.depth_sampling=poisson_lognormal"


@pytest.mark.parametrize("overrides, message", [
    ([UNIFORM, "training.depth_min=3"], r"'training.depth_min' \(3\) is below \(T-1\)\*s\+1 = 5"),
    ([UNIFORM, "training.depth_min=20"], r"'curriculum.loops.end' \(b, what 'training.depth_max: 0' means "
                                          r"for uniform\) \(12\) is below 'training.depth_min' \(20\)"),
    ([POISSON, "training.depth_max=6", "training.depth_min=8"],
     r"'training.depth_max' \(6\) is below 'training.depth_min' \(8\)"),
    ([POISSON, "training.depth_mean=40", "training.depth_max=36"], r"'training.depth_mean' \(40.0; 0 = b\) is outside"),
    ([POISSON, "training.depth_sigma=0"], r"'training.depth_sigma' must be positive"),
    ([POISSON, "training.depth_min=-1"], r"'training.depth_min' must be >= 0"),
    (["training.depth_sampling=geometric"], r"training.depth_sampling"),
    (["model.family=standard", UNIFORM], r"'training.depth_sampling' applies to looped models only"),
])
def test_impossible_depth_configs_name_the_field(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)
