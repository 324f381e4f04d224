"""The searcher without a running Ray: the driver resolves each trial's config once; the one
adapter over OptunaSearch's internals still finds them (this fails first when Ray changes them);
RUNNING trials are finished through Optuna's public storage API."""
import optuna
import pytest
from optuna.trial import TrialState

from analysis.layout import REASON, config_hash
from study.searcher import StudySearch, fail_running
from study.spec import parse_study
from trainables.config import from_dict

STUDY = {"name": "s1", "base": "paper_linear_regression_looped_cpu",
         "overrides": {"training.train_steps": 40, "training.eval_every": 10},
         "space": {"training.loop_dilation": {"categorical": [1, 2]}, "curriculum.loops.start": None},
         "objectives": [{"metric": "eval/err_last", "mode": "min"}], "budget": {"num_samples": 4}}


def searcher(tmp_path, seeds_per_config=1, storage=None):
    spec = parse_study({**STUDY, "results_dir": str(tmp_path / "r")})
    return spec, StudySearch(spec.define_by_run(), metrics=spec.metrics, modes=spec.modes,
                             storage=storage or optuna.storages.InMemoryStorage(), study_name="s1",
                             max_steps=spec.max_steps, seeds_per_config=seeds_per_config,
                             base_seed=spec.config.training.seed, sampler_seed=0)


def test_optuna_search_internals_the_adapter_reads_are_still_there(tmp_path):
    _, search = searcher(tmp_path)
    assert isinstance(search._optuna_study, optuna.Study)
    search.suggest("tune-a")
    assert isinstance(search._optuna_trials["tune-a"], optuna.Trial)
    assert search._optuna_trials["tune-a"].number == 0


def test_each_trial_ships_its_config_resolved_once_with_its_hash(tmp_path):
    spec, search = searcher(tmp_path, seeds_per_config=2)
    first, second = search.suggest("tune-a"), search.suggest("tune-b")      # two seeds of one config
    assert first["trial"] == second["trial"] == 0 and (first["repeat"], second["repeat"]) == (0, 1)
    for tune_config in (first, second):
        config = from_dict(tune_config["config"])
        s = tune_config["params"]["training.loop_dilation"]
        assert config.training.loop_dilation == s and config.curriculum.loops.start == 5 * s   # null -> T*s
        assert config.training.train_steps == 40 and tune_config["config_hash"] == config_hash(tune_config["config"])
    assert (from_dict(first["config"]).training.seed, from_dict(second["config"]).training.seed) == (42, 43)
    assert first["config_hash"] != second["config_hash"]
    recorded = search._optuna_study.trials[0].user_attrs
    assert recorded["config"] == first["config"] and recorded["config_hash"] == first["config_hash"]


def test_fail_running_uses_the_public_storage_api(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="s1", storage=storage)
    kept, lost = study.ask(), study.ask()
    fail_running(storage, "s1", "lost: test", keep={kept.number})
    trials = optuna.load_study(study_name="s1", storage=storage).trials
    assert trials[kept.number].state == TrialState.RUNNING
    assert trials[lost.number].state == TrialState.FAIL and trials[lost.number].user_attrs[REASON] == "lost: test"
    with pytest.raises(KeyError):
        fail_running(storage, "no-such-study", "x")
