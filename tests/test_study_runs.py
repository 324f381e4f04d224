"""End to end on a real local Ray, real Optuna SQLite and real MLflow SQLite, through the CLI:
a study run, SIGINT/SIGKILL of the driver then resume, and a multi-objective study."""
import os
import re
import signal
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from analysis.layout import config_hash
from studyfiles import TINY, cli, descendants, start_cli, write_study

pytestmark = pytest.mark.service
STATE = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
         "failed": optuna.trial.TrialState.FAIL}
STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}   # pruned: by the state tag
ENDED = r"^t\d{3}\S* .*: (completed|pruned|failed)"       # the driver's line when a trial ends


def stores(folder: Path, name: str):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("loopstudy_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("loopstudy_role") == "trial"]
    return study, client, parents, children


def assert_accounted(folder: Path, name: str, n_trials: int, metric: str = "eval/err_last") -> tuple:
    """Every trial finished in Optuna and mirrored by exactly one finished MLflow child run
    (a trial lost with a killed driver before it started may have none) whose last `metric`
    is at its last step."""
    study, client, parents, children = stores(folder, name)
    trials = {t.number: t for t in study.trials}
    ran = {n for n, t in trials.items() if not t.user_attrs.get("state_reason", "").startswith("lost")}
    assert len(ran) == n_trials
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["state"] == "finished"
    tune_ids = [r.data.tags["tune_trial_id"] for r in children]
    assert len(tune_ids) == len(set(tune_ids)), "duplicate MLflow runs for one Tune trial"
    numbers = [int(r.data.tags["optuna_trial"]) for r in children]
    assert len(numbers) == len(set(numbers)) and ran <= set(numbers) <= set(trials)
    for run in children:
        trial = trials[int(run.data.tags["optuna_trial"])]
        state = run.data.tags["state"]
        assert STATE[state] == trial.state and STATUS[state] == run.info.status, run.info.run_name
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.run_name.startswith(f"t{trial.number:03d} ")
        assert run.data.tags["config_hash"] == trial.user_attrs["config_hash"] == config_hash(trial.user_attrs["config"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert steps == sorted(set(steps)), f"{run.info.run_name}: steps logged twice: {steps}"
        if state != "failed":
            assert steps and steps[-1] == int(run.data.tags["steps"])
    return study, client, parents, children


def test_study_end_to_end(tmp_path):
    path = write_study(tmp_path, "e2e", budget={"num_samples": 5, "max_concurrent": 1})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study, client, parents, children = assert_accounted(tmp_path / "e2e", "e2e", 5)
    states = {t.state for t in study.trials}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}

    for run in children:
        trial = study.trials[int(run.data.tags["optuna_trial"])]
        s, lr = trial.params["training.loop_dilation"], trial.params["training.learning_rate"]
        # b as trained: the loop curriculum starts at T*s = 5s and reaches 12 within the 40 steps
        assert run.info.run_name == f"t{trial.number:03d} s={s} T=5 b={5 * s}..12 D=16 lr={lr:.3g}"
        params = run.data.params
        assert params["training.loop_dilation"] == str(s) and params["model.n_embd"] == "16"
        assert params["curriculum.loops.start"] == str(5 * s)        # null resolved to T*s
        assert float(params["training.learning_rate"]) == lr
        history = client.get_metric_history(run.info.run_id, "eval/err_last")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in artifacts
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(history)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert [m.step for m in history] == [10, 20, 30, 40]
            assert {"eval.png", "summary.json"} <= artifacts
            assert history[-1].value == pytest.approx(trial.value)
        else:
            assert history[-1].step < 40 and "stopped early" in run.data.tags["state_reason"]
            assert trial.value == pytest.approx(history[-1].value)         # pruned at its rung value
            assert trial.intermediate_values[history[-1].step] == pytest.approx(history[-1].value)
        assert (run.data.tags["search_best"] == "true") == (trial.number == study.best_trial.number)
    assert (tmp_path / "e2e" / "ray" / "e2e").is_dir()

    status = cli("status", "e2e", "--results-root", str(tmp_path), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    for run in children:
        row = next(line for line in lines if line.startswith(run.info.run_name + " "))
        assert run.data.tags["state"] in row and re.search(rf"\s{run.data.tags['steps']}\s", row)
    assert "search best (one seed): t0" in done.stdout and f"loopstudy ui {tmp_path / 'e2e'}" in done.stdout
    # 40 steps of a toy model learn nothing: the study says so instead of naming a winner
    assert "no winner named: not learned: the best mean eval/err_last" in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])   # SIGTERM:
# test_sequential_study's stops in every phase
def test_interrupted_study_resumes_without_duplicates(tmp_path, sig):
    name = f"interrupt_{sig.name.lower()}"
    path = write_study(tmp_path, name, budget={"num_samples": 4, "max_concurrent": 2},
                       overrides={**TINY, "training.train_steps": 60})
    folder = tmp_path / name
    lines = start_cli("run", str(path), cwd=tmp_path)
    driver = lines.process
    lines.wait_for(ENDED)                           # the first trial has ended: interrupt now
    assert driver.poll() is None, "the study ended before it could be interrupted"
    spawned = descendants(driver.pid)
    driver.send_signal(sig)
    output = lines.rest()
    for pid in spawned - {driver.pid}:       # what a killed driver leaves behind (Ray agents)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if sig != signal.SIGKILL:
        assert driver.returncode == 130 and f"loopstudy resume {folder}" in output, output
        assert "Tuner.restore" not in output and "Traceback" not in output, output
    study, _, parents, _ = stores(folder, name)
    assert parents[0].info.status != "FINISHED"
    assert len(study.trials) < 4 or any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    status = cli("status", name, "--results-root", str(tmp_path), cwd=tmp_path).stdout
    stopped = sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    assert " running " not in status and (not stopped or f"its {stopped} interrupted trials stopped with their "
                                          f"driver; continue them with `loopstudy resume {folder}`" in status), status

    resumed = cli("resume", name, "--results-root", str(tmp_path), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study, _, _, _ = assert_accounted(folder, name, 4)
    lost = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs["state_reason"].startswith("lost") for t in lost)
    assert not (lost and sig != signal.SIGKILL)
    assert {t.state for t in study.trials if t not in lost} <= {optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED}


def test_multi_objective_study_marks_the_pareto_set(tmp_path):
    path = write_study(
        tmp_path, "pareto", base="seed_dilation_cpu", scheduler=None, seeds_per_config=2,
        sampler="brute_force",
        overrides={**TINY, "training.train_steps": 20},
        space={"training.loop_dilation": {"categorical": [1, 2, 3, 4]}, "curriculum.loops.start": None},
        objectives=[{"metric": "eval/err_last", "mode": "min"},
                    {"metric": "compute/gflop_per_step", "mode": "min"}],
        budget={"num_samples": 3, "max_concurrent": 2})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study, client, _, children = stores(tmp_path / "pareto", "pareto")
    assert len(study.directions) == 2 and len(study.trials) == 3 and len(children) == 6
    assert len({t.params["training.loop_dilation"] for t in study.trials}) == 3   # brute force: no repeats
    front = {t.number for t in study.best_trials}
    assert front and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for run in children:
        number = int(run.data.tags["optuna_trial"])
        assert run.data.tags["pareto"] == str(number in front).lower()
        s = int(run.data.params["training.loop_dilation"])        # loops from T*s = 4s to 16
        assert re.match(rf"t{number:03d}r[01] s={s} T=4 b={'16' if s == 4 else f'{4 * s}..16'} D=16$",
                        run.info.run_name)
    for trial in study.trials:                      # two seeds per config, told as their mean
        runs = [r for r in children if int(r.data.tags["optuna_trial"]) == trial.number]
        assert sorted(r.data.params["training.seed"] for r in runs) == ["42", "43"]
        errors = [r.data.metrics["eval/err_last"] for r in runs]
        assert trial.values[0] == pytest.approx(sum(errors) / 2)
        assert trial.values[1] == pytest.approx(runs[0].data.metrics["compute/gflop_per_step"])
    assert "Pareto set (search, one seed each):" in done.stdout


def _replicate_runs(folder: Path, name: str) -> list:
    if not (folder / "replicates.yaml").is_file():   # planned after the search (MLflow's tables exist)
        return []
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else list(client.search_runs(
        [experiment.experiment_id], "tags.loopstudy_role = 'replicate'"))


def test_replicates_rerun_the_best_configs_with_fresh_seeds_after_an_interrupt(tmp_path):
    name = "replicated"
    path = write_study(tmp_path, name, budget={"num_samples": 3, "max_concurrent": 2}, scheduler=None,
                       overrides={**TINY, "training.train_steps": 60}, replicates={"top_k": 2, "seeds": 2})
    folder = tmp_path / name
    lines = start_cli("run", str(path), cwd=tmp_path)
    driver = lines.process
    lines.wait_for(r"^replicates: the 2 best configs")
    lines.wait_for(r"^t\d{3}\.rep\d .*: running on node")   # a replicate has reported its first result
    assert driver.poll() is None, "the study ended before its replicate phase could be interrupted"
    driver.send_signal(signal.SIGINT)                 # in the middle of the replicate phase
    output = lines.rest()
    assert driver.returncode == 130 and f"loopstudy resume {folder}" in output, output
    assert len(_replicate_runs(folder, name)) < 4 or any(r.info.status == "RUNNING" for r in _replicate_runs(folder, name))

    resumed = cli("resume", name, "--results-root", str(tmp_path), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study, client, _, children = assert_accounted(folder, name, 3)    # replicates are not search trials
    replicas = _replicate_runs(folder, name)
    assert len(replicas) == 4 and len({r.data.tags["tune_trial_id"] for r in replicas}) == 4
    best_two = sorted(study.trials, key=lambda t: t.value)[:2]       # three distinct lr draws
    assert {int(r.data.tags["optuna_trial"]) for r in replicas} == {t.number for t in best_two}
    search_seeds = {r.data.params["training.seed"] for r in children}
    assert search_seeds == {"42"}
    for trial in best_two:
        runs = [r for r in replicas if int(r.data.tags["optuna_trial"]) == trial.number]
        assert sorted(r.data.params["training.seed"] for r in runs) == ["43", "44"]   # fresh seeds
        for run in runs:
            assert float(run.data.params["training.learning_rate"]) == trial.params["training.learning_rate"]
            assert run.data.params["training.loop_dilation"] == str(trial.params["training.loop_dilation"])
            assert run.info.status == "FINISHED" and run.data.tags["state"] == "completed"
            assert run.info.run_name.startswith(f"t{trial.number:03d}.rep") and "seed=4" in run.info.run_name
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/err_last")]
            assert steps == [10, 20, 30, 40, 50, 60]                  # resumed, nothing logged twice
    assert resumed.stdout.count("(replicate seeds)") == 2        # each replicated config over its seeds
    assert "(unpaired, n=2 and 2 seeds): too few seeds for an interval" in resumed.stdout   # honest stats
    status = cli("status", name, "--results-root", str(tmp_path), cwd=tmp_path).stdout
    assert "4 replicate completed" in status
    assert all(r.info.run_name in status for r in replicas)


def test_probe_study_compares_the_model_families_on_paired_seeds(tmp_path):
    """trainable: probe with the model family `scientific` (listed points: a family and its
    depth change together): each trial trains, then probes every state; both families'
    replicates share their seeds; the report draws Figure 1 per seed with the controls and the
    probe measures per family, and the learning guard judges each family (these tiny models
    learn nothing in 30 steps: the answer names both)."""
    from analysis.probe_report import figure_per_seed, probed_runs
    from analysis.trials import read_record
    from analysis.verdict import answer
    from study.storage.stores import Stores

    family = [{"model.family": "standard", "model.n_layer": 2}, {"model.family": "looped", "model.n_layer": 1}]
    labels = ["family=standard L=2", "family=looped L=1"]
    probing = {"probe.steps": 20, "probe.eval_every": 10, "probe.batch_size": 64, "probe.hidden": 16,
               "probe.control": True}
    path = write_study(tmp_path, "probes", trainable="probe", scheduler=None, sampler="brute_force",
                       overrides={**TINY, "training.train_steps": 30, **probing}, scientific=family,
                       space={"training.seed": {"categorical": [0]}},
                       objectives=[{"metric": "probe/late_rise_tail", "mode": "min"}],
                       budget={"num_samples": 1, "max_concurrent": 2}, question={"seeds": {"start": 2, "max": 2}})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    record = read_record(Stores(tmp_path / "probes", "probes"))
    assert record.points == labels and len(record.trials) == 2 and len(record.replicates) == 4
    client = MlflowClient(f"sqlite:///{tmp_path / 'probes' / 'mlflow.db'}")
    for run in record.trials + record.replicates:
        assert run.state == "completed" and run.steps == 50                  # 30 training + 20 probe steps
        assert (run.config.model.family, run.config.model.n_layer) == {
            labels[0]: ("standard", 2), labels[1]: ("looped", 1)}[run.point]
        history = client.get_metric_history(run.run_id, "probe/late_rise_tail")
        assert [m.step for m in history] == [40, 50] and run.value("probe/late_rise_tail") == history[-1].value
    result = answer(record)
    probed = probed_runs(record, result)
    assert list(probed) == labels and sorted(probed[labels[0]]) == sorted(probed[labels[1]])   # paired seeds
    drawn = figure_per_seed(probed, tmp_path / "probe_per_seed.png")
    for label, by_seed in drawn.items():
        for seed, series in by_seed.items():
            run, = [r for r in record.replicates if r.point == label and r.seed == seed]
            states = run.config.model.n_layer + 1 if label == labels[0] else run.config.loop_budget + 1
            assert len(series["err"]) == len(series["control_err"]) == states
            assert probed[label][seed]["probe/late_rise_tail"] == pytest.approx(run.value("probe/late_rise_tail"))
    not_learned = [p for p in result.problems if p.startswith("not learned")]
    assert [p.split(" (of the runs")[0] for p in not_learned] == [
        f"not learned: the mean eval/err_last of {label}" for label in labels], result.problems
    assert f"no winner named: not learned: the mean eval/err_last of {labels[0]}" in done.stdout
    report = (tmp_path / "probes" / "report" / "report.md").read_text()
    for line in ("## Probe error per layer / loop iteration, per seed", "![](probe_per_seed.png)",
                 f"| measure | {labels[0]} | {labels[1]} |", f"| measure | {labels[1]} - {labels[0]} |",
                 "| probe/selectivity | ", "## Error vs in-context examples by model.family"):
        assert line in report, line
    assert "curves_n_layer.png" not in report             # the depth changes with the family: one figure
