"""A scientific study end to end on real Ray, Optuna and MLflow, with the stand-in trainable's
known answer: the same budget and an own nuisance search per value, replicates on shared seeds,
the verdict on the parent run and in the report, matching the runs."""
import json

import optuna
import pytest
from mlflow import MlflowClient

from analysis.report import write_report
from analysis.trials import read_record
from analysis.verdict import answer
from study.spec import find_study, read_study_file
from study.storage.stores import Stores
from studyfiles import cli, write_study

pytestmark = pytest.mark.service


def test_each_value_gets_its_own_search_and_shared_replicate_seeds(tmp_path):
    path = write_study(
        tmp_path, "sci", trainable="synthetic", base="seed_dilation_cpu", sampler="brute_force",
        overrides={"training.train_steps": 40, "training.eval_every": 10, "training.checkpoint_every": 20,
                   "curriculum.loops.start": 13, "curriculum.dims.interval": 1, "curriculum.points.interval": 1,
                   "curriculum.loops.interval": 1, "synthetic.effect_per_dilation": -0.03},
        scientific={"training.loop_dilation": [1, 3]},
        space={"training.learning_rate": {"categorical": [1.0e-3, 1.0e-2]}},
        budget={"num_samples": 2, "max_concurrent": 2}, scheduler={"grace_period": 20, "reduction_factor": 2},
        replicates={"seeds": 5})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'sci' / 'optuna.db'}")
    for label in ("s=1", "s=3"):                           # the same budget, each its own study
        study = optuna.load_study(study_name=f"sci[{label}]", storage=storage)
        assert sorted(t.params["training.learning_rate"] for t in study.trials) == [1.0e-3, 1.0e-2]
        assert all(t.user_attrs["config"]["training"]["loop_dilation"] == int(label[2:]) for t in study.trials)
    record = read_record(Stores.of(find_study(tmp_path / "sci")))
    assert record.points == ["s=1", "s=3"] and len(record.replicates) == 10
    seeds = {label: sorted(t.seed for t in record.replicates if t.point == label) for label in record.points}
    assert seeds["s=1"] == seeds["s=3"] == list(range(43, 48))             # fresh, and shared
    for label in record.points:                          # each replicates its own best search config
        best = min((t for t in record.trials if t.point == label), key=lambda t: t.value("eval/err_last"))
        assert {t.config.training.learning_rate for t in record.replicates if t.point == label} == \
            {best.config.training.learning_rate}
    result = answer(record)
    (comparison,) = result.comparisons
    by_seed = {label: {t.seed: t.value("eval/err_last") for t in record.replicates if t.point == label}
               for label in record.points}
    assert comparison.differences == pytest.approx([by_seed["s=3"][s] - by_seed["s=1"][s] for s in range(43, 48)])
    assert comparison.verdict == "better" and comparison.mean == pytest.approx(-0.06, abs=0.02)
    assert not result.problems                             # learned (about 0.5) and flat at the end
    assert comparison.sentence() in done.stdout and "no winner named" not in done.stdout

    parent = MlflowClient(f"sqlite:///{tmp_path / 'sci' / 'mlflow.db'}").get_run(record.parent["run_id"])
    assert parent.data.tags["verdict"] == comparison.sentence() and parent.data.tags["replicate_best"] == "s=3"
    assert parent.data.metrics["mean/s_1"] == pytest.approx(result.groups[0].mean)
    assert json.loads(parent.data.tags["scientific"]) == {"training.loop_dilation": [1, 3]}

    report = cli("report", "sci", "--results-root", str(tmp_path), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "sci" / "report" / "report.md").read_text()
    assert comparison.sentence() in text and "![](isolation.png)" in text
    assert "## How each value's nuisance config was chosen" in text and "| s=3 | " in text
    # the report travels with the folder: no path of this machine in it
    assert str(tmp_path) not in text and "`loopstudy run study.yaml --results ../sci-rerun`" in text
    assert "MLflow `sqlite:///mlflow.db`, Optuna `sqlite:///optuna.db`, Ray `ray` (study `sci`)" in text
    # each value's curve draws the runs the answer uses: its chosen config and that config's seeds,
    # not its other search trial (the other learning rate)
    spec = find_study(tmp_path / "sci")
    data = write_report(record, spec.space.params, str(Stores.of(spec).study_file), tmp_path / "again")
    for value, series in data["curves_loop_dilation.png"]["series"].items():
        replicates = [t for t in record.replicates if t.config.training.loop_dilation == value]
        chosen = {t.name for t in record.trials if (t.number, t.point) == (replicates[0].number, replicates[0].point)}
        assert sorted(series["runs"]) == sorted(chosen | {t.name for t in replicates}) and len(chosen) == 1
    status = cli("status", "sci", "--results-root", str(tmp_path), cwd=tmp_path).stdout
    head, *rows = status.splitlines()
    assert "10 replicate completed" in head and sum("replicate completed" in row for row in rows) == 10
    assert "s=3 lr=0.001" in status


def test_values_compared_at_equal_compute_train_their_own_steps(tmp_path):
    """compare_at: equal_compute: s=3 differentiates a longer loss window than s=1, so it trains
    fewer steps (its total training FLOPs matched to s=1's); each phase's ASHA, searcher and
    tracking count its own steps, its replicates train them, and the answer states them."""
    from trainables.flops import train_flops_total

    path = write_study(
        tmp_path, "eqc", trainable="synthetic", base="seed_dilation_cpu", sampler="brute_force",
        overrides={"training.train_steps": 40, "training.eval_every": 10, "training.checkpoint_every": 20,
                   "curriculum.loops.start": 13, "curriculum.dims.interval": 1, "curriculum.points.interval": 1,
                   "curriculum.loops.interval": 1},
        scientific={"training.loop_dilation": [1, 3]}, compare_at="equal_compute",
        space={"training.learning_rate": {"categorical": [1.0e-3, 1.0e-2]}},
        budget={"num_samples": 2, "max_concurrent": 2}, scheduler={"grace_period": 20, "reduction_factor": 2},
        replicates={"seeds": 2})
    spec = read_study_file(path)
    steps = {phase.label: phase.train_steps for phase in spec.phases}
    assert steps["s=1"] == 40 and steps["s=3"] < 40           # the reference keeps its steps
    totals = [train_flops_total(config) for config in spec.compared.values()]
    assert max(totals) / min(totals) < 1.02
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"s=3 (2 configs of the nuisance parameters training.learning_rate, {steps['s=3']} training " \
           "steps (equal compute))" in done.stdout
    record = read_record(Stores.of(find_study(tmp_path / "eqc")))
    for trial in record.trials + record.replicates:               # every run trains its value's steps
        assert trial.config.training.train_steps == steps[trial.point], trial.name
        if trial.state == "pruned":                               # at the rung, of its value's steps
            assert trial.reason == f"stopped early by ASHA at the rung at step 20 of {steps[trial.point]}"
        else:
            assert (trial.state, trial.steps) == ("completed", steps[trial.point]), trial.name
    assert len(record.replicates) == 4 and {t.state for t in record.replicates} == {"completed"}
    result = answer(record)
    assert not [p for p in result.problems if p.startswith("confounded")]     # the steps are the design
    stated = (f"compute: compared at equal training compute: s=1 40 steps ({totals[0] / 1e9:.4g} GFLOP), "
              f"s=3 {steps['s=3']} steps ({totals[1] / 1e9:.4g} GFLOP)")
    assert f"  {stated}" in result.lines() and stated in done.stdout
    report = cli("report", "eqc", "--results-root", str(tmp_path), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert stated in (tmp_path / "eqc" / "report" / "report.md").read_text()
