"""A study folder written before study/ had rooms (commit fcca990: study/stores.py,
study/tracking.py, study/disk_guard.py ...) resumes after the move: Tune and the searcher pickled
our classes under their old module names (tuner.pkl, the searcher's state).

tests/fixtures/study_before_rooms.tar.gz is such a folder: a scientific study of the stand-in
trainable (s=1 vs s=2, three learning rates each, replicates on 2 seeds), its driver killed
(SIGKILL) after the search of s=1 had finished, as the search of s=2 began. It was made in
/tmp/OLD_NAME; its files name that folder (also inside pickles, which keep a path as its
parts, and hex-encoded pickles), so it is moved to another folder of /tmp whose name has the
same length, rewriting the name."""
import shutil
import tarfile
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from analysis.layout import NUMBER, POINT, REPLICATE, ROLE, TRIAL
from studyfiles import cli

pytestmark = pytest.mark.service

FIXTURE = Path(__file__).parent / "fixtures" / "study_before_rooms.tar.gz"
OLD_NAME = "loopstudy-old-layout-" + "x" * 60
TMP = Path("/tmp")


@pytest.fixture
def moved() -> Path:
    """The fixture's study folder, unpacked in a new folder of /tmp, every mention of OLD_NAME
    rewritten; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="loopstudy-moved-".ljust(len(OLD_NAME) - 8, "x"), dir=TMP))
    assert len(root.name) == len(OLD_NAME)
    with tarfile.open(FIXTURE) as archive:       # Python before 3.11.4 (Debian's 3.11.2) has no filter
        archive.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            new = data.replace(OLD_NAME.encode(), root.name.encode()).replace(
                OLD_NAME.encode().hex().encode(), root.name.encode().hex().encode())
            if new != data:
                path.write_bytes(new)
    yield root / "old"
    shutil.rmtree(root)


def runs_by_role(folder: Path) -> tuple[MlflowClient, dict[str, list]]:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("old").experiment_id
    runs = client.search_runs([experiment])
    return client, {role: [r for r in runs if r.data.tags.get(ROLE) == role] for role in (TRIAL, REPLICATE)}


def test_a_study_folder_made_before_the_rooms_resumes(moved, tmp_path):
    folder = moved
    _, before = runs_by_role(folder)
    done_before = {r.info.run_id: r.data.metrics["eval/err_last"] for r in before[TRIAL]
                   if r.info.status == "FINISHED"}
    assert len(done_before) == 3                              # s=1's trials, as the fixture was made

    done = cli("resume", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s=2 vs s=1" in done.stdout

    client, after = runs_by_role(folder)
    assert all(r.info.status == "FINISHED" for role in after.values() for r in role)
    for label in ("s=1", "s=2"):                               # each phase's 3 trials, once each
        trials = [r for r in after[TRIAL] if r.data.tags.get(POINT) == label]
        assert sorted(int(r.data.tags[NUMBER]) for r in trials) == [0, 1, 2], label
        study = optuna.load_study(study_name=f"old[{label}]", storage=f"sqlite:///{folder / 'optuna.db'}")
        assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials), label
    assert len(after[REPLICATE]) == 4                          # 2 values x 2 shared seeds
    for run_id, value in done_before.items():                  # what finished before the move stays as it was
        assert client.get_run(run_id).data.metrics["eval/err_last"] == value
    assert not (TMP / OLD_NAME).exists()                       # nothing went to where the fixture was made
