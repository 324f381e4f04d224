"""`loopstudy status NAME`: one row per Optuna trial (the search history) joined with its MLflow
run (the name people browse, the steps it trained), then one row per replicate run. Reads the
stores only; Ray need not run."""
from __future__ import annotations

import json

import optuna

from analysis import seed_stats
from analysis.layout import (NUMBER, REASON, REPLICATE, RUNNING, SAMPLED, STATE, STEPS, TUNE_ID, fmt,
                             params_text, table)
from analysis.trials import read_record

from .outcome import FROM_OPTUNA
from .spec import StudySpec
from .stores import Stores
from .tracking import Tracker

HEADER = ["trial", "state", "params", "objective", "steps", "reason"]


def status_rows(spec: StudySpec) -> list[list[str]]:
    stores = Stores.of(spec)
    try:
        study = stores.optuna_study()
    except KeyError:
        return []               # the study never asked for a trial
    runs: dict[int, list] = {}
    for run in Tracker(stores).children():
        runs.setdefault(int(run.data.tags[NUMBER]), []).append(run)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = FROM_OPTUNA.get(trial.state, RUNNING)
        params = params_text(trial.params)
        objective = ", ".join(fmt(v) for v in trial.values) if trial.values else "-"
        reason = trial.user_attrs.get(REASON, "")
        for run in sorted(runs.get(trial.number, []), key=lambda r: r.info.run_name) or [None]:
            name = run.info.run_name if run else f"t{trial.number:03d} (no run)"
            steps = run.data.tags.get(STEPS, "0") if run else "-"
            rows.append([name, state, params, objective, steps, reason])
    metric = spec.metrics[0]
    for run in sorted(Tracker(stores).children(REPLICATE), key=lambda r: r.info.run_name):
        tags, value = run.data.tags, run.data.metrics.get(metric)
        rows.append([run.info.run_name, f"replicate {tags.get(STATE, RUNNING)}",
                     params_text(json.loads(tags.get(SAMPLED, "{}"))),
                     fmt(value) if value is not None else "-", tags.get(STEPS, "0"), tags.get(REASON, "")])
    return rows


def format_status(spec: StudySpec) -> str:
    rows = status_rows(spec)
    if not rows:
        return f"study '{spec.name}': no trials yet"
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    head = f"study '{spec.name}' ({spec.results_dir}): " + ", ".join(f"{v} {k}" for k, v in counts.items())
    return head + "\n" + table(rows, HEADER)


def best_summary(spec: StudySpec) -> str:
    """The best trial (or the Pareto set), its config file, and how to browse the study."""
    stores = Stores.of(spec)
    study = stores.optuna_study()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return "no trial completed"
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    names = {int(r.data.tags[NUMBER]): r for r in Tracker(stores).children()}
    lines = ["Pareto set:" if len(best) > 1 else "best trial:"]
    for trial in best:
        run = names.get(trial.number)
        name = run.info.run_name if run else f"t{trial.number:03d}"
        values = ", ".join(f"{o.metric}={fmt(v)}" for o, v in zip(spec.objectives, trial.values))
        config = stores.experiment / run.data.tags[TUNE_ID] / "config.yaml" if run else "-"
        lines.append(f"  {name}: {values}\n    config: {config}")
    lines += _replicate_lines(stores)
    lines.append(f"browse it: loopstudy ui {spec.results_dir}   (Optuna: add --optuna)")
    return "\n".join(lines)


def _replicate_lines(stores: Stores) -> list[str]:
    """Each replicated config's mean and 90% interval over its fresh seeds, and the verdict."""
    record = read_record(stores)
    if not record.replicates:
        return []
    lines = ["replicates (fresh seeds, mean [90% interval]):"]
    for group in seed_stats.groups(record):
        lo, hi = seed_stats.interval(group.values)
        lines.append(f"  {group.key}: {fmt(group.mean)} [{fmt(lo)}, {fmt(hi)}] over {len(group.values)} seeds")
    verdict = seed_stats.compare_best(record)
    if verdict:
        verb = "distinguishable" if verdict["distinguishable"] else "not distinguishable"
        lines.append(f"  best vs runner-up: {verb} (difference {fmt(verdict['difference'])}, 90% interval "
                     f"[{fmt(verdict['interval'][0])}, {fmt(verdict['interval'][1])}])")
    return lines
