"""The replicate phase: after the search, the `top_k` best distinct configs train again with
`seeds` fresh training seeds each, to the last step (no early stopping), so the report can say
whether the winner beats the runner-up or only drew a lucky seed.

The seeds are above every seed the search used, so a config's replicates are not the draws it
was selected on (the search value of a winner is biased low; its replicate mean is not). Each
replicate's config is its search trial's resolved config with the fresh seed. The plan is
written to <results>/replicates.yaml before the phase starts, and a resumed study replays it.
Replicate runs are MLflow children tagged loopstudy_role=replicate, the number of the search
trial they replicate and the seed; they are not told to Optuna, whose history stays the search.
"""
from __future__ import annotations

import json
import pickle

import optuna
import yaml
from optuna.trial import TrialState
from ray.tune.search import Searcher

from analysis.layout import CONFIG_HASH, config_hash

from .searcher import SEED
from .spec import BASE, resolved
from .storage.stores import Stores

PLAN_FILE = "replicates.yaml"


def _best(study: optuna.Study, spec, top_k: int) -> list[tuple[int, dict, dict]]:
    """(number, sampled values but the seed, resolved config) of the `top_k` best completed
    distinct configs (by the first objective; the seed does not make a config distinct)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete.sort(key=lambda t: t.values[0], reverse=spec.modes[0] == "max")
    chosen, seen = [], set()
    for trial in complete:
        sampled = {k: v for k, v in trial.params.items() if k != SEED}
        key = json.dumps(sampled, sort_keys=True, default=str)
        if key not in seen and len(chosen) < top_k:
            seen.add(key)
            chosen.append((trial.number, sampled, trial.user_attrs["config"]))
    return chosen


def make_plan(spec, stores: Stores, seeds: int | None = None) -> list[dict]:
    """Tune configs of the replicate trials: each scientific point's best completed config (or,
    without `scientific`, the `top_k` best), each on the same `seeds` fresh seeds (default:
    replicates.seeds): seeds above every one the search trained, shared by all, so values are
    compared seed by seed. A trial's `repeat` is its seed's place in that sequence."""
    fixed = {k: p.value for k, p in spec.space.params.items() if p.kind == "fixed"}
    top_k = 1 if spec.scientific else spec.replicates.top_k
    chosen, used = [], {config.training.seed for config in spec.base_configs.values()}
    for phase in spec.phases:
        study = stores.optuna_study(phase.study_name(spec.name))
        chosen += [(phase, *best) for best in _best(study, spec, top_k)]
        used |= {t.user_attrs["config"]["training"]["seed"] + repeat for t in study.get_trials(deepcopy=False)
                 if "config" in t.user_attrs for repeat in range(spec.seeds_per_config)}
    first = max(used) + 1
    plan = []
    for phase, number, sampled, config in chosen:
        params = {k: v for k, v in sampled.items() if k != BASE}
        template = {"config": config, "params": {**fixed, **params}, "sampled": {**phase.point, **sampled},
                    "trial": number, **phase.trial_fields()}
        plan += [reseeded(template, first + i, i) for i in range(spec.replicates.seeds if seeds is None else seeds)]
    return plan


def reseeded(trial: dict, seed: int, repeat: int) -> dict:
    """A replicate trial of the same config on another fresh `seed`, the `repeat`-th of the sequence."""
    config = resolved(trial["config"], {SEED: seed})
    return {**trial, "config": config, CONFIG_HASH: config_hash(config), "params": {**trial["params"], SEED: seed},
            "sampled": {**trial["sampled"], SEED: seed}, "repeat": repeat}


def write_plan(stores: Stores, plan: list[dict]) -> None:
    (stores.root / PLAN_FILE).write_text(yaml.safe_dump(plan, sort_keys=False))


def read_plan(stores: Stores) -> list[dict] | None:
    """The plan of a study whose search finished, or None when the phase was never planned."""
    path = stores.root / PLAN_FILE
    return yaml.safe_load(path.read_text()) if path.is_file() else None


class PlannedTrials(Searcher):
    """Hands Tune the plan's configs in order, then FINISHED."""

    def __init__(self, plan: list[dict], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.plan, self.handed_out = plan, 0

    def suggest(self, trial_id: str) -> dict | None:
        if self.handed_out == len(self.plan):
            return Searcher.FINISHED
        self.handed_out += 1
        return self.plan[self.handed_out - 1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"plan": self.plan, "handed_out": self.handed_out}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
