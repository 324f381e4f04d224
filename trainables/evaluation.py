"""Held-out evaluation (SPEC section 7): normalised error per in-context count k, a bootstrap
band, three baselines, and the looped model's last-point error versus iteration count; for the
test-time depth axis (docs/loop_knobs.md) the error at depths past b and how much each
iteration still changes the state."""
from __future__ import annotations

import torch

from .config import Config
from .tasks import normaliser, sample_prompts


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares on the first k points, predicting point k (0 at k = 0)."""
    preds = torch.zeros_like(ys)
    for k in range(1, ys.shape[1]):
        w = torch.linalg.pinv(xs[:, :k]) @ ys[:, :k].unsqueeze(2)
        preds[:, k] = (xs[:, k:k + 1] @ w).squeeze(2).squeeze(1)
    return preds


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, neighbours: int = 3) -> torch.Tensor:
    """Mean y of the min(k, 3) nearest of the first k points (uniform weights)."""
    preds = torch.zeros_like(ys)
    for k in range(1, ys.shape[1]):
        dist = torch.cdist(xs[:, k:k + 1], xs[:, :k]).squeeze(1)
        nearest = dist.topk(min(k, neighbours), dim=1, largest=False).indices
        preds[:, k] = ys[:, :k].gather(1, nearest).mean(dim=1)
    return preds


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """w = mean_j x_j y_j over the first k points."""
    sums = torch.cumsum(xs * ys.unsqueeze(2), dim=1)
    counts = torch.arange(1, ys.shape[1] + 1, dtype=xs.dtype, device=xs.device).view(1, -1, 1)
    w = torch.cat([torch.zeros_like(sums[:, :1]), (sums / counts)[:, :-1]], dim=1)
    return (xs * w).sum(dim=2)


BASELINES = {"least_squares": least_squares, "3nn": nearest_neighbours, "averaging": averaging}


def bootstrap_band(errors: torch.Tensor, resamples: int, seed: int) -> tuple[list, list]:
    """5% and 95% quantiles of the per-k mean over prompts, from resampled prompts.

    errors is [prompts, k]; each resample's mean is a count-weighted sum, so all resamples
    are one matmul.
    """
    n_prompts = errors.shape[0]
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n_prompts, (resamples, n_prompts), generator=gen)
    counts = torch.zeros(resamples, n_prompts, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(resamples, n_prompts, dtype=torch.float64))
    means = counts @ errors.double().cpu() / n_prompts
    lo, hi = torch.quantile(means, torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    return lo.tolist(), hi.tolist()


def summarise(errors: torch.Tensor, resamples: int, seed: int) -> dict:
    """Per-k mean error with its band, for a [prompts, k] tensor of normalised squared errors."""
    lo, hi = bootstrap_band(errors, resamples, seed)
    curve = errors.double().mean(dim=0)
    return {"curve": curve.tolist(), "band_lo": lo, "band_hi": hi,
            "err_last": float(curve[-1]), "err_mean": float(curve.mean())}


class StateChange:
    """Receives a looped model's states Y_1, Y_2, ... (as its `trace`) and keeps, per prompt,
    only ||Y_t - Y_{t-1}|| / ||Y_{t-1}|| (norms over the prompt's tokens and width), t >= 2."""

    def __init__(self):
        self.previous, self.changes = None, []

    def append(self, state: torch.Tensor) -> None:
        state = state.float()
        if self.previous is not None:
            self.changes.append((state - self.previous).flatten(1).norm(dim=1) / self.previous.flatten(1).norm(dim=1))
        self.previous = state


class Evaluator:
    """A fixed held-out set (full d and n, its own seed) and its baselines, built once."""

    def __init__(self, config: Config, device: torch.device | str = "cpu", chunk: int = 256):
        self.config, self.chunk = config, chunk
        task, model = config.task, config.model
        gen = torch.Generator().manual_seed(config.eval.seed)
        xs, ys = sample_prompts(task, model.n_dims, config.eval.n_prompts,
                                config.curriculum.points.end, model.n_dims, gen)
        self.scale = normaliser(task, model.n_dims)
        self.baselines = {name: summarise(self._errors(fn(xs.double(), ys.double()), ys),
                                          config.eval.bootstrap, config.eval.seed)
                          for name, fn in BASELINES.items()}
        self.xs, self.ys = xs.to(device), ys.to(device)

    def _errors(self, preds: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return (preds.to(ys.device, ys.dtype) - ys) ** 2 / self.scale

    @torch.no_grad()
    def __call__(self, model, autocast) -> dict:
        """Scores the model; a looped model at its loop budget b, at eval.iteration_counts and
        eval.depth_multiples x b, and per iteration."""
        config = self.config
        was_training = model.training
        model.eval()
        looped = config.model.family == "looped"
        b = config.loop_budget
        iteration_counts = sorted({b, *config.eval.iteration_counts,
                                   *(m * b for m in config.eval.depth_multiples)}) if looped else []
        chunks: list[torch.Tensor] = []
        changes: list[torch.Tensor] = []
        for start in range(0, self.xs.shape[0], self.chunk):
            xs, ys = self.xs[start:start + self.chunk], self.ys[start:start + self.chunk]
            with autocast():
                if looped:
                    # every iteration up to the largest count, for the last-point-vs-iteration curve
                    last, trace = iteration_counts[-1], StateChange()
                    preds = model(xs, ys, last, keep=range(1, last + 1), trace=trace)
                    chunks.append(torch.stack([self._errors(preds[t], ys) for t in range(1, last + 1)]))
                    changes.append(torch.stack(trace.changes) if trace.changes else torch.zeros(0, len(xs)))
                else:
                    chunks.append(self._errors(model(xs, ys), ys))
        model.train(was_training)
        resamples, seed = config.eval.bootstrap, config.eval.seed
        if not looped:
            return summarise(torch.cat(chunks), resamples, seed)
        trace = torch.cat(chunks, dim=1)  # [iteration, prompts, k]
        result = summarise(trace[b - 1], resamples, seed)
        result["curves_at_iterations"] = {n: trace[n - 1].double().mean(dim=0).tolist()
                                          for n in iteration_counts}
        result["last_point_vs_iteration"] = trace[:, :, -1].double().mean(dim=1).tolist()
        result["err_last_at_iterations"] = {n: float(trace[n - 1, :, -1].double().mean()) for n in iteration_counts}
        # entry t-1 for iteration t, as last_point_vs_iteration; iteration 1 has no predecessor
        result["state_change"] = [None] + torch.cat(changes, dim=1).double().mean(dim=1).tolist()
        return result


def eval_metrics(result: dict, config: Config) -> dict[str, float]:
    """The scalar metrics of an evaluation, as reported to a study (docs/loop_knobs.md):
    eval/err_last and eval/err_mean; for a looped model also eval/err_last_at_{m}b at each
    evaluated multiple m >= 2 of b, eval/extrapolation_ratio (error at 2b / error at b, when 2b
    is evaluated), eval/state_change_at_b and eval/last_state_change (at the deepest iteration)."""
    metrics = {"eval/err_last": result["err_last"], "eval/err_mean": result["err_mean"]}
    at = result.get("err_last_at_iterations")
    if at is None:
        return metrics
    b = config.loop_budget
    for n, err in at.items():
        if n > b and n % b == 0:
            metrics[f"eval/err_last_at_{n // b}b"] = err
    if 2 * b in at and at[b] > 0:
        metrics["eval/extrapolation_ratio"] = at[2 * b] / at[b]
    changes = result["state_change"]
    if b > 1:
        metrics["eval/state_change_at_b"] = changes[b - 1]
        metrics["eval/last_state_change"] = changes[-1]
    return metrics
