"""How a finished trial is classified, the same way in Optuna, in MLflow and in `status`.

A trial is completed only when it trained all its steps; stopped earlier (by ASHA, or by the
study's time limit) it is pruned; an error makes it failed; a loss or error that blew up (its
final report says so: trainables.diverged.Diverged) makes it diverged. Every state carries a
reason.
"""
from __future__ import annotations

from optuna.trial import TrialState

from analysis.layout import COMPLETED, DIVERGED, FAILED, PRUNED, RUNNING, STATE
from trainables.diverged import Diverged

OPTUNA_STATE = {COMPLETED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAILED: TrialState.FAIL,
                DIVERGED: TrialState.FAIL}
# Optuna has no diverged state: the searcher writes ours as a user attribute (`state_of`)
FROM_OPTUNA = {TrialState.COMPLETE: COMPLETED, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}
# a pruned run ended as planned (stopped by a rule, its `state` tag says pruned), not in error:
# MLflow's KILLED would draw it with a failure's red cross
MLFLOW_STATUS = {COMPLETED: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", DIVERGED: "FAILED",
                 RUNNING: "RUNNING"}


def classify(result: dict | None, error: bool, max_steps: int) -> tuple[str, str]:
    """(state, reason) of a trial that ended with last result `result`, `max_steps` the last step
    of its phase (of the replicate phase, which stops no trial early: the fewest of its trials')."""
    if error:
        return FAILED, "the trial raised an error"
    diverged = Diverged.from_metrics(result)
    # FAIL in Optuna (TrialState.FAIL), like Optuna's own verdict on a nan objective. TPE
    # fits only COMPLETE and PRUNED trials, so it is not pushed away from a diverging region, but
    # it draws candidates around the good trials, so it is not drawn there either. PRUNED would
    # push it away but make Optuna and `status` call a broken run pruned (as if ASHA had judged
    # it); a made-up large value would enter the best trial, importances and seed statistics.
    if diverged:
        return DIVERGED, str(diverged)
    step = (result or {}).get("step")
    if step is None:
        return PRUNED, "stopped before its first evaluation"
    if step >= max_steps:
        return COMPLETED, f"trained all {step} steps"
    # the study's time limit stops trials without completing them (study/runner.py marks those)
    return PRUNED, f"stopped early by ASHA at the rung at step {step} of {max_steps}"


def state_of(trial, unfinished: str = RUNNING) -> str:
    """Our state of an Optuna trial: the one the searcher recorded (diverged is FAIL to Optuna),
    else Optuna's own; `unfinished` while it has none."""
    return trial.user_attrs.get(STATE) or FROM_OPTUNA.get(trial.state, unfinished)


def objective_values(result: dict | None, metrics: list[str]) -> list[float] | None:
    """The objective values in `result`, or None when any is missing."""
    values = [(result or {}).get(m) for m in metrics]
    return None if any(v is None for v in values) else [float(v) for v in values]
