"""How many loop iterations each training step runs (docs/loop_knobs.md): the loop curriculum
(the reference), or a depth drawn per step from `training.depth_sampling`'s distribution.

A drawn depth depends only on (training.seed, step), through a generator of its own: never the
global RNG or the data stream, so two configs on the same seed draw the same depths wherever
their distributions agree, and a resumed run draws what the uninterrupted one did. Pure Python
(no torch), so the FLOP count and the study service can read the distribution cheaply.
"""
from __future__ import annotations

import functools
import math
import random

from .config import Config, depth_bounds, depth_mean


def depth_of_step(config: Config, step: int) -> int:
    """The loop iterations of 0-based training step `step`."""
    tr = config.training
    if tr.depth_sampling == "curriculum":
        return config.curriculum.loops.value(step)
    low, high = depth_bounds(config)
    rng = random.Random(f"training.depth_sampling {tr.seed} {step}")   # str seeds hash by SHA-512: stable
    if tr.depth_sampling == "uniform":
        return rng.randint(low, high)
    # Huginn's Poisson-lognormal: tau ~ N(log(mean) - sigma^2/2, sigma), depth ~ Poisson(e^tau)
    sigma = tr.depth_sigma
    rate = math.exp(rng.gauss(math.log(depth_mean(config)) - sigma ** 2 / 2, sigma))
    return max(low, _poisson(rng.random(), rate, high))


def _poisson(u: float, rate: float, high: int) -> int:
    """The Poisson(rate) quantile at u (inversion), capped at `high`."""
    n, p = 0, math.exp(-rate)
    cumulative = p
    while u > cumulative and n < high:
        n += 1
        p *= rate / n
        cumulative += p
    return n


def depth_distribution(config: Config) -> dict[int, float]:
    """P(depth = n) for every depth a step of a sampled-depth config can run (clipping included);
    the curriculum's depth is not random: {b: 1.0} at its end."""
    tr = config.training
    low, high = depth_bounds(config)
    if tr.depth_sampling == "curriculum":
        return {high: 1.0}
    if tr.depth_sampling == "uniform":
        return {n: 1 / (high - low + 1) for n in range(low, high + 1)}
    return dict(_poisson_lognormal(depth_mean(config), tr.depth_sigma, low, high))


@functools.lru_cache(maxsize=64)
def _poisson_lognormal(mean: float, sigma: float, low: int, high: int) -> dict[int, float]:
    """The clipped Poisson-lognormal pmf: the Poisson pmf integrated over tau ~ N(mu, sigma) by
    the trapezoid rule (1601 nodes on +-8 sigma); mass below low or above high is clipped there."""
    nodes, width = 1601, 16 / 1600
    mu = math.log(mean) - sigma ** 2 / 2
    pmf = [0.0] * (high + 1)
    for i in range(nodes):
        z = -8 + i * width
        weight = width * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (0.5 if i in (0, nodes - 1) else 1)
        rate = math.exp(mu + sigma * z)
        p = math.exp(-rate)
        for n in range(high + 1):
            pmf[n] += weight * p
            p *= rate / (n + 1)
    tail = max(0.0, 1 - sum(pmf))                   # P(Poisson > high)
    below = sum(pmf[:low])
    return {n: pmf[n] + (below if n == low else 0) + (tail if n == high else 0) for n in range(low, high + 1)}


def expected_depth(config: Config) -> float:
    """The mean loop iterations of a step at the curriculum's end (sampled: over the distribution)."""
    return sum(n * p for n, p in depth_distribution(config).items())
