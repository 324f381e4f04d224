"""The run folder's figure: error vs in-context examples with baselines, and (looped models)
the last-point error vs loop iteration, which shows whether the fixed point holds past b."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .config import Config  # noqa: E402

BASELINE_STYLE = {"least_squares": ("least squares", "k--"), "3nn": ("3-NN", "C7:"),
                  "averaging": ("averaging", "C8-.")}


def plot_eval(summary: dict, config: Config, path: Path) -> None:
    result = summary["eval"]
    looped = "last_point_vs_iteration" in result
    fig, axes = plt.subplots(1, 2 if looped else 1, figsize=(11 if looped else 6, 4), squeeze=False)
    ax = axes[0, 0]
    ks = range(len(result["curve"]))
    label = f"{config.model.family} L={config.model.n_layer} D={config.model.n_embd}"
    if looped:
        label += f" b={config.loop_budget}"
    ax.plot(ks, result["curve"], "C0-", lw=2, label=label)
    ax.fill_between(ks, result["band_lo"], result["band_hi"], color="C0", alpha=0.25, label="90% band")
    at_iterations = sorted(result.get("curves_at_iterations", {}).items(), key=lambda kv: int(kv[0]))
    for i, (n, curve) in enumerate(at_iterations):
        if int(n) != config.loop_budget:
            ax.plot(ks, curve, f"C{i + 1}-", lw=1, label=f"at {n} iterations")
    for name, base in summary["baselines"].items():
        text, style = BASELINE_STYLE[name]
        ax.plot(ks, base["curve"], style, lw=1, label=text)
    # exact baselines (least squares past k = d) sit near 1e-14: keep the axis on the model
    ax.set_ylim(bottom=max(min(result["curve"]) / 30, 1e-6))
    ax.set(xlabel="in-context examples k", ylabel="squared error / normaliser", yscale="log",
           title=f"{config.task.name}, step {summary['step']}")
    ax.legend(fontsize=8)
    if looped:
        ax = axes[0, 1]
        curve = result["last_point_vs_iteration"]
        ax.plot(range(1, len(curve) + 1), curve, "C0-")
        ax.axvline(config.loop_budget, color="k", ls=":", label=f"loop budget b = {config.loop_budget}")
        ax.set(xlabel="loop iteration", ylabel="error at the last point", yscale="log",
               title="fixed point beyond b?")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_probe(summaries: list[dict], path: Path) -> None:
    """The seed's Figure 1: probe error / d per layer or loop iteration, one line per probed
    model, its control task as a dashed line at the control's best state."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, summary in enumerate(summaries):
        err = summary["err"]
        ax.plot(range(len(err)), err, f"C{i}-", marker="o" if len(err) <= 25 else None, ms=3,
                label=summary["label"])
        if summary.get("control_err"):
            ax.axhline(min(summary["control_err"]), color=f"C{i}", ls="--", lw=1,
                       label=f"{summary['label']}: control (min over states)")
    if "err_predicting_zero" in summaries[0]:
        ax.axhline(summaries[0]["err_predicting_zero"], color="k", ls=":", lw=1, label="predicting 0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer / loop iteration (0 = read_in embedding)", ylabel="probe error / d",
           title=f"probing {summaries[0]['target']}, d={summaries[0]['n_dims']} n={summaries[0]['n_points']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
