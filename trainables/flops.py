"""Analytic model FLOPs of one training step (matmuls only; a multiply-add counts as 2)."""
from __future__ import annotations

from .config import Config, loop_span


def block_flops(config: Config, n_points: int) -> float:
    """Forward FLOPs of one block application on one prompt of 2n tokens."""
    width, tokens = config.model.n_embd, 2 * n_points
    dense = 2 * tokens * 12 * width * width                  # qkv, out proj, and the 4x MLP
    attention = 2 * 2 * tokens * tokens * width / 2          # QK^T and AV, causal half
    return dense + attention


def train_flops_per_step(config: Config, step: int | None = None) -> float:
    """Forward plus backward (2x forward) FLOPs of a step; at the final curriculum by default."""
    c, m = config.curriculum, config.model
    n_points = c.points.end if step is None else c.points.value(step)
    read_in_out = 2 * 2 * n_points * m.n_dims * m.n_embd + 2 * n_points * m.n_embd
    if m.family == "standard":
        no_grad, differentiated = 0, m.n_layer
    else:
        b = c.loops.end if step is None else c.loops.value(step)
        span = loop_span(config.training.n_loop_window, config.training.loop_dilation)
        no_grad, differentiated = m.n_layer * (b - span), m.n_layer * span
    per_prompt = (no_grad * block_flops(config, n_points)
                  + 3 * (differentiated * block_flops(config, n_points) + read_in_out))
    return config.training.batch_size * per_prompt
