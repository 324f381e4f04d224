"""A self-contained run folder: config.yaml, metrics.jsonl, checkpoints/, summary.json, eval.png.

A checkpoint holds everything a bitwise-exact continuation needs: model (or probes), optimizer,
the step counter (which fixes the curriculum) and every RNG state, beside the config it was
trained with; a run is only continued with that same config.
"""
from __future__ import annotations

import json
import pickle
import shutil
import time
import zipfile
from pathlib import Path

import torch

from .config import EXTENDABLE, Config, ConfigError, first_difference, from_dict
from .jsonl import read_jsonl
from .schema import read_yaml, shown

CHECKPOINT_FILE = "state.pt"
KEEP_CHECKPOINTS = 2


def new_run_dir(name: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, config: Config) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:          # a file in the way, no permission
        raise ConfigError(f"{run_dir}: cannot be a run folder: {exc.strerror}") from None
    (run_dir / "config.yaml").write_text(config.to_yaml())


def read_config(path: Path) -> Config:
    if not path.is_file():
        raise ConfigError(f"'{path}' not found: is this a run folder or checkpoint of `loopstudy train`?")
    data = read_yaml(path)
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step_????????"))   # not a half-written step_*.tmp
    return found[-1] if found else None


def load_run_config(run_dir: str | Path) -> tuple[Config, Path]:
    """The resolved config of a run folder and its newest checkpoint (for `train --resume`)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir / "config.yaml")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"run folder '{run_dir}' has no checkpoint to resume from")
    return config, checkpoint


def save_checkpoint(run_dir: Path, config: Config, step: int, state: dict) -> Path:
    """run_dir/checkpoints/step_XXXXXXXX/{state.pt, config.yaml}; the newest KEEP_CHECKPOINTS stay."""
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, **state}, tmp / CHECKPOINT_FILE)
    (tmp / "config.yaml").write_text(config.to_yaml())
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a crash mid-save never leaves a half-written checkpoint behind
    for old in sorted((run_dir / "checkpoints").glob("step_????????"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    return folder


def load_state(folder: str | Path, config: Config | None = None, device="cpu") -> dict:
    """A checkpoint's state; with `config`, refused unless it was saved with that config."""
    folder = Path(folder)
    if config is not None and (folder / "config.yaml").is_file():
        check_same_config(read_config(folder / "config.yaml"), config, folder)
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):        # what torch.save writes; a file cut short is none
        raise ConfigError(f"{path}: not a checkpoint (cut short, or not written by torch.save)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, UnicodeDecodeError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"{path}: a damaged checkpoint ({shown(' '.join(str(exc).split()))})") from None


def check_same_config(saved: Config, given: Config, where: Path) -> None:
    difference = first_difference(saved, given, ignore=EXTENDABLE)
    if difference:
        raise ConfigError(f"'{where}' was trained with another config ({difference}): a run is only "
                          "continued with the config it started with; start a new run folder instead")


def write_training_checkpoint(run_dir: Path, config: Config, step: int, model, optimizer,
                              generator: torch.Generator) -> Path:
    return save_checkpoint(run_dir, config, step, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "data_rng": generator.get_state(), "torch_rng": torch.get_rng_state()})


def load_training_checkpoint(folder: str | Path, config: Config, model, optimizer,
                             generator: torch.Generator) -> int:
    state = load_state(folder, config)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


class MetricsLog:
    """metrics.jsonl: one JSON object per event; on resume, events past the checkpoint are dropped."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [event for event in _events(self.path) if event["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(event) + "\n" for event in kept))
        elif resume_step is None:
            self.path.write_text("")

    def write(self, event: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")


def _events(path: Path) -> list[dict]:
    """metrics.jsonl's events (a last line cut by a crash is dropped)."""
    return read_jsonl(path, lambda e: isinstance(e, dict) and isinstance(e.get("step"), int), "an event with a step")


def read_metrics(run_dir: str | Path) -> list[dict]:
    return _events(Path(run_dir) / "metrics.jsonl")
