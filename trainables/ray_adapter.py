"""The trainables as Ray Tune function trainables: the only module that knows Ray Tune's
report/checkpoint API (Ray renamed it three times in two years; mend it here only).

A trial's Tune config is plain data set by the study runner:
    {"base": preset name or YAML path, "overrides": {dotted: value}, "params": {dotted: value},
     "run_root": folder holding one run folder per trial, named by the Tune trial id, ...}
Every report carries `node_id`, the Ray node the trial runs on (Tune's own `node_ip` cannot
tell apart two nodes on one host).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import ray.tune

from .config import load_config
from .probe import PROBE_FOLDER, is_probe_checkpoint, probe
from .run_folder import latest_checkpoint
from .train import train


def trial_config(tune_config: dict):
    """The resolved Config of a trial: base, then the study's overrides, then the sampled params."""
    return load_config(tune_config["base"], {**tune_config["overrides"], **tune_config["params"]})


def _scalars(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _trial() -> tuple[str, int]:
    """(the Tune trial id, which names the trial's run folder under run_root; its torch threads)."""
    context = ray.tune.get_context()
    return context.get_trial_id(), max(1, int(context.get_trial_resources().required_resources.get("CPU", 1)))


def _report(metrics: dict, checkpoint_dir: str | Path | None) -> None:
    checkpoint = ray.tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    ray.tune.report({**metrics, "node_id": ray.get_runtime_context().get_node_id()}, checkpoint=checkpoint)


def train_trainable(tune_config: dict) -> None:
    """Tune function trainable around `trainables.train`, resuming from Tune's checkpoint.

    The last evaluation is reported only after `train` returns, with the run folder complete
    (summary.json, eval.png): a scheduler stops a trial at its final report (ASHA at max_t),
    which would otherwise kill it before the folder is written.
    """
    config = trial_config(tune_config)
    trial_id, threads = _trial()
    checkpoint = ray.tune.get_checkpoint()
    out_dir = Path(tune_config["run_root"]) / trial_id

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        if metrics["step"] < config.training.train_steps:
            _report(metrics, checkpoint_dir)

    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
        summary = train(config, report, out_dir=out_dir, resume_from=resume_from, num_threads=threads)
    _report(_scalars(summary), latest_checkpoint(out_dir))


def probe_trainable(tune_config: dict) -> None:
    """Train the trial's model, then fit its probes (`config.probe`) to every layer's or loop
    iteration's state; the trial's `step` runs on through the probe steps, whose results carry
    the probe metrics (probe/err_min, ...). The probe folder is <run folder>/probe. Resumes in
    whichever phase its checkpoint came from."""
    config = trial_config(tune_config)
    trial_id, threads = _trial()
    checkpoint = ray.tune.get_checkpoint()
    out_dir = Path(tune_config["run_root"]) / trial_id
    trained_steps = config.training.train_steps

    def report_probe(metrics: dict, checkpoint_dir: str | None) -> None:
        if metrics["step"] < config.probe.steps:
            _report({**metrics, "step": trained_steps + metrics["step"], "probe/step": metrics["step"]},
                    checkpoint_dir)

    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
        probing = resume_from is not None and is_probe_checkpoint(resume_from)
        if not probing:
            train(config, _report, out_dir=out_dir, resume_from=resume_from, num_threads=threads)
        probed = probe(config, report_probe, run_dir=out_dir, out_dir=out_dir / PROBE_FOLDER,
                       resume_from=resume_from if probing else None, num_threads=threads)
    _report({**_scalars(probed), "step": trained_steps + probed["step"], "probe/step": probed["step"]},
            latest_checkpoint(out_dir / PROBE_FOLDER))
