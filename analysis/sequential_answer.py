"""A sequential study's answer read back from its record: the question its parent run carries,
each comparison's paired differences (value - reference, seed by seed, in seed order) over the
completed replicate runs of each horizon, the judgement of each horizon (analysis/sequential.py)
and the sentences that state it.

The study service judges its rounds with the same functions on the same record, so `run`,
`status` and `report` state one answer.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict

from .layout import BUDGET_SPENT, COMPLETED, HORIZON, QUESTION, fmt
from .sequential import EQUIVALENT, UNRESOLVED, Judgement, Look, judge
from .sequential_plan import HorizonBudget, Question, SeedBudget
from .trials import StudyRecord, Trial


def question_tag(question: Question) -> str:
    """The question as the parent run's tag (JSON)."""
    return json.dumps(asdict(question))


def question_of(record: StudyRecord) -> Question | None:
    """The question a study declared (None: a study with a fixed replicate phase, or none)."""
    text = record.parent["tags"].get(QUESTION)
    if not text:
        return None
    data = json.loads(text)
    return Question(**{**data, "seeds": SeedBudget(**data["seeds"]), "horizon": HorizonBudget(**data["horizon"])})


def horizon_of(run: Trial, question: Question) -> int:
    """The horizon a replicate run trained to (a run from before horizons: the first)."""
    return int(run.tags.get(HORIZON) or question.horizon.start or 0)


def horizons_of(record: StudyRecord) -> list[int]:
    """The horizons the study's replicates have reached, shortest first ([] without a question)."""
    question = question_of(record)
    if question is None:
        return []
    found = {horizon_of(run, question) for run in record.every_replicate}
    return sorted(found | {question.horizon.start or 0})


def seeds_by_point(record: StudyRecord, horizon: int | None = None) -> dict[str, dict[int, float]]:
    """Each scientific point's completed replicate runs at `horizon` (default: the first): seed ->
    objective."""
    metric, question = record.objectives[0][0], question_of(record)
    horizon = horizons_of(record)[0] if horizon is None else horizon
    found: dict[str, dict[int, float]] = {point: {} for point in record.points}
    for run in record.every_replicate:
        if run.state == COMPLETED and run.value(metric) is not None and horizon_of(run, question) == horizon:
            found.setdefault(run.point, {})[run.seed] = run.value(metric)
    return found


def paired_differences(record: StudyRecord, horizon: int | None = None) -> dict[str, list[float]]:
    """Each value against the reference (the first point), on the seeds both completed at
    `horizon`, in seed order (the order the seeds were assigned, which does not depend on the values)."""
    by_point = seeds_by_point(record, horizon)
    reference, *values = record.points
    return {point: [by_point[point][s] - by_point[reference][s]
                    for s in sorted(set(by_point[point]) & set(by_point[reference]))] for point in values}


def judgement_of(record: StudyRecord, budget_spent: bool | None = None, horizon: int | None = None) -> Judgement | None:
    """The judgement of the study's replicates at `horizon` (default: the longest reached; None
    without a question). `budget_spent` defaults to what the parent run says (the rounds ended
    before their last planned look); a shorter horizon than the longest was finished before
    the replicates continued, so its open comparisons are unresolved."""
    question = question_of(record)
    if question is None:
        return None
    reached = horizons_of(record)
    horizon = reached[-1] if horizon is None else horizon
    spent = budget_spent if budget_spent is not None else (
        horizon < reached[-1] or record.parent["tags"].get(BUDGET_SPENT) == "true")
    return judge(paired_differences(record, horizon), question, record.objectives[0][1], budget_spent=spent,
                 family=question.family(len(record.points) - 1))


def judgements_of(record: StudyRecord) -> dict[int, Judgement]:
    """Each horizon reached -> its judgement ({} without a question)."""
    return {h: judgement_of(record, horizon=h) for h in horizons_of(record)}


def look_sentence(look: Look, reference: str, question: Question) -> str:
    """`s=3 vs s=1: -0.061 [-0.092, -0.030] over 4 paired seeds (look 1, level 99.4%): better`."""
    head = f"{look.comparison} vs {reference}: "
    if look.lo is None:
        return head + f"{fmt(look.mean)} over {look.n} paired seeds (too few for the first look): {look.decision}"
    text = (head + f"{fmt(look.mean)} [{fmt(look.lo)}, {fmt(look.hi)}] over {look.n} paired seeds "
            f"(look {look.round}, level {1 - look.alpha:.2%}): ")
    if look.decision == EQUIVALENT:
        return text + f"equivalent within ±{fmt(question.delta)}"
    if look.decision == UNRESOLVED:
        needed = (f"; a fixed design would need about {look.seeds_needed} paired seeds to tell a difference of "
                  f"{fmt(question.delta if look.projected_from == 'delta' else abs(look.mean))} "
                  f"({look.projected_from}) from none at {question.power:.0%} power" if look.seeds_needed else
                  "; no projection (the observed mean difference is 0)")
        return text + "unresolved at budget" + needed
    return text + look.decision


def method_line(question: Question, comparisons: int) -> str:
    """How the intervals keep their promise, in one line."""
    looks = ", ".join(map(str, question.seeds.looks()))
    spending = question.spending.replace("_", "-").replace("obrien", "O'Brien").replace("fleming", "Fleming")
    ladder = question.horizon.ladder()
    family = (f"all {comparisons} comparisons at each of {len(ladder)} horizons ({', '.join(map(str, ladder))} "
              f"steps), {question.family(comparisons)} statements" if len(ladder) > 1 else f"all {comparisons} comparisons")
    return (f"sequential answer ({question.confidence:.0%} for {family} at once: Bonferroni, "
            f"{spending} spending over looks at {looks} paired seeds"
            + (f"; equivalent within ±{fmt(question.delta)}" if question.delta is not None else "") + "):")


def answer_lines(record: StudyRecord, judgements: dict[int, Judgement] | None = None) -> list[str]:
    """The sequential answer as printed by `run` and `status`: the method, then each comparison's
    latest look at each horizon reached (empty without a question, or before a replicate
    completed); `judgements` (horizon -> judgement), when the caller has them, else judgements_of(record)."""
    judgements, question = judgements or judgements_of(record), question_of(record)
    if not judgements or not any(j.latest for j in judgements.values()):
        return []
    reference, several = record.points[0], len(judgements) > 1
    lines = [method_line(question, len(record.points) - 1)]
    for horizon, judgement in judgements.items():
        if several:
            lines.append(f"  at {horizon} steps:")
        lines += [f"  {'  ' if several else ''}{look_sentence(judgement.latest[c], reference, question)}"
                  for c in record.points[1:] if c in judgement.latest]
    latest = judgements[max(judgements)]          # the horizon whose rounds run now, or ran last
    if not latest.stop:
        lines.append("  (open: " + ", ".join(f"{c} wants {n} paired seeds" for c, n in latest.wanted.items())
                     + ": the next replicate round trains them)")
    return lines


def answer_tags(record: StudyRecord, judgements: dict[int, Judgement] | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """The latest horizon's decisions as parent-run tags (`decision/s=3`; every horizon's sentence
    as `answer/s=3`, "at 1500 steps: ...; at 3000 steps: ...") and its intervals as metrics
    (`sequential_mean/s_3`, `..._lo`, `..._hi`, `seeds_needed/s_3`); `judgements` as in answer_lines."""
    judgements, question = judgements or judgements_of(record), question_of(record)
    tags, metrics, sentences = {}, {}, {}
    for horizon, judgement in judgements.items():
        for name, look in judgement.latest.items():
            sentences.setdefault(name, []).append(
                (f"at {horizon} steps: " if len(judgements) > 1 else "") + look_sentence(look, record.points[0], question))
    latest = list(judgements.values())[-1] if judgements else None
    for name, look in (latest.latest.items() if latest else []):
        tags[f"decision/{name}"] = look.decision
        tags[f"answer/{name}"] = "; ".join(sentences[name])
        metrics.update({f"sequential_mean/{name}": look.mean, f"paired_seeds/{name}": look.n})
        if look.lo is not None:
            metrics.update({f"sequential_lo/{name}": look.lo, f"sequential_hi/{name}": look.hi})
        if look.seeds_needed:
            metrics[f"seeds_needed/{name}"] = look.seeds_needed
    return {_key(k): v for k, v in tags.items()}, {_key(k): v for k, v in metrics.items()}


def _key(name: str) -> str:
    """An MLflow tag or metric name: letters, digits, _ - . / : and spaces only (`s=3`: `s_3`)."""
    return re.sub(r"[^/\w.\-: ]", "_", name)
