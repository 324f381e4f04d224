"""The cluster stores for real: Optuna on a PostgreSQL server and an MLflow tracking server
(`loopstudy server`) whose backend is that PostgreSQL server, both owned by the test; studies
run through the CLI on a local Ray. Two drivers write at once; the database restarts mid-study.

Every case ends with one audit: Optuna (read from PostgreSQL), MLflow (read through the server),
the run folders and Ray's experiment state tell the same story."""
from __future__ import annotations

import os
import pickle
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
import pytest

from audit import StudyStores, audit, finished_trials
from study.storage.databases import PatientRDBStorage
from study.storage.credentials import expanded
from studyfiles import ENV, Lines, start_cli, write_study
from trainables.config import ConfigError

pytestmark = [pytest.mark.service, pytest.mark.postgres]
READY = "database system is ready to accept connections"     # the server's log line once it serves
RUNNING_ON = r"^t\d{3} .*: running on node"                    # the driver's line at a trial's first result
ENDED = r"^(t\d{3}) .*: (completed|pruned|failed)"             # ... and at its end
FINISHED = r"^finished: "                                        # ... and the study's
STEPS = 50                 # reports per trial, each a write to both stores
STEPS_LOGGED = list(range(1, STEPS + 1))
TRIALS = 3
OPTUNA_PASSWORD = "LOOPSTUDY_OPTUNA_PASSWORD"   # the study file refers to it: ${LOOPSTUDY_OPTUNA_PASSWORD}
OUTAGE_S = 5               # how long the database is down in the restart test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL server in a folder of its own: 127.0.0.1 on a free port, SCRAM password auth
    for one user, databases `optuna` and `mlflow`. As root it runs as the `postgres` user (the
    server refuses root)."""

    def __init__(self, install):
        self.bin, self.owner = install.bin, install.owner
        self.root = Path(tempfile.mkdtemp(prefix="lspg"))     # /tmp: the server's user must reach it
        self.data, self.port = self.root / "data", free_port()
        self.user, self.password = "loopstudy", secrets.token_hex(12)
        self.process: subprocess.Popen | None = None

    def url(self, database: str, password: str | None = None) -> str:
        """The database's URL; `password` "" leaves it out, "${VAR}" refers to it."""
        password = self.password if password is None else password
        return f"postgresql://{self.user}{':' * bool(password)}{password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> dict:
        """Popen arguments that run a program as the server's user."""
        if self.owner is None:
            return {}
        return {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}

    def create(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.owner:
            for path in (self.root, password_file):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--pwfile",
                        str(password_file), "--auth=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, **self._as_owner())
        password_file.unlink()
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:   # CREATE DATABASE
            for database in ("optuna", "mlflow"):                                   # refuses transactions
                connection.execute(f"CREATE DATABASE {database}")

    def start(self) -> None:
        """Start the server and return once its log says it accepts connections."""
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"LC_ALL": "C"},
            **self._as_owner())
        self.log = Lines(self.process)
        self.log.wait_for(READY, timeout_s=60)

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: every session is disconnected, the server shuts down cleanly."""
        subprocess.run([str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"],
                       check=True, capture_output=True, env={"LC_ALL": "C"}, **self._as_owner())
        self.process.wait(timeout=30)

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Servers:
    postgres: Postgres
    mlflow_uri: str
    env: dict            # a driver's: the Optuna password in LOOPSTUDY_OPTUNA_PASSWORD


@pytest.fixture(scope="module")
def servers(postgres_install, tmp_path_factory):
    """PostgreSQL and an MLflow tracking server on it (`loopstudy server`), for the module."""
    postgres = Postgres(postgres_install)
    mlflow = None
    try:
        postgres.create()
        port, artifacts = free_port(), tmp_path_factory.mktemp("mlartifacts")
        mlflow = start_cli("server", "--backend", postgres.url("mlflow", password=""), "--artifacts",
                           str(artifacts), "--port", str(port), cwd=artifacts,
                           env={**ENV, "PGPASSWORD": postgres.password})            # libpq's own
        mlflow.wait_for(r"^MLflow tracking server ready: ", timeout_s=120)
        yield Servers(postgres, f"http://127.0.0.1:{port}", {**ENV, OPTUNA_PASSWORD: postgres.password})
    finally:
        if mlflow:
            mlflow.process.terminate()
            mlflow.process.wait(timeout=30)
        postgres.remove()


def postgres_study(tmp_path: Path, servers: Servers, name: str, **fields) -> Path:
    """A synthetic study on the servers: TRIALS trials, 2 at a time, no early stopping; one report
    per step (each one a write to both stores), a checkpoint every 10."""
    storage = {"storage_path": str(tmp_path / "shared"), "mlflow": servers.mlflow_uri,
               "optuna": servers.postgres.url("optuna", password=f"${{{OPTUNA_PASSWORD}}}")}
    return write_study(tmp_path, name, trainable="synthetic", scheduler=None, storage=storage,
                       overrides={"training.train_steps": STEPS, "training.eval_every": 1,
                                  "training.checkpoint_every": 10, "training.log_every": 1},
                       budget={"num_samples": TRIALS, "max_concurrent": 2}, **fields)


def study_stores(servers: Servers, tmp_path: Path, name: str) -> StudyStores:
    """Where a study of `postgres_study` lies: Optuna (read from PostgreSQL), MLflow (through the
    server), the Ray experiment under the shared storage path."""
    return StudyStores(name, servers.postgres.url("optuna"), servers.mlflow_uri, tmp_path / "shared" / name)


def test_two_drivers_write_the_same_servers_at_once(servers, tmp_path):
    drivers = {name: start_cli("run", str(postgres_study(tmp_path, servers, name)), cwd=tmp_path,
                               env=servers.env) for name in ("alpha", "beta")}
    for lines in drivers.values():
        lines.wait_for(RUNNING_ON)
    assert all(lines.process.poll() is None for lines in drivers.values())    # both are writing at once
    for lines in drivers.values():
        lines.wait_for(FINISHED, timeout_s=600)
        assert lines.process.wait(timeout=60) == 0, lines.rest()
    for name in drivers:
        audit(study_stores(servers, tmp_path, name), TRIALS, STEPS_LOGGED)
        kept = [p for p in (tmp_path / "shared" / name).rglob("*") if p.is_file()]   # study.yaml, tuner.pkl, ...
        assert not [p for p in kept if servers.postgres.password.encode() in p.read_bytes()]
    assert {"alpha", "beta"} <= set(optuna.get_all_study_names(servers.postgres.url("optuna")))


def test_database_restart_mid_study_stops_the_driver_and_resume_completes(servers, tmp_path):
    path = postgres_study(tmp_path, servers, "restart")
    stores = study_stores(servers, tmp_path, "restart")
    driver = start_cli("run", str(path), cwd=tmp_path, env=servers.env)
    first = int(driver.wait_for(ENDED)[0].group(1)[1:])              # one trial has finished ...
    driver.wait_for(r"^t002 .*: running on node")                     # ... and two are running
    kept = finished_trials(stores)
    assert first in kept
    servers.postgres.stop()
    time.sleep(OUTAGE_S)                                               # the outage itself, not a wait
    servers.postgres.start()
    driver.wait_for(FINISHED, timeout_s=600)                          # it waited the outage out
    assert driver.process.wait(timeout=60) == 0, driver.rest()
    after = audit(stores, TRIALS, STEPS_LOGGED)
    assert {n: after[n] for n in kept} == kept                         # finished trials untouched


def test_a_pickled_storage_holds_no_password_and_reopens_from_the_environment(servers, monkeypatch):
    """Tune pickles the searcher with its storage (tuner.pkl, searcher state): the pickle keeps
    the ${VARIABLE}, and unpickling (a resume) takes the password from the environment again."""
    given = servers.postgres.url("optuna", password=f"${{{OPTUNA_PASSWORD}}}")
    monkeypatch.setenv(OPTUNA_PASSWORD, servers.postgres.password)
    storage = PatientRDBStorage(expanded(given, "storage.optuna"), given)
    kept = pickle.dumps(storage)
    assert servers.postgres.password.encode() not in kept
    assert [s.study_name for s in pickle.loads(kept).get_all_studies()] == \
        [s.study_name for s in storage.get_all_studies()]
    monkeypatch.delenv(OPTUNA_PASSWORD)
    with pytest.raises(ConfigError, match=f"takes its password from \\${OPTUNA_PASSWORD}, which is not set"):
        pickle.loads(kept)
