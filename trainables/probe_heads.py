"""Probe targets and every (state, target) probe at once (SPEC section 8).

A probe is softmax pooling over the 2n positions, then Linear(D, h) -> ReLU -> Linear(h, d).
`StackedProbes` keeps all probes' weights stacked along leading (set, state, target) axes and
applies them with batched matmuls. States arrive one at a time from the model; they are
gathered into chunks of a few states, each chunk's probes are differentiated right away and
the chunk is freed, so at most `chunk` states are ever held.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .config import TaskConfig
from .tasks import sample_prompts

LINEAR_REGRESSION = TaskConfig(name="linear_regression")


def probe_prompts(n_dims: int, n_points: int, batch: int, generator: torch.Generator,
                  ones_w: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free linear-regression prompts at full d; `ones_w` (the control task) sets w = 1."""
    xs, ys = sample_prompts(LINEAR_REGRESSION, n_dims, batch, n_points, n_dims, generator)
    return (xs, xs.sum(2)) if ones_w else (xs, ys)


def wols_targets(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """[d, B, d]: minimum-norm least squares on the first i examples, i = 1..d."""
    xs64, ys64 = xs.double(), ys.double().unsqueeze(2)
    targets = [torch.linalg.pinv(xs64[:, :i]) @ ys64[:, :i] for i in range(1, xs.shape[2] + 1)]
    return torch.stack(targets).squeeze(3).to(xs.dtype)


def grad_targets(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """[n, B, d]: X_{1:i}^T y_{1:i} / n, i = 1..n."""
    return (torch.cumsum(xs * ys.unsqueeze(2), dim=1) / xs.shape[1]).transpose(0, 1)


TARGETS = {"wols": wols_targets, "grad": grad_targets}


def n_targets(target: str, n_dims: int, n_points: int) -> int:
    return n_dims if target == "wols" else n_points


class StackedProbes(nn.Module):
    """n_sets x n_states x n_targets independent probes; parameters lead with (set*state, target)."""

    def __init__(self, n_sets: int, n_states: int, n_targets: int, n_positions: int,
                 width: int, hidden: int, out: int):
        super().__init__()
        self.n_sets, self.n_states = n_sets, n_states

        def uniform(fan_in: int, *shape: int) -> torch.Tensor:  # nn.Linear's default init
            bound = 1 / math.sqrt(fan_in)
            return torch.empty(n_states, n_targets, *shape).uniform_(-bound, bound)

        # each set is initialised in turn, so a set's start does not depend on how many follow
        sets = [(torch.randn(n_states, n_targets, n_positions),
                 uniform(width, width, hidden), uniform(width, hidden),
                 uniform(hidden, hidden, out), uniform(hidden, out)) for _ in range(n_sets)]
        stacked = [torch.cat(parts) for parts in zip(*sets)]
        self.alpha, self.w1, self.b1, self.w2, self.b2 = map(nn.Parameter, stacked)

    def rows(self, set_index: int, start: int, count: int, grad: bool = False) -> list[torch.Tensor]:
        """Views of the parameters (or their gradients) of states start..start+count-1 of a set."""
        first = set_index * self.n_states + start
        return [(p.grad if grad else p)[first:first + count] for p in self.parameters()]


def apply_probes(params: list[torch.Tensor], states: torch.Tensor) -> torch.Tensor:
    """Predictions [C, K, B, out] of C states' probes on states [C, T, B, D] (position-major)."""
    alpha, w1, b1, w2, b2 = params
    chunk, positions, batch, width = states.shape
    pooled = alpha.softmax(-1) @ states.view(chunk, positions, batch * width)
    hidden = torch.relu(pooled.view(chunk, -1, batch, width) @ w1 + b1.unsqueeze(2))
    return hidden @ w2 + b2.unsqueeze(2)


def probe_errors(params: list[torch.Tensor], states: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """[C, K, B]: mean over coordinates of the squared error; targets are [K, B, d]."""
    return ((apply_probes(params, states) - targets) ** 2).mean(-1)


def state_chunks(states: Iterable[torch.Tensor], chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first state index, [c, T, B, D]) from an iterator of [B, T, D] states."""
    held, start = [], 0
    for state in states:
        held.append(state.transpose(0, 1))
        if len(held) == chunk:
            yield start, torch.stack(held)
            start, held = start + chunk, []
    if held:
        yield start, torch.stack(held)


def fit_step(probes: StackedProbes, states: Iterable[torch.Tensor], targets: torch.Tensor,
             set_index: int = 0, chunk: int = 8) -> torch.Tensor:
    """Fill the gradient of set `set_index`'s probes from one batch; returns its error per state.

    The loss is the error averaged over prompts, states and targets, as in the reference.
    The caller steps the optimizer.
    """
    n_targets, batch = targets.shape[:2]
    scale = 1 / (batch * probes.n_states * n_targets)
    errors = []
    for param in probes.parameters():
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    for start, block in state_chunks(states, chunk):
        # detached leaves: their backward writes only this chunk's rows, not a full-size gradient
        leaves = [p.detach().requires_grad_() for p in probes.rows(set_index, start, len(block))]
        err = probe_errors(leaves, block, targets)
        grads = torch.autograd.grad(err.sum() * scale, leaves)
        for grad_rows, grad in zip(probes.rows(set_index, start, len(block), grad=True), grads):
            grad_rows.copy_(grad)
        errors.append(err.detach().mean((1, 2)))
    return torch.cat(errors)


@torch.no_grad()
def evaluate(probes: StackedProbes, states: Iterable[torch.Tensor], targets: torch.Tensor,
             chunk: int = 8) -> torch.Tensor:
    """[n_sets, n_states]: every set's probes scored on the same states."""
    errors = []
    for start, block in state_chunks(states, chunk):
        per_set = [probe_errors(probes.rows(i, start, len(block)), block, targets).mean((1, 2))
                   for i in range(probes.n_sets)]
        errors.append(torch.stack(per_set))
    return torch.cat(errors, dim=1)
