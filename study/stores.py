"""Where a study's results live: three stores, each with one job.

Embedded (no `storage` section): one folder holds everything.

    <results>/study.yaml     the validated study file (for resume and status)
    <results>/ray/<name>/    Ray Tune storage: experiment state, one folder per trial (the run
                             folder: config.yaml, metrics.jsonl, checkpoints, eval.png)
    <results>/optuna.db      the Optuna study: the search history
    <results>/mlflow.db      MLflow tracking, artifacts under <results>/mlartifacts/

Cluster (a `storage` section, or `loopstudy submit` flags): each store is named separately.

    storage_path: /shared/loopstudy       Ray storage; the experiment is <storage_path>/<name>/
    optuna: journal:///shared/loopstudy/optuna.log    or postgresql://user:pw@host/db
    mlflow: http://mlflow-host:5001       a tracking server (`loopstudy server`)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import optuna

JOURNAL = "journal://"
DATABASES = ("postgresql", "mysql")        # with an optional +driver: postgresql+psycopg2://...
SERVERS = ("http", "https")


@dataclass(frozen=True)
class Storage:
    """The study file's `storage` section; a field left out keeps its embedded default."""
    storage_path: str | None = None
    optuna: str | None = None
    mlflow: str | None = None

    def given(self) -> dict[str, str]:
        """The fields set, as a study file's `storage` section."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def merged(self, **given: str | None) -> "Storage":
        """These settings with `given` ones (flags) taking precedence."""
        return Storage(**{k: given.get(k) or v for k, v in asdict(self).items()})

    def errors(self) -> list[str]:
        """What is malformed, each message naming its field."""
        found = []
        if self.storage_path is not None and not Path(self.storage_path).is_absolute():
            scheme = urlparse(self.storage_path).scheme
            found.append(f"'storage.storage_path' must be an absolute path on a filesystem every node "
                         f"mounts, got {self.storage_path!r}" + (
                             f" (object-store URIs ({scheme}://) are not supported: run folders are "
                             "written as files; mount the bucket, e.g. with mountpoint-s3 or gcsfuse)"
                             if scheme else ""))
        if self.optuna is not None:
            scheme = urlparse(self.optuna).scheme.split("+")[0]
            if self.optuna.startswith(JOURNAL):
                if not Path(self.optuna[len(JOURNAL):]).is_absolute():
                    found.append(f"'storage.optuna' journal path must be absolute "
                                 f"(journal:///path/optuna.log), got {self.optuna!r}")
            elif scheme not in DATABASES + ("sqlite",):
                found.append(f"'storage.optuna' must be journal:///PATH, postgresql://..., mysql://... "
                             f"or sqlite:///PATH, got {self.optuna!r}")
        if self.mlflow is not None and urlparse(self.mlflow).scheme not in SERVERS + ("sqlite",):
            found.append(f"'storage.mlflow' must be a tracking server http(s)://HOST:PORT or "
                         f"sqlite:///PATH, got {self.mlflow!r}")
        return found

    def cluster_errors(self) -> list[str]:
        """Why these stores cannot serve a multi-node study (empty when they can)."""
        found = self.errors()
        if self.storage_path is None:
            found.append("'storage.storage_path' is required on a cluster: a filesystem path every "
                         "node mounts (trial checkpoints and run folders)")
        if self.optuna is None or self.optuna.startswith("sqlite"):
            found.append("'storage.optuna' must not be SQLite on a cluster (a file on one node, locked "
                         "by every reader): use journal:///SHARED/PATH/optuna.log or postgresql://...")
        if self.mlflow is None or not self.mlflow.startswith(SERVERS):
            found.append("'storage.mlflow' must be a tracking server on a cluster (http://HOST:PORT, "
                         "see `loopstudy server`), not an embedded SQLite file")
        return found


@dataclass(frozen=True)
class Stores:
    root: Path
    name: str
    storage: Storage = field(default_factory=Storage)

    @classmethod
    def of(cls, spec) -> "Stores":
        return cls(spec.results_dir, spec.name, spec.storage)

    @property
    def study_file(self) -> Path:
        return self.root / "study.yaml"

    @property
    def ray(self) -> Path:
        return Path(self.storage.storage_path) if self.storage.storage_path else self.root / "ray"

    @property
    def experiment(self) -> Path:
        """Ray's experiment folder; trial folders inside are named by Tune trial id."""
        return self.ray / self.name

    @property
    def replicate_experiment(self) -> Path:
        """Ray's experiment folder of the replicate phase (study/replicates.py)."""
        return self.ray / f"{self.name}-replicates"

    @property
    def optuna_url(self) -> str:
        return self.storage.optuna or f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.storage.mlflow or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def artifact_location(self) -> str | None:
        """Where a new MLflow experiment keeps artifacts; None lets a tracking server choose
        (proxied `mlflow-artifacts:/` URIs, so no client needs the server's disk)."""
        return None if self.mlflow_uri.startswith(SERVERS) else self.artifacts.as_uri()

    def optuna_storage(self) -> optuna.storages.BaseStorage:
        if self.optuna_url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            path = Path(self.optuna_url[len(JOURNAL):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        return optuna.storages.RDBStorage(self.optuna_url)

    def optuna_study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.optuna_storage())
