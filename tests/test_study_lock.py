"""One driver per study (study/storage/study_lock.py): a second one is refused, naming the holder; a
holder killed with SIGKILL leaves the lock free. The service test runs two real drivers."""
import functools
import getpass
import json
import multiprocessing
import os
import re
import shlex
import signal
import socket
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from study.errors import StudyError
from study.storage.study_lock import LOCK_FILE, StudyLock
from studyfiles import cli, start_cli, write_study

RUNNING_ON = r"^t\d{3} .*: running on node"        # the driver's line at a trial's first result
FINISHED = r"^finished: "                          # ... and at the study's end


def _hold(folder: Path, parent) -> None:
    """In a child process: hold the study until the parent says so."""
    with StudyLock(folder, "demo"):
        parent.send("held")
        parent.recv()


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/demo: (the process, a call that releases it).
    A pipe, not a multiprocessing.Event: an Event whose waiter was killed hangs the next set()."""
    fork = multiprocessing.get_context("fork")       # the child needs no imports of its own
    ours, theirs = fork.Pipe()
    process = fork.Process(target=_hold, args=(tmp_path / "demo", theirs))
    process.start()
    assert ours.poll(30) and ours.recv() == "held", "the holder never took the lock"
    release = functools.partial(ours.send, "release")
    yield process, release
    if process.is_alive():
        release()
    process.join(10)


def test_a_second_holder_is_refused_with_who_holds_it(holder, tmp_path):
    process, release = holder
    path = tmp_path / "demo" / LOCK_FILE
    with pytest.raises(StudyError) as refused:
        with StudyLock(tmp_path / "demo", "demo"):
            pass
    assert re.fullmatch(
        rf"study 'demo' is running: held by pid {process.pid} on host {re.escape(socket.gethostname())} "
        rf"\(user {re.escape(getpass.getuser())}\) since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
        rf"\(lock file {re.escape(str(path))}\); wait for it or stop it", str(refused.value)), refused.value
    with pytest.raises(StudyError, match=rf"study 'demo' is running: held by pid {process.pid} "):
        StudyLock(tmp_path / "demo", "demo").refuse_if_held()    # the check before the others
    StudyLock(tmp_path / "elsewhere").refuse_if_held()           # no lock file: passes, creates nothing
    assert not (tmp_path / "elsewhere").exists()
    release()
    process.join(10)
    assert process.exitcode == 0
    StudyLock(tmp_path / "demo").refuse_if_held()                # free: passes, takes nothing
    with StudyLock(tmp_path / "demo"):                  # released: ours now, and it says so
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""                       # nobody holds it


def test_a_holder_killed_with_sigkill_leaves_the_lock_free(holder, tmp_path):
    process, _ = holder
    path = tmp_path / "demo" / LOCK_FILE
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    assert process.exitcode == -signal.SIGKILL
    assert json.loads(path.read_text())["pid"] == process.pid     # its record stays, its lock does not
    with StudyLock(tmp_path / "demo"):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_the_lock_creates_a_missing_results_folder_and_records_the_holder(tmp_path):
    folder = tmp_path / "results" / "new"
    with StudyLock(folder):
        record = json.loads((folder / LOCK_FILE).read_text())
    assert record["host"] == socket.gethostname() and record["user"] == getpass.getuser()
    # this process's own command line (pytest's, or a pytest-xdist worker's)
    assert record["command"] == shlex.join(sys.orig_argv)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["since"])


def lock_holders(path: Path) -> set[int]:
    """The processes with `path` open."""
    found = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(path):
                found.add(int(fd.parts[2]))
        except OSError:
            continue
    return found


@pytest.mark.service
def test_a_second_driver_is_refused_while_a_study_runs(tmp_path):
    name, folder = "locked", tmp_path / "locked"
    path = write_study(tmp_path, name, trainable="synthetic", scheduler=None,
                       budget={"num_samples": 2, "max_concurrent": 2},
                       overrides={"training.train_steps": 30, "training.eval_every": 1,
                                  "training.checkpoint_every": 10})
    first = start_cli("run", str(path), cwd=tmp_path)
    first.wait_for(RUNNING_ON)
    # only the driver has the lock open (none of the Ray processes it started): its kill -9 frees it
    assert lock_holders(folder / LOCK_FILE) == {first.process.pid}
    first.process.send_signal(signal.SIGSTOP)          # paused: it surely holds the study meanwhile
    try:
        second = cli("resume", name, "--results-root", str(tmp_path), cwd=tmp_path)
    finally:
        first.process.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"loopstudy: error: study '{name}' is running: held by pid {first.process.pid} on host " \
        in second.stderr and "Traceback" not in second.stderr, second.stderr

    first.wait_for(FINISHED)
    assert first.process.wait(timeout=60) == 0, first.rest()
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert sorted((r.data.tags["loopstudy_role"], r.info.status) for r in runs) == \
        [("parent", "FINISHED"), ("trial", "FINISHED"), ("trial", "FINISHED")]
    # the refused driver started no Tune session of its own, and the lock is free again
    assert len(list((folder / "ray" / name).glob("experiment_state-*.json"))) == 1
    with StudyLock(folder):
        pass
