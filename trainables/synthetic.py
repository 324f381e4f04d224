"""A stand-in for `train`, for tests and load benchmarks of the study service: milliseconds per
trial, the same run folder, report and checkpoint protocol, and a known answer.

    eval/err_last at step t = level + (1 - level) * exp(-t / tau)
    tau = synthetic.steps_to_learn (default train_steps / 4)
          * (1 + synthetic.slowdown_per_dilation * (s - 1))
    level = 0.5 + synthetic.effect_per_dilation * (s - 1) + 0.1 * |log10(lr / 1e-3)|
            + shared(training.seed) + own(config, training.seed)

`shared` ~ N(0, synthetic.seed_sd) depends on the training seed alone, so configs trained on the
same seed share it (common random numbers); `own` ~ N(0, synthetic.noise_sd) differs per config.
Each evaluation sleeps synthetic.eval_s, which the answer does not depend on. With
steps_to_learn set, the curve's shape depends on the step alone, so a run continued to more steps
goes on along it (a longer horizon), though its `own` noise is drawn again (training.train_steps
is part of the config it is keyed on); slowdown_per_dilation makes s a learning-speed effect.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from . import run_folder
from .config import Config
from .training import Report


def level(config: Config) -> float:
    tr, sy = config.training, config.synthetic
    own_key = json.dumps({k: v for k, v in config.flat().items() if k not in ("training.seed", "synthetic.eval_s")},
                         sort_keys=True, default=str)
    shared = random.Random(tr.seed).gauss(0, sy.seed_sd)
    own = random.Random(f"{own_key}/{tr.seed}").gauss(0, sy.noise_sd)
    return (0.5 + sy.effect_per_dilation * (tr.loop_dilation - 1)
            + 0.1 * abs(math.log10(tr.learning_rate / 1e-3)) + shared + own)


def time_constant(config: Config) -> float:
    tr, sy = config.training, config.synthetic
    steps = tr.train_steps / 4 if sy.steps_to_learn is None else sy.steps_to_learn
    return steps * (1 + sy.slowdown_per_dilation * (tr.loop_dilation - 1))


def synthetic(config: Config, report: Report | None = None, *, out_dir: str | Path,
              resume_from: str | Path | None = None, **_) -> dict:
    """`train`'s contract (arguments it does not need are ignored); returns the summary."""
    tr, run_dir = config.training, Path(out_dir)
    step = run_folder.load_state(resume_from, config)["step"] if resume_from else 0
    run_folder.write_config(run_dir, config)
    log = run_folder.MetricsLog(run_dir, step if resume_from else None)
    floor, tau = level(config), time_constant(config)

    def evaluated(step: int) -> tuple[dict, list[float]]:
        err = floor + (1 - floor) * math.exp(-step / tau)
        curve = [1.0 + (err - 1.0) * k / 10 for k in range(11)]
        return {"step": step, "eval/err_last": err, "eval/err_mean": sum(curve) / len(curve),
                "train/loss": 4 * err}, curve

    metrics, curve = evaluated(step)        # resumed from the final checkpoint: still summarised
    while step < tr.train_steps:
        step = min(step + tr.eval_every - step % tr.eval_every, tr.train_steps)
        time.sleep(config.synthetic.eval_s)
        metrics, curve = evaluated(step)
        log.write(metrics)
        checkpoint = None
        if step % tr.checkpoint_every == 0 or step == tr.train_steps:
            checkpoint = run_folder.save_checkpoint(run_dir, config, step, {})
        if report:
            report(metrics, str(checkpoint) if checkpoint else None)
    summary = {**metrics, "run_dir": str(run_dir), "baselines": {},
               "eval": {"curve": curve, "band_lo": curve, "band_hi": curve,
                        "err_last": metrics.get("eval/err_last"), "err_mean": metrics.get("eval/err_mean")}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
