"""Storage faults: a results location that cannot be written, and a disk that fills up mid-study.

An unwritable location is refused before Ray starts, naming the path (study/storage/disk_checks.py).
A full disk mid-study: the results live on a small tmpfs mounted in a private mount namespace
(held by a sleeping process; every command enters it with nsenter, so nothing is mounted on the
host), a filler file takes the space after the first trial has finished, the driver stops
cleanly with one line naming the path, nothing finished is lost, and once the filler is gone
`loopstudy resume` runs the study to the end. Every such case ends with the shared audit
(tests/audit.py), run inside the namespace (`python tests/test_storage_faults.py audit ...`,
since only there do the tmpfs files exist)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import StudyStores, audit, finished_trials
from studyfiles import ENV, REPO, start_cli, write_study

pytestmark = pytest.mark.service
ENDED = r"^(t\d{3}) .*: (completed|pruned|failed)"       # the driver's line at a trial's end
FINISHED = r"^finished: "                                  # ... and at the study's end
STEPS = 40                 # reports per trial (eval_every 1), a checkpoint every 10
TRIALS = 4                 # 2 at a time: after the first has ended, at least 2 are still to run
MIN_FREE_MB = 32           # what the studies here keep free (LOOPSTUDY_MIN_FREE_MB)
MB = 2 ** 20


FILLER = """
import errno, os, sys
folder, leave = sys.argv[1], int(sys.argv[2])
fd, size = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT, 0o600), 0
for _ in range(1000):
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize - leave
    if free <= 0:
        break
    try:
        os.posix_fallocate(fd, size, free)
        size += free
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
os.close(fd)
print(size)
"""


class Namespace:
    """A private mount namespace that outlives the drivers run in it: a process sleeping in it
    holds it; `enter` is the prefix that runs a command there (as root `unshare -m`, else in a
    user namespace, `unshare -rm`)."""

    def __init__(self):
        root = os.geteuid() == 0
        self.holder = subprocess.Popen(["unshare", "-m" if root else "-rm", "--propagation", "private",
                                        "sleep", "infinity"], stdin=subprocess.DEVNULL)
        self.enter = ["nsenter", "-t", str(self.holder.pid), "-m"] + \
            ([] if root else ["-U", "--preserve-credentials"]) + [f"--wd={REPO}"]
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            # until unshare has made it, entering the holder's namespace would enter the host's
            assert self.holder.poll() is None and time.monotonic() < deadline, "unshare made no namespace"
            time.sleep(0.05)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.enter, *command], capture_output=True, text=True, timeout=300)
        if check and done.returncode:
            raise AssertionError(f"{command} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def mount_tmpfs(self, folder: Path, size_mb: int, *options: str) -> None:
        self.run("mkdir", "-p", str(folder))
        self.run("mount", "-t", "tmpfs", "-o", ",".join([f"size={size_mb}m", *options]), "tmpfs", str(folder))

    def fill(self, folder: Path, leave_bytes: int = 0) -> int:
        """Take all but `leave_bytes` of `folder`'s filesystem with a filler file; its size. The
        study writes meanwhile, so what was free a moment ago may be gone: the filler grows by
        what is free now until nothing more is (an allocation that finds less retries)."""
        done = self.run(sys.executable, "-c", FILLER, str(folder), str(leave_bytes))
        return int(done.stdout)

    def unfill(self, folder: Path) -> None:
        self.run("rm", str(folder / "filler"))

    def stores(self, results: Path, name: str, n_trials: int | None = None) -> dict:
        """`finished_trials` of the study in `results` (JSON's view of it), read inside the
        namespace; with `n_trials`, after the audit of a finished study of that many trials."""
        done = self.run(sys.executable, __file__, "audit" if n_trials else "finished", str(results), name,
                        str(n_trials or 0))
        return json.loads(done.stdout.strip().splitlines()[-1])

    def files(self, folder: Path) -> str:
        """Every file under `folder` with its size and modification time: what a refused
        command must not touch."""
        return self.run("find", str(folder), "-type", "f", "-printf", r"%p %s %T@\n").stdout

    def close(self) -> None:
        self.holder.send_signal(signal.SIGKILL)     # its namespace, and the tmpfs in it, go with it
        self.holder.wait(timeout=30)


@pytest.fixture
def namespace():
    namespace = Namespace()
    yield namespace
    namespace.close()


def storage_study(tmp_path: Path, results: Path, name: str) -> Path:
    """A synthetic study in `results`: TRIALS trials of STEPS steps, 2 at a time, no early
    stopping; one report per step (a write to both stores), a checkpoint every 10 steps."""
    return write_study(tmp_path, name, trainable="synthetic", scheduler=None, results_dir=str(results),
                       overrides={"training.train_steps": STEPS, "training.eval_every": 1,
                                  "training.checkpoint_every": 10, "training.log_every": 1},
                       budget={"num_samples": TRIALS, "max_concurrent": 2})


def driver_env(min_free_mb: int) -> dict:
    return {**ENV, "LOOPSTUDY_MIN_FREE_MB": str(min_free_mb)}


def resume_to_the_end(namespace: Namespace, results: Path, name: str, kept: dict, min_free_mb: int) -> None:
    """Free the space, resume the study to its end, audit it, and check that the trials kept
    before the fault are exactly as they were."""
    driver = start_cli("resume", str(results), cwd=REPO, env=driver_env(min_free_mb), prefix=namespace.enter)
    driver.wait_for(FINISHED, timeout_s=400)
    assert driver.process.wait(timeout=120) == 0, driver.rest()
    after = namespace.stores(results, name, TRIALS)
    assert {n: after[n] for n in kept} == kept                  # finished trials untouched


# ---------------------------------------------------------------- refused before anything starts

def refused(*args: str, env: dict | None = None, prefix: list[str] = ()) -> str:
    """`loopstudy ARGS` that must stop at once with exit 2; its one error line. RAY_ADDRESS
    points at nothing, so a driver that got as far as Ray would fail differently."""
    done = subprocess.run([*prefix, sys.executable, "-m", "study.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**(env or ENV), "RAY_ADDRESS": "127.0.0.1:9"})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("loopstudy: error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return lines[0]


def test_results_under_a_regular_file_are_refused_naming_the_path(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder would go\n")
    for results in (blocker / "results", blocker):
        line = refused("run", str(storage_study(tmp_path, results, "blocked")), "--results", str(results))
        assert f"{results}: cannot create the study's results folder there: {blocker} is a file, " \
               "not a directory" in line, line
    assert blocker.read_text() == "a file where a folder would go\n" and sorted(tmp_path.iterdir()) == \
        [tmp_path / "blocked.yaml", blocker]


@pytest.mark.tmpfs
def test_read_only_or_nearly_full_results_are_refused_before_ray_starts(tmp_path, namespace):
    disk, small = tmp_path / "read_only", tmp_path / "small"
    namespace.mount_tmpfs(disk, 8, "ro")
    namespace.mount_tmpfs(small, 8)
    study = storage_study(tmp_path, disk / "ro", "ro")
    line = refused("run", str(study), "--results", str(disk / "ro"), prefix=namespace.enter)
    assert f"{disk / 'ro'}: cannot create the study's results folder: read-only file system" in line, line
    line = refused("run", str(study), "--results", str(small / "a" / "b"), prefix=namespace.enter)
    assert re.search(rf"^loopstudy: error: {small / 'a' / 'b'}: only [78]\.\d MB free on its filesystem \(the "
                     r"study's results folder\), a study needs at least 100 MB \(LOOPSTUDY_MIN_FREE_MB\): free "
                     r"space, or give another --results$", line), line
    assert namespace.files(small) == "" and namespace.run("ls", "-A", str(small)).stdout == ""   # a/b removed again


def test_a_damaged_tune_state_is_not_resumed(tmp_path):
    """Tune's copy of its state to the storage path overwrites the file in place: a full disk
    cuts it short, and Tune's restore would then start the experiment over."""
    import pickle

    from study.storage.disk_checks import check_tune_state
    from study.errors import StudyError

    experiment = tmp_path / "ray" / "demo"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"whole": True}))
    (experiment / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps(list(range(100))))
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    check_tune_state(experiment)
    newest = experiment / "experiment_state-2026-01-02_00-00-00.json"
    newest.write_text(json.dumps({"trial_data": ["x" * 100]})[:50])          # the newest one, cut short
    with pytest.raises(StudyError, match=rf"^{re.escape(str(newest))}: Tune's saved experiment state is "
                                         r"damaged \(cut short, e.g. by a full disk\)"):
        check_tune_state(experiment)
    newest.unlink()
    searcher = experiment / "searcher-state-2026-01-01_00-00-00.pkl"
    searcher.write_bytes(searcher.read_bytes()[:-20])
    with pytest.raises(StudyError, match="searcher-state"):
        check_tune_state(experiment)


# ---------------------------------------------------------------- the disk fills up mid-study

@pytest.mark.tmpfs
def test_low_disk_space_stops_the_study_cleanly_and_resume_completes(tmp_path, namespace):
    disk = tmp_path / "disk"
    namespace.mount_tmpfs(disk, 64)
    results = disk / "guard"
    driver = start_cli("run", str(storage_study(tmp_path, results, "guard")), cwd=REPO,
                       env=driver_env(MIN_FREE_MB), prefix=namespace.enter)
    first = int(driver.wait_for(ENDED)[0].group(1)[1:])
    namespace.fill(disk, leave_bytes=8 * MB)        # 8 MB free, +16 MB the driver keeps: below 32 MB
    stop = driver.wait_for(r"^disk space: ")[0].string
    assert re.fullmatch(rf"disk space: only \d+ MB free on {results} \(the study's results folder\), below the 32 "
                        rf"MB a study keeps free \(LOOPSTUDY_MIN_FREE_MB\): stopping the study; free space on "
                        rf"{results}, then `\S*loopstudy resume {results}`", stop), stop
    assert driver.process.wait(timeout=120) == 130, driver.rest()            # interrupted, like Ctrl-C
    output = driver.rest()
    assert "Traceback" not in output and "study interrupted: resume it with" in output, output
    kept = namespace.stores(results, "guard")
    assert str(first) in kept and len(kept) < TRIALS

    untouched = namespace.files(results)            # a resume while the disk is still full: refused
    line = refused("resume", str(results), env=driver_env(MIN_FREE_MB), prefix=namespace.enter)
    assert re.fullmatch(rf"loopstudy: error: {results}: only \d+ MB free on its filesystem \(the study's results "
                        r"folder\), a study needs at least 32 MB \(LOOPSTUDY_MIN_FREE_MB\): free space, then resume "
                        r"again", line), line
    assert namespace.files(results) == untouched

    namespace.unfill(disk)
    resume_to_the_end(namespace, results, "guard", kept, MIN_FREE_MB)


@pytest.mark.tmpfs
def test_a_trial_that_hits_a_full_disk_is_not_failed_and_resume_completes(tmp_path, namespace):
    """The watch off (LOOPSTUDY_MIN_FREE_MB=0) and Ray's storage full to the last byte: a trial's
    own write fails (ENOSPC, or torch.save's error while nothing is left); the trial reports it,
    the driver stops the study, and the trial continues on resume instead of failing."""
    results = tmp_path / "disk" / "full"
    namespace.mount_tmpfs(results, 64)
    namespace.mount_tmpfs(results / "ray", 48)      # Ray's storage: run folders and Tune's state
    driver = start_cli("run", str(storage_study(tmp_path, results, "full")), cwd=REPO, env=driver_env(0),
                       prefix=namespace.enter)
    first = int(driver.wait_for(ENDED)[0].group(1)[1:])
    namespace.fill(results / "ray")
    stop = driver.wait_for(r"^disk full: ")[0].string
    assert re.fullmatch(rf"disk full: .+ \(trial t\d{{3}}\): stopping the study; free space on {results / 'ray'}, "
                        rf"then `\S*loopstudy resume {results}`", stop), stop
    assert driver.process.wait(timeout=120) == 130, driver.rest()
    assert "study interrupted: resume it with" in driver.rest()
    kept = namespace.stores(results, "full")
    assert str(first) in kept and len(kept) < TRIALS
    assert all(v["optuna"][0] == "COMPLETE" for v in kept.values())         # nothing failed for the disk

    namespace.unfill(results / "ray")
    resume_to_the_end(namespace, results, "full", kept, 0)


# ---------------------------------------------------------------- run inside the namespace

def _as_json(found: dict) -> dict:
    """`finished_trials` as JSON holds it (states by name, tuples as lists, keys as text)."""
    def plain(value):
        if hasattr(value, "name") and not isinstance(value, str):
            return value.name
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return json.loads(json.dumps(plain(found)))


if __name__ == "__main__":          # python tests/test_storage_faults.py audit|finished RESULTS NAME N_TRIALS
    what, results, name, n_trials = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    stores = StudyStores.embedded(results, name)
    found = audit(stores, n_trials, list(range(1, STEPS + 1))) if what == "audit" else finished_trials(stores)
    print(json.dumps(_as_json(found)))


def test_a_full_sqlite_disk_is_not_waited_out_like_a_database_restart():
    """Optuna's storage calls are retried while a database is unreachable (study/storage/databases.py), not
    when SQLite says its disk is full: waiting frees nothing, and the driver must stop at once."""
    import sqlalchemy

    from study.storage.databases import _waits_out_outages

    calls = []

    def write():
        calls.append(time.monotonic())
        raise sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full"))

    with pytest.raises(sqlalchemy.exc.OperationalError, match="database or disk is full"):
        _waits_out_outages(write)()
    assert len(calls) == 1
