"""How a study lies in its stores: the names the service writes and the analysis reads.

Dependency-free on purpose: `study` (the only writer of MLflow) and `analysis` (read-only) both
import it, so neither needs the other's runtime. MLflow holds one experiment per study: a parent
run (ROLE=PARENT) and a child run per search trial (TRIAL) or seed replicate (REPLICATE).
"""
from __future__ import annotations

import hashlib
import itertools
import json

# MLflow tags of a study's runs
ROLE, TUNE_ID, NUMBER, REPEAT = "loopstudy_role", "tune_trial_id", "optuna_trial", "repeat"
PARENT, TRIAL, REPLICATE = "parent", "trial", "replicate"          # values of ROLE
STATE, REASON = "state", "state_reason"   # REASON is also the Optuna user attribute
STEPS, SAMPLED, CONFIG_HASH = "steps", "sampled", "config_hash"
B_TRAINED = "b_trained"        # the loop count b a looped run trained at its last step
GPU_IDS = "gpu_ids"            # the GPUs Ray gave a trial ("0", "0,1"), as its reports carry them
POINT = "scientific_point"     # the scientific values a run trains, as a label ("s=1"): study/design.py
# parent-run tags: the scientific parameters and values (JSON), the points' labels in order, the
# confounds found at the start (JSON lists)
SCIENTIFIC_VALUES, POINTS, CONFOUNDS = "scientific", "scientific_points", "confounds"
# parent-run tags: how the compared values are compared (a study file's `compare_at`), and what
# that means for their training compute (JSON list of sentences: analysis/confounds.py)
COMPARE_AT, COMPUTE = "compare_at", "compute"
EQUAL_STEPS, EQUAL_COMPUTE = "equal_steps", "equal_compute"     # the values of COMPARE_AT
# parent-run tags of a study with a `question` (study/replicate_rounds.py): the question (JSON),
# "true" once its rounds ended with the budget spent before the last planned look
QUESTION, BUDGET_SPENT = "question", "question_budget_spent"
# replicate-run tag of a study with a `question`: the horizon (training steps of the question's
# ladder) it trained to; a run continued from a shorter horizon's run names that run
HORIZON, CONTINUED_FROM = "horizon", "continued_from"

# a trial's state, the same in Optuna, MLflow and `status` (study/outcome.py classifies)
COMPLETED, PRUNED, FAILED, RUNNING = "completed", "pruned", "failed", "running"
DIVERGED = "diverged"     # its loss or error blew up (trainables/diverged.py); never ranked
INTERRUPTED = "interrupted"   # shown for a running trial once no driver holds its study (`status`)

VERSIONED = ("torch", "ray", "optuna", "mlflow", "numpy")     # package versions a study records

# searched parameters: (the short name in run names and tables, what a figure calls it);
# the ones with a figure name are the scientific parameters the report draws per value
LABELS = {"training.loop_dilation": ("s", "loss-window dilation s"),
          "training.n_loop_window": ("T", "window T"),
          "curriculum.loops.end": ("b", "loop budget b"),
          "model.n_embd": ("D", "width n_embd"),
          "model.n_layer": ("L", None),
          "training.learning_rate": ("lr", None),
          "training.seed": ("seed", None)}
SCIENTIFIC = tuple(key for key, (_, long) in LABELS.items() if long)


def short_label(key: str) -> str:
    """`s` for training.loop_dilation; a field without a short name by its last part."""
    return LABELS.get(key, (key.rsplit(".", 1)[-1], None))[0]


def long_label(key: str) -> str:
    return LABELS.get(key, (None, None))[1] or key


def fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def params_text(values: dict, digits: int = 4) -> str:
    """`s=2 lr=0.0085 seed=1`: dotted keys by their short names."""
    return " ".join(f"{short_label(k)}={fmt(v, digits)}" for k, v in values.items())


def table(rows: list[list[str]], header: list[str]) -> str:
    """Plain-text columns, as `status` and the live progress print them."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header, *rows])


def scientific_points(scientific: dict | list | None) -> list[dict]:
    """The points a study file's `scientific` compares, in order: a mapping {field: [values]} is
    the grid of every combination (the first field varying slowest); a list of mappings
    {field: value} is those points (fields that change together, e.g. a model family and its
    depth). Empty without `scientific`."""
    if isinstance(scientific, list):
        return [dict(point) for point in scientific]
    keys = list(scientific or {})
    return [dict(zip(keys, values)) for values in itertools.product(*(scientific[k] for k in keys))] if keys else []


def scientific_fields(scientific: dict | list | None) -> list[str]:
    """The config fields a study file's `scientific` sets, in order."""
    return list(dict.fromkeys(key for point in scientific_points(scientific) for key in point))


def phase_study_name(study: str, point: str) -> str:
    """The Optuna study of one scientific point ("NAME[s=1]"); NAME itself without one."""
    return f"{study}[{point}]" if point else study


def config_hash(config: dict) -> str:
    """12 hex digits identifying a resolved config mapping (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
