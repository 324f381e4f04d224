"""The trainables as Ray Tune function trainables: the only module that knows Ray Tune's
report/checkpoint API (Ray renamed it three times in two years; mend it here only). Imported
only by the study service.

A trial's Tune config is plain data set by the study's driver, which resolved it once:
    {"config": the trial's fully resolved config mapping, "run_root": folder holding one run
     folder per trial, named by the Tune trial id, "continue_from": a finished run folder this
     trial continues to its longer training.train_steps (a study's next horizon), ...}
Every report carries `node_id`, the Ray node the trial runs on (Tune's own `node_ip` cannot
tell apart two nodes on one host), and `gpu_ids`, the GPUs Ray gave the trial ("0", "0,1"; ""
without). Ray sets CUDA_VISIBLE_DEVICES to them, so the trainer's "cuda" is the trial's own GPU.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path

import ray.tune
import torch

from .config import Config, from_dict
from .probing import PROBE_FOLDER, is_probe_checkpoint, probe
from .run_folder import latest_checkpoint
from .synthetic import synthetic
from .diverged import Diverged
from .training import train


def _scalars(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _report(metrics: dict, checkpoint_dir: str | Path | None) -> None:
    checkpoint = ray.tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    ray.tune.report({**metrics, "node_id": ray.get_runtime_context().get_node_id(),
                     "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}, checkpoint=checkpoint)


@contextlib.contextmanager
def _trial(tune_config: dict):
    """(config, run folder, torch threads, the checkpoint folder to resume from or None)."""
    context = ray.tune.get_context()
    threads = max(1, int(context.get_trial_resources().required_resources.get("CPU", 1)))
    out_dir = Path(tune_config["run_root"]) / context.get_trial_id()
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None and tune_config.get("continue_from"):
        yield from_dict(tune_config["config"]), out_dir, threads, _continued(Path(tune_config["continue_from"]), out_dir)
        return
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
        yield from_dict(tune_config["config"]), out_dir, threads, resume_from


def _continued(source: Path, out_dir: Path) -> Path:
    """The checkpoint to continue a finished run from: its last, copied with its config and
    metrics so far into this trial's run folder (not Tune's own files of the finished trial)."""
    last = latest_checkpoint(source) if source.is_dir() else None
    if last is None:
        raise FileNotFoundError(f"continue_from: no checkpoint in run folder '{source}' on node "
                                f"{ray.get_runtime_context().get_node_id()} (a longer horizon continues "
                                "each run from its folder: the study's results must be on storage every node reads)")
    copied = out_dir / last.relative_to(source)
    shutil.copytree(last, copied, dirs_exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy2(source / name, out_dir / name)
    return copied


def _ends_on_divergence(trainable):
    """A run whose loss became nan or inf ends its trial with a final report saying so (study.
    outcome classifies it failed): the trainable returns normally, so Tune neither marks it
    errored nor retries it, and `budget.max_failures` stays for lost nodes."""
    @functools.wraps(trainable)
    def ended(*args) -> None:
        try:
            trainable(*args)
        except Diverged as exc:
            _report(exc.metrics(), None)

    return ended


@_ends_on_divergence
def _training(function, tune_config: dict) -> None:
    """Tune function trainable around `function` (`train`'s contract), resuming from Tune's
    checkpoint.

    The last evaluation is reported only after `function` returns, with the run folder complete
    (summary.json, eval.png): a scheduler stops a trial at its final report (ASHA at max_t),
    which would otherwise kill it before the folder is written.
    """
    with _trial(tune_config) as (config, out_dir, threads, resume_from):
        def report(metrics: dict, checkpoint_dir: str | None) -> None:
            if metrics["step"] < config.training.train_steps:
                _report(metrics, checkpoint_dir)

        summary = function(config, report, out_dir=out_dir, resume_from=resume_from, num_threads=threads)
    _report(_scalars(summary), latest_checkpoint(out_dir))


def _check_gpus_visible() -> None:
    """A trial that Ray gave GPUs must see them in torch: it never trains on the CPU instead."""
    ids = ray.get_gpu_ids()
    if ids and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}: no usable driver or device" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(f"Ray gave this trial GPU {','.join(map(str, ids))} (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) but torch {torch.__version__} ({build}) "
                           "sees no CUDA device; it does not train on the CPU instead: fix the node's CUDA, "
                           "or set resources.gpu: 0")


def train_trainable(tune_config: dict) -> None:
    """`trainables.train` as a Tune trainable."""
    _check_gpus_visible()
    _training(train, tune_config)


def synthetic_trainable(tune_config: dict) -> None:
    """`trainables.synthetic`, the stand-in with a known answer, as a Tune trainable."""
    _training(synthetic, tune_config)


def _probe_step(config: Config, metrics: dict) -> dict:
    """A probe result on the trial's step axis: training steps, then probe steps."""
    return {**metrics, "step": config.training.train_steps + metrics["step"], "probe/step": metrics["step"]}


@_ends_on_divergence
def probe_trainable(tune_config: dict) -> None:
    """Train the trial's model, then fit its probes (`config.probe`) to every layer's or loop
    iteration's state; the trial's `step` runs on through the probe steps, whose results carry
    the probe metrics (probe/err_min, ...). The probe folder is <run folder>/probe. Resumes in
    whichever phase its checkpoint came from."""
    _check_gpus_visible()
    with _trial(tune_config) as (config, out_dir, threads, resume_from):
        def report_probe(metrics: dict, checkpoint_dir: str | None) -> None:
            if metrics["step"] < config.probe.steps:
                _report(_probe_step(config, metrics), checkpoint_dir)

        probing = resume_from is not None and is_probe_checkpoint(resume_from)
        if not probing:
            train(config, _report, out_dir=out_dir, resume_from=resume_from, num_threads=threads)
        probed = probe(config, report_probe, run_dir=out_dir, out_dir=out_dir / PROBE_FOLDER,
                       resume_from=resume_from if probing else None, num_threads=threads)
    _report(_probe_step(config, _scalars(probed)), latest_checkpoint(out_dir / PROBE_FOLDER))


# a study file's `trainable` -> its Tune function trainable (Tune names trials after the function)
TRAINABLES = {"train": train_trainable, "probe": probe_trainable, "synthetic": synthetic_trainable}
