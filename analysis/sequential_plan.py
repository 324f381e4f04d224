"""The question a study declares before it runs, and the error rate it may spend at each look.

A study file's `question:` section states what would count as an answer:

    question:
      confidence: 0.90          # for the whole family of comparisons (every value vs the reference)
      delta: 0.01               # optional margin of practical equivalence, in objective units
      seeds: {start: 4, step: 2, max: 16}     # paired seeds per value: the first look, each round, the cap
      horizon: {start: 1500, max: 6000}       # training steps: the first horizon, the longest allowed
      time_limit_s: 3600        # optional wall-time budget
      power: 0.8                # for the seeds an unresolved comparison would need
      spending: obrien_fleming  # or pocock: how the error rate is spread over the looks

The horizons are planned too: start, doubled while below max, then max (1500, 3000, 6000).
The replicates continue to the next only while their objective is still improving
(study/replicate_rounds.py); each horizon's answer is a statement of its own, so the family is
every comparison at every planned horizon (Bonferroni over both).

`Question.from_mapping` builds it; every check raises ValueError naming the field
(`question.seeds.max: expected an integer >= seeds.start (4), got 2`).

The looks are planned: after `seeds.start` paired seeds, then every `seeds.step` more, up to
`seeds.max`. Each comparison gets alpha/m of the family's alpha = 1 - confidence (Bonferroni over
the m comparisons), spread over its looks by a Lan-DeMets spending function (Lan & DeMets 1983,
Biometrika 70:659-663): the look at information fraction t_k = n_k / seeds.max spends
alpha*(t_k) - alpha*(t_{k-1}). The O'Brien-Fleming type is the default: at 4-20 seeds an early
look's t quantile is large at any level, so spending little early keeps the last look's power
near the fixed design's (Gaussian simulation, seeds 4..16 by 2, effect 0.8 sd: power 0.78 with
11.9 seeds on average, against the Pocock type's 0.67 with 11.6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

_Z = NormalDist()


def pocock_spending(alpha: float, t: float) -> float:
    """Lan-DeMets Pocock-type: alpha * ln(1 + (e - 1) t); spends early, suits stopping early."""
    return alpha * math.log(1 + (math.e - 1) * min(t, 1.0))


def obrien_fleming_spending(alpha: float, t: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type: 2 - 2 Phi(z_{1-alpha/2} / sqrt t); keeps alpha for the end."""
    t = min(t, 1.0)
    return 0.0 if t <= 0 else 2 - 2 * _Z.cdf(_Z.inv_cdf(1 - alpha / 2) / math.sqrt(t))


SPENDING = {"pocock": pocock_spending, "obrien_fleming": obrien_fleming_spending}


@dataclass(frozen=True)
class SeedBudget:
    start: int = 4        # paired seeds per value at the first look
    step: int = 2         # seeds added per value each round
    max: int = 16         # the most seeds any value gets

    def looks(self) -> tuple[int, ...]:
        """The planned look sizes: start, start+step, ..., and max (a shorter last round if needed)."""
        sizes = list(range(self.start, self.max + 1, self.step))
        return tuple(sizes if sizes[-1] == self.max else sizes + [self.max])


@dataclass(frozen=True)
class HorizonBudget:
    start: int | None = None   # training steps of the first horizon (None: the config's train_steps)
    max: int | None = None     # the longest horizon the replicates may be continued to (None: start)

    def ladder(self) -> tuple[int, ...]:
        """The planned horizons: start, doubled while below max, and max; () before start is known."""
        if self.start is None:
            return ()
        steps, top = [self.start], self.max or self.start
        while steps[-1] * 2 < top:
            steps.append(steps[-1] * 2)
        return tuple(steps + ([top] if top > steps[-1] else []))


@dataclass(frozen=True)
class Question:
    confidence: float = 0.90
    delta: float | None = None
    seeds: SeedBudget = field(default_factory=SeedBudget)
    horizon: HorizonBudget = field(default_factory=HorizonBudget)
    time_limit_s: float | None = None
    power: float = 0.8
    spending: str = "obrien_fleming"

    def __post_init__(self):
        self.validate()

    @property
    def alpha(self) -> float:
        """The family's error rate: the chance that any statement of the study is wrong."""
        return 1 - self.confidence

    def validate(self) -> None:
        _check("question.confidence", self.confidence, "a number in (0, 1), e.g. 0.90",
               _is_number(self.confidence) and 0 < self.confidence < 1)
        _check("question.delta", self.delta, "a positive number (objective units) or null",
               self.delta is None or (_is_number(self.delta) and self.delta > 0))
        s = self.seeds
        _check("question.seeds.start", s.start, "an integer >= 2 (a t interval needs two seeds)",
               _is_int(s.start) and s.start >= 2)
        _check("question.seeds.step", s.step, "an integer >= 1", _is_int(s.step) and s.step >= 1)
        _check("question.seeds.max", s.max, f"an integer >= seeds.start ({s.start})",
               _is_int(s.max) and s.max >= s.start)
        h = self.horizon
        _check("question.horizon.start", h.start, "a positive integer (training steps) or null",
               h.start is None or (_is_int(h.start) and h.start >= 1))
        _check("question.horizon.max", h.max, f"an integer >= horizon.start ({h.start}) or null",
               h.max is None or (_is_int(h.max) and h.max >= (h.start or 1)))
        _check("question.time_limit_s", self.time_limit_s, "a positive number of seconds or null",
               self.time_limit_s is None or (_is_number(self.time_limit_s) and self.time_limit_s > 0))
        _check("question.power", self.power, "a number in (0.5, 1), e.g. 0.8",
               _is_number(self.power) and 0.5 < self.power < 1)
        _check("question.spending", self.spending, f"one of {', '.join(SPENDING)}", self.spending in SPENDING)

    @classmethod
    def from_mapping(cls, data: dict | None) -> Question:
        """The study file's `question:` section (missing keys take the defaults above)."""
        data = _mapping("question", {} if data is None else data, cls)
        seeds = SeedBudget(**_mapping("question.seeds", data.pop("seeds", {}), SeedBudget))
        horizon = HorizonBudget(**_mapping("question.horizon", data.pop("horizon", {}), HorizonBudget))
        return cls(**data, seeds=seeds, horizon=horizon)

    def family(self, comparisons: int) -> int:
        """The statements that share alpha: every comparison at every planned horizon."""
        return comparisons * max(1, len(self.horizon.ladder()))

    def look_alphas(self, family: int) -> tuple[float, ...]:
        """The two-sided error rate each planned look of one comparison may spend: alpha / family
        (Bonferroni over the comparisons), spread over the looks by the spending function. They
        sum to alpha / family, so by the union bound every interval of every look of every
        comparison (at every horizon, with family from `family`) covers its true mean difference
        at once with probability >= confidence."""
        if not _is_int(family) or family < 1:
            raise ValueError(f"family: expected an integer >= 1 (the comparisons judged), got {family!r}")
        spend, share = SPENDING[self.spending], self.alpha / family
        fractions = [n / self.seeds.max for n in self.seeds.looks()]
        spent = [spend(share, t) for t in fractions]
        return tuple(b - a for a, b in zip([0.0] + spent[:-1], spent))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(name: str, value, expected: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _mapping(where: str, data, kind) -> dict:
    """A copy of `data`, checked to be a mapping of `kind`'s field names."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    names = list(kind.__dataclass_fields__)
    for key in data:
        if key not in names:
            raise ValueError(f"{where}.{key}: unknown field; expected one of {', '.join(names)}")
    return dict(data)
