"""The report's test-time-depth figure (docs/loop_knobs.md): for each compared value, over the
runs the answer uses, the last-point error vs loop iteration up to the deepest count scored
(past b: e.g. 4b) and the relative state change ||Y_t - Y_{t-1}|| / ||Y_{t-1}|| per iteration."""
from __future__ import annotations

import statistics
from pathlib import Path

from .figures import _save, _scale_y, plt
from .trials import StudyRecord


def _band(curves: list[list[float]]) -> dict[str, list[float]]:
    """Mean, lowest and highest of equally long curves, point by point."""
    columns = list(zip(*curves))
    return {"mean": [statistics.fmean(c) for c in columns], "lo": [min(c) for c in columns],
            "hi": [max(c) for c in columns]}


def test_time_depth(record: StudyRecord, answer, path: Path) -> dict | None:
    """Draws `path`; returns {label: {runs, b, err: band, state_change: band}}, or None when no
    compared value's runs scored a looped model's state changes (a standard model, an old run)."""
    series = {}
    for group in answer.shown:
        evaluations = [(t.name, s["eval"]) for t in group.runs
                       for s in [record.artifact_json(t, "summary.json")] if s and (s.get("eval") or {}).get("state_change")]
        if not evaluations:
            continue
        depth = min(len(e["last_point_vs_iteration"]) for _, e in evaluations)
        series[group.label] = {
            "runs": [name for name, _ in evaluations], "b": group.runs[0].config.loop_budget,
            "err": _band([e["last_point_vs_iteration"][:depth] for _, e in evaluations]),
            # entry t-1 is iteration t; iteration 1 has no state before it
            "state_change": _band([e["state_change"][1:depth] for _, e in evaluations])}
    if not series:
        return None
    fig, (errors, changes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, drawn) in enumerate(series.items()):
        for ax, key, first in ((errors, "err", 1), (changes, "state_change", 2)):
            band = drawn[key]
            xs = range(first, first + len(band["mean"]))
            ax.plot(xs, band["mean"], f"C{i}-", label=f"{label} (mean of {len(drawn['runs'])} runs)")
            ax.fill_between(xs, band["lo"], band["hi"], color=f"C{i}", alpha=0.2)
        for ax in (errors, changes):
            ax.axvline(drawn["b"], color=f"C{i}", ls=":", lw=1)
    _scale_y(errors, [v for d in series.values() for v in d["err"]["lo"] + d["err"]["hi"]])
    changes.set_yscale("log")
    errors.set(xlabel="loop iterations at test time (dotted: b)", ylabel="error at the last point",
               title="error vs test-time depth (band: lowest to highest run)")
    changes.set(xlabel="loop iteration t", ylabel="||Y_t - Y_t-1|| / ||Y_t-1||", title="state change per iteration")
    errors.legend(fontsize=7)
    _save(fig, path)
    return series
