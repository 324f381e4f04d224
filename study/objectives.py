"""Which metrics a study may optimise: what each trainable reports, and which of the trainer's
test-time-depth metrics (docs/loop_knobs.md) the configs a study starts from report.

The trainer reports the test-time-depth metrics only for a looped model, and the error at m·b
only when m·b is scored (`eval.depth_multiples`, or `eval.iteration_counts` holding m·b). An
objective a trial does not report would stop the study at its first evaluation (ASHA and the
searcher need it), so `unreported` is checked on every base and compared config before Ray starts.
"""
from __future__ import annotations

import re

from trainables.config import Config

# what `trainables.train` reports at every evaluation for any model
PLAIN_TRAIN_METRICS = ("eval/err_last", "eval/err_mean", "train/loss", "compute/gflop_per_step",
                       "perf/steps_per_s", "train/mean_depth")
# ... and for a looped model: error at 2b / error at b (when 2b is scored); the relative state
# change at iteration b and at the deepest iteration scored (b > 1)
EXTRAPOLATION_RATIO = "eval/extrapolation_ratio"
STATE_CHANGES = ("eval/state_change_at_b", "eval/last_state_change")
# ... and the last-point error after m·b iterations, for each scored multiple m >= 2
ERR_AT_MULTIPLE = re.compile(r"eval/err_last_at_([1-9][0-9]*)b")
TRAIN_METRICS = (*PLAIN_TRAIN_METRICS, "eval/err_last_at_<m>b", EXTRAPOLATION_RATIO, *STATE_CHANGES)
# what the probe trainable reports once probing (its training reports TRAIN_METRICS first)
PROBE_METRICS = ("probe/err_min", "probe/err_argmin", "probe/err_first_state", "probe/err_last_state",
                 "probe/late_rise", "probe/late_rise_tail", "probe/argmin_depth",
                 "probe/control_err_min", "probe/selectivity")
# what the stand-in `synthetic` trainable reports (tests and load benchmarks of the service)
SYNTHETIC_METRICS = ("eval/err_last", "eval/err_mean", "train/loss")
METRICS = {"train": TRAIN_METRICS, "probe": PROBE_METRICS, "synthetic": SYNTHETIC_METRICS}
# config fields that decide whether a trial reports a test-time-depth metric
DEPTH_FIELDS = ("model.family", "curriculum.loops.end", "eval.iteration_counts", "eval.depth_multiples")


def is_reported(trainable: str, metric: str) -> bool:
    """Whether `trainable` reports `metric` for some config."""
    if trainable == "train" and ERR_AT_MULTIPLE.fullmatch(metric):
        return True
    return metric in METRICS[trainable] and not metric.startswith("eval/err_last_at_<")


def depth_metrics(config: Config, b_searched: bool = False) -> set[str]:
    """The test-time-depth metrics a run of `config` reports (trainables.evaluation.eval_metrics);
    with `b_searched` (the space draws b) only the multiples every b scores."""
    if config.model.family != "looped":
        return set()
    b, ev = config.loop_budget, config.eval
    counts = set() if b_searched else {n // b for n in ev.iteration_counts if n % b == 0}
    multiples = {m for m in {*ev.depth_multiples, *counts} if m >= 2}
    return ({f"eval/err_last_at_{m}b" for m in multiples} | ({EXTRAPOLATION_RATIO} if 2 in multiples else set())
            | (set(STATE_CHANGES) if b > 1 else set()))


def unreported(metric: str, configs: dict[str, Config], searched: list[str]) -> str | None:
    """Why some trial of these configs (label -> config) would not report the test-time-depth
    `metric`, with the space searching the dotted fields `searched`; None when every one does
    (and for the metrics every trial reports)."""
    if not (ERR_AT_MULTIPLE.fullmatch(metric) or metric in (EXTRAPOLATION_RATIO, *STATE_CHANGES)):
        return None
    drawn = [f for f in DEPTH_FIELDS if f in searched and f != "curriculum.loops.end"]
    if drawn:
        return f"the space searches {', '.join(drawn)}, so not every trial reports it"
    for label, config in configs.items():
        if metric not in depth_metrics(config, "curriculum.loops.end" in searched):
            found = ERR_AT_MULTIPLE.fullmatch(metric)
            multiple = found.group(1) if found else "2"
            hint = ("a standard model has no loop iterations" if config.model.family != "looped"
                    else f"b={config.loop_budget} has no state change to report" if metric in STATE_CHANGES
                    else f"add {multiple} to eval.depth_multiples (then every b scores {multiple}b)")
            return f"{label or 'the base config'} does not report it: {hint}"
    return None
