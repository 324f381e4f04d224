"""The report's part for a study with a `question`: the answer's trajectory (each comparison's
interval after each look at each horizon, with ±delta) and its decision table, and the runs its
per-value figures draw (those the answer uses)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .layout import fmt  # noqa: E402
from .sequential import UNRESOLVED, trajectory_rows  # noqa: E402
from .sequential_answer import judgements_of, method_line, question_of  # noqa: E402
from .sequential_figure import trajectory_figure  # noqa: E402
from .trials import StudyRecord  # noqa: E402


def answered_runs(record: StudyRecord) -> StudyRecord:
    """The record its per-value figures draw: of a scientific study with replicates (a question's
    rounds or a replicate phase), each value's chosen config (the search trial its replicates
    repeat) and the replicates, never its other search trials; else the record itself."""
    if not (record.points and record.replicates):
        return record
    chosen = {(t.number, t.point) for t in record.replicates}
    return dataclasses.replace(record, trials=[t for t in record.trials if (t.number, t.point) in chosen])


def trajectory_section(record: StudyRecord, out: Path, data: dict) -> list[str]:
    """report.md's lines on how the answer was reached, and trajectory.png (its rows in `data`),
    at each horizon the replicates reached."""
    judgements, question = judgements_of(record), question_of(record)
    if not any(j.looks for j in judgements.values()):
        return []
    metric, reference, several = record.objectives[0][0], record.points[0], len(judgements) > 1
    rows = [{**row, "horizon": horizon} for horizon, j in judgements.items() for row in trajectory_rows(j)]
    figure = trajectory_figure(rows, question.delta, title=f"{record.name}: the answer after each look",
                               ylabel=f"{metric}: value - {reference}")
    figure.savefig(out / "trajectory.png", dpi=110)
    plt.close(figure)
    data["trajectory.png"] = rows
    method = method_line(question, len(record.points) - 1).rstrip(":")
    horizons = (" The replicates still improving at a horizon were continued from their checkpoints to the "
                "next, which is judged on its own (the horizon column: training steps); the figures below draw "
                "the longest horizon's runs." if several else "")
    lines = ["## The answer, round by round", "",
             f"Each look's interval of the mean paired difference (value - {reference}, seed by seed) at its own "
             f"level, so that every interval of every look holds at once: {method}. A comparison gets no more "
             f"seeds once answered.{horizons}", "", "![](trajectory.png)", "",
             f"| comparison |{' horizon |' if several else ''} look | paired seeds | mean | interval | level | decision |",
             "|---|---|---|---|---|---|---|" + ("---|" if several else "")]
    for horizon, judgement in judgements.items():
        for look in judgement.looks:
            interval = f"[{fmt(look.lo)}, {fmt(look.hi)}]" if look.lo is not None else "-"
            decision = look.decision + (f" (a fixed design: about {look.seeds_needed} paired seeds, from the "
                                        f"{look.projected_from})" if look.decision == UNRESOLVED and look.seeds_needed
                                        else "")
            lines.append(f"| {look.comparison} vs {reference} |{f' {horizon} |' if several else ''} {look.round} "
                         f"| {look.n} | {fmt(look.mean)} | {interval} | {1 - look.alpha:.2%} | {decision} |")
    return lines + [""]
