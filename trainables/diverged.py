"""A training run that diverged (plain Python: the service reads it without torch).

The rule (README, "Divergence"): a run diverged when the mean training loss of a log interval is
nan or inf, or when an evaluation's error at the trained depth (eval/err_mean, normalised so that
predicting 0 scores about 1: SPEC section 7) is not finite or above EXPLODED times that trivial
error. A model that learned nothing stays near 1 (it predicts about 0); far above it, the
weights have blown up, as a too-large learning rate does while the loss stays finite.
"""
from __future__ import annotations

import math

EXPLODED = 100.0      # times the error of predicting 0 (normalised to 1) an evaluation may reach


class Diverged(ArithmeticError):
    """The run cannot recover, so it ends diverged (a trial is not retried for it). `what` is the
    quantity that blew up ("loss", or "eval/err_mean"), `step` the step it was seen at."""

    def __init__(self, step: int, value: float, what: str = "loss"):
        beyond = f" (over {EXPLODED:g}x the error of predicting 0)" if math.isfinite(value) else ""
        super().__init__(f"{what} became {value:.4g} at step {step}{beyond}")
        self.step, self.value, self.what = step, value, what

    def metrics(self) -> dict:
        """The final report of a diverged run (`from_metrics` reads it back)."""
        return {"step": self.step, "diverged": 1.0, "diverged_at_step": self.step,
                "diverged_value": self.value, "diverged_what": self.what}

    @classmethod
    def from_metrics(cls, metrics: dict | None) -> "Diverged | None":
        """The divergence a final report carries, or None."""
        if not (metrics or {}).get("diverged"):
            return None
        value = metrics.get("diverged_value", metrics.get("diverged_loss"))   # the key before finite rules
        return cls(int(metrics["diverged_at_step"]), float(value), metrics.get("diverged_what", "loss"))


def exploded(err_mean: float) -> bool:
    """Whether an evaluation's error at the trained depth says the run diverged."""
    return not math.isfinite(err_mean) or err_mean > EXPLODED
