"""Training compute of the loop knobs (trainables/flops.py), equal-compute training steps, and
what the confound guard says about compared values (analysis/confounds.py)."""
import pytest

from analysis.confounds import compute_differences, confounds
from trainables.depth import depth_distribution
from trainables.flops import (block_flops, equal_compute_steps, injection_flops, train_flops_per_step,
                              train_flops_total)


def by_hand(config, depth, k, n_points=6):
    """SPEC's count: iterations before the last k forward only, the last k forward and backward."""
    m = config.model
    read = 2 * 2 * n_points * m.n_dims * m.n_embd + 2 * n_points * m.n_embd
    block = block_flops(config, n_points)
    return config.training.batch_size * ((depth - k) * block + 3 * (k * block + read))


def test_the_default_count_is_unchanged(tiny_config):
    config = tiny_config()                                         # b = 12, T = 5: 7 + 5 iterations
    assert train_flops_per_step(config) == by_hand(config, 12, 5)
    assert train_flops_per_step(config, step=0) == by_hand(config, 5, 5)


def test_backprop_depth_moves_iterations_into_the_backward_pass(tiny_config):
    config = tiny_config("training.backprop_depth=9", "curriculum.loops.start=12")
    assert train_flops_per_step(config) == pytest.approx(by_hand(config, 12, 9))
    extra = train_flops_per_step(config) - train_flops_per_step(tiny_config("curriculum.loops.start=12"))
    assert extra == pytest.approx(config.training.batch_size * 2 * 4 * block_flops(config, 6))


def test_a_sampled_depth_costs_its_expectation(tiny_config):
    config = tiny_config("training.depth_sampling=poisson_lognormal")
    expected = sum(p * by_hand(config, n, 5) for n, p in depth_distribution(config).items())
    assert train_flops_per_step(config) == pytest.approx(expected, rel=1e-12)
    uniform = tiny_config("training.depth_sampling=uniform")         # 5..12: mean 8.5
    assert train_flops_per_step(uniform) == pytest.approx(by_hand(uniform, 8.5, 5))


def test_a_learned_injection_costs_its_matmul_in_every_iteration(tiny_config):
    add, linear = tiny_config(), tiny_config("model.injection=linear")
    injection = injection_flops(linear, 6)
    assert injection == 2 * 12 * 2 * 16 * 16 and injection_flops(add, 6) == 0
    assert train_flops_per_step(linear) - train_flops_per_step(add) == pytest.approx(
        add.training.batch_size * (7 + 3 * 5) * injection)


def test_the_total_is_the_sum_over_steps(tiny_config):
    config = tiny_config("training.train_steps=37", "curriculum.loops.interval=4", "curriculum.points.start=3",
                         "curriculum.points.inc=1", "curriculum.points.interval=5")
    assert train_flops_total(config) == pytest.approx(sum(train_flops_per_step(config, s) for s in range(37)))


def test_equal_compute_steps_match_the_reference_total(tiny_config):
    configs = {"T=5": tiny_config("training.train_steps=300"),
               "T=3": tiny_config("training.train_steps=300", "training.n_loop_window=3", "curriculum.loops.start=5"),
               "k=9": tiny_config("training.train_steps=300", "training.backprop_depth=9", "curriculum.loops.start=12")}
    steps = equal_compute_steps(configs, "T=5")
    assert steps["T=5"] == 300 and steps["T=3"] > 300 and steps["k=9"] < 300
    target = train_flops_total(configs["T=5"])
    for label, config in configs.items():
        scaled = config.__class__(**{**config.__dict__, "training": config.training.__class__(
            **{**config.training.__dict__, "train_steps": steps[label]})})
        assert abs(train_flops_total(scaled) - target) <= train_flops_per_step(config) / 2
    assert all(n % 50 == 0 for n in equal_compute_steps(configs, "T=5", multiple_of=50).values())


def test_the_guard_names_compute_differences_and_not_the_compared_distribution(tiny_config):
    curriculum = tiny_config("curriculum.loops.start=12")
    sampled = tiny_config("training.depth_sampling=poisson_lognormal")
    assert confounds({"curriculum": curriculum, "sampled": sampled}) == []   # the compared value itself
    differences = compute_differences({"curriculum": curriculum, "sampled": sampled})
    assert [line.split(":")[0] for line in differences] == [
        "training GFLOP per step (expected, at the final curriculum)", "training GFLOP in total (expected)"]
    assert "curriculum 0." in differences[0] and "sampled 0." in differences[0]
    assert compute_differences({"a": curriculum, "b": tiny_config("curriculum.loops.start=12")}) == []
    other_b = tiny_config("training.depth_sampling=poisson_lognormal", "curriculum.loops.end=16")
    assert confounds({"b=12": sampled, "b=16": other_b})[0].startswith("loop iterations sampled per step")
    assert "loop budget b (the depth evaluated): b=12 12, b=16 16" in confounds({"b=12": sampled, "b=16": other_b})
