"""The study service: study specs, Ray Tune runs, MLflow tracking, the `loopstudy` CLI."""

# the environment of every driver the service runs or submits: nothing waits on an unreachable host
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AIR_NEW_OUTPUT": "0",
             # checkpoints at every evaluation force state snapshots (which resume relies on)
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
             # a probe trial reports its probe objective only once probing starts; the study
             # file's objectives are checked against what each trainable reports (study.spec)
             "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}      # no bars in reports


def quiet_environment() -> None:
    """Set QUIET_ENV in this process (keeping what the user set), before Ray or MLflow start."""
    import os

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
