"""What a probe study that compares values (e.g. the model family) found: the seed's Figure 1
per seed and value, each seed's control beside it, and every probe measure per value over its
seeds, with the paired differences from the reference value (trainables/probing.py writes the
probe/summary.json both read: per-state errors and the measures, formulas in the README)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from .figures import _save, plt
from .layout import fmt
from .trials import StudyRecord
from .verdict import MIN_SEEDS, mean_interval, spread

MEASURES = ("probe/err_min", "probe/argmin_depth", "probe/late_rise", "probe/late_rise_tail",
            "probe/control_err_min", "probe/selectivity")


def probed_runs(record: StudyRecord, answer) -> dict[str, dict[int, dict]]:
    """value -> seed -> that run's probe/summary.json, over the runs the answer uses (each
    compared value's replicates); values without a probed run are left out."""
    found = {}
    for group in answer.shown:
        summaries = {t.seed: s for t in group.runs for s in [record.artifact_json(t, "probe/summary.json")] if s}
        if summaries:
            found[group.label] = summaries
    return found


def measures_table(probed: dict[str, dict[int, dict]]) -> list[str]:
    """report.md's lines: each measure per value over its seeds, then each value's paired
    difference from the first value (the reference) on the seeds both probed."""
    values = list(probed)
    lines = ["| measure | " + " | ".join(values) + " |", "|---|" + "---|" * len(values)]
    for measure in MEASURES:
        cells = [spread([s[measure] for s in probed[v].values()]) if all(measure in s for s in probed[v].values())
                 else "-" for v in values]
        lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    if len(values) < 2:
        return lines
    reference = values[0]
    lines += ["", f"Paired by seed, value - {reference} (a 90% t interval with {MIN_SEEDS}+ seeds, else the "
              "range; each measure on its own: only the question's objective is judged with the sequential "
              "design's family-wise confidence):", "",
              "| measure | " + " | ".join(f"{v} - {reference}" for v in values[1:]) + " |",
              "|---|" + "---|" * (len(values) - 1)]
    for measure in MEASURES:
        cells = []
        for value in values[1:]:
            seeds = sorted(set(probed[value]) & set(probed[reference]))
            differences = [probed[value][s][measure] - probed[reference][s][measure] for s in seeds
                           if measure in probed[value][s] and measure in probed[reference][s]]
            cells.append(_paired(differences))
        lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    return lines


def _paired(differences: list[float]) -> str:
    if not differences:
        return "-"
    if len(differences) >= MIN_SEEDS:
        lo, hi = mean_interval(differences)
        return f"{fmt(sum(differences) / len(differences))} [{fmt(lo)}, {fmt(hi)}] (n={len(differences)})"
    return spread(differences)


def figure_per_seed(probed: dict[str, dict[int, dict]], path: Path) -> dict:
    """The seed's Figure 1 with its seeds: a panel per value, each seed's probe error per layer
    or loop iteration (solid) and its control's (dashed, the same colour), predicting 0 dotted;
    returns what it drew: value -> seed -> {err, control_err}."""
    fig, axes = plt.subplots(1, len(probed), figsize=(5.2 * len(probed), 4), sharey=True, squeeze=False)
    drawn = {}
    for ax, (value, by_seed) in zip(axes[0], probed.items()):
        drawn[value] = {}
        for i, (seed, summary) in enumerate(sorted(by_seed.items())):
            err, control = summary["err"], summary.get("control_err")
            ax.plot(range(len(err)), err, f"C{i}-", marker="o" if len(err) <= 25 else None, ms=3, label=f"seed {seed}")
            if control:
                ax.plot(range(len(control)), control, f"C{i}--", lw=1)
            drawn[value][seed] = {"err": err, "control_err": control}
        first = next(iter(by_seed.values()))
        ax.axhline(first["err_predicting_zero"], color="k", ls=":", lw=1, label="predicting 0")
        ax.plot([], [], "k--", lw=1, label="control probes (w = 1)")
        where = "layer" if first["family"] == "standard" else "loop iteration"
        ax.set(title=value, xlabel=f"{where} (0 = read_in embedding)", yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"probe error for {first['target']} / d")
    fig.suptitle(f"probing {first['target']} per state, d={first['n_dims']} n={first['n_points']}")
    _save(fig, path)
    return drawn


def probe_section(record: StudyRecord, answer, out: Path, data: dict) -> list[str]:
    """report.md's lines on the probes of a compared probe study, and probe_per_seed.png (its
    data in `data`); [] where no compared value has a probed run."""
    probed = probed_runs(record, answer)
    if not probed:
        return []
    data["probe_per_seed.png"] = figure_per_seed(probed, out / "probe_per_seed.png")
    data["probe_measures"] = {v: {m: [s.get(m) for s in by_seed.values()] for m in MEASURES}
                              for v, by_seed in probed.items()}
    return ["## Probe error per layer / loop iteration, per seed", "",
            "The runs the answer uses (each value's replicates), probed after training: solid the task's "
            "probes, dashed the control probes of the same seed (trained where w = 1, scored on random w: what "
            "a probe decodes that the model did not compute). Selectivity = the control's best error - the "
            "task's best.", "", "![](probe_per_seed.png)", "", "### Probe measures per value", "",
            *measures_table(probed), ""]
