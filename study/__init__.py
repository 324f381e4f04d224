"""The study service: study specs, Ray Tune runs, MLflow tracking, the `loopstudy` CLI.

The core flow is flat: spec (a study file, validated), design (the phases of a scientific
study), runner (Ray Tune), searcher (Optuna through Tune), replicate_plan, outcome (a trial's
state), progress_table, status, publish (report and export), ui, cli. Three rooms hold the rest:
storage/ (the stores, the study lock, the disk), tracking/ (MLflow) and cluster/ (Ray clusters,
jobs, a tracking server).
"""
import importlib
import importlib.abc
import importlib.util
import sys

from analysis.library_internals import (MLFLOW_NEW_DATABASE_LOGGER, OPTUNA_EXPERIMENTAL, OPTUNA_NEW_STUDY_LOGGERS,
                                        TUNE_INTERRUPT_LINES, TUNE_LOGGER)

# the environment of every driver the service runs or submits: nothing waits on an unreachable host
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
             "RAY_AIR_NEW_OUTPUT": "0",
             # checkpoints at every evaluation force state snapshots (which resume relies on)
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
             # a probe trial reports its probe objective only once probing starts; the study
             # file's objectives are checked against what each trainable reports (study.spec)
             "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",      # no bars in reports
             # no "View run ... at: http://..." line per run against a tracking server (the URL
             # would also carry any user:password of the tracking URI)
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
             # a tracking server that does not answer is said within seconds (MLflow's defaults
             # retry for about 4 minutes; a study's driver keeps its events meanwhile: study/tracking/delivery.py)
             "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

# a driver that starts its own Ray (no RAY_ADDRESS to join): Ray reads both when it is imported.
# Every Ray process then binds 127.0.0.1 (node IP = loopback; nodes cannot join), and token
# auth, which Ray turns on by default for such a cluster with a warning, is asked for explicitly:
# loopback is open to every user of the machine, the token (~/.ray/auth_token) is not.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}

# library lines that tell a study's user nothing (the driver prints the progress and results):
# "Creating initial MLflow database tables...", "A new study created in RDB with name: ..."
QUIET_LOGGERS = (MLFLOW_NEW_DATABASE_LOGGER, *OPTUNA_NEW_STUDY_LOGGERS)


def user_ray_tmpdir() -> str:
    """Where a local Ray of this user keeps its session folders and Tune its lock files:
    <tmp>/loopstudy-ray-<uid>. Ray's default (/tmp/ray, /tmp/_ray_lockfiles) is made by the first
    user's Ray with mode 0755, and every other user's restore then fails to take its lock."""
    import os
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"loopstudy-ray-{os.getuid()}")


def quiet_environment(local_ray: bool = True) -> None:
    """Set QUIET_ENV in this process (keeping what the user set), and LOCAL_RAY_ENV and a Ray
    temp folder of this user's (RAY_TMPDIR, unless set) when it may start a local Ray
    (`local_ray`, and no RAY_ADDRESS to join), before Ray or MLflow are imported."""
    import os

    local = {**LOCAL_RAY_ENV, "RAY_TMPDIR": user_ray_tmpdir()} if local_ray and not os.environ.get("RAY_ADDRESS") \
        else {}
    for key, value in {**QUIET_ENV, **local}.items():
        os.environ.setdefault(key, value)


def _not_tune_advice(record) -> bool:
    return not str(record.msg).startswith(TUNE_INTERRUPT_LINES)


def quiet_libraries() -> None:
    """Silence the library lines a study's terminal does not need (QUIET_LOGGERS, Optuna's
    experimental notices); every other warning still shows."""
    import logging
    import warnings

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # an interrupted fit(): the driver says how to resume (`loopstudy resume`), not Tune
    tune_log = logging.getLogger(TUNE_LOGGER)
    if _not_tune_advice not in tune_log.filters:
        tune_log.addFilter(_not_tune_advice)
    # Optuna's notice on each experimental class we use (BruteForceSampler): about our code, not the study
    warnings.filterwarnings("ignore", message=OPTUNA_EXPERIMENTAL)


# Modules that moved when study/ got rooms (2026-12-03). Study folders started before pickled
# their classes under the old names (tuner.pkl, the searcher's state: Stores, the Optuna storage,
# the disk guard); an old name imports the module that holds them now. (The tracker's old names
# are in study/tracking/__init__.py: study.tracking is a package now.)
MOVED = {"study.stores": "study.storage.stores", "study.disk_guard": "study.storage.disk_guard",
         "study.disk_space": "study.storage.disk_checks", "study.study_lock": "study.storage.study_lock",
         "study.tracking_backlog": "study.tracking.delivery", "study.trial_run": "study.tracking.trial_run"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


sys.meta_path.append(_MovedModules())
