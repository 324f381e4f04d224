"""In-context function classes (SPEC section 1): each prompt has its own random function f."""
from __future__ import annotations

import math

import torch

from .config import TaskConfig


def normaliser(task: TaskConfig, n_dims: int) -> float:
    """What the evaluation divides squared errors by, so that predicting 0 scores about 1."""
    return {"sparse_linear_regression": task.sparsity, "decision_tree": 1}.get(task.name, n_dims)


def sample_prompts(task: TaskConfig, n_dims: int, batch: int, n_points: int, active_dims: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """xs [batch, n_points, n_dims] and ys [batch, n_points], float32, on the generator's device.

    Coordinates >= active_dims (the dimension curriculum) are zero in x, and in w for the
    linear tasks; decision trees always see the full x.
    """
    device = generator.device
    randn = lambda *shape: torch.randn(*shape, generator=generator, device=device)  # noqa: E731
    xs = randn(batch, n_points, n_dims)
    if task.name != "decision_tree" and active_dims < n_dims:
        xs[:, :, active_dims:] = 0
    if task.name in ("linear_regression", "noisy_linear_regression", "sparse_linear_regression"):
        w = randn(batch, n_dims, 1)
        w[:, active_dims:] = 0
        if task.name == "sparse_linear_regression":
            # keep `sparsity` coordinates chosen among all d (a truncated w may keep fewer)
            order = torch.rand(batch, n_dims, generator=generator, device=device).argsort(dim=1)
            keep = torch.zeros(batch, n_dims, device=device).scatter_(1, order[:, :task.sparsity], 1.0)
            w = w * keep.unsqueeze(2)
        ys = (xs @ w).squeeze(2)
        if task.name == "noisy_linear_regression":
            ys = ys + task.noise_std * randn(*ys.shape)
        return xs, ys
    if task.name == "relu_2nn_regression":
        w1 = randn(batch, n_dims, task.hidden)
        w2 = randn(batch, task.hidden, 1)
        ys = math.sqrt(2 / task.hidden) * (torch.relu(xs @ w1) @ w2).squeeze(2)
        return xs, ys
    if task.name == "decision_tree":
        n_internal = 2 ** task.depth - 1
        split_coord = torch.randint(0, n_dims, (batch, n_internal), generator=generator, device=device)
        leaf_value = randn(batch, 2 ** task.depth)
        node = torch.zeros(batch, n_points, dtype=torch.long, device=device)
        for _ in range(task.depth):
            coord = split_coord.gather(1, node)
            go_right = xs.gather(2, coord.unsqueeze(2)).squeeze(2) > 0
            node = 2 * node + 1 + go_right.long()
        ys = leaf_value.gather(1, node - n_internal)
        return xs, ys
    raise ValueError(f"unknown task '{task.name}'")


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Tokens x_1, [y_1, 0, ..., 0], x_2, ... : shape [batch, 2 * n_points, n_dims]."""
    batch, n_points, n_dims = xs.shape
    ys_wide = torch.zeros_like(xs)
    ys_wide[:, :, 0] = ys
    return torch.stack((xs, ys_wide), dim=2).view(batch, 2 * n_points, n_dims)
