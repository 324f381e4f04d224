"""Seed replicates: the spread of a config's objective over seeds, and whether the best
config is distinguishable from the runner-up (a bootstrap interval of the difference).

The seeds are the replicate phase's fresh ones when the study ran it (study/replicates.py),
else those of the search's completed trials (seeds_per_config, or a searched training.seed)."""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from .layout import params_text
from .trials import StudyRecord, Trial

SEED_KEYS = ("training.seed",)


@dataclass
class ConfigGroup:
    key: str                  # the sampled values without the seed, e.g. "s=2"
    values: list[float]       # the objective over seeds
    trials: list[str]         # run names
    number: int               # the (best) search trial of this config

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


def interval(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90% bootstrap interval of the mean."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.05 * resamples)], means[int(0.95 * resamples) - 1]


def difference_interval(a: list[float], b: list[float], resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """90% bootstrap interval of mean(a) - mean(b)."""
    rng = random.Random(seed)
    diffs = sorted(statistics.fmean(rng.choices(a, k=len(a))) - statistics.fmean(rng.choices(b, k=len(b)))
                   for _ in range(resamples))
    return diffs[int(0.05 * resamples)], diffs[int(0.95 * resamples) - 1]


def _key(trial: Trial) -> str:
    """`s=2 lr=0.00846`: the sampled values but the seed, in the short names of run names."""
    shown = {k: v for k, v in sorted(trial.sampled.items()) if k not in SEED_KEYS}
    return params_text(shown, digits=3) or "base config"


def groups(record: StudyRecord) -> list[ConfigGroup]:
    """Completed runs grouped by config (all but the seed), best mean first: the replicate
    phase's runs if the study has any, else the search's trials."""
    metric, mode = record.objectives[0]
    found: dict[str, ConfigGroup] = {}
    for trial in record.ranked(trials=record.replicates or record.trials):
        group = found.setdefault(_key(trial), ConfigGroup(_key(trial), [], [], trial.number))
        group.values.append(trial.value(metric))
        group.trials.append(trial.name)
    return sorted(found.values(), key=lambda g: g.mean, reverse=(mode == "max"))


def compare_best(record: StudyRecord) -> dict | None:
    """Best vs runner-up among configs with at least two seeds each, or None."""
    replicated = [g for g in groups(record) if len(g.values) >= 2]
    if len(replicated) < 2:
        return None
    best, second = replicated[:2]
    lo, hi = difference_interval(best.values, second.values)
    return {"best": best.key, "runner_up": second.key, "difference": best.mean - second.mean,
            "interval": (lo, hi), "distinguishable": not (lo <= 0 <= hi)}


def ranked_for_export(record: StudyRecord) -> list[Trial]:
    """Completed search trials best first; where the study ran replicates, the replicated
    configs lead in the order of their replicate means (a fairer ranking than one seed's)."""
    ranked = record.ranked()
    if not record.replicates:
        return ranked
    by_number: dict[int, Trial] = {}
    for trial in ranked:
        by_number.setdefault(trial.number, trial)      # a config's best seed
    lead = [by_number[g.number] for g in groups(record) if g.number in by_number]
    return lead + [t for t in ranked if t not in lead]
