"""How each compared value's nuisance config was chosen, and what ASHA had stopped before it.

The rule (study/replicate_plan.py): of a value's search trials, the one with the best objective
among those trained to the last step (with `seeds_per_config` > 1, the mean over its seeds); a
trial ASHA stopped is no candidate. On one seed per config a seed outlier can decide the choice
alone: the report says so, and re-checks each choice on its replicates (fresh seeds, the same
steps): a search value better than every replicate was a lucky draw.
ASHA stops a trial at a rung when its value there is below the rung's best so far, so a config
that starts slowly can be stopped although it would have ended best (the short-horizon bias of
successive halving). This module puts each stopped trial beside the chosen one at the step it
was stopped: where the chosen config was no better there, it passed that rung by the order the
trials reached it, not by its score, and the report says so.
"""
from __future__ import annotations

from typing import Callable

from .layout import COMPLETED, PRUNED, fmt
from .trials import StudyRecord, Trial

History = Callable[[Trial, str], list[tuple[int, float]]]


def choice_rows(record: StudyRecord, history: History | None = None) -> list[dict]:
    """Per compared value with replicates: its chosen search trial and each trial of the value
    that ASHA stopped, with both values at the step it stopped. `history` reads a trial's
    (step, value) pairs (default: from MLflow)."""
    history = history or record.metric_history
    metric, mode = record.objectives[0]
    rows = []
    for point in record.points:
        repeated = {t.number for t in record.replicates if t.point == point}
        chosen = next((t for t in record.trials if t.point == point and t.number in repeated
                       and t.state == COMPLETED), None)
        if chosen is None:
            continue
        curve = dict(history(chosen, metric))
        stopped = [t for t in record.trials if t.point == point and t.state == PRUNED and t.value(metric) is not None]
        for trial in sorted(stopped, key=lambda t: t.steps):
            there = curve.get(trial.steps)
            ahead = there is not None and (there >= trial.value(metric) if mode == "min"
                                           else there <= trial.value(metric))
            rows.append({"value": point, "chosen": chosen.name, "chosen_final": chosen.value(metric),
                         "stopped": trial.name, "step": trial.steps, "stopped_value": trial.value(metric),
                         "chosen_there": there, "not_ahead": ahead})
        if not stopped:
            rows.append({"value": point, "chosen": chosen.name, "chosen_final": chosen.value(metric),
                         "stopped": None})
    return rows


def candidates(record: StudyRecord, point: str) -> set[int]:
    """The value's search configs (Optuna trial numbers: each trains `seeds_per_config` seeds)
    its nuisance config was chosen among, of those completed."""
    return {t.number for t in record.trials if t.point == point and t.state == COMPLETED}


def lucky_choices(record: StudyRecord) -> list[str]:
    """Per compared value chosen among two or more configs whose chosen config's search value
    is better than every one of its (two or more) replicates at the same step: the sentence that
    says so."""
    metric, mode = record.objectives[0]
    found = []
    for point in (p for p in record.points if len(candidates(record, p)) > 1):
        replicates = [t for t in record.every_replicate if t.point == point and t.state == COMPLETED]
        chosen = next((t for t in record.trials if t.point == point and t.state == COMPLETED
                       and t.number in {r.number for r in replicates}), None)
        values = [r.value(metric) for r in replicates if chosen and r.steps == chosen.steps
                  and r.value(metric) is not None]
        seeds = [t.value(metric) for t in record.trials if chosen and t.point == point
                 and t.number == chosen.number and t.value(metric) is not None]
        if chosen is None or len(values) < 2 or not seeds:
            continue
        searched, best = sum(seeds) / len(seeds), (min if mode == "min" else max)(values)   # its seeds' mean
        if (searched < best) if mode == "min" else (searched > best):
            found.append(f"**{point}: chosen on a lucky seed?** Its search value {fmt(searched)} is better than "
                         f"each of its {len(values)} replicates at step {chosen.steps} ({fmt(min(values))} to "
                         f"{fmt(max(values))}): the draw it was chosen on was a good one, and another of its "
                         "configs may do better on average.")
    return found


def choice_section(record: StudyRecord, history: History | None = None) -> list[str]:
    """report.md's lines on the nuisance choice (empty without compared values and replicates)."""
    rows = choice_rows(record, history)
    if not rows:
        return []
    metric, seeds = record.objectives[0][0], int(record.parent["params"].get("seeds_per_config", 1))
    lines = ["## How each value's nuisance config was chosen", "",
             f"Rule: of each value's search trials, the best {metric} among those trained to the last step, "
             + (f"each config judged on the mean of its {seeds} seeds" if seeds > 1 else "each config judged on one "
                "seed") + "; a trial ASHA stopped is no candidate. Its replicates train only that config. Each trial "
             "ASHA stopped is shown beside the chosen one at the step it was stopped.", "",
             "| value | chosen (final) | stopped by ASHA | at step | its value there | chosen's value there |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["stopped"] is None:
            lines.append(f"| {r['value']} | {r['chosen']} ({fmt(r['chosen_final'])}) | none | - | - | - |")
        else:
            there = fmt(r["chosen_there"]) if r["chosen_there"] is not None else "not logged"
            lines.append(f"| {r['value']} | {r['chosen']} ({fmt(r['chosen_final'])}) | {r['stopped']} | {r['step']} "
                         f"| {fmt(r['stopped_value'])} | {there} |")
    lines.append("")
    for r in (r for r in rows if r.get("not_ahead")):
        lines.append(f"**{r['value']}: the chosen config was no better at step {r['step']} than {r['stopped']}, "
                     "which ASHA stopped there**: it passed that rung by the order the trials reached it, so the "
                     "stopped config could have been the chosen one; a larger `scheduler.grace_period` (or "
                     "none) would let it finish.")
    if all(r["stopped"] is None for r in rows):
        lines.append("ASHA stopped no trial of a compared value.")
    elif not any(r.get("not_ahead") for r in rows):
        lines.append("At the step each stopped trial ended, the chosen config of its value was ahead of it.")
    if not any(len(candidates(record, point)) > 1 for point in record.points):
        return lines + ["", "Each value had one candidate config: nothing was chosen between configs.", ""]
    if seeds == 1:
        lines += ["", "On one seed per config a seed outlier can decide the choice alone (`seeds_per_config: 2` "
                  "judges each config on the mean of two seeds, for twice the search's trials)."]
    lucky = lucky_choices(record)
    lines += ["", *lucky] if lucky else ["", "Re-checked on the replicates (fresh seeds, the same steps): no chosen "
                                          "config's search value is better than all of its replicates'."]
    return lines + [""]
