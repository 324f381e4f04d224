"""The answer's trajectory: each comparison's interval after each round, with 0 and the margin
of practical equivalence (±delta) marked, so a reader sees how the answer was reached."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .sequential import BETTER, EQUIVALENT, UNDECIDED, UNRESOLVED, WORSE  # noqa: E402

COLOURS = {BETTER: "tab:green", WORSE: "tab:red", EQUIVALENT: "tab:blue", UNDECIDED: "tab:gray",
           UNRESOLVED: "tab:orange"}


def trajectory_figure(rows: list[dict], delta: float | None = None, title: str = "The answer, round by round",
                      ylabel: str = "value - reference"):
    """One panel per comparison (sequential.trajectory_rows) and horizon (a row of panels per
    horizon when the rows carry several): x the paired seeds of each look, the interval as a bar
    coloured by its decision; the y axis holds every interval (symmetric-log when the early ones
    dwarf the margin); returns the figure, laid out (the caller saves)."""
    names = list(dict.fromkeys(r["comparison"] for r in rows))
    horizons = list(dict.fromkeys(r.get("horizon") for r in rows))
    fig, axes = plt.subplots(len(horizons), max(1, len(names)),
                             figsize=(3.2 * max(1, len(names)) + 0.8, 3.2 * len(horizons) + 0.4),
                             sharey=True, squeeze=False)
    ends = [v for r in rows for v in (r["lo"], r["hi"]) if v is not None] + [0.0]
    if delta is not None:
        ends += [-delta, delta]
    pad = 0.08 * ((max(ends) - min(ends)) or 1.0)
    for row, horizon in zip(axes, horizons):
        for ax, name in zip(row, names):
            _panel(ax, [r for r in rows if r["comparison"] == name and r.get("horizon") == horizon], delta,
                   name + (f" at {horizon} steps" if len(horizons) > 1 else ""))
    axes[0][0].set_ylim(min(ends) - pad, max(ends) + pad)
    halves = [(r["hi"] - r["lo"]) / 2 for r in rows if r["lo"] is not None and r["hi"] > r["lo"]]
    linear = 2 * (delta if delta is not None else min(halves, default=0.0))
    if linear and max(ends) - min(ends) > 20 * linear:
        # the first looks spend little alpha and their intervals are tens of times wider than the
        # last ones: linear within ±linear (the margin readable), logarithmic beyond
        axes[0][0].set_yscale("symlog", linthresh=linear)
    for row in axes:
        row[0].set_ylabel(ylabel)
    if delta is not None:
        axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _panel(ax, rows: list[dict], delta: float | None, name: str) -> None:
    looks = [r for r in rows if r["lo"] is not None]
    for r in looks:
        colour = COLOURS[r["decision"]]
        ax.plot([r["n"], r["n"]], [r["lo"], r["hi"]], color=colour, lw=2.5)
        ax.plot([r["n"]], [r["mean"]], "o", color=colour, ms=4)
    ax.axhline(0.0, color="black", lw=0.8)
    if delta is not None:
        for edge in (-delta, delta):
            ax.axhline(edge, color="tab:blue", lw=0.8, ls="--", label="±δ" if edge > 0 else None)
    ax.set_title(f"{name}: {rows[-1]['decision']}" if rows else f"{name}: no look", fontsize=10)
    ax.set_xlabel("paired seeds")
    if looks:
        ax.set_xticks(sorted({r["n"] for r in looks}))
