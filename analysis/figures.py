"""The report's figures, each drawn from a StudyRecord and returning the data it plotted, so
tests (and readers of report.md) can check what a figure shows, not only that a file exists."""
from __future__ import annotations

import statistics
import textwrap
import warnings
from pathlib import Path

import matplotlib
import optuna

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .layout import SCIENTIFIC, fmt, long_label  # noqa: E402
from .trials import StudyRecord, Trial  # noqa: E402
from .verdict import MIN_SEEDS, PREDICT_ZERO, mean_interval  # noqa: E402


EDGE_TRIALS = 8        # completed trials that varied a parameter before its range's edge is judged
ANNOTATED = 20         # pruned trials each labelled with their step; more: the steps in the legend


def _scale_y(ax, values: list[float]) -> None:
    """Log scale only when the values span more than a decade; otherwise readable linear ticks."""
    if values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")


def fit_titles(fig) -> None:
    """Wrap each axes' title that is wider than the figure, so that none is cut off at its edges."""
    renderer = fig.canvas.get_renderer()
    for title in (ax.title for ax in fig.axes):
        lines = title.get_text().split("\n")
        width = max(map(len, lines), default=0)
        while width > 12 and title.get_window_extent(renderer).width > 0.96 * fig.bbox.width:
            width = int(width * 0.85)
            title.set_text("\n".join(textwrap.fill(line, width) for line in lines))


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fit_titles(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_per_value(record: StudyRecord, param: str) -> dict[object, Trial]:
    """The best completed trial for each value of a searched parameter."""
    best: dict[object, Trial] = {}
    for trial in record.ranked():
        best.setdefault(trial.sampled.get(param), trial)
    return dict(sorted((k, v) for k, v in best.items() if k is not None))


def curves_by_value(record: StudyRecord, param: str, path: Path) -> dict:
    """The seed's Figure 2 with its seeds: error vs in-context examples per value of `param`,
    the mean over every completed run of that value (search and replicates) with the band from
    the lowest to the highest seed, beside predicting 0, least squares and averaging."""
    runs: dict[object, list] = {}
    for trial in record.ranked(trials=record.trials + record.replicates):
        if param in trial.sampled:
            runs.setdefault(trial.sampled[param], []).append(trial)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plotted, baselines = {}, None
    for i, (value, trials) in enumerate(sorted(runs.items())):
        summaries = [s for s in (record.artifact_json(t, "summary.json") for t in trials) if s]
        if not summaries:
            continue
        curves = [s["eval"]["curve"] for s in summaries]
        baselines = summaries[0]["baselines"] or baselines
        mean = [statistics.fmean(c) for c in zip(*curves)]
        lo, hi = [min(c) for c in zip(*curves)], [max(c) for c in zip(*curves)]
        ks = range(len(mean))
        ax.plot(ks, mean, f"C{i}-", lw=2, label=f"{long_label(param)} = {value} (mean of {len(curves)} runs)")
        ax.fill_between(ks, lo, hi, color=f"C{i}", alpha=0.2)
        plotted[value] = {"runs": [t.name for t in trials][:len(curves)], "mean": mean, "lo": lo, "hi": hi}
    ax.axhline(PREDICT_ZERO, color="k", ls=":", lw=1, label="predicting 0")
    if baselines:
        ks = range(len(baselines["least_squares"]["curve"]))
        ax.plot(ks, baselines["least_squares"]["curve"], "k--", lw=1, label="least squares")
        ax.plot(ks, baselines["averaging"]["curve"], "C7-.", lw=1, label="averaging")
    if plotted:
        floor = min(min(v["lo"]) for v in plotted.values())
        ax.set_ylim(bottom=max(floor / 30, 1e-6))
    ax.set(xlabel="in-context examples k", ylabel="squared error / normaliser", yscale="log",
           title=f"{record.name}: error vs examples by {long_label(param)}\n(band: lowest to highest seed)")
    searched = sorted({t.sampled[param] for t in record.trials if param in t.sampled})
    missing = [v for v in searched if v not in plotted]
    if missing:
        ax.plot([], [], " ", label=f"no completed trial: {', '.join(map(str, missing))}")
    ax.legend(fontsize=7)
    _save(fig, path)
    return {"series": plotted, "missing": missing, "baselines": sorted(baselines) if baselines else []}


def isolation(answer, path: Path) -> dict:
    """The objective of each compared value at its own best nuisance settings: every seed (dots),
    the mean and its 90% interval (or, with fewer than MIN_SEEDS seeds, the range); predicting 0
    for scale where the objective is an error. A full grid of two scientific parameters: a heat
    map of the means, the intervals as text."""
    groups = answer.shown                     # a plain study: its best configs, not all of them
    points = [dict(p.split("=", 1) for p in g.label.split()) for g in groups]
    keys = list(points[0]) if points else []
    two = bool(answer.scientific and len(keys) == 2       # a full grid of two (not two points listed)
               and len({p[keys[0]] for p in points}) * len({p[keys[1]] for p in points}) == len(points))
    plotted = {g.label: {"values": g.values, "mean": g.mean,
                         "interval": list(mean_interval(g.values)) if len(g.values) >= MIN_SEEDS else None}
               for g in groups}
    if two:
        rows, cols = (sorted({p[k] for p in points}, key=_number) for k in list(points[0]))
        grid = [[float("nan")] * len(cols) for _ in rows]
        fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 1.2 * len(rows) + 1.5))
        for group, point in zip(groups, points):
            r, c = rows.index(point[list(point)[0]]), cols.index(point[list(point)[1]])
            grid[r][c] = group.mean
            interval = plotted[group.label]["interval"]
            text = fmt(group.mean, 3) + (f"\n[{fmt(interval[0], 2)}, {fmt(interval[1], 2)}]" if interval
                                         else f"\nn={len(group.values)}")
            ax.text(c, r, text, ha="center", va="center", fontsize=8)
        image = ax.imshow(grid, cmap="viridis_r" if answer.mode == "min" else "viridis")
        fig.colorbar(image, ax=ax, label=answer.metric)
        ax.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(rows)), yticklabels=rows,
               xlabel=keys[1], ylabel=keys[0], title="each value at its own best nuisance settings")
    else:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        seeds = sorted({seed for g in groups for seed in g.by_seed})
        for seed in seeds:              # one seed across the values: the pairing the verdict uses
            xs = [x for x, g in enumerate(groups) if seed in g.by_seed]
            ax.plot(xs, [groups[x].by_seed[seed] for x in xs], "-", color="C0", alpha=0.25, lw=1)
        for x, group in enumerate(groups):
            ax.plot([x] * len(group.values), group.values, "o", color="C0", alpha=0.5)
            low, high = plotted[group.label]["interval"] or (min(group.values), max(group.values))
            ax.errorbar([x], [group.mean], yerr=[[group.mean - low], [high - group.mean]], fmt="s", color="k",
                        capsize=5)
        if answer.metric.startswith("eval/err"):    # an error, normalised: predicting 0 scores about 1
            ax.axhline(PREDICT_ZERO, color="k", ls=":", lw=1, label="predicting 0")
        ax.plot([], [], "o-", color="C0", alpha=0.5, label="one seed (lines join a seed across values)")
        ax.errorbar([], [], yerr=[], fmt="s", color="k", capsize=5,
                    label=f"mean, 90% interval ({MIN_SEEDS}+ seeds) or range")
        ax.set_xticks(range(len(groups)), [g.label for g in groups], rotation=0 if answer.scientific else 30,
                      ha="center" if answer.scientific else "right", fontsize=None if answer.scientific else 7)
        ax.set(ylabel=answer.metric, title="each value at its own best nuisance settings" if answer.scientific
               else f"the {len(groups)} best of {len(answer.groups)} configs")
        ax.legend(fontsize=7)
    _save(fig, path)
    return {"series": plotted, "heat_map": two}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def fixed_point(record: StudyRecord, param: str | None, path: Path, top: int = 5) -> dict:
    """Last-point error vs loop iteration, past the trained b (does the fixed point hold?)."""
    chosen = best_per_value(record, param) if param else {t.name: t for t in record.ranked()[:top]}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plotted = {}
    for i, (value, trial) in enumerate(chosen.items()):
        summary = record.artifact_json(trial, "summary.json")
        curve = (summary or {}).get("eval", {}).get("last_point_vs_iteration")
        if not curve:
            continue
        label = f"{long_label(param)} = {value}" if param else trial.name
        ax.plot(range(1, len(curve) + 1), curve, f"C{i}-", label=label)
        ax.axvline(trial.config.loop_budget, color=f"C{i}", ls=":", lw=1)
        plotted[value] = {"trial": trial.name, "b": trial.config.loop_budget, "curve": curve}
    _scale_y(ax, [v for series in plotted.values() for v in series["curve"]])
    ax.set(xlabel="loop iteration (dotted: trained b)", ylabel="error at the last point",
           title="fixed point beyond the trained b?")
    if plotted:
        ax.legend(fontsize=7)
    _save(fig, path)
    return {"series": plotted}


def objective_by_param(record: StudyRecord, ranges: dict[str, tuple], path: Path) -> dict:
    """One axis plot per searched scientific parameter: objective vs value, completed trials
    filled, pruned hollow and marked with the step they were stopped at (their value is not a
    final one), failed and diverged trials crossed at the top edge (their values, if any, would
    only stretch the axis); a best value on the edge of the searched range is flagged, but only when at
    least EDGE_TRIALS completed trials varied the parameter over 3 or more values."""
    metric, mode = record.objectives[0]
    params = [p for p in ranges if p in SCIENTIFIC] or list(ranges)
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False)
    best = record.ranked()[0] if record.ranked() else None
    flags = {}
    for ax, param in zip(axes[0], params):
        for state, style in (("completed", dict(c="C0")), ("pruned", dict(facecolors="none", edgecolors="C1"))):
            shown = [t for t in record.trials if t.state == state and param in t.sampled
                     and t.value(metric) is not None]
            if shown:
                stopped = (" (at the step it stopped)" if len(shown) <= ANNOTATED else
                           f" (stopped at step {', '.join(map(str, sorted({t.steps for t in shown})))})")
                ax.scatter([t.sampled[param] for t in shown], [t.value(metric) for t in shown],
                           label=f"{state}{stopped if state == 'pruned' else ''} ({len(shown)})",
                           alpha=0.5 if len(shown) > ANNOTATED else 1, **style)
            for t in shown if state == "pruned" and len(shown) <= ANNOTATED else []:
                ax.annotate(f"@{t.steps}", (t.sampled[param], t.value(metric)), fontsize=6, color="C1",
                            xytext=(3, 3), textcoords="offset points")
        _scale_y(ax, [t.value(metric) for t in record.trials if t.state in ("completed", "pruned")
                      and param in t.sampled and t.value(metric)])
        ended = {}
        for t in record.trials:
            if t.state in ("failed", "diverged") and param in t.sampled:
                ended.setdefault(t.state, []).append(t.sampled[param])
        for state, xs in ended.items():   # at the top edge, not at a value that would set the axis
            ax.scatter(xs, [0.97] * len(xs), marker="x", c="C3" if state == "diverged" else "C7",
                       transform=ax.get_xaxis_transform(), clip_on=False,
                       label=f"{state} ({len(xs)}): marked, no value")
        seen = sorted({t.sampled[param] for t in record.trials if param in t.sampled})
        if 0 < len(seen) <= 8:
            ax.set_xticks(seen)
        low, high = ranges[param]
        varied = [t for t in record.trials if t.state == "completed" and param in t.sampled]
        judged = len(varied) >= EDGE_TRIALS and len({t.sampled[param] for t in varied}) >= 3
        on_edge = judged and best is not None and low != high and best.sampled.get(param) in (low, high)
        flags[param] = {"range": [low, high], "best": best.sampled.get(param) if best else None,
                        "on_boundary": on_edge, "judged": judged, "completed_varying": len(varied),
                        "marked": {state: len(xs) for state, xs in ended.items()}}
        title = long_label(param) + ("\nbest on the range's edge: widen it?" if on_edge else "")
        ax.set(xlabel=param, ylabel=metric, title=title)
        ax.legend(fontsize=7)
    _save(fig, path)
    for ax, param in zip(axes[0], params):
        flags[param]["y_limits"] = list(ax.get_ylim())
    return flags


def learning_curves(record: StudyRecord, path: Path, top: int = 5) -> dict:
    metric, _ = record.objectives[0]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plotted = {}
    for i, trial in enumerate(record.ranked(("completed", "pruned"))[:top]):
        history = record.metric_history(trial, metric)
        if history:
            ax.plot(*zip(*history), f"C{i}-o", ms=3, label=trial.name)
            plotted[trial.name] = history
    _scale_y(ax, [v for history in plotted.values() for _, v in history])
    ax.set(xlabel="training step", ylabel=metric, title=f"learning curves, top {top}")
    ax.legend(fontsize=7)
    _save(fig, path)
    return {"series": plotted}


def optuna_figures(record: StudyRecord, out: Path, importance_problem: str | None = None) -> dict[str, str]:
    """Parameter importances (unless `importance_problem` says why they would mislead) and, for
    several objectives, the Pareto front (Optuna's matplotlib backend). Returns {figure file:
    "" or why it was not drawn}."""
    import optuna.visualization.matplotlib as ovm

    drawn = {"importances.png": importance_problem} if importance_problem else {}
    if record.points:                 # a scientific study: one Optuna study per value
        return drawn
    study = record.optuna_study()
    targets = [] if importance_problem else [("importances.png", lambda: ovm.plot_param_importances(
        study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None))]
    if len(study.directions) > 1:
        targets.append(("pareto.png", lambda: ovm.plot_pareto_front(study)))
    for name, draw in targets:
        # Optuna switches matplotlib to ggplot and warns that its backend is experimental
        with plt.style.context("default"), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                drawn[name] = f"not drawn: {exc}"
                continue
            _save(ax.figure, out / name)
        drawn[name] = ""
    return drawn


def replicates(groups: list, search_values: dict[str, float], metric: str, path: Path) -> dict:
    """Each compared group's objective over seeds (dots), its mean with the 90% t
    interval (MIN_SEEDS seeds or more) or else the range (bar), and the value the search
    selected it on (x): a winner's curse shows as x below the dots."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(groups) + 1.6))
    plotted = {}
    for row, group in enumerate(groups):
        interval = mean_interval(group.values) if len(group.values) >= MIN_SEEDS else None
        lo, hi = interval or (min(group.values), max(group.values))
        ax.plot(group.values, [row] * len(group.values), "o", color="C0", alpha=0.6)
        ax.errorbar([group.mean], [row], xerr=[[group.mean - lo], [hi - group.mean]], fmt="|",
                    color="k", ms=14, capsize=4)
        search = search_values.get(group.label)
        if search is not None:
            ax.plot([search], [row], "x", color="C3", ms=9)
        plotted[group.label] = {"values": group.values, "mean": group.mean,
                                "interval": list(interval) if interval else None, "search_value": search}
    ax.plot([], [], "o", color="C0", label="one seed")
    ax.plot([], [], "|", color="k", ms=14, label=f"mean, 90% interval ({MIN_SEEDS}+ seeds) or range")
    ax.plot([], [], "x", color="C3", label="value in the search")
    ax.set_yticks(range(len(groups)), [g.label for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)                    # best on top
    ax.set(xlabel=metric, title="Seed replicates (best config on top)")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return {"series": plotted}


def probe_by_state(record: StudyRecord, path: Path) -> dict | None:
    """The seed's Figure 1 from a probe study: each completed trial's probe error per layer or
    loop iteration (standard and looped side by side), its control dashed; None without probes."""
    from trainables.plots import plot_probe

    if record.parent["params"].get("trainable", "probe") != "probe":
        return None             # only a probe trial has probes: no artifact listing per trial
    summaries, plotted = [], {}
    for trial in record.ranked():
        summary = record.artifact_json(trial, "probe/summary.json")
        if summary:
            summaries.append({**summary, "label": f"{trial.name.split()[0]} {summary['label']}"})
            plotted[trial.name] = {"family": summary["family"], "err": summary["err"],
                                   "control_err": summary.get("control_err")}
    if not summaries:
        return None
    plot_probe(summaries, path)
    return {"series": plotted}
