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

No password is ever written into a URI of ours: one in the study file or a flag would be kept in
study.yaml (and the study's MLflow parent run) and shown by whatever prints the URI. It comes
from the environment: the tools' own (PGPASSWORD or ~/.pgpass for PostgreSQL,
MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD for an MLflow server), or a reference in the
password's place, `postgresql://optuna:${OPTUNA_DB_PASSWORD}@host/db`, expanded only when a store
is opened (`Stores.optuna_url`, `Stores.mlflow_uri`; print `optuna_shown`, `mlflow_shown`).
`redact` shows any URI without its password.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import optuna
import sqlalchemy

from trainables.config import ConfigError

JOURNAL = "journal://"
DATABASES = ("postgresql", "mysql")        # with an optional +driver: postgresql+psycopg2://...
SERVERS = ("http", "https")
# where a URI carries a password (group 1): scheme://user:PASSWORD@host, or ...?password=PASSWORD
PASSWORDS = (re.compile(r"(?<=://)[^/@:]*:([^/@]*)@"), re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE))
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")     # ${VARIABLE}


def _replace_passwords(uri: str, replace) -> str:
    """`uri` with each non-empty password `p` replaced by `replace(p)`."""
    def one(match: re.Match) -> str:
        if not match.group(1):
            return match.group(0)
        start, end = match.start(1) - match.start(0), match.end(1) - match.start(0)
        return match.group(0)[:start] + replace(match.group(1)) + match.group(0)[end:]

    for pattern in PASSWORDS:
        uri = pattern.sub(one, uri)
    return uri


def redact(uri: str) -> str:
    """`uri` as it may be shown: a password written out becomes ***; a ${VARIABLE} stays."""
    return _replace_passwords(uri, lambda p: p if REFERENCE.fullmatch(p) else "***")


def has_password(uri: str) -> bool:
    """Whether `uri` holds a password written out (not a ${VARIABLE} reference)."""
    return redact(uri) != uri


def expanded(uri: str, where: str) -> str:
    """`uri` with its ${VARIABLE} password taken from the environment (percent-encoded); the
    error names the variable and the field (`where`)."""
    def value(password: str) -> str:
        reference = REFERENCE.fullmatch(password)
        if reference is None:
            return password
        if reference.group(1) not in os.environ:
            raise ConfigError(f"'{where}' {redact(uri)} takes its password from ${reference.group(1)}, which is "
                              "not set here: export it (on a cluster also in the environment of every "
                              "Ray node)")
        return quote(os.environ[reference.group(1)], safe="")

    return _replace_passwords(uri, value)


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
                reference = _replace_passwords(uri, lambda p: f"${{LOOPSTUDY_{name.upper()}_PASSWORD}}")
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
        """Ray's experiment folder of the replicate phase (study/replicates.py)."""
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


TABLE_RACE_ATTEMPTS = 5      # drivers starting at once on a new database race to make its tables
DATABASE_OUTAGE_S = 120      # how long a study waits for its Optuna database to answer again
NOT_AN_OUTAGE = "database or disk is full"     # SQLite's: waiting does not free the disk (study/disk_guard.py)


def _waits_out_outages(method):
    """`method`, called again while the database cannot be reached (a restart, a failover), for
    up to DATABASE_OUTAGE_S; any other error is raised at once."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        deadline = time.monotonic() + DATABASE_OUTAGE_S
        while True:
            try:
                return method(*args, **kwargs)
            except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError) as exc:
                cause = exc if isinstance(exc, sqlalchemy.exc.OperationalError) else exc.__cause__
                if not isinstance(cause, sqlalchemy.exc.OperationalError) or time.monotonic() > deadline \
                        or NOT_AN_OUTAGE in str(cause):
                    raise
                time.sleep(1)
    return call


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage that outlasts a database restart: pooled connections are checked
    before use, and a call the database cannot answer is retried (`_waits_out_outages`).

    Pickled (Tune keeps the searcher, and this storage with it, in tuner.pkl and its searcher
    state), it holds the URL as the study gives it, a password only as its ${VARIABLE}, and
    takes the password from the environment again when unpickled."""

    def __init__(self, url: str, shown_url: str | None = None):
        super().__init__(url, engine_kwargs={"pool_pre_ping": True})
        self.shown_url = shown_url or url

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "url": self.shown_url}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__({**state, "url": expanded(state["shown_url"], "storage.optuna")})


for _name in [n for n in vars(optuna.storages.BaseStorage) if not n.startswith("_")]:
    setattr(PatientRDBStorage, _name, _waits_out_outages(getattr(optuna.storages.RDBStorage, _name)))


def check_sqlite_store(url: str, table: str, owner: str) -> None:
    """Refuse an existing SQLite file at `url` that is damaged or not `owner`'s store (it has no
    `table`), reading it only: Optuna and MLflow would fail on it with a traceback, or write
    their own tables into another store's file. Other URLs, and files not there yet, pass."""
    path = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return

    def refused(what: str) -> ConfigError:
        return ConfigError(f"{path}: not {owner}'s store: {what}; it was left as it is (move it away, "
                           "or point the study at the right file)")

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            check = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:     # "file is not a database", "database disk image is malformed"
        if "database is locked" in str(exc):
            return                           # a writer holds it (a running driver): a database, in use
        raise refused(f"a damaged or foreign file ({exc})") from None
    if check != "ok":
        raise refused(f"a damaged SQLite database ({check})")
    if table not in tables:
        raise refused(f"a SQLite database without {owner}'s tables")
