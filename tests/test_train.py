import json
import subprocess
import sys

import torch
import yaml

from trainables import train
from trainables.run_folder import read_metrics


def params_of(run_dir):
    from trainables.run_folder import latest_checkpoint
    state = torch.load(latest_checkpoint(run_dir) / "state.pt", weights_only=True)
    return state["model"], state["step"]


def test_run_folder_and_report_callback(tiny_config, tmp_path):
    config = tiny_config("training.train_steps=20", "training.eval_every=10",
                         "training.checkpoint_every=10", "training.log_every=5", "eval.iteration_counts=[24]")
    reports = []
    summary = train(config, lambda m, c: reports.append((m, c)), out_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "summary.json", "eval.png"}
    assert yaml.safe_load((run / "config.yaml").read_text()) == config.to_dict()
    assert [m["step"] for m, _ in reports] == [10, 20] and all(c for _, c in reports)
    for m, _ in reports:
        assert {"train/loss", "eval/err_last", "eval/err_mean", "curriculum/loops",
                "perf/steps_per_s", "compute/gflop_per_step"} <= m.keys()
        assert all(isinstance(v, (int, float)) for v in m.values())
    events = read_metrics(run)
    evals = [e for e in events if e.get("event") == "eval"]
    assert [e["step"] for e in events if "train/loss" in e] == [5, 10, 15, 20]
    assert len(evals) == 2 and len(evals[0]["curve"]) == 6
    assert len(evals[-1]["last_point_vs_iteration"]) == 24 and set(evals[-1]["curves_at_iterations"]) == {"12", "24"}
    assert all(lo <= c <= hi for lo, c, hi in zip(evals[-1]["band_lo"], evals[-1]["curve"], evals[-1]["band_hi"]))
    saved = json.loads((run / "summary.json").read_text())
    assert saved["eval/err_last"] == summary["eval/err_last"] == evals[-1]["err_last"]
    assert set(saved["baselines"]) == {"least_squares", "3nn", "averaging"}


def test_exact_resume_is_bitwise_identical(tiny_config, tmp_path):
    config = tiny_config("training.train_steps=16", "training.checkpoint_every=8", "training.eval_every=8",
                         "curriculum.loops.interval=3", "curriculum.points.start=4", "curriculum.points.inc=1",
                         "curriculum.points.interval=5")
    train(config, out_dir=tmp_path / "straight", num_threads=1)
    halves = config.training.__class__(**{**config.training.__dict__, "train_steps": 8})
    half_config = config.__class__(**{**config.__dict__, "training": halves})
    train(half_config, out_dir=tmp_path / "split", num_threads=1)
    train(config, out_dir=tmp_path / "split", num_threads=1,
          resume_from=tmp_path / "split" / "checkpoints" / "step_00000008")
    straight, step_a = params_of(tmp_path / "straight")
    split, step_b = params_of(tmp_path / "split")
    assert step_a == step_b == 16
    for name in straight:
        assert torch.equal(straight[name], split[name]), name
    # the resumed metrics log holds each step once
    steps = [e["step"] for e in read_metrics(tmp_path / "split") if "train/loss" in e]
    assert steps == sorted(set(steps))


def test_cli_train_resume_and_errors(tmp_path):
    run = tmp_path / "cli"
    base = [sys.executable, "-m", "study.cli", "train", "paper_linear_regression_looped_cpu",
            "--set", "training.train_steps=6", "--set", "training.checkpoint_every=3",
            "--set", "training.eval_every=3", "--set", "model.n_embd=16", "--set", "eval.n_prompts=16",
            "--out", str(run)]
    done = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"run folder: {run}" in done.stdout and "6/6" in done.stderr
    # raise the step budget in the saved config, then continue the same folder
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["training"]["train_steps"] = 9
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "study.cli", "train", "--resume", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["step"] == 9
    bad = subprocess.run(base[:5] + ["--set", "training.loop_dilation=9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'curriculum.loops.start'" in bad.stderr and "Traceback" not in bad.stderr
    listing = subprocess.run([sys.executable, "-m", "study.cli", "presets"], capture_output=True, text=True)
    assert "seed_dilation_cpu" in listing.stdout and "CPU-sized variant" in listing.stdout


def test_every_evaluation_reports_a_fresh_training_loss(tiny_config, tmp_path):
    config = tiny_config("training.train_steps=20", "training.eval_every=10", "training.log_every=7",
                         "training.checkpoint_every=10")
    reports = []
    train(config, lambda m, c: reports.append(m), out_dir=tmp_path / "run")
    steps = [e["step"] for e in read_metrics(tmp_path / "run") if "train/loss" in e]
    assert steps == [7, 10, 14, 20]  # the log intervals close at each evaluation too
    assert all("train/loss" in m for m in reports) and [m["step"] for m in reports] == [10, 20]


def test_a_run_is_continued_only_with_the_config_it_started_with(tiny_config, tmp_path):
    from trainables.config import ConfigError

    config = tiny_config("training.train_steps=8", "training.checkpoint_every=4", "training.eval_every=4")
    train(config, out_dir=tmp_path / "run", num_threads=1)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000008"
    written = (tmp_path / "run" / "config.yaml").read_text()
    changed = tiny_config("training.train_steps=12", "training.checkpoint_every=4", "training.eval_every=4",
                          "training.learning_rate=0.01")
    try:
        train(changed, out_dir=tmp_path / "run", resume_from=checkpoint, num_threads=1)
    except ConfigError as exc:
        assert "training.learning_rate: 0.001 -> 0.01" in str(exc) and str(checkpoint) in str(exc)
    else:
        raise AssertionError("a resume with another learning rate was accepted")
    assert (tmp_path / "run" / "config.yaml").read_text() == written      # nothing rewritten
    longer = tiny_config("training.train_steps=12", "training.checkpoint_every=4", "training.eval_every=4")
    assert train(longer, out_dir=tmp_path / "run", resume_from=checkpoint, num_threads=1)["step"] == 12


def test_the_stand_in_summarises_a_resume_from_its_final_checkpoint(tmp_path):
    """Tune reruns a trial that ended after its last state snapshot from its final checkpoint
    (a driver killed, a full disk): the stand-in trainable still reports its final evaluation."""
    from trainables.config import load_config
    from trainables.run_folder import latest_checkpoint
    from trainables.synthetic import synthetic

    config = load_config("paper_linear_regression_looped_cpu", ["training.train_steps=20", "training.eval_every=5",
                                                                "training.checkpoint_every=10"])
    first = synthetic(config, out_dir=tmp_path / "run")
    again = synthetic(config, out_dir=tmp_path / "run", resume_from=latest_checkpoint(tmp_path / "run"))
    assert again["step"] == 20 and again["eval"]["curve"] == first["eval"]["curve"] and len(first["eval"]["curve"]) == 11
    assert again["eval/err_last"] == first["eval/err_last"]
