"""The design of a study that compares scientific values (Google's Deep Learning Tuning
Playbook): the `scientific` parameters are compared, the space holds the nuisance parameters,
which are tuned separately for each scientific value, everything else is held fixed.

Each compared point (the grid of the values listed per field, or the points listed, e.g.
[{model.family: standard, model.n_layer: 6}, {model.family: looped, model.n_layer: 1}]) is one
phase with its own Optuna study (`NAME[s=1]`) and its own Tune experiment, and gets the same
budget; its best nuisance config is then replicated on seeds that every point shares. A study
without `scientific` is one phase named "" (its Optuna study is NAME).

What a run actually trains (the loop counts the curriculum reaches, the steps, the final dims
and points) is compared between the compared values before anything runs: a difference other
than the scientific parameters themselves is a confound (analysis/confounds.py), and the study
names it. Compared at equal compute (`compare_at: equal_compute`), each point trains its own
training steps, set so that its total training FLOPs match the first point's.
"""
from __future__ import annotations

from dataclasses import dataclass

from analysis.layout import params_text, phase_study_name, scientific_points
from trainables.config import Config, ConfigError, apply_overrides, from_dict, load_config
from trainables.flops import equal_compute_steps
from trainables.schema import coerce

STEPS = "training.train_steps"


@dataclass(frozen=True)
class Phase:
    label: str                      # "s=1", "T=4 b=16"; "" without scientific parameters
    point: dict                     # the scientific values, dotted keys
    train_steps: int | None = None  # compared at equal compute: this point's training steps
    index: int = 0                  # its place among the compared values (1, 2, ...); 0 without

    def trial_fields(self) -> dict:
        """What each of its trials carries in Tune's config: the point's label, and its place,
        which names the trials (`v2.t000`: trial numbers restart in each point's Optuna study)."""
        return {"scientific": self.label, "value": self.index} if self.label else {}

    @property
    def fixed(self) -> dict:
        """What its trials hold fixed besides the study's overrides: the point, and its steps."""
        return {**self.point, **({STEPS: self.train_steps} if self.train_steps else {})}

    def study_name(self, study: str) -> str:
        return phase_study_name(study, self.label)

    def experiment_name(self, study: str) -> str:
        return f"{study}-{self.label.replace(' ', '_')}" if self.label else study


def phases(scientific: dict | list, train_steps: dict[str, int] | None = None) -> list[Phase]:
    """One phase per compared point (the grid of a mapping, or the listed points), in order; one
    plain phase without. `train_steps`: label -> that point's training steps (equal compute)."""
    points = scientific_points(scientific)
    if not points:
        return [Phase("", {})]
    return [Phase(params_text(point), point, (train_steps or {}).get(params_text(point)), index)
            for index, point in enumerate(points, 1)]


def check_scientific(scientific: dict | list) -> None:
    """ConfigError naming the part of `scientific` that is not a mapping {field: [distinct plain
    values]} or a list of mappings {field: plain value} that all set the same fields, or whose
    points would share a label (a label names a phase's Optuna study and runs)."""
    if isinstance(scientific, list):
        fields = None
        for i, point in enumerate(scientific):
            if not isinstance(point, dict) or not point:
                raise ConfigError(f"'scientific[{i}]' must be a mapping {{field: value, ...}} (one compared "
                                  f"point), got {point!r}")
            fields = fields or list(point)
            if set(point) != set(fields):
                raise ConfigError(f"'scientific[{i}]' sets {sorted(point)}, but 'scientific[0]' sets "
                                  f"{sorted(fields)}: every point must set the same fields")
            for key, value in point.items():
                if isinstance(value, (dict, list)):
                    raise ConfigError(f"'scientific[{i}].{key}' must be a plain value, got {value!r}")
    else:
        for key, values in scientific.items():
            coerce(f"scientific.{key}", list, values)
            if not values or len(set(map(repr, values))) != len(values) or any(
                    isinstance(v, (dict, list)) for v in values):
                raise ConfigError(f"'scientific.{key}' must be a non-empty list of distinct plain values, "
                                  f"got {values!r}")
    labels = [phase.label for phase in phases(scientific)]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ConfigError(f"'scientific': two compared points are both {label!r}; each point must differ")


def point_configs(scientific: dict | list, base: str, overrides: dict) -> dict[str, Config]:
    """Each phase's config before the nuisance draws (base, overrides, then the point);
    ConfigError naming the point that does not make a valid config."""
    check_scientific(scientific)
    configs = {}
    for phase in phases(scientific):
        try:
            configs[phase.label] = load_config(base, {**overrides, **phase.point})
        except ConfigError as exc:
            raise ConfigError(f"'scientific' point {phase.label}: {exc}") from None
    return configs


def compared_configs(scientific: dict | list, space, base: str, overrides: dict) -> dict[str, Config]:
    """The configs the study compares: each scientific point's; without `scientific`, each value
    of every categorical scientific-looking parameter the space searches (the others at the
    base's values), so that a plain study of s is checked for confounds too."""
    from analysis.layout import SCIENTIFIC, short_label
    from trainables.config import ConfigError, load_config

    if scientific:
        return point_configs(scientific, base, overrides)
    fixed = {k: p.value for k, p in space.params.items() if p.kind == "fixed"}
    compared = {}
    for key, param in space.params.items():
        if param.kind == "categorical" and key in SCIENTIFIC:
            for value in param.choices:
                try:
                    compared[f"{short_label(key)}={value}"] = load_config(base, {**overrides, **fixed, key: value})
                except ConfigError:
                    continue            # the space rejects this value on this base when sampling
            break                       # one parameter: the first scientific one searched
    return compared


def grace_period_problem(grace: int, configs: dict[str, Config]) -> str | None:
    """Why ASHA's first rung at `grace` would compare trials unfairly, or None: before the
    curriculum has reached its final dims, points (and loops), the trials are ranked on a task
    they have not been shown; off the evaluation steps, trials are compared at different steps."""
    for label, config in configs.items():
        every = config.training.eval_every
        if grace % every:
            return (f"must be a multiple of training.eval_every={every} (ASHA compares trials at the "
                    "first evaluation at or after each rung; off the grid they would differ in step)")
        done, schedule = config.curriculum_complete_at()
        where = f" for {label}" if label else ""
        if done is None:
            return (f"ASHA would rank trials before the curriculum is complete: {schedule} does not "
                    f"reach its end within training.train_steps{where}; set scheduler: null")
        if grace < done:
            return (f"is before the curriculum completes at step {done} ({schedule} reaches its end "
                    f"then{where}): ASHA would rank trials on a task they have not yet been shown; "
                    f"set scheduler.grace_period >= {done + (-done) % every}")
    return None


# config fields whose values change a run's training FLOPs (trainables/flops.py): a study
# compared at equal compute may not search them, or one value's trials would differ in compute
COMPUTE_FIELDS = ("model.", "curriculum.", "training.batch_size", STEPS, "training.n_loop_window",
                  "training.loop_dilation", "training.backprop_depth", "training.depth_")


def at_equal_compute(compared: dict[str, Config], searched: list[str]) -> dict[str, Config]:
    """The compared configs, each with the training steps that give it the first (reference)
    value's total training FLOPs, whose steps are kept (trainables.flops.equal_compute_steps);
    ConfigError naming 'compare_at' when the space searches a field that changes a trial's
    compute, or a scaled config is not valid."""
    varying = [f for f in searched if f.startswith(COMPUTE_FIELDS)]
    if varying:
        raise ConfigError(f"'compare_at': equal_compute scales each value's training.train_steps to its "
                          f"compute, but the space searches {', '.join(varying)}, which changes the compute "
                          "of each trial: fix them in 'overrides' or compare at equal_steps")
    steps = equal_compute_steps(compared, next(iter(compared)))
    try:
        return {label: from_dict(apply_overrides(config.to_dict(), {STEPS: steps[label]}))
                for label, config in compared.items()}
    except ConfigError as exc:
        raise ConfigError(f"'compare_at': equal_compute steps {steps}: {exc}") from None
