"""The sequential verdict's error rates and savings, by simulation on the stand-in trainable's
known answer (trainables/synthetic.level: an effect per unit of s; seed noise shared by every
value, which the pairing removes; each config's own noise, sd 0.005, which it does not). Each
simulated study gives every value the same fresh seeds, looks after every planned round
(analysis.sequential.judge) and stops where judge says. Fixed RNG streams (the seeds): the
figures are the same on every run. `pytest -s` prints them."""
import dataclasses
import functools
import math

import numpy as np

from analysis.sequential import BETTER, EQUIVALENT, WORSE, judge, t_quantile
from analysis.sequential_plan import Question, SeedBudget
from analysis.verdict import mean_interval
from trainables.config import load_config
from trainables.synthetic import level

QUESTION = Question(confidence=0.90, seeds=SeedBudget(start=4, step=2, max=16))   # looks at 4, 6, ..., 16
BASE = load_config("seed_dilation_cpu")            # s=1, lr 1e-3: the stand-in's settings, no effect


def stand_in(s: int, seed: int, effect: float) -> float:
    """The stand-in trainable's final level for loop dilation s on a training seed."""
    training = dataclasses.replace(BASE.training, loop_dilation=s, seed=seed)
    return level(dataclasses.replace(BASE, training=training,
                                     synthetic=dataclasses.replace(BASE.synthetic, effect_per_dilation=effect)))


@functools.lru_cache(maxsize=None)
def studies(effect: float, values: tuple[int, ...], count: int, first_seed: int) -> tuple[dict, ...]:
    """`count` studies, each its own QUESTION.seeds.max seeds: per value s, its paired
    differences from s=1 in seed order."""
    n = QUESTION.seeds.max
    found = []
    for i in range(count):
        seeds = range(first_seed + n * i, first_seed + n * (i + 1))
        reference = [stand_in(1, seed, effect) for seed in seeds]
        found.append({f"s={s}": [stand_in(s, seed, effect) - r for seed, r in zip(seeds, reference)]
                      for s in values})
    return tuple(found)


def wilson(hits: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial rate."""
    p = hits / trials
    centre, half = p + z * z / (2 * trials), z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials ** 2))
    return (centre - half) / (1 + z * z / trials), (centre + half) / (1 + z * z / trials)


def rate(label: str, hits: int, trials: int) -> tuple[float, float]:
    lo, hi = wilson(hits, trials)
    print(f"\n{label}: {hits}/{trials} = {hits / trials:.3f}, 95% Wilson [{lo:.3f}, {hi:.3f}]")
    return lo, hi


def naive_declares(differences: list[float]) -> bool:
    """Today's verdict after every round: a fixed 90% t interval, stopping when it excludes 0."""
    return any(not lo <= 0 <= hi for lo, hi in (mean_interval(differences[:n]) for n in QUESTION.seeds.looks()))


def test_with_no_effect_a_difference_is_declared_at_most_one_time_in_ten():
    runs = studies(0.0, (2,), 1000, 10_000)
    declared = sum(judge(run, QUESTION).latest["s=2"].decision in (BETTER, WORSE) for run in runs)
    lo, hi = rate("no effect, sequential (looks at 4..16 seeds), a difference declared", declared, len(runs))
    assert declared / len(runs) <= QUESTION.alpha      # the design's promise, on these fixed runs
    assert lo <= QUESTION.alpha                        # and no evidence above it (the control below has)


def test_the_naive_look_after_every_round_exceeds_the_stated_rate_on_the_same_runs():
    runs = studies(0.0, (2,), 1000, 10_000)
    declared = sum(naive_declares(run["s=2"]) for run in runs)
    lo, hi = rate("no effect, naive fixed 90% t interval after every round, a difference declared",
                  declared, len(runs))
    assert lo > QUESTION.alpha                         # clearly above 0.10: the check above can fail


def test_with_several_values_the_family_wise_rate_stays_within_alpha():
    runs = studies(0.0, (2, 3, 4), 400, 200_000)
    wrong = sum(any(look.decision in (BETTER, WORSE) for look in judge(run, QUESTION).latest.values())
                for run in runs)
    naive = sum(any(naive_declares(d) for d in run.values()) for run in runs)
    lo, _ = rate("no effect, 3 values vs s=1, any difference declared (family-wise)", wrong, len(runs))
    naive_lo, _ = rate("  the same runs, naive per comparison and round", naive, len(runs))
    assert wrong / len(runs) <= QUESTION.alpha and lo <= QUESTION.alpha
    assert naive_lo > QUESTION.alpha


def test_a_real_effect_is_found_with_fewer_seeds_than_the_fixed_design():
    # s=2 vs s=1 lowers the error by 0.008: about 1.1 sd of a paired difference (sd 0.005 * sqrt 2)
    runs = studies(-0.008, (2,), 400, 400_000)
    looks = [judge(run, QUESTION).latest["s=2"] for run in runs]
    found = sum(look.decision == BETTER for look in looks)
    sequential_seeds = sum(look.n for look in looks) / len(looks)
    fixed_found = sum(mean_interval(run["s=2"])[1] < 0 for run in runs)
    rate("effect -0.008 (1.1 sd), sequential: found better", found, len(runs))
    rate(f"  fixed design, {QUESTION.seeds.max} seeds, 90% t interval: found better", fixed_found, len(runs))
    print(f"  seeds per value on average: sequential {sequential_seeds:.2f}, fixed {QUESTION.seeds.max}")
    assert sum(look.decision == WORSE for look in looks) == 0
    assert found / len(runs) >= 0.90
    assert sequential_seeds <= 0.75 * QUESTION.seeds.max


def test_equivalence_is_not_declared_when_the_difference_is_the_margin():
    # the true difference is +delta itself: `equivalent` (inside ±delta) would be wrong
    question = dataclasses.replace(QUESTION, delta=0.01)
    runs = studies(0.01, (2,), 400, 600_000)
    equivalent = sum(judge(run, question).latest["s=2"].decision == EQUIVALENT for run in runs)
    lo, _ = rate("true difference = delta = 0.01, equivalence declared", equivalent, len(runs))
    assert equivalent / len(runs) <= question.alpha and lo <= question.alpha
    no_effect = studies(0.0, (2,), 1000, 10_000)
    shown = sum(judge(run, question).latest["s=2"].decision == EQUIVALENT for run in no_effect)
    rate("  no effect, delta 0.01: equivalence declared (its power)", shown, len(no_effect))


def vectorised_declares(differences: np.ndarray, question: Question) -> tuple[np.ndarray, np.ndarray]:
    """judge's rule for one comparison over many studies at once: (declared a difference, seeds used)."""
    stopped = np.zeros(len(differences), bool)
    declared, used = stopped.copy(), np.full(len(differences), question.seeds.max)
    for n, alpha in zip(question.seeds.looks(), question.look_alphas(1)):
        head = differences[:, :n]
        half = t_quantile(1 - alpha / 2, n - 1) * head.std(axis=1, ddof=1) / math.sqrt(n)
        tells = (np.abs(head.mean(axis=1)) > half) & ~stopped
        declared |= tells
        used[tells] = n
        stopped |= tells
    return declared, used


def test_the_designs_exact_error_rate_by_a_large_gaussian_simulation():
    # the stand-in's paired differences are Gaussian, and the t statistics' joint law under no
    # effect does not depend on the sd: 200,000 Gaussian studies measure the design's true rate
    # to about ±0.001, once the vectorised rule is checked equal to judge on the stand-in's runs
    runs = studies(0.0, (2,), 1000, 10_000)[:300]
    declared, used = vectorised_declares(np.array([run["s=2"] for run in runs]), QUESTION)
    looks = [judge(run, QUESTION).latest["s=2"] for run in runs]
    assert declared.tolist() == [k.decision in (BETTER, WORSE) for k in looks]
    assert [k.n for k in looks if k.decision in (BETTER, WORSE)] == used[declared].tolist()
    noise = np.random.default_rng(20).standard_normal((200_000, QUESTION.seeds.max))
    declared, _ = vectorised_declares(noise, QUESTION)
    lo, hi = rate("Gaussian, 200,000 studies, no effect: the design's error rate", int(declared.sum()), len(noise))
    assert hi < QUESTION.alpha
