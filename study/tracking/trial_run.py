"""What a trial's MLflow run holds, apart from writing it (study/tracking/runs.py): its name for a
human, the config fields it logs as params, the loop count b it trained at its last step, and
its science curves as metrics MLflow can overlay across runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

from mlflow.entities import Metric

from analysis.layout import REPLICATE, fmt, short_label
from trainables.config import Config, Schedule, from_dict
from trainables.probing import PROBE_FOLDER


def trial_config(tune_config: dict) -> Config:
    """The trial's config, as the driver resolved it into its Tune config."""
    return from_dict(tune_config["config"])


def trial_name(tune_config: dict) -> str:
    """`t007 s=2 T=15 b=60 D=64` (looped) or `t007 L=12 D=256`, plus other sampled values;
    `t007r1 ...` for the second seed of a config, `t007.rep1 ... seed=12` for a replicate
    (`t007.rep1@3000` continued to a question's longer horizon); in
    a scientific study `v2.t007 ...`, trial 7 of the second compared value. b is
    the loop count the curriculum trains: `b=8..12` when it still grows within training (with a
    depth sampled per step, b is the depth evaluated)."""
    config, sampled, number = trial_config(tune_config), tune_config["sampled"], tune_config["trial"]
    m, tr = config.model, config.training
    first, last = config.loops_trained() if tr.depth_sampling == "curriculum" else (config.loop_budget,) * 2
    trained = f"{first}..{last}" if first != last else last     # the b actually trained, not the end
    shown = {"s": tr.loop_dilation, "T": tr.n_loop_window, "b": trained} \
        if m.family == "looped" else {"L": m.n_layer}
    shown["D"] = m.n_embd
    for key, value in sampled.items():
        shown.setdefault(short_label(key), value)
    label = f"v{tune_config['value']}.t{number:03d}" if tune_config.get("value") else f"t{number:03d}"
    if tune_config.get("phase") == REPLICATE:
        label += f".rep{tune_config['repeat']}"
        if tune_config.get("horizon_index"):       # a question's longer horizon: `v2.t000.rep3@3000`
            label += f"@{tune_config['horizon']}"
    elif tune_config["repeats"] > 1:
        label += f"r{tune_config['repeat']}"
    return " ".join([label] + [f"{k}={fmt(v, 3)}" for k, v in shown.items()])


# task fields read by one task only (trainables/tasks.py); the probe and synthetic sections are
# read by the trainable of that name only
TASK_FIELD_READER = {"task.sparsity": "sparse_linear_regression", "task.noise_std": "noisy_linear_regression",
                     "task.hidden": "relu_2nn_regression", "task.depth": "decision_tree"}
TRAINABLE_SECTIONS = ("probe", "synthetic")
CURVES = "curve/"            # metric namespace of the science curves, stepped by k or by iteration


def logged_params(config: Config, trainable: str) -> dict[str, object]:
    """The config fields a trial's run logs as params: those its trainable and task read, and
    any other not at its default (so that the params still rebuild the exact config; the whole
    config is the run's config.yaml)."""
    defaults = Config().flat()

    def read(key: str) -> bool:
        section = key.split(".", 1)[0]
        if section in TRAINABLE_SECTIONS:
            return trainable == section
        return TASK_FIELD_READER.get(key, config.task.name) == config.task.name

    return {k: v for k, v in config.flat().items() if read(k) or v != defaults.get(k)}


def loops_trained(params: dict[str, str], steps: int) -> int | None:
    """b at a looped run's last training step (of `steps`), from its params; None otherwise.
    With a depth sampled per step (a draw, not a schedule), b: the depth it is evaluated at."""
    if params.get("model.family") != "looped" or steps < 1:
        return None
    if params.get("training.depth_sampling", "curriculum") != "curriculum":
        return int(params["curriculum.loops.end"])
    loops = Schedule(*(int(params[f"curriculum.loops.{k}"]) for k in ("start", "end", "inc", "interval")))
    return loops.value(min(steps, int(params["training.train_steps"])) - 1)


def science_curves(run_dir: Path) -> list[Metric]:
    """A finished trial's curves from its summary.json files, as metrics MLflow can overlay
    across runs: error vs in-context examples (step = k, the examples before the query), for a
    looped model last-point error vs loop iteration (step = iteration), the relative state change
    vs iteration (step = iteration, from 2), the last-point error at each iteration count scored
    (b, eval.iteration_counts, eval.depth_multiples x b; step = the count) and the error curve at
    each extra count, for a probe trial probe error vs state."""
    now = int(time.time() * 1000)
    curves: dict[str, list] = {}
    if (run_dir / "summary.json").is_file():
        evaluation = json.loads((run_dir / "summary.json").read_text()).get("eval") or {}
        curves[CURVES + "err_vs_k"] = evaluation.get("curve", [])
        curves[CURVES + "err_vs_iteration"] = [None] + evaluation.get("last_point_vs_iteration", [])
        curves[CURVES + "state_change_vs_iteration"] = [None] + (evaluation.get("state_change") or [])
        scored = {int(n): err for n, err in (evaluation.get("err_last_at_iterations") or {}).items()}
        curves[CURVES + "err_last_at_scored_iterations"] = [scored.get(n) for n in range(max(scored, default=-1) + 1)]
        for count, curve in (evaluation.get("curves_at_iterations") or {}).items():
            if curve != evaluation.get("curve"):
                curves[f"{CURVES}err_vs_k_at_{count}_iterations"] = curve
    if (run_dir / PROBE_FOLDER / "summary.json").is_file():
        probe = json.loads((run_dir / PROBE_FOLDER / "summary.json").read_text())
        curves[CURVES + "probe_err_vs_state"] = probe.get("err") or []
        curves[CURVES + "probe_control_err_vs_state"] = probe.get("control_err") or []
    return [Metric(key, float(value), now, step) for key, values in curves.items()
            for step, value in enumerate(values) if value is not None]
