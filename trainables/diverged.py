"""A training run whose loss became nan or inf (plain Python: the service reads it without torch)."""
from __future__ import annotations


class Diverged(ArithmeticError):
    """The training loss became nan or inf: the run cannot recover, so it ends failed (a trial
    is not retried for it). Seen at the log interval, the loop's one host sync: `step` is the
    log step where the interval's mean loss was not finite."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")
        self.step, self.value = step, value

    def metrics(self) -> dict:
        """The final report of a diverged run (`from_metrics` reads it back)."""
        return {"step": self.step, "diverged": 1.0, "diverged_at_step": self.step, "diverged_loss": self.value}

    @classmethod
    def from_metrics(cls, metrics: dict | None) -> "Diverged | None":
        """The divergence a final report carries, or None."""
        if not (metrics or {}).get("diverged"):
            return None
        return cls(int(metrics["diverged_at_step"]), float(metrics["diverged_loss"]))
