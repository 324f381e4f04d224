"""Probe fitting (SPEC section 8): how well every layer's / loop iteration's state decodes a target.

`probe(config, run_dir=...)` loads a trained run folder, trains all (state, target) probes at
once on fresh prompts, and writes its own run folder: config.yaml, metrics.jsonl,
checkpoints/, summary.json and probe.png. Plain Python: progress goes to a `report` callback.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from . import run_folder
from .config import Config, ConfigError
from .model import build_model
from .probe_heads import TARGETS, StackedProbes, evaluate, fit_step, n_targets, probe_prompts
from .progress_bar import Progress
from .training import Report, resolve_device

SETS = ("task", "control")   # control probes train on w = 1 prompts, are scored on random w
PROBE_FOLDER = "probe"       # a probe study trial's probe folder, inside its run folder


def load_trained(config: Config, run_dir: str | Path, device: torch.device):
    """The trained model of a run folder, checked against `config.model`."""
    trained, checkpoint = run_folder.load_run_config(run_dir)
    if trained.model != config.model:
        diff = [f"model.{k}" for k, v in vars(config.model).items() if getattr(trained.model, k) != v]
        raise ConfigError(f"{', '.join(diff)} differ from the run folder '{run_dir}' being probed")
    model = build_model(config.model).to(device)
    model.load_state_dict(run_folder.load_state(checkpoint, device=device)["model"])
    return model.eval().requires_grad_(False)


def state_count(config: Config) -> tuple[int, int]:
    """(number of probe states, loop iterations run; 0 for a standard model)."""
    if config.model.family == "standard":
        return config.model.n_layer + 1, 0
    iterations = config.probe.loop_iterations or config.loop_budget
    return iterations + 1, iterations


def is_probe_checkpoint(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds probes (else it is a training checkpoint)."""
    return "probes" in run_folder.load_state(folder)


def load_checkpoint(folder: str | Path, config: Config, probes, optimizer, rngs) -> int:
    state = run_folder.load_state(folder, config)
    probes.load_state_dict(state["probes"])
    optimizer.load_state_dict(state["optimizer"])
    for g, rng in zip(rngs, state["data_rng"]):
        g.set_state(rng)
    return state["step"]


def label_of(config: Config) -> str:
    m = config.model
    if m.family == "standard":
        return f"standard L={m.n_layer} D={m.n_embd}"
    return f"looped L={m.n_layer} D={m.n_embd} b={state_count(config)[1]}"


def probe(config: Config, report: Report | None = None, *, run_dir: str | Path,
          out_dir: str | Path | None = None, resume_from: str | Path | None = None,
          num_threads: int | None = None, device: str | None = None, progress: bool = False) -> dict:
    """Fit `config.probe` probes to the trained model in `run_dir`; returns the summary.

    Errors are the mean over coordinates of the squared error, averaged over targets: the
    paper's "error / d". `report(metrics, checkpoint_dir)` is called at every evaluation.
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    device = resolve_device(device)
    pr, d, n = config.probe, config.model.n_dims, config.curriculum.points.end
    model = load_trained(config, run_dir, device)
    n_states, iterations = state_count(config)
    sets = SETS if pr.control else SETS[:1]
    out = Path(out_dir) if out_dir else Path(run_dir) / f"probe_{pr.target}"

    def states(xs, ys):
        return model.states(xs, ys, iterations) if iterations else model.states(xs, ys)

    make_targets = TARGETS[pr.target]
    torch.manual_seed(pr.seed)
    probes = StackedProbes(len(sets), n_states, n_targets(pr.target, d, n), 2 * n,
                           config.model.n_embd, pr.hidden, d).to(device)
    optimizer = torch.optim.Adam(probes.parameters(), lr=pr.learning_rate)
    rngs = [torch.Generator(device).manual_seed(pr.seed + i) for i in range(len(sets))]
    eval_xs, eval_ys = probe_prompts(d, n, pr.batch_size, torch.Generator(device).manual_seed(pr.seed + 2))
    eval_targets = make_targets(eval_xs, eval_ys)
    step = load_checkpoint(resume_from, config, probes, optimizer, rngs) if resume_from else 0
    run_folder.write_config(out, config)
    log = run_folder.MetricsLog(out, step if resume_from else None)
    bar = Progress(pr.steps, step, label=f"probe {pr.target}") if progress else None

    train_err = torch.zeros(len(sets), n_states, device=device)
    since, t_log, started = 0, time.perf_counter(), time.perf_counter()
    metrics, event = {"step": step}, None
    while step < pr.steps:
        for i, name in enumerate(sets):
            xs, ys = probe_prompts(d, n, pr.batch_size, rngs[i], ones_w=name == "control")
            train_err[i] += fit_step(probes, states(xs, ys), make_targets(xs, ys), i, pr.chunk)
        optimizer.step()
        step += 1
        since += 1
        if bar:
            bar.update(step, err=(train_err[0] / since).min().item())
        if step % pr.eval_every and step < pr.steps:
            continue
        checkpoint = run_folder.save_checkpoint(out, config, step, {
            "probes": probes.state_dict(), "optimizer": optimizer.state_dict(),
            "data_rng": [g.get_state() for g in rngs]})
        rate = since / (time.perf_counter() - t_log)
        errors = evaluate(probes, states(eval_xs, eval_ys), eval_targets, pr.chunk)
        event = eval_event(step, sets, errors, train_err / since)
        log.write(event)
        metrics = {**scalars(event), "perf/steps_per_s": rate}
        if report:
            report(metrics, str(checkpoint))
        train_err.zero_()
        since, t_log = 0, time.perf_counter()
    if bar:
        bar.close()
    if event is None:  # resumed from the final checkpoint: nothing trained, still summarise
        event = eval_event(step, sets, evaluate(probes, states(eval_xs, eval_ys), eval_targets, pr.chunk))
        metrics = scalars(event)

    summary = {**metrics, "run_dir": str(out), "trained_run": str(run_dir), "label": label_of(config),
               "family": config.model.family, "target": pr.target, "n_dims": d, "n_points": n,
               "err": event["err"], "control_err": event.get("control_err"),
               "err_predicting_zero": (eval_targets ** 2).mean().item(),
               "wall_s": time.perf_counter() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    from .plots import plot_probe  # matplotlib is imported only when a run finishes
    plot_probe([summary], out / "probe.png")
    return summary


def eval_event(step: int, sets: tuple[str, ...], errors: torch.Tensor,
               train_err: torch.Tensor | None = None) -> dict:
    """metrics.jsonl's record: per-state errors, "err" for the task, "control_err" for the control."""
    event: dict = {"step": step, "event": "eval"}
    for i, name in enumerate(sets):
        prefix = "" if name == "task" else f"{name}_"
        event[prefix + "err"] = errors[i].tolist()
        if train_err is not None:
            event[prefix + "train_err"] = train_err[i].tolist()
    return event


def late_rise(err: list[float]) -> dict:
    """The seed's question of one probe curve (README, Probing): does the error rise again after
    its minimum? With m = min over states, k its state and S states:
    probe/late_rise = (err[S-1] - m) / m (0 when the last state is the best),
    probe/late_rise_tail = (mean of the last ceil(S/4) states - m) / m,
    probe/argmin_depth = k / (S - 1) (0 the embedding, 1 the last layer or iteration)."""
    best = min(range(len(err)), key=err.__getitem__)
    low, tail = err[best], err[-math.ceil(len(err) / 4):]
    relative = (lambda value: (value - low) / low) if low > 0 else (lambda value: 0.0)
    return {"probe/late_rise": relative(err[-1]), "probe/late_rise_tail": relative(sum(tail) / len(tail)),
            "probe/argmin_depth": best / (len(err) - 1) if len(err) > 1 else 1.0}


def scalars(event: dict) -> dict:
    """Flat metrics of an evaluation event: "probe/err_min", "probe/err_last_state", ..."""
    err = event["err"]
    best = min(range(len(err)), key=err.__getitem__)
    out = {"step": event["step"], "probe/err_min": err[best], "probe/err_argmin": best,
           "probe/err_first_state": err[0], "probe/err_last_state": err[-1], **late_rise(err)}
    if "train_err" in event:
        out["probe/train_err_mean"] = sum(event["train_err"]) / len(err)
    if "control_err" in event:
        out["probe/control_err_min"] = min(event["control_err"])
        out["probe/selectivity"] = out["probe/control_err_min"] - err[best]
    return out
