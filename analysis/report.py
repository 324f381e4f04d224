"""`loopstudy report`: report.md and its figures, regenerated from a finished study's stores."""
from __future__ import annotations

from pathlib import Path

from . import figures, seed_stats
from .layout import SCIENTIFIC, VERSIONED, fmt, long_label
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


def write_report(record: StudyRecord, space_params: dict, study_file: str, out: Path) -> dict:
    """Writes out/report.md and its figures; returns what each figure plotted."""
    out.mkdir(parents=True, exist_ok=True)
    metric, mode = record.objectives[0]
    ranked = record.ranked()
    tags = record.parent["tags"]
    ranges = searched_ranges(space_params)
    lines = [f"# Study `{record.name}`", "",
             "| study | trials by state | best | objective | git commit |", "|---|---|---|---|---|",
             f"| {record.name} | {_counts(record)}{'; replicates: ' + _counts(record, record.replicates) if record.replicates else ''} "
             f"| {ranked[0].name if ranked else '-'} | {metric} ({mode}) = "
             f"{fmt(ranked[0].value(metric)) if ranked else '-'} | `{tags.get('git_commit', '?')[:12]}`"
             f"{' (dirty)' if tags.get('git_dirty') == 'True' else ''} |", "",
             f"Reproduce (into a fresh folder): `loopstudy run {study_file} --results results/{record.name}-rerun`"
             f" at commit `{tags.get('git_commit', '?')}`.", "",
             "Versions: " + ", ".join(f"{p} {tags.get('version.' + p, '?')}" for p in VERSIONED), "",
             f"Stores: MLflow `{record.stores.mlflow_uri}`, Optuna `{record.stores.optuna_url}` "
             f"(study `{record.name}`), Ray `{record.stores.experiment}`.", ""]
    data: dict = {}
    lines += ["## Trials", "", f"| trial | state | {metric} | steps | reason |", "|---|---|---|---|---|"]
    for t in sorted(record.trials, key=lambda t: (t.value(metric) is None, t.value(metric) or 0)):
        lines.append(f"| {t.name} | {t.state} | {fmt(t.value(metric)) if t.value(metric) is not None else '-'} "
                     f"| {t.steps} | {t.reason} |")
    lines.append("")
    scientific = [p for p in ranges if p in SCIENTIFIC]
    for param in scientific:
        name = f"curves_{param.rsplit('.', 1)[-1]}.png"
        data[name] = curves = figures.curves_by_value(record, param, out / name)
        missing = (f" Values without a completed trial (all pruned or failed): "
                   f"{', '.join(map(str, curves['missing']))}." if curves["missing"] else "")
        lines += [f"## Error vs in-context examples by {long_label(param)}", "",
                  f"Best completed trial per value, 90% bootstrap band over held-out prompts.{missing}", "",
                  f"![]({name})", ""]
    probes = figures.probe_by_state(record, out / "probe.png")
    if probes:
        data["probe.png"] = probes
        lines += ["## Probe error per layer / loop iteration", "",
                  "Each completed trial's probes (best first), fitted after training; the control task "
                  "(dashed) measures what a probe decodes without the model knowing the target.", "",
                  "![](probe.png)", ""]
    primary = scientific[0] if scientific else None
    data["fixed_point.png"] = figures.fixed_point(record, primary, out / "fixed_point.png")
    lines += ["## Last-point error vs loop iteration", "", "![](fixed_point.png)", ""]
    if ranges:
        data["objective_by_param.png"] = flags = figures.objective_by_param(record, ranges, out / "objective_by_param.png")
        edge = [p for p, f in flags.items() if f["on_boundary"]]
        lines += ["## Objective per searched parameter", "", "![](objective_by_param.png)", "",
                  (f"**The best value of {', '.join(edge)} lies on the edge of the searched range**: "
                   "the optimum may lie outside it." if edge else "No best value lies on the edge of its searched range."), ""]
    data["learning_curves.png"] = figures.learning_curves(record, out / "learning_curves.png")
    lines += ["## Learning curves of the top trials", "", "![](learning_curves.png)", ""]
    for name, why in figures.optuna_figures(record, out).items():
        title = "Parameter importances" if name == "importances.png" else "Pareto front"
        lines += [f"## {title}", "", f"![]({name})" if not why else f"({why})", ""]
        data[name] = why
    lines += _replicate_section(record, out, data)
    (out / "report.md").write_text("\n".join(lines))
    return data


def _replicate_section(record: StudyRecord, out: Path, data: dict) -> list[str]:
    groups = [g for g in seed_stats.groups(record) if len(g.values) >= 2]
    if not groups:
        return ["## Seed replicates", "", "No config has two or more completed seeds "
                "(set `replicates` in the study file to rerun the top configs with fresh seeds).", ""]
    metric = record.objectives[0][0]
    by_number: dict[int, list[float]] = {}
    for t in record.ranked():
        by_number.setdefault(t.number, []).append(t.value(metric))
    search = {n: sum(v) / len(v) for n, v in by_number.items()}      # over seeds_per_config
    fresh = bool(record.replicates)
    lines = ["## Seed replicates", "",
             ("The best configs of the search, trained again with fresh seeds (none used in the search) "
              "to the last step; `search` is the value each was selected on." if fresh else
              "The search's own seeds of each config (no replicate phase was run)."), "",
             "| config | search trial | search | seeds | mean | 90% interval |", "|---|---|---|---|---|---|"]
    for g in groups:
        lo, hi = seed_stats.interval(g.values)
        lines.append(f"| {g.key} | t{g.number:03d} | {fmt(search.get(g.number, '-'))} | {len(g.values)} "
                     f"| {fmt(g.mean)} | [{fmt(lo)}, {fmt(hi)}] |")
    data["replicates.png"] = figures.replicates(groups, search if fresh else {}, metric, out / "replicates.png")
    lines += ["", "![](replicates.png)"]
    verdict = seed_stats.compare_best(record)
    if verdict:
        lo, hi = verdict["interval"]
        lines += ["", f"Best `{verdict['best']}` vs runner-up `{verdict['runner_up']}`: difference "
                  f"{fmt(verdict['difference'])}, 90% interval [{fmt(lo)}, {fmt(hi)}]: "
                  + ("**distinguishable**." if verdict["distinguishable"] else "**not distinguishable** at this number of seeds.")]
    return lines + [""]
