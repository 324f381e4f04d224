"""When a sequential study has answered: after each replicate round, every comparison's
interval for its mean paired difference (value - reference, seed by seed), its decision, which
comparisons need the next round's seeds, and whether the study stops. Pure functions, no I/O.

Method: a group-sequential design with planned looks (analysis/sequential_plan.py: after
seeds.start paired seeds, then every seeds.step more, up to seeds.max). At look k a comparison
gets a Student t interval of the mean difference at its own level 1 - alpha_k, where alpha_k is
what a Lan-DeMets spending function (Lan & DeMets 1983) releases at information fraction
n_k / seeds.max out of alpha/m. The alpha_k of a comparison sum to alpha/m, and the m
comparisons share alpha (Bonferroni), so by the union bound every interval of every look of every
comparison covers its true difference at once with probability >= confidence, however many
rounds are looked at and whichever comparisons stop early. The union bound ignores that the
looks are correlated (exact group-sequential boundaries would use it: Jennison & Turnbull 2000,
ch. 7), so the realised error rate is below the stated one; tests/test_sequential_simulation.py
measures by how much.

Why not a confidence sequence: the sharp ones (Howard, Ramdas, McAuliffe & Sekhon 2021, Ann.
Statist. 49:1055; Waudby-Smith & Ramdas 2024, JRSS-B 86:1) need a known variance bound or a
bounded objective, which an error has not; those valid with an unknown variance for Gaussian
data (Lai 1976; Wang & Ramdas 2023, "Anytime-valid t-tests and confidence sequences for Gaussian
means with unknown variance") guard infinitely many looks and are several times wider than a t
interval at 4-20 seeds. Our looks are few and known in advance, and at these n the t interval is
exact for Gaussian paired differences whatever their variance (the stand-in's are Gaussian;
real ones are close, their seed noise removed by the pairing).

Multiplicity: Bonferroni alpha/m over the m comparisons (each value vs the reference, or m given
by the caller, e.g. values x horizons). Holm-type recycling of a resolved comparison's alpha is
valid for the tests in group-sequential designs (Maurer & Bretz 2013) but not for the intervals
and equivalence statements we also make, so we keep the simpler, simultaneous guarantee.

Decisions of a look (lower is better under mode "min"): `equivalent` when delta is declared and
the interval lies inside (-delta, delta), which takes precedence (a difference smaller than the
declared margin does not matter, even if its sign is known; the interval shows it); else `better`
or `worse` when the interval excludes 0; else `undecided`, or at the last planned look (or with
the budget spent) `unresolved`, with the paired seeds a fixed design would need (`seeds_needed`).
A resolved comparison looks no more and stops receiving seeds.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from .sequential_plan import Question

BETTER, WORSE, EQUIVALENT, UNDECIDED, UNRESOLVED = "better", "worse", "equivalent", "undecided", "unresolved"
RESOLVED = (BETTER, WORSE, EQUIVALENT)


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df, by the exact finite series (Abramowitz &
    Stegun 26.7.3-4) in theta = atan(t / sqrt(df))."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * 2 * k / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


EXACT_DF = 100          # above: the Cornish-Fisher expansion (error < 1e-7 there), the series costs O(df)


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with integer df >= 1: bisection on theta of the exact series
    up to EXACT_DF, above it the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: expected 0 < p < 1 and df >= 1, got p={p!r}, df={df!r}")
    if df > EXACT_DF:
        z = statistics.NormalDist().inv_cdf(p)
        return (z + (z ** 3 + z) / 4 / df + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96 / df ** 2
                + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384 / df ** 3
                + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160 / df ** 4)
    central = abs(2 * p - 1)
    lo, hi = 0.0, math.pi / 2
    for _ in range(64):
        mid = (lo + hi) / 2
        if t_central_probability(math.sqrt(df) * math.tan(mid), df) < central:
            lo = mid
        else:
            hi = mid
    return math.copysign(math.sqrt(df) * math.tan((lo + hi) / 2), p - 0.5)


def t_interval(values: Sequence[float], alpha: float) -> tuple[float, float, float]:
    """(mean, lo, hi): the two-sided 1 - alpha Student t interval of the mean of `values` (n >= 2)."""
    n, mean = len(values), statistics.fmean(values)
    half = t_quantile(1 - alpha / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def decision(lo: float, hi: float, delta: float | None, mode: str = "min") -> str:
    """What an interval of value - reference says: equivalent, better, worse or undecided."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
    if delta is not None and -delta < lo and hi < delta:
        return EQUIVALENT
    if hi < 0 or lo > 0:
        return BETTER if (hi < 0) == (mode == "min") else WORSE
    return UNDECIDED


def seeds_needed(sd: float, effect: float, alpha: float, power: float) -> int | None:
    """Paired seeds a fixed design needs to tell a mean difference of `effect` from none with a
    two-sided level-alpha t test and the given power: the least n with
    n >= ((t_{1-alpha/2, n-1} + t_{power, n-1}) sd / effect)^2 (the normal formula with t
    quantiles, which undercounts at small n without them). The right side falls as n grows and
    the left rises, so the least such n is found by doubling, then bisection (iterating the
    formula instead can swing between two values: 2 and 13 for sd/effect 0.47). None when
    effect is 0."""
    if effect == 0 or not math.isfinite(sd):
        return None

    def enough(n: int) -> bool:
        return ((t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / abs(effect)) ** 2 <= n

    high = 2
    while not enough(high):
        high *= 2
    low = high // 2                          # not enough (or 1: no test with one seed)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class Look:
    """One comparison's interval and decision after one round."""
    comparison: str
    round: int                  # 1 = the first planned look; 0 = the budget ran out before it
    n: int                      # paired seeds used
    mean: float
    lo: float | None            # None: too few seeds for an interval (budget spent before round 1)
    hi: float | None
    alpha: float                # the error rate this look's interval spends
    decision: str
    seeds_needed: int | None = None     # unresolved: paired seeds a fixed design would need
    projected_from: str = ""            # "delta" or "observed mean": the effect the projection assumes


@dataclass(frozen=True)
class Judgement:
    """The state after a round: every look so far, each comparison's latest, what runs next."""
    looks: tuple[Look, ...]             # in comparison order, then round order
    latest: dict[str, Look]             # each comparison's last look (absent: none yet)
    wanted: dict[str, int]              # comparisons still open -> paired seeds their next look needs
                                        # (the reference runs as many as the largest of them)
    stop: bool                          # every comparison resolved or unresolved at budget


def judge(differences: Mapping[str, Sequence[float]], question: Question, mode: str = "min", *,
          budget_spent: bool = False, family: int | None = None) -> Judgement:
    """Replay the planned looks on each comparison's paired differences (value - reference, in
    the order the seeds were assigned, which must not depend on the values): look k uses the first
    n_k differences; a comparison stops at its first resolved look, and differences beyond it are
    ignored. `budget_spent` (wall time or horizon out) turns every open comparison unresolved at
    its last look. `family`: the comparisons sharing alpha (default: those given)."""
    decision(0.0, 0.0, None, mode)             # an unknown mode fails here, before any look
    family = len(differences) if family is None else family
    alphas, sizes = question.look_alphas(family), question.seeds.looks()
    share = question.alpha / family
    looks, latest, wanted = [], {}, {}
    for name, values in differences.items():
        values = list(values)
        for k, (n, alpha) in enumerate(zip(sizes, alphas)):
            if len(values) < n:
                break
            mean, lo, hi = t_interval(values[:n], alpha)
            latest[name] = Look(name, k + 1, n, mean, lo, hi, alpha, decision(lo, hi, question.delta, mode))
            looks.append(latest[name])
            if latest[name].decision != UNDECIDED:
                break
        look = latest.get(name)
        if look is not None and look.decision in RESOLVED:
            continue
        if budget_spent or (look is not None and look.n == sizes[-1]):
            if look is None:
                looks.append(_unresolved(_no_look(name, values), values, question, share))
            else:
                looks[-1] = _unresolved(look, values[:look.n], question, share)
            latest[name] = looks[-1]
        else:
            wanted[name] = sizes[look.round] if look else sizes[0]
    return Judgement(tuple(looks), latest, wanted, stop=not wanted)


def _no_look(name: str, values: list[float]) -> Look:
    """The budget ran out before a comparison had the seeds of its first look."""
    return Look(name, 0, len(values), statistics.fmean(values) if values else math.nan, None, None, 0.0, UNDECIDED)


def _unresolved(look: Look, values: list[float], question: Question, share: float) -> Look:
    """An open comparison at the end of its budget, with the paired seeds a fixed design at the
    family's per-comparison level would need: for a difference of delta when declared, else of
    the observed mean difference (a noisy guess of the effect, so a rough order of magnitude; a
    mean near 0 asks for very many seeds)."""
    sd = statistics.stdev(values) if len(values) >= 2 else math.nan
    effect, source = (question.delta, "delta") if question.delta is not None else (look.mean, "observed mean")
    needed = seeds_needed(sd, effect, share, question.power) if math.isfinite(effect) else None
    return Look(look.comparison, look.round, look.n, look.mean, look.lo, look.hi, look.alpha, UNRESOLVED,
                needed, source)


def trajectory_rows(judgement: Judgement) -> list[dict]:
    """One row per comparison and look, for the answer's trajectory table and figure."""
    return [{"comparison": k.comparison, "round": k.round, "n": k.n, "mean": k.mean, "lo": k.lo, "hi": k.hi,
             "decision": k.decision} for k in judgement.looks]
