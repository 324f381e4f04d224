"""A configuration that blows up ends diverged, with the step, everywhere: its loss became nan or
inf (train() raises Diverged at the log step that saw it), or an evaluation's error at the
trained depth went past EXPLODED times that of predicting 0 while the loss stayed finite.
`loopstudy train` says so in one line and exits 1; in a study the trial ends diverged in Optuna
(FAIL, with our state), MLflow and `status`, is not retried as if a node had died, and is never
ranked, replicated or exported, while the other trials go on; figures mark it, never plot it."""
import glob
import json
import math

import optuna
import pytest
from mlflow import MlflowClient

from study.cli import main
from analysis.figures import objective_by_param
from analysis.trials import StudyRecord, Trial
from study.outcome import DIVERGED, classify
from studyfiles import TINY, cli, start_cli, write_study
from trainables.run_folder import read_metrics
from trainables.config import load_config
from trainables.diverged import EXPLODED, Diverged, exploded
from trainables.training import train

DIVERGING_LR = 1e6      # Adam's first step moves every weight by ~lr: nan by step 2 on the toy model
EXPLODING_LR = 30.0     # the loss stays finite; the toy model's first evaluation errs ~1e7 x predicting 0
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


def test_a_finite_blow_up_is_caught_at_the_evaluation(tiny_config, tmp_path):
    config = tiny_config(f"training.learning_rate={EXPLODING_LR}", "training.train_steps=20",
                         "training.log_every=5", "training.eval_every=10")
    reports = []
    with pytest.raises(Diverged) as raised:
        train(config, lambda metrics, checkpoint: reports.append(metrics), out_dir=tmp_path)
    assert raised.value.step == 10 and raised.value.what == "eval/err_mean"
    assert math.isfinite(raised.value.value) and raised.value.value > EXPLODED
    assert all(math.isfinite(m["train/loss"]) for m in read_metrics(tmp_path) if "train/loss" in m)
    assert str(raised.value).endswith(f"at step 10 (over {EXPLODED:g}x the error of predicting 0)")
    assert reports == []                                  # the blown-up evaluation is never reported


def test_the_explosion_rule():
    assert not exploded(1.0) and not exploded(EXPLODED) and exploded(EXPLODED * 1.01)
    assert exploded(float("nan")) and exploded(float("inf"))


def test_a_diverged_final_report_is_a_diverged_trial():
    report = Diverged(30, float("inf")).metrics()
    assert Diverged.from_metrics(report).step == 30
    assert classify(report, False, max_steps=100) == (DIVERGED, "loss became inf at step 30")
    finite = Diverged(20, 1.4e7, "eval/err_mean").metrics()
    assert classify(finite, False, max_steps=100)[0] == DIVERGED
    assert Diverged.from_metrics(finite).what == "eval/err_mean"
    assert Diverged.from_metrics({"step": 30, "eval/err_last": 0.5}) is None
    old = {"step": 5, "diverged": 1.0, "diverged_at_step": 5, "diverged_loss": float("nan")}   # before the rule
    assert str(Diverged.from_metrics(old)) == "loss became nan at step 5"


def test_the_per_parameter_figure_marks_failed_and_diverged_trials_without_plotting_them(tmp_path):
    config = load_config("paper_linear_regression_looped_cpu")
    metric = "eval/err_last"

    def trial(number, state, lr, value):
        return Trial(number, f"t{number:03d}", state, "", {"training.learning_rate": lr}, config,
                     {metric: value} if value is not None else {}, 100, str(number))

    trials = [trial(0, "completed", 1e-3, 0.2), trial(1, "completed", 3e-3, 0.4), trial(2, "pruned", 1e-2, 0.9),
              trial(3, "diverged", 10.0, 1.4e7), trial(4, "failed", 1.0, 1e30), trial(5, "diverged", 30.0, None)]
    record = StudyRecord(None, {"run_id": "", "params": {}, "tags": {}}, [(metric, "min")], trials)
    flags = objective_by_param(record, {"training.learning_rate": (1e-4, 30.0)}, tmp_path / "f.png")
    shown = flags["training.learning_rate"]
    assert shown["marked"] == {"diverged": 2, "failed": 1}
    low, high = shown["y_limits"]
    assert high < 2 and low > 0.05, shown["y_limits"]     # the scale of the values that mean something
    assert record.ranked()[0].name == "t000" and {t.state for t in record.ranked()} == {"completed"}


def test_loopstudy_train_says_it_diverged_in_one_line(tmp_path, capsys):
    args = ["train", "paper_linear_regression_looped_cpu", "--set", "model.n_embd=16", "--set", "model.n_head=2",
            "--set", f"training.learning_rate={DIVERGING_LR}", "--set", "training.log_every=5",
            "--set", "training.train_steps=20", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["loopstudy: training diverged: loss became nan at step 5 (lower training.learning_rate?)"]


def test_loopstudy_train_exits_1_on_a_finite_blow_up(tmp_path, capsys):
    args = ["train", "paper_linear_regression_looped_cpu", "--set", "model.n_embd=16", "--set", "model.n_head=2",
            "--set", f"training.learning_rate={EXPLODING_LR}", "--set", "training.eval_every=10",
            "--set", "training.train_steps=20", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("loopstudy: training diverged: eval/err_mean became ")


@pytest.mark.service
def test_diverging_trials_end_diverged_and_are_never_replicated_or_exported(tmp_path):
    name = "diverging"
    lrs = [FINE_LR, EXPLODING_LR, DIVERGING_LR]
    path = write_study(tmp_path, name, scheduler=None, sampler="brute_force",
                       space={"training.learning_rate": {"categorical": lrs}, "curriculum.loops.start": None},
                       budget={"num_samples": 3, "max_concurrent": 2, "max_failures": 1},
                       replicates={"top_k": 3, "seeds": 2})
    driver = start_cli("run", str(path), cwd=tmp_path)
    ended = {m.group(1): m.group(2) for m in driver.wait_for(r"^(t\d{3}) .*: (completed|diverged): ", count=3)}
    output = driver.rest()
    assert driver.process.returncode == 0, output
    reasons = {EXPLODING_LR: "eval/err_mean became", DIVERGING_LR: "loss became nan at step 10"}  # TINY logs every 10
    assert sorted(ended.values()) == ["completed", "diverged", "diverged"]

    folder = tmp_path / name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    by_lr = {t.params["training.learning_rate"]: t for t in study.trials}
    for lr, reason in reasons.items():
        assert by_lr[lr].state == optuna.trial.TrialState.FAIL and by_lr[lr].user_attrs["state"] == "diverged"
        assert by_lr[lr].user_attrs["state_reason"].startswith(reason)
    assert by_lr[FINE_LR].state == optuna.trial.TrialState.COMPLETE

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment], "tags.loopstudy_role = 'trial'")
    assert len(runs) == 3                                # one run per trial: nothing ran twice
    diverged = [r for r in runs if r.data.tags["state"] == "diverged"]
    assert len(diverged) == 2 and all(r.info.status == "FAILED" for r in diverged)
    assert {ended[r.info.run_name.split()[0]] for r in diverged} == {"diverged"}

    # only the completed config is replicated (top_k 3 asked for) and exported (--top 3)
    replicates = client.search_runs([experiment], "tags.loopstudy_role = 'replicate'")
    assert [r.data.params["training.learning_rate"] for r in replicates] == [str(FINE_LR)] * 2
    export = cli("export", str(folder), "--top", "3", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.split()) == 1 and f"learning_rate: {FINE_LR}" in open(export.stdout.split()[0]).read()

    # Tune saw trials that ended normally, not errors to retry: budget.max_failures is untouched
    state = json.loads(open(sorted(glob.glob(str(folder / "ray" / name / "experiment_state-*.json")))[-1]).read())
    trials = [(json.loads(trial), json.loads(runtime)) for trial, runtime in state["trial_data"]]
    assert len(trials) == 3
    assert all(trial["status"] == "TERMINATED" and runtime["num_failures"] == 0 for trial, runtime in trials)

    status = cli("status", str(folder), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = [line for line in status.stdout.splitlines() if line.split()[:1] and ended.get(line.split()[0]) == "diverged"]
    assert len(rows) == 2 and all(" diverged " in row for row in rows)
    assert {any(reason in row for row in rows) for reason in reasons.values()} == {True}


@pytest.mark.service
def test_a_study_whose_every_trial_diverged_exits_1_with_its_report(tmp_path):
    name = "all_diverged"
    path = write_study(tmp_path, name, scheduler=None, sampler="brute_force",
                       space={"training.learning_rate": {"categorical": [DIVERGING_LR]}, "curriculum.loops.start": None},
                       budget={"num_samples": 1, "max_concurrent": 1}, replicates={"top_k": 1, "seeds": 2})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"loopstudy: no trial of study '{name}' completed (1 diverged): nothing to rank" in done.stderr
    assert "replicates: no completed trial to replicate" in done.stdout
    assert (tmp_path / name / "report" / "report.md").is_file()        # the report still says what happened
