"""Training (SPEC sections 4-6): curriculum, loss window with dilation, Adam, evaluation,
checkpoints and the run folder; the loop knobs of docs/loop_knobs.md (depth per step, backprop
depth, loss weights). Plain Python: progress goes to a `report` callback."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import run_folder
from .config import Config, backprop_depth, loop_span
from .depth import depth_of_step
from .diverged import Diverged, exploded
from .evaluation import Evaluator, eval_metrics
from .flops import train_flops_per_step
from .model import build_model
from .progress_bar import Progress
from .tasks import sample_prompts

Report = Callable[[dict, "str | None"], None]


def supervised_iterations(n_iterations: int, window: int, dilation: int = 1) -> list[int]:
    """1-based iterations whose predictions enter the loss of a forward pass of `n_iterations`
    (b at the curriculum's end): b, b-s, ..., b-(T-1)s (those >= 1)."""
    first = n_iterations - loop_span(window, dilation) + 1
    return [t for t in range(first, n_iterations + 1, dilation) if t >= 1]


def loss_weights(n_supervised: int, rule: str, decay: float) -> list[float]:
    """The weight of each supervised iteration (ascending), summing to 1: `uniform` 1/|S|, `last`
    only the last, `geometric` decay**j for the j-th supervised iteration before the last."""
    if rule == "uniform":
        return [1 / n_supervised] * n_supervised
    if rule == "last":
        return [0.0] * (n_supervised - 1) + [1.0]
    raw = [decay ** (n_supervised - 1 - j) for j in range(n_supervised)]
    return [w / sum(raw) for w in raw]


def loss_fn(model, config: Config, xs: torch.Tensor, ys: torch.Tensor, n_iterations: int) -> torch.Tensor:
    """Mean squared error over supervised iterations (weighted by training.loss_weights), prompts
    and all n positions; gradient through the last training.backprop_depth iterations."""
    if config.model.family == "standard":
        return torch.mean((model(xs, ys) - ys) ** 2)
    tr = config.training
    supervised = supervised_iterations(n_iterations, tr.n_loop_window, tr.loop_dilation)
    weights = loss_weights(len(supervised), tr.loss_weights, tr.loss_weight_decay)
    keep = [t for t, w in zip(supervised, weights) if w > 0]
    predictions = model(xs, ys, n_iterations, keep=keep, grad_from=max(1, n_iterations - backprop_depth(tr) + 1))
    errors = torch.stack([torch.mean((predictions[t] - ys) ** 2) for t in keep])
    if tr.loss_weights == "uniform":
        return errors.mean()             # the reference
    return (errors * errors.new_tensor([w for w in weights if w > 0])).sum()


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast_for(config: Config, device: torch.device):
    if config.training.precision == "bf16":
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """Adam as in SPEC section 6. `foreach` (multi-tensor) is bitwise identical to the per-tensor
    loop on CPU and saves per-parameter dispatch; PyTorch picks it by itself only on GPUs."""
    tr = config.training
    return torch.optim.Adam(model.parameters(), lr=tr.learning_rate, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=tr.weight_decay, foreach=True)


def train_step(model, optimizer, config: Config, xs: torch.Tensor, ys: torch.Tensor,
               n_iterations: int, autocast=contextlib.nullcontext) -> torch.Tensor:
    """One optimisation step on a batch; returns the detached loss (no host sync)."""
    with autocast():
        loss = loss_fn(model, config, xs, ys, n_iterations)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train(config: Config, report: Report | None = None, *, out_dir: str | Path | None = None,
          resume_from: str | Path | None = None, num_threads: int | None = None,
          device: str | None = None, progress: bool = False, compile: bool = False) -> dict:
    """Train `config` into the run folder `out_dir`; returns the final summary.

    `report(metrics, checkpoint_dir)` is called at every evaluation with flat scalar metrics
    and the checkpoint saved at that step (or None). `resume_from` is such a checkpoint; it is
    refused unless it was saved with this config (but for a longer training.train_steps).
    `compile=True` runs the backbone through torch.compile: it recompiles whenever the
    curriculum changes shapes, so it is off by default (bench/train_speed.py --compile and
    bench/gpu.py --compile measure whether it pays). It changes floating-point rounding
    slightly, not the mathematics.
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    device = resolve_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    tr, cur = config.training, config.curriculum
    run_dir = Path(out_dir) if out_dir else run_folder.new_run_dir(config.task.name)

    torch.manual_seed(tr.seed)
    model = build_model(config.model).to(device)
    if compile:
        model.backbone.compile()  # in place: parameter names and checkpoints stay the same
    optimizer = make_optimizer(model, config)
    data_rng = torch.Generator(device).manual_seed(tr.seed)
    step = 0
    if resume_from:
        step = run_folder.load_training_checkpoint(resume_from, config, model, optimizer, data_rng)
    run_folder.write_config(run_dir, config)
    log = run_folder.MetricsLog(run_dir, step if resume_from else None)
    evaluator = Evaluator(config, device)
    autocast = autocast_for(config, device)
    bar = Progress(tr.train_steps, step, label=config.task.name) if progress else None
    gflop = train_flops_per_step(config) / 1e9

    def ended(diverged: Diverged) -> Diverged:
        if bar:
            bar.close()
        return diverged

    model.train()
    loss_sum = torch.zeros((), device=device)
    t_log, steps_logged, depth_sum, started = time.perf_counter(), 0, 0, time.perf_counter()
    metrics: dict = {"step": step}
    result = None
    while step < tr.train_steps:
        dims, points, iterations = cur.dims.value(step), cur.points.value(step), depth_of_step(config, step)
        xs, ys = sample_prompts(config.task, config.model.n_dims, tr.batch_size, points, dims, data_rng)
        loss_sum += train_step(model, optimizer, config, xs, ys, iterations, autocast)
        steps_logged += 1
        depth_sum += iterations
        step += 1

        evaluating = step % tr.eval_every == 0 or step == tr.train_steps
        # every evaluation also closes a log interval, so reports never carry a stale loss
        if step % tr.log_every == 0 or evaluating:
            now = time.perf_counter()
            # the only host sync of the loop, once per log interval
            metrics = {"step": step, "train/loss": loss_sum.item() / steps_logged,
                       "curriculum/dims": dims, "curriculum/points": points, "curriculum/loops": iterations,
                       "train/mean_depth": depth_sum / steps_logged,
                       "perf/steps_per_s": steps_logged / (now - t_log),
                       "compute/gflop_per_step": gflop}
            log.write(metrics)
            if not math.isfinite(metrics["train/loss"]):
                raise ended(Diverged(step, metrics["train/loss"]))
            if bar:
                bar.update(step, loss=metrics["train/loss"], b=iterations)
            loss_sum.zero_()
            t_log, steps_logged, depth_sum = now, 0, 0
        checkpoint = None
        if step % tr.checkpoint_every == 0 or step == tr.train_steps:
            checkpoint = run_folder.write_training_checkpoint(run_dir, config, step, model, optimizer, data_rng)
        if evaluating:
            t_eval = time.perf_counter()
            result = evaluator(model, autocast)
            log.write({"step": step, "event": "eval", **result})
            if exploded(result["err_mean"]):     # a blow-up the loss (still finite) did not show
                raise ended(Diverged(step, result["err_mean"], "eval/err_mean"))
            metrics = {**metrics, "step": step, **eval_metrics(result, config)}
            if report:
                report(metrics, str(checkpoint) if checkpoint else None)
            t_log += time.perf_counter() - t_eval  # evaluation time does not count as training
    if bar:
        bar.close()
    if result is None:  # resumed from the final checkpoint: nothing trained, still summarise
        result = evaluator(model, autocast)
        metrics.update(eval_metrics(result, config))

    summary = {**metrics, "run_dir": str(run_dir), "wall_s": time.perf_counter() - started,
               "eval": result, "baselines": evaluator.baselines}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    from .plots import plot_eval  # matplotlib is imported only when a run finishes
    plot_eval(summary, config, run_dir / "eval.png")
    return summary
