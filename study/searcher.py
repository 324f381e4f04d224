"""OptunaSearch as the study needs it.

Over Ray's OptunaSearch this adds:
- trials stopped early (ASHA) are told to Optuna as PRUNED, not COMPLETE with a half-trained
  value; intermediate values are reported at the trainer's `step`;
- a draw the space rejects (optuna.TrialPruned with a reason) is recorded PRUNED with its
  reason and drawn again, so Tune only ever gets valid configs;
- `seeds_per_config` Tune trials per Optuna trial (training.seed + 0, 1, ...), told as one;
- on restore, RUNNING Optuna trials that no restored Tune trial owns (asked after the last
  state snapshot of a killed driver) are marked FAIL with a reason;
- the Tune config of a trial is {"config": its resolved config mapping (resolved once, here in
  the driver), "config_hash", "params": all dotted overrides of the space, "sampled": the drawn
  ones, "trial": Optuna trial number, "repeat": index}, merged by Tune with the study's constant
  param_space; the Optuna trial records the config and its hash as user attributes.

OptunaSearch exposes neither the Optuna study it creates nor its Tune-id -> Optuna-trial map;
`_optuna_study` and `_optuna_trials` below are the one place that reads those internals, and
tests/test_searcher.py fails when a Ray upgrade changes them.
"""
from __future__ import annotations

import logging
import pickle
import warnings
from statistics import mean

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from analysis.layout import CONFIG_HASH, REASON, STATE, config_hash
from analysis.library_internals import OPTUNA_SEARCH_STUDY, OPTUNA_SEARCH_TRIALS

from .outcome import COMPLETED, DIVERGED, FAILED, OPTUNA_STATE, PRUNED, classify, objective_values
from .spec import SAMPLERS, resolved

logger = logging.getLogger(__name__)
MAX_REJECTED_DRAWS = 100


class _BruteForce(optuna.samplers.BruteForceSampler):
    """Each combination once; running out ends nothing here (the budget does): Optuna's
    `study.stop()` on exhaustion only works inside `study.optimize`."""

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError:
            pass


SAMPLER_CLASSES = dict(zip(SAMPLERS, (optuna.samplers.TPESampler, optuna.samplers.RandomSampler,
                                       _BruteForce)))
SEED = "training.seed"


class StudySearch(OptunaSearch):
    def __init__(self, space_fn, *, metrics: list[str], modes: list[str], storage, study_name: str,
                 max_steps: int, seeds_per_config: int = 1, base_seed: int = 0,
                 sampler: str = "tpe", sampler_seed: int | None = None, point: dict | None = None):
        """`point`: the scientific values this search holds fixed (study/design.py); they join
        each trial's `sampled` values, so names and tables show them."""
        self._point = dict(point or {})
        single = len(metrics) == 1
        super().__init__(space=space_fn, metric=metrics[0] if single else metrics,
                         mode=modes[0] if single else modes, storage=storage, study_name=study_name,
                         sampler=SAMPLER_CLASSES[sampler](seed=sampler_seed))
        for name, kind in ((OPTUNA_SEARCH_STUDY, optuna.Study), (OPTUNA_SEARCH_TRIALS, dict)):
            if not isinstance(getattr(self, name, None), kind):
                raise RuntimeError(f"ray.tune.search.optuna.OptunaSearch has no {name} ({kind.__name__}) "
                                   "any more: mend the adapter in study/searcher.py")
        with warnings.catch_warnings():     # experimental in Optuna 5; labels optuna-dashboard's axes
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._optuna_study.set_metric_names(list(metrics))
        self._optuna_storage, self._study_name = storage, study_name
        self._metrics = metrics
        self._max_steps = max_steps
        self._repeats = seeds_per_config
        self._base_seed = base_seed
        self._pending: list[tuple] = []                   # (number, drawn, sampled, repeat) to hand out
        self._number: dict[str, int] = {}                 # Tune trial id -> Optuna trial number
        self._primary: dict[int, str] = {}                # Optuna number -> Tune id owning it
        self._ended: dict[int, dict] = {}                 # number -> {Tune id: (state, reason, values)}
        self._reported: dict[str, int] = {}               # Tune id -> last step reported to Optuna
        self._told: set[int] = set()                      # Optuna numbers already finished

    # ------------------------------------------------------------ OptunaSearch's internals

    @property
    def _optuna_study(self) -> optuna.Study:
        return getattr(self, OPTUNA_SEARCH_STUDY)

    @property
    def _optuna_trials(self) -> dict[str, optuna.Trial]:
        return getattr(self, OPTUNA_SEARCH_TRIALS)

    # ------------------------------------------------------------ asking

    def _draw(self, trial_id: str) -> dict | None:
        """{"params", "config"} of the space's define-by-run function, or FINISHED / None."""
        reason = ""
        for _ in range(MAX_REJECTED_DRAWS):
            try:
                return super().suggest(trial_id)
            except optuna.TrialPruned as exc:
                reason = f"rejected when sampled: {exc}"
                rejected = self._optuna_trials.pop(trial_id)
                rejected.set_user_attr(REASON, reason)
                self._optuna_study.tell(rejected, state=TrialState.PRUNED)
        raise RuntimeError(f"the search space rejected {MAX_REJECTED_DRAWS} draws in a row; last: {reason}")

    def suggest(self, trial_id: str) -> dict | None:
        if self._pending:
            number, drawn, sampled, repeat = self._pending.pop(0)
        else:
            drawn = self._draw(trial_id)
            if drawn is None or drawn == self.FINISHED:
                return drawn
            ot_trial = self._optuna_trials[trial_id]
            number, sampled, repeat = ot_trial.number, ot_trial.params, 0
            ot_trial.set_user_attr("config", drawn["config"])
            ot_trial.set_user_attr(CONFIG_HASH, config_hash(drawn["config"]))
            self._primary[number] = trial_id
            self._ended[number] = {}
            self._pending = [(number, drawn, sampled, r) for r in range(1, self._repeats)]
        params, config = drawn["params"], drawn["config"]
        if self._repeats > 1:
            seed = params.get(SEED, self._base_seed) + repeat
            params, config = {**params, SEED: seed}, resolved(config, {SEED: seed})
        self._number[trial_id] = number
        self._ended[number][trial_id] = None
        return {"config": config, CONFIG_HASH: config_hash(config), "params": params,
                "sampled": {**self._point, **sampled}, "trial": number, "repeat": repeat}

    # ------------------------------------------------------------ telling

    def on_trial_result(self, trial_id: str, result: dict | None) -> None:
        """Report the objective at the trainer's step. Tune skips this for the result on which
        the scheduler stops a trial, so on_trial_complete reports that one."""
        if len(self._metrics) > 1 or trial_id not in self._optuna_trials or self._number[trial_id] in self._told:
            return          # Optuna keeps no intermediate values for multi-objective studies
        result = result or {}
        step = result.get("step", -1)
        if self.metric in result and step > self._reported.get(trial_id, -1):
            self._optuna_trials[trial_id].report(float(result[self.metric]), int(step))
            self._reported[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._number.get(trial_id)
        if number is None or number in self._told or self._ended[number].get(trial_id) is not None:
            return          # unknown, or told already (re-run after a driver kill: first outcome stays)
        self.on_trial_result(trial_id, result)
        state, reason = classify(result, error, self._max_steps)
        self._ended[number][trial_id] = (state, reason, objective_values(result, self._metrics))
        ended = list(self._ended[number].values())
        if len(ended) < self._repeats or None in ended:
            return
        primary = self._primary[number]
        states = [e[0] for e in ended]
        values = None
        if all(s == COMPLETED for s in states):
            values = [mean(v) for v in zip(*(e[2] for e in ended))]
            group_state = COMPLETED
        else:
            # one seed that blew up makes the config diverged: it is not ranked with the others
            group_state = DIVERGED if DIVERGED in states else FAILED if all(s == FAILED for s in states) \
                else PRUNED
            reason = next(e[1] for e in ended if e[0] != COMPLETED)
        ot_trial = self._optuna_trials[primary]
        try:
            ot_trial.set_user_attr(REASON, reason)
            ot_trial.set_user_attr(STATE, group_state)
            self._optuna_study.tell(ot_trial, values if values is None or len(values) > 1 else values[0],
                                state=OPTUNA_STATE[group_state])
        except (ValueError, RuntimeError) as exc:
            logger.warning("Optuna trial %s not updated: %s", number, exc)
        self._told.add(number)

    # ------------------------------------------------------------ state

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k != "_space"}   # the space is code
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        # a driver killed after telling Optuna but before its next snapshot: the trial is
        # re-run by Tune, but its first outcome stands
        self._told |= {t.number for t in self._optuna_study.get_trials(deepcopy=False)
                       if t.state.is_finished()}
        live = {t.number for t in self._optuna_trials.values()} - self._told
        fail_running(self._optuna_storage, self._study_name,
                     "lost: asked for after the last state snapshot of a killed driver", keep=live)


def fail_running(storage: optuna.storages.BaseStorage, study_name: str, reason,
                 state: TrialState = TrialState.FAIL, keep: set[int] = frozenset()) -> None:
    """Finish the RUNNING trials of the study (except `keep`) with `state` and `reason` (a text,
    or a function of the trial giving one)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    study_id = storage.get_study_id_from_name(study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number not in keep:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            storage.set_trial_user_attr(trial_id, REASON, reason(frozen) if callable(reason) else reason)
            study.tell(frozen.number, state=state)
