"""The report's figures, each drawn from a StudyRecord and returning the data it plotted, so
tests (and readers of report.md) can check what a figure shows, not only that a file exists."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import optuna

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .layout import SCIENTIFIC, long_label  # noqa: E402
from .trials import StudyRecord, Trial  # noqa: E402


def _scale_y(ax, values: list[float]) -> None:
    """Log scale only when the values span more than a decade; otherwise readable linear ticks."""
    if values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")


def _save(fig, path: Path) -> None:
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
    """The seed's Figure 2: error vs in-context examples, best trial per value of `param`,
    with its 90% band, and the least-squares and averaging baselines."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plotted, baselines = {}, None
    for i, (value, trial) in enumerate(best_per_value(record, param).items()):
        summary = record.artifact_json(trial, "summary.json")
        if not summary:
            continue
        result, baselines = summary["eval"], summary["baselines"]
        ks = range(len(result["curve"]))
        ax.plot(ks, result["curve"], f"C{i}-", lw=2, label=f"{long_label(param)} = {value} ({trial.name.split()[0]})")
        ax.fill_between(ks, result["band_lo"], result["band_hi"], color=f"C{i}", alpha=0.2)
        plotted[value] = {"trial": trial.name, "curve": result["curve"], "band_lo": result["band_lo"],
                          "band_hi": result["band_hi"]}
    if baselines:
        ks = range(len(baselines["least_squares"]["curve"]))
        ax.plot(ks, baselines["least_squares"]["curve"], "k--", lw=1, label="least squares")
        ax.plot(ks, baselines["averaging"]["curve"], "C7-.", lw=1, label="averaging")
        floor = min(min(v["curve"]) for v in plotted.values())
        ax.set_ylim(bottom=max(floor / 30, 1e-6))
    ax.set(xlabel="in-context examples k", ylabel="squared error / normaliser", yscale="log",
           title=f"{record.name}: error vs examples by {long_label(param)}")
    searched = sorted({t.sampled[param] for t in record.trials if param in t.sampled})
    missing = [v for v in searched if v not in plotted]
    if missing:
        ax.plot([], [], " ", label=f"no completed trial: {', '.join(map(str, missing))}")
    ax.legend(fontsize=7)
    _save(fig, path)
    return {"series": plotted, "missing": missing, "baselines": sorted(baselines) if baselines else []}


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
    filled, pruned hollow; a best value on the edge of the searched range is flagged."""
    metric, mode = record.objectives[0]
    params = [p for p in ranges if p in SCIENTIFIC] or list(ranges)
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False)
    best = record.ranked()[0] if record.ranked() else None
    flags = {}
    for ax, param in zip(axes[0], params):
        for state, style in (("completed", dict(c="C0")), ("pruned", dict(facecolors="none", edgecolors="C1"))):
            points = [(t.sampled[param], t.value(metric)) for t in record.trials
                      if t.state == state and param in t.sampled and t.value(metric) is not None]
            if points:
                ax.scatter(*zip(*points), label=state, **style)
        _scale_y(ax, [t.value(metric) for t in record.trials if param in t.sampled and t.value(metric)])
        seen = sorted({t.sampled[param] for t in record.trials if param in t.sampled})
        if 0 < len(seen) <= 8:
            ax.set_xticks(seen)
        low, high = ranges[param]
        on_edge = best is not None and low != high and best.sampled.get(param) in (low, high)
        flags[param] = {"range": [low, high], "best": best.sampled.get(param) if best else None,
                        "on_boundary": on_edge}
        title = long_label(param) + ("\nbest on the range's edge: widen it?" if on_edge else "")
        ax.set(xlabel=param, ylabel=metric, title=title)
        ax.legend(fontsize=7)
    _save(fig, path)
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


def optuna_figures(record: StudyRecord, out: Path) -> dict[str, str]:
    """Parameter importances and, for several objectives, the Pareto front (Optuna's
    matplotlib backend). Returns {figure file: "" or why it was not drawn}."""
    import optuna.visualization.matplotlib as ovm

    study = record.optuna_study()
    drawn = {}
    targets = [("importances.png", lambda: ovm.plot_param_importances(
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


def replicates(groups: list, search_values: dict[int, float], metric: str, path: Path) -> dict:
    """Each config's objective over seeds (dots), its mean and 90% bootstrap interval (bar), and
    the value the search selected it on (x): a winner's curse shows as x below the dots."""
    from .seed_stats import interval

    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(groups) + 1.6))
    plotted = {}
    for row, group in enumerate(groups):
        lo, hi = interval(group.values)
        ax.plot(group.values, [row] * len(group.values), "o", color="C0", alpha=0.6)
        ax.errorbar([group.mean], [row], xerr=[[group.mean - lo], [hi - group.mean]], fmt="|",
                    color="k", ms=14, capsize=4)
        search = search_values.get(group.number)
        if search is not None:
            ax.plot([search], [row], "x", color="C3", ms=9)
        plotted[group.key] = {"values": group.values, "mean": group.mean, "interval": [lo, hi],
                              "search_value": search}
    ax.plot([], [], "o", color="C0", label="one seed")
    ax.plot([], [], "|", color="k", ms=14, label="mean, 90% interval")
    ax.plot([], [], "x", color="C3", label="value in the search")
    ax.set_yticks(range(len(groups)), [g.key for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)                    # best on top
    ax.set(xlabel=metric, title="Seed replicates (best config on top)")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return {"series": plotted}


def probe_by_state(record: StudyRecord, path: Path) -> dict | None:
    """The seed's Figure 1 from a probe study: each completed trial's probe error per layer or
    loop iteration (standard and looped side by side), its control dashed; None without probes."""
    from trainables.plots import plot_probe

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
