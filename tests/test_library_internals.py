"""Each private detail of Ray, Optuna and MLflow we rely on (analysis/library_internals.py) still
holds in the installed libraries. A failure names the detail and who relies on it: mend those
modules, then the detail's entry. Fast: sources and classes are read, nothing is started."""
import importlib
import inspect
import logging
import re
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from analysis import library_internals as li

CHECKS = {}


def check(name: str):
    def register(function):
        CHECKS[name] = function
        return function
    return register


@check("OPTUNA_SEARCH_STUDY/OPTUNA_SEARCH_TRIALS")
def _optuna_search_attributes():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0, 1)}, metric="m", mode="min")
    assert isinstance(getattr(search, li.OPTUNA_SEARCH_STUDY, None), optuna.Study)
    assert isinstance(getattr(search, li.OPTUNA_SEARCH_TRIALS, None), dict)


@check("OptunaSearch pickled state")
def _optuna_search_state():
    from ray.tune.search.optuna import OptunaSearch

    source = inspect.getsource(OptunaSearch.save) + inspect.getsource(OptunaSearch.restore)
    assert "self.__dict__" in source and "pickle" in source


@check("TUNE_INTERRUPT_HANDLER")
def _tune_interrupt_handler():
    from ray.tune import tune

    source = inspect.getsource(tune._setup_signal_catching)
    assert f"def {li.TUNE_INTERRUPT_HANDLER}(" in source and "_setup_signal_catching()" in inspect.getsource(tune.run)
    for sig in ("SIGINT", "SIGUSR1"):
        assert re.search(rf"signal\.signal\(\s*signal\.{sig},\s*{li.TUNE_INTERRUPT_HANDLER}\s*\)", source), sig


@check("TUNE_DISABLE_SIGINT")
def _tune_disable_sigint():
    from ray.tune import tune

    source = inspect.getsource(tune._setup_signal_catching)
    guarded, usr1 = source.index(f'os.getenv("{li.TUNE_DISABLE_SIGINT}"'), source.index("signal.SIGUSR1,")
    assert guarded < source.index("signal.SIGINT, signal_interrupt_tune_run") < usr1
    assert "if allow_signal_catching:" in source and source.count(li.TUNE_DISABLE_SIGINT) == 1


@check("TUNE_LOGGER")
def _tune_logger():
    from ray.tune import tune

    assert tune.logger.name == li.TUNE_LOGGER and "Stop signal received" in inspect.getsource(tune)


@check("TUNE_INTERRUPT_LINES")
def _tune_interrupt_lines():
    from ray.tune import tune

    source = inspect.getsource(tune)
    for start in li.TUNE_INTERRUPT_LINES:       # each a logger call's first words
        assert re.search(rf"logger\.(warning|error)\(\s*f?\"{start}", source), start


@check("TRIAL_ERROR_FILE")
def _trial_error_file():
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment.trial import Trial

    assert isinstance(getattr(Trial, li.TRIAL_ERROR_FILE), property)
    assert "with open(self.error_file" in inspect.getsource(Trial.handle_error)
    source = inspect.getsource(TuneController._process_trial_failure)
    assert source.index("trial.handle_error(") < source.index("self._callbacks.on_trial_error(")


@check("TUNE_STATE")
def _tune_state_files():
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.search.search_generator import SearchGenerator
    from ray.tune.search.searcher import Searcher

    made = {_TUNER_PKL} | {cls.CKPT_FILE_TMPL.format("*") for cls in (TuneController, SearchGenerator, Searcher)}
    assert set(li.TUNE_STATE) == made and li.TUNER_FILE == _TUNER_PKL


@check("TUNE_STAGED_STATE")
def _tune_staged_state():
    from ray.train._internal import storage

    source = inspect.getsource(storage.StorageContext)
    assert '"driver_artifacts"' in source and "session_" in inspect.getsource(storage)
    assert li.TUNE_STAGED_STATE[-1] == "driver_artifacts" and li.TUNE_STAGED_STATE[1] == "artifacts"


@check("OPTUNA_NEW_STUDY_LOGGERS")
def _optuna_new_study_loggers():
    for name in li.OPTUNA_NEW_STUDY_LOGGERS:
        module = importlib.import_module(name)
        source = inspect.getsource(module)
        assert "get_logger(__name__)" in source and "A new study created in" in source, name


@check("OPTUNA_EXPERIMENTAL")
def _optuna_experimental_warning():
    import optuna

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        optuna.samplers.BruteForceSampler()
    assert any(re.match(li.OPTUNA_EXPERIMENTAL, str(w.message)) for w in seen), [str(w.message) for w in seen]


@check("RDB_STATE_URL")
def _rdb_state_url(tmp_path):
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    state = storage.__getstate__()
    assert state[li.RDB_STATE_URL] == storage.url
    storage.__setstate__(state)


@check("BaseStorage public methods")
def _base_storage_methods():
    import optuna

    public = {n for n in vars(optuna.storages.BaseStorage) if not n.startswith("_")}
    rdb = {n for n in dir(optuna.storages.RDBStorage) if not n.startswith("_")
           and callable(getattr(optuna.storages.RDBStorage, n))}
    assert rdb - public == set(li.RDB_UNUSED_METHODS), rdb - public


@check("MLFLOW_NEW_DATABASE_LOGGER")
def _mlflow_new_database_logger():
    module = importlib.import_module(li.MLFLOW_NEW_DATABASE_LOGGER)
    assert "Creating initial MLflow database tables" in inspect.getsource(module)
    assert logging.getLogger(li.MLFLOW_NEW_DATABASE_LOGGER)


@check("MLFLOW_REST_FAILURE")
def _mlflow_rest_failure():
    from mlflow.utils import rest_utils

    assert f'f"{li.MLFLOW_REST_FAILURE}' in inspect.getsource(rest_utils)


@check("MLFLOW_TABLES")
def _mlflow_tables():
    from mlflow.store.tracking.dbmodels import models

    tables = {m.__tablename__: m for m in vars(models).values() if hasattr(m, "__tablename__")}
    for table, columns in li.MLFLOW_TABLES.items():
        assert table in tables, f"no table {table}"
        assert set(columns) <= {c.name for c in tables[table].__table__.columns}, table


@pytest.mark.parametrize("internal", li.INTERNALS, ids=lambda i: i.name)
def test_a_private_detail_still_holds(internal, tmp_path):
    checked = CHECKS[internal.name]
    try:
        checked(*(tmp_path,) * len(inspect.signature(checked).parameters))
    except Exception as error:
        pytest.fail(f"{internal.library} {metadata.version(internal.library)} (checked on "
                    f"{li.CHECKED_ON[internal.library]}) changed a private detail we rely on: {internal.name}: "
                    f"{internal.what}; mend {internal.used_by} and analysis/library_internals.py "
                    f"({type(error).__name__}: {error})")


def test_every_detail_has_a_check_and_every_check_a_detail():
    assert set(CHECKS) == {i.name for i in li.INTERNALS}


def test_the_versions_checked_on_are_the_pinned_ones():
    pinned = dict(line.split("==") for line in (Path(__file__).parents[1] / "requirements.txt").read_text().split()
                  if "==" in line and not line.startswith("#"))
    for library, version in li.CHECKED_ON.items():
        name = next(k for k in pinned if k.split("[")[0] == library)
        assert pinned[name] == version, f"{library}: pinned {pinned[name]}, internals checked on {version}"
