"""`loopstudy report`: report.md and its figures, regenerated from a finished study's stores."""
from __future__ import annotations

from pathlib import Path

from . import figures, verdict
from .depth_figure import test_time_depth
from .layout import SCIENTIFIC, VERSIONED, fmt, long_label, scientific_points
from .nuisance_choice import choice_section
from .probe_report import probe_section
from .sequential_answer import answer_lines
from .sequential_report import answered_runs, trajectory_section
from .trials import StudyRecord


def _counts(record: StudyRecord, trials=None) -> str:
    """`3 completed, 5 pruned`."""
    return ", ".join(f"{n} {s}" for s, n in sorted(record.by_state(trials).items()))


def searched_ranges(space_params: dict) -> dict[str, tuple]:
    """(low, high) of each searched parameter of a search_spaces.Space's params."""
    ranges = {}
    for name, p in space_params.items():
        if p.kind == "categorical":
            ranges[name] = (min(p.choices), max(p.choices))
        elif p.kind in ("int", "float"):
            ranges[name] = (p.low, p.high)
    return ranges


def _in_folder(location: str, folder: Path) -> str:
    """A store's path or URI, with the study folder's own path left out (the report travels
    with the folder)."""
    return location.replace(f"{folder}/", "")


def write_report(record: StudyRecord, space_params: dict, study_file: str, out: Path) -> dict:
    """Writes out/report.md and its figures; returns what each figure plotted (and the answer)."""
    out.mkdir(parents=True, exist_ok=True)
    metric, mode = record.objectives[0]
    result = verdict.answer(record)
    search_best, replicate_best = result.search_best, result.replicate_best
    tags = record.parent["tags"]
    commit = tags.get("git_commit") or "unknown"
    ranges = searched_ranges(space_params)
    replicated = f"{replicate_best.label}: {verdict.spread(replicate_best.values)}" \
        if replicate_best and record.replicates and not result.problems else "- (see the answer)"
    lines = [f"# Study `{record.name}`", "",
             "| study | trials by state | search best (one seed) | replicate best | git commit |",
             "|---|---|---|---|---|",
             f"| {record.name} | {_counts(record)}{'; replicates: ' + _counts(record, record.every_replicate) if record.replicates else ''} "
             f"| {search_best.name + ': ' + fmt(search_best.value(metric)) if search_best else '-'} "
             f"| {replicated} | `{commit[:12]}`{' (dirty)' if tags.get('git_dirty') == 'True' else ''} |", "",
             f"Objective: {metric} ({mode}), at each run's last step.", "",
             f"Reproduce, in the study folder (into a fresh one beside it): `loopstudy run {Path(study_file).name} "
             f"--results ../{record.name}-rerun`, with the code at commit `{commit}`"
             + (" (the driver could not read its git checkout)" if commit == "unknown" else "") + ".", "",
             "Versions: " + ", ".join(f"{p} {tags.get('version.' + p, '?')}" for p in VERSIONED), "",
             "Stores (paths in the study folder): " + ", ".join(
                 f"{kind} `{_in_folder(shown, Path(study_file).parent)}`" for kind, shown in
                 (("MLflow", record.stores.mlflow_shown), ("Optuna", record.stores.optuna_shown),
                  ("Ray", str(record.stores.ray)))) + f" (study `{record.name}`).", ""]
    data: dict = {"answer": result}
    lines += ["## Answer", "", *(f"- {line.strip()}" for line in result.lines() + answer_lines(record)), ""]
    lines += trajectory_section(record, out, data)
    drawn = answered_runs(record)       # a scientific study with replicates: the runs its answer uses
    averaged = ("the runs the answer uses (each value's chosen config and its replicates)" if drawn is not record
                else "every completed run per value (search and replicates)")
    if len(result.groups) > 1:
        data["isolation.png"] = figures.isolation(result, out / "isolation.png")
        which = ("Each compared value at its own best nuisance settings" if result.scientific else
                 f"The {len(result.shown)} best of {len(result.groups)} configs")
        lines += [f"{which} (dots: seeds; bar: mean and 90% interval with {verdict.MIN_SEEDS}+ seeds, "
                  "else the range):", "", "![](isolation.png)", ""]
    lines += choice_section(record)
    lines += ["## Trials", "", f"| trial | state | {metric} | steps | reason |", "|---|---|---|---|---|"]
    for t in sorted(record.trials, key=lambda t: (t.value(metric) is None, t.value(metric) or 0)):
        lines.append(f"| {t.name} | {t.state} | {fmt(t.value(metric)) if t.value(metric) is not None else '-'} "
                     f"| {t.steps} | {t.reason} |")
    lines.append("")
    scientific = drawn_fields(record.scientific) or [p for p in ranges if p in SCIENTIFIC]
    for param in scientific:
        name = f"curves_{param.rsplit('.', 1)[-1]}.png"
        data[name] = curves = figures.curves_by_value(drawn, param, out / name)
        missing = (f" Values without a completed trial (all pruned or failed): "
                   f"{', '.join(map(str, curves['missing']))}." if curves["missing"] else "")
        lines += [f"## Error vs in-context examples by {long_label(param)}", "",
                  f"Mean of {averaged}; the band spans the lowest to the highest seed.{missing}", "",
                  f"![]({name})", ""]
    compared_probes = probe_section(record, result, out, data) if record.points and record.replicates else []
    lines += compared_probes
    probes = None if compared_probes else figures.probe_by_state(record, out / "probe.png")
    if probes:
        data["probe.png"] = probes
        lines += ["## Probe error per layer / loop iteration", "",
                  "Each completed trial's probes (best first), fitted after training; the control task "
                  "(dashed) measures what a probe decodes without the model knowing the target.", "",
                  "![](probe.png)", ""]
    primary = scientific[0] if scientific else None
    data["fixed_point.png"] = figures.fixed_point(drawn, primary, out / "fixed_point.png")
    lines += ["## Last-point error vs loop iteration", "", "![](fixed_point.png)", ""]
    depth = test_time_depth(record, result, out / "test_time_depth.png")
    if depth:
        data["test_time_depth.png"] = depth
        lines += ["## Test-time depth", "", "Each compared value's runs (those the answer uses): the error at "
                  "the last point after each number of loop iterations, up to the deepest scored (past b), and "
                  "how much each iteration still changes the state (a fixed point drives it to 0).", "",
                  "![](test_time_depth.png)", ""]
    if ranges:
        data["objective_by_param.png"] = flags = figures.objective_by_param(record, ranges, out / "objective_by_param.png")
        edge = [p for p, f in flags.items() if f["on_boundary"]]
        unjudged = [f"{p} ({f['completed_varying']} completed trials)" for p, f in flags.items() if not f["judged"]]
        lines += ["## Objective per searched parameter", "", "Pruned trials are marked with the step "
                  "they stopped at: their value is not a final one. Failed and diverged trials are crossed at "
                  "the top edge, not drawn at a value.", "", "![](objective_by_param.png)", "",
                  (f"**The best value of {', '.join(edge)} lies on the edge of the searched range** (one "
                   "seed): the optimum may lie outside it." if edge else "No best value lies on the edge of "
                   "its searched range.") + (f" Not judged, too few trials varied them (at least "
                   f"{figures.EDGE_TRIALS} completed over 3 values needed): {', '.join(unjudged)}." if unjudged else ""), ""]
    data["learning_curves.png"] = figures.learning_curves(record, out / "learning_curves.png")
    lines += ["## Learning curves of the top trials", "", "![](learning_curves.png)", ""]
    for name, why in figures.optuna_figures(record, out, _importance_problem(record)).items():
        title = "Parameter importances" if name == "importances.png" else "Pareto front"
        lines += [f"## {title}", "", f"![]({name})" if not why else f"({why})", ""]
        data[name] = why
    lines += _replicate_section(record, out, data)
    (out / "report.md").write_text("\n".join(lines))
    return data


def drawn_fields(scientific: dict | list) -> list[str]:
    """The compared fields the report draws per value: every field of a grid; of listed points,
    each field that groups the points in a way no earlier field does (a model family's depth
    changes with the family: one figure)."""
    points, fields, groupings = scientific_points(scientific), [], set()
    for key in dict.fromkeys(k for point in points for k in point):
        grouping = tuple(tuple(i for i, p in enumerate(points) if p.get(key) == point.get(key)) for point in points)
        if isinstance(scientific, dict) or grouping not in groupings:
            fields.append(key)
            groupings.add(grouping)
    return fields


IMPORTANCE_TRIALS = 10      # completed trials before parameter importances are drawn


def _importance_problem(record: StudyRecord) -> str | None:
    """Why parameter importances would mislead here, or None."""
    if record.points:
        return ("not drawn: a scientific study compares its values directly (above); importances "
                "within one value would rest on its few nuisance trials")
    completed = [t for t in record.trials if t.state == "completed"]
    varied = [k for k in {k for t in completed for k in t.sampled} if len({str(t.sampled.get(k)) for t in completed}) > 1]
    if len(completed) < IMPORTANCE_TRIALS:
        return f"not drawn: {len(completed)} completed trials, at least {IMPORTANCE_TRIALS} needed"
    if not varied:
        return "not drawn: no parameter varied among the completed trials"
    return None


def _replicate_section(record: StudyRecord, out: Path, data: dict) -> list[str]:
    groups = [g for g in data["answer"].shown if len(g.values) >= 2]
    if not groups:
        return ["## Seed replicates", "", "No compared value has two or more completed seeds "
                "(set `replicates` in the study file to train the best configs again on fresh seeds).", ""]
    metric = record.objectives[0][0]
    search = {}                  # the value each replicated config was selected on (its seeds' mean)
    for group in groups if record.replicates else []:
        first = group.runs[0]
        chosen = [t.value(metric) for t in record.trials if (t.number, t.point) == (first.number, first.point)
                  and t.value(metric) is not None]
        if chosen:
            search[group.label] = sum(chosen) / len(chosen)
    fresh = bool(record.replicates)
    lines = ["## Seed replicates", "",
             ("The best config of each compared value, trained again on fresh seeds (none used in the "
              "search, the same for every value) to the last step; `search` is the one-seed value it was "
              "selected on." if fresh else "The search's own seeds of each config (no replicate phase was run)."),
             "", "| compared | search | seeds | objective over the seeds |", "|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g.label} | {fmt(search.get(g.label, '-'))} | {', '.join(map(str, sorted(g.by_seed)))} "
                     f"| {verdict.spread(g.values)} |")
    data["replicates.png"] = figures.replicates(groups, search, metric, out / "replicates.png")
    return lines + ["", "![](replicates.png)", ""]
