"""How a finished trial is classified, the same way in Optuna, in MLflow and in `status`.

A trial is completed only when it trained all its steps; stopped earlier (by ASHA, or by the
study's time limit) it is pruned; an error makes it failed. Every state carries a reason.
"""
from __future__ import annotations

from optuna.trial import TrialState

from analysis.layout import COMPLETED, FAILED, PRUNED, RUNNING

OPTUNA_STATE = {COMPLETED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAILED: TrialState.FAIL}
FROM_OPTUNA = {v: k for k, v in OPTUNA_STATE.items()}
MLFLOW_STATUS = {COMPLETED: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED", RUNNING: "RUNNING"}


def classify(result: dict | None, error: bool, max_steps: int) -> tuple[str, str]:
    """(state, reason) of a trial that ended with last result `result`."""
    if error:
        return FAILED, "the trial raised an error"
    step = (result or {}).get("step")
    if step is None:
        return PRUNED, "stopped before its first evaluation"
    if step >= max_steps:
        return COMPLETED, f"trained all {max_steps} steps"
    return PRUNED, f"stopped early at step {step} of {max_steps} (ASHA rung or time limit)"


def objective_values(result: dict | None, metrics: list[str]) -> list[float] | None:
    """The objective values in `result`, or None when any is missing."""
    values = [(result or {}).get(m) for m in metrics]
    return None if any(v is None for v in values) else [float(v) for v in values]
