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
from .stores import Stores

PLAN_FILE = "replicates.yaml"


def make_plan(study: optuna.Study, spec) -> list[dict]:
    """Tune configs of the replicate trials: the `top_k` best completed configs (by the first
    objective; the seed does not make a config distinct), each with `seeds` fresh seeds."""
    fixed = {k: p.value for k, p in spec.space.params.items() if p.kind == "fixed"}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete.sort(key=lambda t: t.values[0], reverse=spec.modes[0] == "max")
    chosen, seen = [], set()
    for trial in complete:
        sampled = {k: v for k, v in trial.params.items() if k != SEED}
        key = json.dumps(sampled, sort_keys=True, default=str)
        if key not in seen and len(chosen) < spec.replicates.top_k:
            seen.add(key)
            chosen.append((trial.number, sampled, trial.user_attrs["config"]))
    defaults = {base: fixed.get(SEED, config.training.seed) for base, config in spec.base_configs.items()}
    used = {t.params.get(SEED, defaults[t.params.get(BASE, spec.bases[0])]) + r
            for t in study.get_trials(deepcopy=False) for r in range(spec.seeds_per_config)}
    used |= set(defaults.values())
    seeds = range(max(used) + 1, max(used) + 1 + spec.replicates.seeds)
    plan = []
    for number, sampled, config in chosen:
        params = {k: v for k, v in sampled.items() if k != BASE}
        for i, seed in enumerate(seeds):
            replicate = resolved(config, {SEED: seed})
            plan.append({"config": replicate, CONFIG_HASH: config_hash(replicate),
                         "params": {**fixed, **params, SEED: seed}, "sampled": {**sampled, SEED: seed},
                         "trial": number, "repeat": i})
    return plan


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
