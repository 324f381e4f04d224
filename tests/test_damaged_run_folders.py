"""Damaged run folders: a checkpoint cut short, zeroed or replaced, a metrics line cut by a
crash or garbage inside, a config edited into garbage: each is named (file, and line where
there is one) or recovered from, and the run folder is left as it was. Fast tier."""
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import TINY
from studyfiles import cli_error
from trainables import train
from trainables.config import ConfigError, load_config
from trainables.run_folder import latest_checkpoint, load_run_config, load_state, read_metrics

BASE = "paper_linear_regression_looped_cpu"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny real training run: checkpoints at steps 10 and 20, metrics every 5 steps."""
    run = tmp_path_factory.mktemp("run") / "run"
    config = load_config(BASE, TINY + ["training.train_steps=20", "training.checkpoint_every=10",
                                       "training.eval_every=10", "training.log_every=5"])
    train(config, out_dir=run, num_threads=1)
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _state(run: Path) -> Path:
    return latest_checkpoint(run) / "state.pt"


def _make_damage(kind: str, path: Path) -> None:
    good = path.read_bytes()
    path.write_bytes({"half": good[:len(good) // 2], "ten bytes": good[:10], "empty": b"",
                      "garbage": bytes(range(256)) * 20, "text": b"hello\n",
                      "plain pickle": b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00}\x94.",
                      "zip of something else": _zip_bytes(path.parent / "other.zip"),
                      "first record zeroed": bytes(4) + good[4:]}[kind])


def _zip_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hello")
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize("kind", ["half", "ten bytes", "empty", "garbage", "text", "plain pickle",
                                  "zip of something else", "first record zeroed"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(run, kind):
    path = _state(run)
    _make_damage(kind, path)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: (not a checkpoint|a damaged checkpoint)"):
        load_state(path.parent)


def test_train_resume_from_a_cut_checkpoint_names_it_and_keeps_the_run(run, capsys):
    path = _state(run)
    path.write_bytes(path.read_bytes()[:1000])
    metrics = (run / "metrics.jsonl").read_bytes()
    line = cli_error(capsys, "train", "--resume", str(run))
    assert f"{path}: not a checkpoint" in line
    assert (run / "metrics.jsonl").read_bytes() == metrics


def test_a_half_written_checkpoint_folder_is_not_resumed_from(run):
    (run / "checkpoints" / "step_00000030.tmp").mkdir()
    (run / "checkpoints" / "step_00000030.tmp" / "state.pt").write_bytes(b"cut")
    assert latest_checkpoint(run).name == "step_00000020"


def test_a_metrics_line_cut_by_a_crash_is_dropped_on_resume(run):
    complete = read_metrics(run)
    text = (run / "metrics.jsonl").read_text()
    cut = len(text) - 1 - len(text.splitlines()[-1]) // 2          # mid-way through the last line
    (run / "metrics.jsonl").write_text(text[:cut])
    assert read_metrics(run) == complete[:-1]
    shutil.rmtree(run / "checkpoints" / "step_00000020")           # resume from step 10
    config, checkpoint = load_run_config(run)
    train(config, out_dir=run, resume_from=checkpoint, num_threads=1)
    assert [e["step"] for e in read_metrics(run)] == [e["step"] for e in complete]
    assert (run / "metrics.jsonl").read_text().endswith("}\n")


def test_a_garbage_line_inside_metrics_names_the_file_and_line(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:1] + ["{garbage"] + lines[1:]) + "\n")
    with pytest.raises(ConfigError, match=f"{re.escape(str(run / 'metrics.jsonl'))}: line 2 is not an event"):
        read_metrics(run)


def test_a_run_config_edited_into_garbage_names_the_file(run, capsys):
    (run / "config.yaml").write_text("training: {seed: [\n")
    line = cli_error(capsys, "train", "--resume", str(run))
    assert f"{run / 'config.yaml'}: not valid YAML" in line
    (run / "config.yaml").write_text("training: {seed: 1.5}\n")
    line = cli_error(capsys, "train", "--resume", str(run))
    assert f"{run / 'config.yaml'}: 'training.seed' must be an integer" in line
