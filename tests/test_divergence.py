"""A configuration whose loss becomes nan or inf ends failed, with the step, everywhere: train()
raises Diverged at the log step that saw it, `loopstudy train` says so in one line, and in a
study the trial ends failed in Optuna, MLflow and `status` without being retried as if a node
had died, while the other trials go on."""
import glob
import json
import math

import optuna
import pytest
from mlflow import MlflowClient

from study.cli import main
from study.outcome import FAILED, classify
from studyfiles import TINY, cli, start_cli, write_study
from trainables.run_folder import read_metrics
from trainables.diverged import Diverged
from trainables.training import train

DIVERGING_LR = 1e6      # Adam's first step moves every weight by ~lr: nan by step 2 on the toy model
FINE_LR = 1e-3


def test_train_raises_diverged_at_the_log_step(tiny_config, tmp_path):
    config = tiny_config(f"training.learning_rate={DIVERGING_LR}", "training.train_steps=20",
                         "training.log_every=5", "training.eval_every=10")
    reports = []
    with pytest.raises(Diverged) as raised:
        train(config, lambda metrics, checkpoint: reports.append(metrics), out_dir=tmp_path)
    assert raised.value.step == 5 and math.isnan(raised.value.value)
    assert str(raised.value) == "loss became nan at step 5"
    assert reports == []                                  # stopped before the first evaluation
    logged = read_metrics(tmp_path)
    assert logged[-1]["step"] == 5 and math.isnan(logged[-1]["train/loss"])


def test_a_diverged_final_report_is_a_failed_trial():
    report = Diverged(30, float("inf")).metrics()
    assert Diverged.from_metrics(report).step == 30
    assert classify(report, False, max_steps=100) == (FAILED, "loss became inf at step 30")
    assert Diverged.from_metrics({"step": 30, "eval/err_last": 0.5}) is None


def test_loopstudy_train_says_it_diverged_in_one_line(tmp_path, capsys):
    args = ["train", "paper_linear_regression_looped_cpu", "--set", "model.n_embd=16", "--set", "model.n_head=2",
            "--set", f"training.learning_rate={DIVERGING_LR}", "--set", "training.log_every=5",
            "--set", "training.train_steps=20", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["loopstudy: training diverged: loss became nan at step 5 (lower training.learning_rate?)"]


@pytest.mark.service
def test_a_diverging_trial_fails_with_its_reason_and_is_not_retried(tmp_path):
    name = "diverging"
    path = write_study(tmp_path, name, scheduler=None, sampler="brute_force",
                       space={"training.learning_rate": {"categorical": [FINE_LR, DIVERGING_LR]},
                              "curriculum.loops.start": None},
                       budget={"num_samples": 2, "max_concurrent": 2, "max_failures": 1})
    driver = start_cli("run", str(path), cwd=tmp_path)
    ended = {m.group(2): m.group(1) for m in driver.wait_for(r"^(t\d{3}) .*: (completed|failed): ", count=2)}
    output = driver.rest()
    assert driver.process.returncode == 0, output
    reason = "loss became nan at step 10"          # TINY logs every 10 steps
    assert set(ended) == {"completed", "failed"} and f"{ended['failed']} " in output
    assert f": failed: {reason}" in output

    folder = tmp_path / name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    by_lr = {t.params["training.learning_rate"]: t for t in study.trials}
    assert by_lr[DIVERGING_LR].state == optuna.trial.TrialState.FAIL
    assert by_lr[DIVERGING_LR].user_attrs["state_reason"] == reason
    assert by_lr[FINE_LR].state == optuna.trial.TrialState.COMPLETE

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.loopstudy_role = 'trial'")
    assert len(runs) == 2                                # one run per trial: nothing ran twice
    failed = [r for r in runs if r.data.tags["state"] == "failed"]
    assert len(failed) == 1 and failed[0].data.tags["state_reason"] == reason
    assert failed[0].info.status == "FAILED" and failed[0].info.run_name.startswith(ended["failed"])

    # Tune saw a trial that ended normally, not an error to retry: budget.max_failures is untouched
    state = json.loads(open(sorted(glob.glob(str(folder / "ray" / name / "experiment_state-*.json")))[-1]).read())
    trials = [(json.loads(trial), json.loads(runtime)) for trial, runtime in state["trial_data"]]
    assert len(trials) == 2
    assert all(trial["status"] == "TERMINATED" and runtime["num_failures"] == 0 for trial, runtime in trials)

    status = cli("status", str(folder), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith(ended["failed"]))
    assert " failed " in row and row.endswith(reason)
