"""The tracking server goes away mid-study: a real `loopstudy server` (SQLite backend, proxied
artifacts) is stopped while trials train and started again later. Trials never wait for it;
what they report meanwhile is kept in the study's backlog and sent when it is back, or by
`loopstudy sync` when the driver could not wait. Every case ends with the audit."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from audit import StudyStores, audit, finished_trials
from studyfiles import ENV, cli, start_cli, write_study

pytestmark = pytest.mark.service
ENDED = r"^(t\d{3}) .*: (completed|pruned|failed)"      # the driver's line at a trial's end
AWAY = r"^mlflow: http://127\.0\.0\.1:\d+ does not answer \((.*)\): trials go on"
BACK = r"^mlflow: http://127\.0\.0\.1:\d+ is back after \d+ s; (\d+) kept events sent"
STEPS, TRIALS = 100, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """`loopstudy server` on a SQLite file and an artifacts folder that outlive its restarts."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.lines = None

    def start(self) -> None:
        self.lines = start_cli("server", "--backend", f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts",
                               str(self.folder / "artifacts"), "--port", str(self.port), cwd=self.folder)
        self.lines.wait_for(r"^MLflow tracking server ready: ", timeout_s=120)

    def stop(self) -> None:
        self.lines.process.terminate()            # the server stops its whole process group
        assert self.lines.process.wait(timeout=60) == 0


@pytest.fixture
def server(tmp_path):
    server = TrackingServer(tmp_path)
    server.start()
    yield server
    if server.lines.process.poll() is None:
        server.stop()


def outage_study(tmp_path: Path, server: TrackingServer, name: str) -> tuple[Path, StudyStores]:
    """A synthetic study tracked by the server: TRIALS trials, 2 at a time, a report per step."""
    path = write_study(tmp_path, name, trainable="synthetic", scheduler=None, storage={"mlflow": server.uri},
                       overrides={"training.train_steps": STEPS, "training.eval_every": 1,
                                  "training.checkpoint_every": 10, "training.log_every": 1},
                       budget={"num_samples": TRIALS, "max_concurrent": 2})
    results = tmp_path / name
    return path, StudyStores(name, f"sqlite:///{results / 'optuna.db'}", server.uri, results / "ray" / name)


def test_trials_go_on_while_the_tracking_server_is_away_and_it_gets_everything(server, tmp_path):
    path, stores = outage_study(tmp_path, server, "outage")
    driver = start_cli("run", str(path), cwd=tmp_path)
    driver.wait_for(ENDED)
    kept = finished_trials(stores)
    assert kept
    server.stop()
    assert "Connection refused" in driver.wait_for(AWAY)[0].group(1)
    ended_before = sum(bool(re.search(ENDED, line)) for line in driver.seen)
    driver.wait_for(ENDED, count=ended_before + 2)                      # two trials end without MLflow
    backlog = (tmp_path / "outage" / "mlflow_backlog.jsonl").read_text().splitlines()
    assert {json.loads(line)["event"] for line in backlog} >= {"start", "result", "end"}
    server.start()
    sent = int(driver.wait_for(BACK, timeout_s=300)[0].group(1))
    driver.wait_for(r"^finished: ", timeout_s=600)
    assert driver.process.wait(timeout=60) == 0, driver.rest()
    assert sent >= len(backlog)
    assert not (tmp_path / "outage" / "mlflow_backlog.jsonl").exists()
    after = audit(stores, TRIALS, list(range(1, STEPS + 1)))
    assert {n: after[n] for n in kept} == kept                          # what it had is untouched
    synced = cli("sync", str(tmp_path / "outage"), cwd=tmp_path)
    assert synced.returncode == 0 and synced.stdout.startswith("nothing to send"), synced.stdout + synced.stderr
    assert finished_trials(stores) == after


def test_a_driver_that_cannot_wait_keeps_the_events_and_sync_sends_them_once(server, tmp_path):
    path, stores = outage_study(tmp_path, server, "gone")
    driver = start_cli("run", str(path), cwd=tmp_path, env={**ENV, "LOOPSTUDY_MLFLOW_WAIT_S": "3"})
    driver.wait_for(ENDED)
    server.stop()
    driver.wait_for(AWAY)
    output = driver.rest(timeout_s=600)            # every trial ends, then the phase waits 3 s for MLflow
    assert driver.process.returncode == 75, output
    assert "does not answer" in output and "loopstudy sync" in output and "Traceback" not in output
    backlog = tmp_path / "gone" / "mlflow_backlog.jsonl"
    kept = len(backlog.read_text().splitlines())
    refused = cli("sync", str(tmp_path / "gone"), cwd=tmp_path)     # still away: nothing lost, nothing sent
    assert refused.returncode == 75 and len(backlog.read_text().splitlines()) == kept, refused.stderr
    server.start()
    synced = cli("sync", str(tmp_path / "gone"), cwd=tmp_path)
    assert synced.returncode == 0 and f"sent {kept} kept trial events" in synced.stdout, synced.stdout + synced.stderr
    assert not backlog.exists()
    once = finished_trials(stores)
    assert len(once) == TRIALS                              # every trial's run is closed, with its curve
    resumed = cli("resume", str(tmp_path / "gone"), cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert audit(stores, TRIALS, list(range(1, STEPS + 1))) == once
