"""Where a study's results live: one folder holding the three stores, each with one job.

    <results>/study.yaml     the validated study file (for resume and status)
    <results>/ray/<name>/    Ray Tune storage: experiment state, one folder per trial (the run
                             folder: config.yaml, metrics.jsonl, checkpoints, eval.png)
    <results>/optuna.db      the Optuna study: the search history
    <results>/mlflow.db      MLflow tracking, artifacts under <results>/mlartifacts/
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna


@dataclass(frozen=True)
class Stores:
    root: Path
    name: str

    @property
    def study_file(self) -> Path:
        return self.root / "study.yaml"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def experiment(self) -> Path:
        """Ray's experiment folder; trial folders inside are named by Tune trial id."""
        return self.ray / self.name

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(self.optuna_url)

    def optuna_study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.optuna_storage())
