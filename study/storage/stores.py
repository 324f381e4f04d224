"""Where a study's results live: three stores, each with one job.

Embedded (no `storage` section): one folder holds everything.

    <results>/study.yaml     the validated study file (for resume and status)
    <results>/ray/<name>/    Ray Tune storage: experiment state, one folder per trial (the run
                             folder: config.yaml, metrics.jsonl, checkpoints, eval.png)
    <results>/optuna.db      the Optuna study: the search history
    <results>/mlflow.db      MLflow tracking, artifacts under <results>/mlartifacts/

Cluster (a `storage` section, or `loopstudy submit` flags): each store is named separately.

    storage_path: /shared/loopstudy       Ray storage; the experiment is <storage_path>/<name>/
    optuna: journal:///shared/loopstudy/optuna.log    or postgresql://optuna@host/db
    mlflow: http://mlflow-host:5001       a tracking server (`loopstudy server`)

No password is written into a URI of ours (study/storage/credentials.py): print `optuna_shown`
and `mlflow_shown`; `optuna_url` and `mlflow_uri` hold the password, to open the stores with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import optuna
import sqlalchemy

from ..errors import ConfigError
from .credentials import expanded, has_password, redact, replace_passwords
from .databases import PatientRDBStorage, TABLE_RACE_ATTEMPTS, check_sqlite_store

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
                             f"or sqlite:///PATH, got {redact(self.optuna)!r}")
        if self.mlflow is not None and urlparse(self.mlflow).scheme not in SERVERS + ("sqlite",):
            found.append(f"'storage.mlflow' must be a tracking server http(s)://HOST:PORT or "
                         f"sqlite:///PATH, got {redact(self.mlflow)!r}")
        for name, tools in (("optuna", "PGPASSWORD or ~/.pgpass for PostgreSQL"),
                            ("mlflow", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")):
            uri = getattr(self, name)
            if uri is not None and has_password(uri):
                reference = replace_passwords(uri, lambda p: f"${{LOOPSTUDY_{name.upper()}_PASSWORD}}")
                found.append(f"'storage.{name}' holds a password ({redact(uri)}), which would be kept in "
                             f"study.yaml and MLflow: take it from the environment, as {tools}, or as "
                             f"'{reference}' (single-quoted in a shell)")
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

    def experiment_of(self, name: str) -> Path:
        """Ray's folder of the experiment `name` (a scientific phase's: see study/design.py)."""
        return self.ray / name

    @property
    def replicate_experiment(self) -> Path:
        """Ray's experiment folder of the replicate phase (study/replicate_plan.py)."""
        return self.ray / f"{self.name}-replicates"

    @property
    def optuna_shown(self) -> str:
        """The Optuna storage URL as the study gives it (a password only as its ${VARIABLE}):
        the one to print."""
        return self.storage.optuna or f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def optuna_url(self) -> str:
        """The Optuna storage URL to open, password included: never print it."""
        return expanded(self.optuna_shown, "storage.optuna")

    @property
    def mlflow_shown(self) -> str:
        """The MLflow tracking URI as the study gives it: the one to print."""
        return self.storage.mlflow or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking URI to open, password included: never print it."""
        return expanded(self.mlflow_shown, "storage.mlflow")

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
            try:
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
            except (ValueError, KeyError) as exc:     # a line that is no JSON, or no Optuna operation
                raise ConfigError(f"{path}: not an Optuna journal ({type(exc).__name__}: {exc}); "
                                  "it was left as it is") from None
        check_sqlite_store(self.optuna_url, "studies", "Optuna")
        for attempt in range(TABLE_RACE_ATTEMPTS):
            try:
                return PatientRDBStorage(self.optuna_url, self.optuna_shown)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == TABLE_RACE_ATTEMPTS - 1:   # another driver is making Optuna's tables:
                    raise                                  # each attempt finds more of them made

    def optuna_study(self, study_name: str | None = None) -> optuna.Study:
        """The study's Optuna study (or another in the same storage: a scientific phase's)."""
        return optuna.load_study(study_name=study_name or self.name, storage=self.optuna_storage())
