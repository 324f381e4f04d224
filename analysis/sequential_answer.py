"""A sequential study's answer read back from its record: the question its parent run carries,
each comparison's paired differences (value - reference, seed by seed, in seed order) over the
completed replicate runs, the judgement (analysis/sequential.py) and the sentences that state it.

The study service judges its rounds with the same functions on the same record, so `run`,
`status` and `report` state one answer.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict

from .layout import BUDGET_SPENT, COMPLETED, QUESTION, fmt
from .sequential import EQUIVALENT, UNRESOLVED, Judgement, Look, judge
from .sequential_plan import HorizonBudget, Question, SeedBudget
from .trials import StudyRecord


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


def seeds_by_point(record: StudyRecord) -> dict[str, dict[int, float]]:
    """Each scientific point's completed replicate runs: seed -> objective."""
    metric = record.objectives[0][0]
    found: dict[str, dict[int, float]] = {point: {} for point in record.points}
    for run in record.replicates:
        if run.state == COMPLETED and run.value(metric) is not None:
            found.setdefault(run.point, {})[run.seed] = run.value(metric)
    return found


def paired_differences(record: StudyRecord) -> dict[str, list[float]]:
    """Each value against the reference (the first point), on the seeds both completed, in seed
    order (the order the seeds were assigned, which does not depend on the values)."""
    by_point = seeds_by_point(record)
    reference, *values = record.points
    return {point: [by_point[point][s] - by_point[reference][s]
                    for s in sorted(set(by_point[point]) & set(by_point[reference]))] for point in values}


def judgement_of(record: StudyRecord, budget_spent: bool | None = None) -> Judgement | None:
    """The judgement of the study's replicates so far (None without a question). `budget_spent`
    defaults to what the parent run says (the rounds ended before their last planned look)."""
    question = question_of(record)
    if question is None:
        return None
    spent = record.parent["tags"].get(BUDGET_SPENT) == "true" if budget_spent is None else budget_spent
    return judge(paired_differences(record), question, record.objectives[0][1], budget_spent=spent)


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


def method_line(question: Question, family: int) -> str:
    """How the intervals keep their promise, in one line."""
    looks = ", ".join(map(str, question.seeds.looks()))
    spending = question.spending.replace("_", "-").replace("obrien", "O'Brien").replace("fleming", "Fleming")
    return (f"sequential answer ({question.confidence:.0%} for all {family} comparisons at once: Bonferroni, "
            f"{spending} spending over looks at {looks} paired seeds"
            + (f"; equivalent within ±{fmt(question.delta)}" if question.delta is not None else "") + "):")


def answer_lines(record: StudyRecord, judgement: Judgement | None = None) -> list[str]:
    """The sequential answer as printed by `run` and `status`: the method, then each comparison's
    latest look (empty without a question, or before a replicate completed); `judgement`, when
    the caller has it, else judgement_of(record)."""
    judgement, question = judgement or judgement_of(record), question_of(record)
    if judgement is None or not judgement.latest:
        return []
    reference = record.points[0]
    lines = [method_line(question, len(record.points) - 1)]
    lines += [f"  {look_sentence(judgement.latest[c], reference, question)}"
              for c in record.points[1:] if c in judgement.latest]
    if not judgement.stop:
        lines.append("  (open: " + ", ".join(f"{c} wants {n} paired seeds" for c, n in judgement.wanted.items())
                     + ": the next replicate round trains them)")
    return lines


def answer_tags(record: StudyRecord, judgement: Judgement | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """The latest decisions as parent-run tags (`decision/s=3`) and their intervals as metrics
    (`sequential_mean/s_3`, `..._lo`, `..._hi`, `seeds_needed/s_3`); `judgement` as in answer_lines."""
    judgement = judgement or judgement_of(record)
    tags, metrics = {}, {}
    for name, look in (judgement.latest.items() if judgement else []):
        tags[f"decision/{name}"] = look.decision
        tags[f"answer/{name}"] = look_sentence(look, record.points[0], question_of(record))
        metrics.update({f"sequential_mean/{name}": look.mean, f"paired_seeds/{name}": look.n})
        if look.lo is not None:
            metrics.update({f"sequential_lo/{name}": look.lo, f"sequential_hi/{name}": look.hi})
        if look.seeds_needed:
            metrics[f"seeds_needed/{name}"] = look.seeds_needed
    return {_key(k): v for k, v in tags.items()}, {_key(k): v for k, v in metrics.items()}


def _key(name: str) -> str:
    """An MLflow tag or metric name: letters, digits, _ - . / : and spaces only (`s=3`: `s_3`)."""
    return re.sub(r"[^/\w.\-: ]", "_", name)
