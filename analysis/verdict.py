"""What a finished study may conclude, and what it may not: the answer `run`, `status`,
`report`, `export` and the MLflow parent run all state.

Comparisons (a study with `scientific` parameters, study/design.py): each value's replicate
runs (its best nuisance config, on the fresh seeds every value shares) against the reference
value (the first listed), seed by seed: the mean of the per-seed differences with a 90% t
interval of that mean (paired: common random numbers remove the seed's share of the variance),
and beside it the Welch interval that ignores the pairing (unpaired). A study without
`scientific` compares its best replicated config with the runner-up, unpaired. With fewer than
MIN_SEEDS seeds no interval is given: the seeds, their range and n.

Guards, each a sentence that replaces the winner:
- learning: the best mean error must be at most LEARNED_RATIO of the better trivial predictor
  (predicting 0 scores about 1; averaging, from the runs' own baselines): the objective's when
  it is an error (eval/err_*), else, for a measure of how a model computes (a test-time-depth
  ratio or state change, a probe measure: meaningless from a model that learned nothing), the
  same runs' eval/err_last, and then for every compared value, not only the best;
- still falling: the best runs' objective (a measure of how a model computes: their
  eval/err_last) improved by more than FALLING (relative) over their last evaluation interval:
  the ranking may change with more steps;
- confounds: what the compared values' runs train differently besides the values themselves
  (the loop counts the curriculum reaches, the steps, the final dims and points).
Beside the answer, not a guard: what the comparison means for the values' training compute
(analysis/confounds.py: at equal steps, their FLOPs where they differ; at equal compute, their steps).
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from trainables.config import Config

from .confounds import compute_comparison, confounds
from .layout import COMPARE_AT, EQUAL_STEPS, QUESTION, SCIENTIFIC, fmt, scientific_fields, short_label
from .trials import StudyRecord, Trial

MIN_SEEDS = 5           # fewer: show the seeds and their range, not an interval
LEARNED_RATIO = 0.75    # "clearly better than trivial": at most this share of the trivial error
FALLING = 0.05          # "still falling": improved by more than this share over the last interval
PREDICT_ZERO = 1.0      # the normalised error of predicting 0 (SPEC section 7)
SHOWN_CONFIGS = 10      # a study without `scientific` states its best configs, not all of them


# Student's t, 95th percentile, by degrees of freedom (1..30; above, the normal's 1.645): a 90%
# two-sided interval. (A percentile bootstrap of the mean of few seeds undercovers: tests/test_verdict.py.)
T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771,
       1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706,
       1.703, 1.701, 1.699, 1.697)


def _t95(df: float) -> float:
    return T95[max(1, int(df)) - 1] if df < len(T95) + 1 else 1.645


def mean_interval(values: list[float]) -> tuple[float, float]:
    """90% t interval of the mean of `values` (paired differences, or one value's seeds)."""
    mean, n = statistics.fmean(values), len(values)
    half = _t95(n - 1) * statistics.stdev(values) / n ** 0.5
    return mean - half, mean + half


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """90% Welch t interval of mean(a) - mean(b), the two samples independent (unpaired)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb else len(a) + len(b) - 2
    half = _t95(df) * (va + vb) ** 0.5
    difference = statistics.fmean(a) - statistics.fmean(b)
    return difference - half, difference + half


def spread(values: list[float]) -> str:
    """`0.812 [0.77, 0.86] over 5 seeds`, or with fewer than MIN_SEEDS `0.812 (n=2: 0.79, 0.83)`."""
    mean = statistics.fmean(values)
    if len(values) >= MIN_SEEDS:
        lo, hi = mean_interval(values)
        return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}] over {len(values)} seeds"
    return f"{fmt(mean)} (n={len(values)}: {', '.join(fmt(v) for v in values)})"


# ---------------------------------------------------------------- the groups compared

@dataclass
class Group:
    """The completed runs of one compared value (a scientific point, or one config)."""
    label: str                                   # "s=2", or a config's values "lr=0.002 s=1"
    runs: list[Trial]
    metric: str
    nuisance: dict = field(default_factory=dict)  # the searched values its runs share (not s, seed)

    @property
    def by_seed(self) -> dict[int, float]:
        return {t.seed: t.value(self.metric) for t in self.runs}

    @property
    def values(self) -> list[float]:
        return list(self.by_seed.values())

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


def _config_key(trial: Trial) -> tuple[str, str]:
    """(the config's identity: its searched values in full, its label: the values to 3 digits)."""
    shown = {k: v for k, v in sorted(trial.sampled.items()) if k != "training.seed"}
    return (repr(shown), " ".join(f"{short_label(k)}={fmt(v, 3)}" for k, v in shown.items()) or "base config")


def groups(record: StudyRecord) -> list[Group]:
    """The compared groups: per scientific point in the order listed (replicates, else the
    search's completed trials); without `scientific`, per config, best mean first."""
    metric, mode = record.objectives[0]
    runs = record.ranked(trials=record.replicates or record.trials)
    found: dict[str, Group] = {}
    labels: set[str] = set()
    chosen: dict[str, str] = {}         # a scientific value -> the config its group holds: its best
    for trial in runs:
        # a group is one config: configs that differ past 3 digits (TPE draws lr=0.0010301 and
        # 0.0010304 at hundreds of trials) are two groups, else their runs on the same seed
        # would overwrite each other's value (Group.by_seed); a scientific value without
        # replicates is its best nuisance config, not the last of its configs on that seed
        key, label = _config_key(trial)
        if record.points:
            if chosen.setdefault(trial.point, key) != key:
                continue
            key = label = trial.point
        if key not in found:
            label = label if label not in labels else f"{label} ({trial.name.split()[0]})"
            nuisance = {k: v for k, v in trial.sampled.items() if k != "training.seed" and k not in scientific_fields(record.scientific)}
            found[key] = Group(label, [], metric, nuisance)
            labels.add(label)
        found[key].runs.append(trial)
    if record.points:
        return [found[p] for p in record.points if p in found]
    return sorted(found.values(), key=lambda g: g.mean, reverse=(mode == "max"))


# ---------------------------------------------------------------- comparisons

@dataclass
class Comparison:
    value: str
    reference: str
    seeds: list[int]                     # the seeds both were trained on
    differences: list[float]             # value - reference, per shared seed
    unpaired_values: tuple[list[float], list[float]]
    mode: str

    @property
    def is_paired(self) -> bool:
        return bool(self.seeds)

    @property
    def mean(self) -> float:
        a, b = self.unpaired_values
        return statistics.fmean(self.differences) if self.is_paired else statistics.fmean(a) - statistics.fmean(b)

    @property
    def paired(self) -> tuple[float, float] | None:
        return mean_interval(self.differences) if len(self.differences) >= MIN_SEEDS else None

    @property
    def unpaired(self) -> tuple[float, float] | None:
        a, b = self.unpaired_values
        return difference_interval(a, b) if min(len(a), len(b)) >= MIN_SEEDS else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The interval the verdict rests on: paired where the seeds are shared."""
        return self.paired if self.is_paired else self.unpaired

    @property
    def verdict(self) -> str:
        if self.interval is None:
            return "too few seeds for an interval"
        lo, hi = self.interval
        if lo <= 0 <= hi:
            return "not distinguishable"
        lower_is_better = self.mode == "min"
        return "better" if (hi < 0) == lower_is_better else "worse"

    def sentence(self) -> str:
        """`s=2 vs s=1: -0.031 [-0.052, -0.010] (paired, 5 seeds; unpaired [-0.09, 0.03]): better`."""
        head = f"{self.value} vs {self.reference}: {fmt(self.mean)}"
        if self.interval is None:
            if self.is_paired:
                shown = ", ".join(fmt(d) for d in self.differences)
                return f"{head} (n={len(self.differences)} paired seeds: {shown}): {self.verdict}"
            a, b = self.unpaired_values
            return f"{head} (unpaired, n={len(a)} and {len(b)} seeds): {self.verdict}"
        lo, hi = self.interval
        if not self.is_paired:
            return f"{head} [{fmt(lo)}, {fmt(hi)}] (unpaired, {len(self.unpaired_values[0])} seeds): {self.verdict}"
        unpaired = self.unpaired
        beside = f"; unpaired [{fmt(unpaired[0])}, {fmt(unpaired[1])}]" if unpaired else ""
        return f"{head} [{fmt(lo)}, {fmt(hi)}] (paired, {len(self.differences)} seeds{beside}): {self.verdict}"


def comparisons(record: StudyRecord) -> list[Comparison]:
    """Scientific studies: every value against the first, on the seeds both trained; other
    studies: the best replicated config against the runner-up, unpaired."""
    mode = record.objectives[0][1]
    found = [g for g in groups(record) if g.runs]
    if len(found) < 2:
        return []
    if record.points:
        reference = found[0]
        result = []
        for group in found[1:]:
            seeds = sorted(set(group.by_seed) & set(reference.by_seed))
            result.append(Comparison(group.label, reference.label, seeds,
                                     [group.by_seed[s] - reference.by_seed[s] for s in seeds],
                                     (group.values, reference.values), mode))
        return result
    best, second = found[:2]
    return [Comparison(best.label, second.label, [], [], (best.values, second.values), mode)]


# ---------------------------------------------------------------- the guards

def _improvement(history: list[tuple[int, float]], mode: str) -> float | None:
    """Relative improvement of a curve over its last interval (positive: still improving)."""
    if len(history) < 2 or history[-2][1] == 0:
        return None
    (_, before), (_, last) = history[-2:]
    return (before - last) / abs(before) if mode == "min" else (last - before) / abs(before)


# objectives that are no error but a measure of test-time depth: judged learned on eval/err_last
DEPTH_MEASURES = ("eval/extrapolation_ratio", "eval/state_change_at_b", "eval/last_state_change")
PROBE = "probe/"            # a probe measure: what a trained model's states decode (trainables/probing.py)


def measures_a_model(metric: str) -> bool:
    """Whether `metric` describes how a trained model computes (a test-time-depth measure, a
    probe measure) rather than how well it does: it means nothing of a model that did not learn,
    so every compared value must have learned, and it is judged still improving on its training
    error (eval/err_last), not on itself (a probe's own curve is its fitting)."""
    return metric in DEPTH_MEASURES or metric.startswith(PROBE)


def _learned_error(record: StudyRecord, group: Group, metric: str, mode: str) -> tuple[str, float] | None:
    """(the error metric the learning guard judges `group` on, its mean over the group's runs), or
    None where no error applies (a maximised metric, the loss, a speed)."""
    if metric.startswith("eval/err") and mode == "min":
        return metric, group.mean
    if not measures_a_model(metric):
        return None
    errors = [(record.artifact_json(t, "summary.json") or {}).get("eval/err_last") for t in group.runs]
    return ("eval/err_last", statistics.fmean(errors)) if None not in errors else None


def learning_problems(record: StudyRecord, group: Group, which: str = "best") -> list[str]:
    """Why `group` (the `which` one: "best", or a compared value) may not be called a learned
    result: no better than trivial predictors, or its curves were still improving at the last step."""
    metric, mode = record.objectives[0]
    problems = []
    judged = _learned_error(record, group, metric, mode)
    if judged:
        error, mean = judged
        summary = record.artifact_json(group.runs[0], "summary.json") or {}
        # the averaging baseline's error at the same place: the last point, or over all points
        averaging = summary.get("baselines", {}).get("averaging", {}).get("err_mean" if error == "eval/err_mean"
                                                                         else "err_last")
        trivial = min(PREDICT_ZERO, averaging) if averaging is not None else PREDICT_ZERO
        if mean > LEARNED_RATIO * trivial:
            what = "predicting 0 (about 1)" + (f" and averaging ({fmt(averaging)})" if averaging is not None else "")
            of = f" (of the runs whose {metric} is compared)" if error != metric else ""
            subject = f"the {which} mean {error}" if which == "best" else f"the mean {error} of {which}"
            problems.append(f"not learned: {subject}{of} {fmt(mean)} is not clearly below "
                            f"{what}: more than {LEARNED_RATIO:.0%} of {fmt(trivial)}")
    change = improvement(record, group.runs)
    if change is not None and change[0] > FALLING:       # a probe trial's steps run on past its training
        step = group.runs[0].config.training.train_steps if measures_a_model(metric) else group.runs[0].steps
        problems.append(f"still improving at step {step}: {improving_metric(record)} of {group.label} changed by "
                        f"{change[0]:.0%} over its last evaluation interval (mean of "
                        f"{change[1]} runs): the ranking may change with more steps")
    return problems


def improving_metric(record: StudyRecord) -> str:
    """What "still improving" is judged on: the objective, or for a measure of how a model
    computes, the model's training error (eval/err_last)."""
    metric = record.objectives[0][0]
    return "eval/err_last" if measures_a_model(metric) else metric


def improvement(record: StudyRecord, runs: list[Trial]) -> tuple[float, int] | None:
    """(mean relative improvement of improving_metric over the runs' last evaluation interval,
    the runs it is the mean of); None when no run has two evaluations. More than FALLING: still
    improving."""
    metric = improving_metric(record)
    mode = record.objectives[0][1] if metric == record.objectives[0][0] else "min"
    changes = [c for c in (_improvement(record.metric_history(t, metric), mode) for t in runs) if c is not None]
    return (statistics.fmean(changes), len(changes)) if changes else None


def compared_configs(record: StudyRecord) -> dict[str, Config]:
    """One config per compared value: per scientific point; else per value of the first
    scientific-looking parameter the search varied."""
    runs = record.replicates or record.trials
    if record.points:
        return {t.point: t.config for t in runs}
    for key in SCIENTIFIC:
        values = {t.sampled[key] for t in record.trials if key in t.sampled}
        if len(values) > 1:
            return {f"{short_label(key)}={t.sampled[key]}": t.config
                    for t in sorted(record.trials, key=lambda t: t.sampled.get(key, 0)) if key in t.sampled}
    return {}


# ---------------------------------------------------------------- the answer

@dataclass
class Answer:
    metric: str
    mode: str
    groups: list[Group]
    comparisons: list[Comparison]
    search_best: Trial | None                      # one seed
    problems: list[str] = field(default_factory=list)   # each replaces the winner
    scientific: bool = False                       # groups are scientific points, not configs
    compute: list[str] = field(default_factory=list)    # the values' training compute, stated beside

    @property
    def shown(self) -> list[Group]:
        """The groups stated: every scientific point; of a plain study's configs the
        SHOWN_CONFIGS best (`status` and the report's trial table list every trial)."""
        return self.groups if self.scientific else self.groups[:SHOWN_CONFIGS]

    @property
    def replicate_best(self) -> Group | None:
        scored = [g for g in self.groups if g.runs]
        if not scored:
            return None
        return (min if self.mode == "min" else max)(scored, key=lambda g: g.mean)

    def lines(self) -> list[str]:
        """What `run`, `status` and `export` print, and the report's first section says."""
        out = []
        if self.search_best:
            out.append(f"search best (one seed): {self.search_best.name}: {self.metric}="
                       f"{fmt(self.search_best.value(self.metric))}")
        for group in self.shown:
            seeds = "replicate seeds" if group.runs[0].tags.get("loopstudy_role") == "replicate" else "search"
            nuisance = " ".join(f"{short_label(k)}={fmt(v, 3)}" for k, v in group.nuisance.items())
            out.append(f"  {group.label}{' at ' + nuisance if nuisance and group.label != nuisance else ''}: "
                       f"{self.metric} {spread(group.values)} ({seeds})")
        if len(self.groups) > len(self.shown):
            out.append(f"  ({len(self.groups) - len(self.shown)} more configs, ranked below these; `loopstudy status` "
                       "lists every trial)")
        out += [f"  {c.sentence()}" for c in self.comparisons]
        out += [f"  compute: {line}" for line in self.compute]
        best = self.replicate_best
        if self.problems:
            out += [f"no winner named: {p}" for p in self.problems]
        elif best is not None and len(self.groups) > 1:
            out.append(f"lowest mean: {best.label}" if self.mode == "min" else f"highest mean: {best.label}")
        return out

    def parent_tags(self) -> tuple[dict[str, str], dict[str, float]]:
        """The answer as MLflow tags and metrics of the study's parent run."""
        tags = {"verdict": " | ".join(c.sentence() for c in self.comparisons) or "-",
                "no_winner_because": " | ".join(self.problems) or "-",
                "search_best": self.search_best.name if self.search_best else "-",
                "replicate_best": self.replicate_best.label if self.replicate_best and not self.problems else "-"}
        metrics = {}
        if self.search_best:
            metrics[f"search_best/{self.metric}"] = self.search_best.value(self.metric)
        for group in self.shown:
            metrics[f"mean/{group.label}"] = group.mean
            if len(group.values) >= MIN_SEEDS:
                metrics[f"mean_lo/{group.label}"], metrics[f"mean_hi/{group.label}"] = mean_interval(group.values)
        for c in self.comparisons:
            if c.differences:
                metrics[f"paired_difference/{c.value}"] = c.mean
        # MLflow metric names: letters, digits, _ - . / : and spaces only ("lr=0.001 (t042)")
        return tags, {re.sub(r"[^/\w.\-:]", "_", k): v for k, v in metrics.items()}


def answer(record: StudyRecord) -> Answer:
    metric, mode = record.objectives[0]
    found = [g for g in groups(record) if g.runs]
    ranked = record.ranked()
    # a study with a question is answered by its sequential intervals (analysis/sequential_answer.py):
    # a fixed 90% interval after its last round would ignore the looks before it
    compared = [] if QUESTION in record.parent["tags"] else comparisons(record)
    result = Answer(metric, mode, found, compared, ranked[0] if ranked else None, scientific=bool(record.points))
    if not found:
        result.problems.append("no completed trial")
        return result
    compare_at = record.parent["tags"].get(COMPARE_AT, EQUAL_STEPS)
    configs = compared_configs(record)
    result.compute = compute_comparison(configs, compare_at)
    result.problems += [f"confounded: {p}" for p in confounds(configs, compare_at)]
    if result.scientific and measures_a_model(metric):     # compared only where every value learned
        for group in found:
            result.problems += learning_problems(record, group, group.label)
    else:
        result.problems += learning_problems(record, result.replicate_best)
    return result


def ranked_for_export(record: StudyRecord) -> list[tuple[Trial, Group | None]]:
    """Completed search trials best first, each with the replicate group of its config (or
    None); where the study ran replicates, the replicated configs lead in the order of their
    replicate means (a fairer ranking than one seed's)."""
    ranked = record.ranked()
    if not record.replicates:
        return [(t, None) for t in ranked]
    mode = record.objectives[0][1]
    lead = []
    for group in sorted(groups(record), key=lambda g: g.mean, reverse=(mode == "max")):
        first = group.runs[0]
        match = next((t for t in ranked if (t.number, t.point) == (first.number, first.point)), None)
        if match is not None:
            lead.append((match, group))
    chosen = [t for t, _ in lead]
    return lead + [(t, None) for t in ranked if t not in chosen]
