"""Analytic model FLOPs of training (matmuls only; a multiply-add counts as 2), and the training
steps that give compared configs equal training compute (docs/loop_knobs.md)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .config import Config, backprop_depth
from .depth import expected_depth


def block_flops(config: Config, n_points: int) -> float:
    """Forward FLOPs of one block application on one prompt of 2n tokens."""
    width, tokens = config.model.n_embd, 2 * n_points
    dense = 2 * tokens * 12 * width * width                  # qkv, out proj, and the 4x MLP
    attention = 2 * 2 * tokens * tokens * width / 2          # QK^T and AV, causal half
    return dense + attention


def injection_flops(config: Config, n_points: int) -> float:
    """Forward FLOPs of a learned input injection (`model.injection: linear`, [Y, P] -> D on 2n
    tokens) in one loop iteration on one prompt; `add` and `none` have none."""
    width = config.model.n_embd
    return 2 * (2 * n_points) * 2 * width * width if config.model.injection == "linear" else 0


def train_flops_per_step(config: Config, step: int | None = None) -> float:
    """Forward plus backward (2x forward) FLOPs of a step; at the final curriculum by default.
    A looped step runs its depth's iterations, the last k (training.backprop_depth) with gradient;
    with a sampled depth this is the expectation over the depth distribution (FLOPs are linear
    in the depth)."""
    c, m = config.curriculum, config.model
    n_points = c.points.end if step is None else c.points.value(step)
    read_in_out = 2 * 2 * n_points * m.n_dims * m.n_embd + 2 * n_points * m.n_embd
    if m.family == "standard":
        depth, k = 1, 1                          # one pass through the n_layer blocks
    elif config.training.depth_sampling != "curriculum":
        depth, k = expected_depth(config), backprop_depth(config.training)
    else:
        depth, k = c.loops.end if step is None else c.loops.value(step), backprop_depth(config.training)
    per_prompt = (m.n_layer * (depth - k) * block_flops(config, n_points)
                  + 3 * (m.n_layer * k * block_flops(config, n_points) + read_in_out))
    if m.injection == "linear":
        per_prompt += (depth - k + 3 * k) * injection_flops(config, n_points)
    return config.training.batch_size * per_prompt


def train_flops_total(config: Config) -> float:
    """FLOPs of all training.train_steps steps (expected, for a sampled depth); the sum runs over
    the stretches where the curriculum's points and loops stay the same."""
    c, steps = config.curriculum, config.training.train_steps
    changes = {0, steps}
    for schedule in (c.points, c.loops):
        end = schedule.reaches_end_at()                 # the last change, or None: changes to the end
        changes |= set(range(schedule.interval, steps if end is None else min(steps, end + 1), schedule.interval))
    bounds = sorted(changes)
    return sum((stop - start) * train_flops_per_step(config, start) for start, stop in zip(bounds, bounds[1:]))


def equal_compute_steps(configs: Mapping[str, Config], reference: str, multiple_of: int = 1) -> dict[str, int]:
    """Each compared config's training.train_steps such that its total training FLOPs match the
    `reference` config's (whose steps are kept): the multiple of `multiple_of` whose total is
    closest (at least one multiple). Pure arithmetic on the configs."""
    target = train_flops_total(configs[reference])
    steps = {}
    for label, config in configs.items():
        if label == reference:
            steps[label] = config.training.train_steps
            continue

        def total(n: int, config=config) -> float:
            return train_flops_total(_with_steps(config, n * multiple_of))

        low, high = 1, 1
        while total(high) < target:          # bracket, then bisect: the total grows with the steps
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if total(middle) < target else (low, middle)
        steps[label] = multiple_of * min((low, high), key=lambda n: abs(total(n) - target))
    return steps


def _with_steps(config: Config, steps: int) -> Config:
    return replace(config, training=replace(config.training, train_steps=steps))
