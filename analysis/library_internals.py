"""Every reliance of ours on a private detail of Ray, Optuna or MLflow, in one module: what it
is, who relies on it, the version it was checked on. tests/test_library_internals.py checks each
against the installed libraries and fails, naming the detail, when an upgrade changes one: mend
it here and where `used_by` says, then update CHECKED_ON.

It lives in analysis, the lowest room that relies on one (MLflow's SQL schema), and imports
none of the three libraries: the details are names and strings; the code that uses them
imports the library.
"""
from __future__ import annotations

from dataclasses import dataclass

CHECKED_ON = {"ray": "2.60.0", "optuna": "5.0.0", "mlflow": "3.17.2"}

# --- Ray Tune
# OptunaSearch's attributes holding its Optuna study and its Tune trial id -> optuna.Trial
OPTUNA_SEARCH_STUDY, OPTUNA_SEARCH_TRIALS = "_ot_study", "_ot_trials"
# the function Tune installs for SIGINT and SIGUSR1 while fit() runs (ray/tune/tune.py); called
# with SIGUSR1 it ends the loop the way Ctrl-C does, after saving the experiment state
TUNE_INTERRUPT_HANDLER = "signal_interrupt_tune_run"
# the variable that keeps fit() from installing that handler for SIGINT (SIGUSR1 still gets it);
# study/stop_signals.py sets it and calls the SIGUSR1 handler from its own
TUNE_DISABLE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"
TUNE_LOGGER = "ray.tune.tune"          # the logger of that handler's "Stop signal received" line
# the starts of the lines that logger writes when fit() was interrupted: Tune's own advice
# ("Resume experiment with: Tuner.restore(...)", the list of incomplete trials); the driver
# prints `loopstudy resume` instead
TUNE_INTERRUPT_LINES = ("Stop signal received", "Experiment has been interrupted", "Trials did not complete")
# a Tune Trial's local path of its error text, written before on_trial_error is called
# (Trial.get_error reads the storage copy, synced later)
TRIAL_ERROR_FILE = "error_file"
# the experiment folder's saved state: the newest file of each pattern is what a restore reads
TUNER_FILE = "tuner.pkl"
TUNE_EXPERIMENT_STATE = "experiment_state-*.json"     # written once trials are known: a restore needs it
TUNE_STATE = {TUNE_EXPERIMENT_STATE: "json", "search_gen_state-*.json": "pickle",
              "searcher-state-*.pkl": "pickle", TUNER_FILE: "pickle"}
# where a driver stages that state before copying it to the storage path, under Ray's temp folder
TUNE_STAGED_STATE = ("session_*", "artifacts", "*", "{experiment}", "driver_artifacts")

# --- Optuna
# loggers that print "A new study created in RDB/Journal with name: ..." (private module names)
OPTUNA_NEW_STUDY_LOGGERS = ("optuna.storages._rdb.storage", "optuna.storages.journal._storage")
# the start of the warning each experimental class (BruteForceSampler) gives when it is made
OPTUNA_EXPERIMENTAL = r".* is experimental \(supported from v"
# RDBStorage pickles its state as a dict holding the database URL under this key
RDB_STATE_URL = "url"
# RDBStorage's public methods beyond BaseStorage's, none called by a study: schema versions
# (`optuna storage upgrade`) and heartbeats (a study sets no heartbeat_interval)
RDB_UNUSED_METHODS = ("get_all_versions", "get_current_version", "get_head_version", "upgrade",
                      "get_failed_trial_callback", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback",
                      "record_heartbeat")

# --- MLflow
MLFLOW_NEW_DATABASE_LOGGER = "mlflow.store.db.utils"     # "Creating initial MLflow database tables..."
# how MLflow's REST client begins the error of a request that failed (mlflow/utils/rest_utils.py)
MLFLOW_REST_FAILURE = "API request to "
# the tracking store's SQL tables and the columns analysis/mlflow_sqlite.py reads
MLFLOW_TABLES = {"experiments": ("experiment_id", "name", "lifecycle_stage"),
                 "runs": ("run_uuid", "name", "artifact_uri", "experiment_id", "lifecycle_stage"),
                 "tags": ("run_uuid", "key", "value"),
                 "params": ("run_uuid", "key", "value"),
                 "latest_metrics": ("run_uuid", "key", "value", "is_nan")}


@dataclass(frozen=True)
class Internal:
    name: str           # the constant above, or what the code does
    library: str        # ray, optuna or mlflow
    what: str
    used_by: str        # our modules that rely on it


INTERNALS = (
    Internal("OPTUNA_SEARCH_STUDY/OPTUNA_SEARCH_TRIALS", "ray",
             "OptunaSearch keeps its optuna.Study in _ot_study and a dict Tune id -> optuna.Trial in _ot_trials",
             "study/searcher.py"),
    Internal("OptunaSearch pickled state", "ray",
             "OptunaSearch.save/restore pickle the searcher's __dict__; ours adds its own entries to it",
             "study/searcher.py"),
    Internal("TUNE_INTERRUPT_HANDLER", "ray",
             "fit() installs signal_interrupt_tune_run for SIGINT/SIGUSR1; calling it stops the loop after a save",
             "study/storage/disk_guard.py, study/stop_signals.py"),
    Internal("TUNE_DISABLE_SIGINT", "ray", "fit() skips its SIGINT handler when TUNE_DISABLE_SIGINT_HANDLER is "
             "1 and installs the SIGUSR1 one regardless", "study/stop_signals.py"),
    Internal("TUNE_LOGGER", "ray", "the stop handler logs through the logger 'ray.tune.tune'",
             "study/__init__.py"),
    Internal("TUNE_INTERRUPT_LINES", "ray", "an interrupted fit() logs lines starting 'Stop signal received', "
             "'Experiment has been interrupted' and 'Trials did not complete' through 'ray.tune.tune'",
             "study/__init__.py"),
    Internal("TRIAL_ERROR_FILE", "ray", "Trial.error_file is the local error.txt that handle_error writes "
             "before the controller calls on_trial_error", "study/tracking/delivery.py"),
    Internal("TUNE_STATE", "ray",
             "an experiment folder holds tuner.pkl, experiment_state-*.json, search_gen_state-*.json and "
             "searcher-state-*.pkl, which a restore reads", "study/runner.py, study/storage/disk_checks.py"),
    Internal("TUNE_STAGED_STATE", "ray",
             "the driver stages the state in <ray temp>/session_*/artifacts/<time>/<experiment>/driver_artifacts",
             "study/storage/disk_checks.py"),
    Internal("OPTUNA_NEW_STUDY_LOGGERS", "optuna",
             "the RDB and Journal storages log a new study through loggers named after private modules",
             "study/__init__.py"),
    Internal("OPTUNA_EXPERIMENTAL", "optuna", "the text of the ExperimentalWarning of experimental classes",
             "study/__init__.py"),
    Internal("RDB_STATE_URL", "optuna", "RDBStorage.__getstate__/__setstate__ keep the database URL under 'url'",
             "study/storage/databases.py"),
    Internal("BaseStorage public methods", "optuna",
             "every call the study makes on a storage is a public method of BaseStorage, so wrapping those "
             "of RDBStorage wraps every database access", "study/storage/databases.py"),
    Internal("MLFLOW_NEW_DATABASE_LOGGER", "mlflow", "a new SQLite store logs its table creation through this logger",
             "study/__init__.py"),
    Internal("MLFLOW_REST_FAILURE", "mlflow",
             "a request the REST client could not complete raises an MlflowException starting with this text",
             "study/tracking/delivery.py"),
    Internal("MLFLOW_TABLES", "mlflow", "the tracking store's tables and columns read with sqlite3",
             "analysis/mlflow_sqlite.py"),
)
