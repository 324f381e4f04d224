"""The databases behind the stores: Optuna's RDBStorage made patient with a database that
restarts, and a check that an existing SQLite file is the store it is meant to be."""
from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from pathlib import Path

import optuna
import sqlalchemy

from analysis import library_internals
from ..errors import ConfigError
from ..retrying import until_deadline
from .credentials import expanded

TABLE_RACE_ATTEMPTS = 5      # drivers starting at once on a new database race to make its tables
DATABASE_OUTAGE_S = 120      # how long a study waits for its Optuna database to answer again
NOT_AN_OUTAGE = "database or disk is full"     # SQLite's: waiting does not free the disk (study/storage/disk_guard.py)


def _database_away(error: Exception) -> bool:
    """Whether `error` says the database cannot be reached now (a restart, a failover); a full
    disk is not waited out (waiting does not free it)."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else error
    return isinstance(cause, sqlalchemy.exc.OperationalError) and NOT_AN_OUTAGE not in str(cause)


def _waits_out_outages(method):
    """`method`, called again while the database cannot be reached, for up to DATABASE_OUTAGE_S;
    any other error is raised at once."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        return until_deadline(lambda: method(*args, **kwargs), _database_away,
                              time.monotonic() + DATABASE_OUTAGE_S)
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
        return {**super().__getstate__(), library_internals.RDB_STATE_URL: self.shown_url}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__({**state, library_internals.RDB_STATE_URL: expanded(state["shown_url"], "storage.optuna")})


# every database access of a study is a public method of BaseStorage (analysis/library_internals.py)
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
