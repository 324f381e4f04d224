"""A scientific study end to end on real Ray, Optuna and MLflow, with the stand-in trainable's
known answer: the same budget and an own nuisance search per value, replicates on shared seeds,
the verdict on the parent run and in the report, matching the runs."""
import json

import optuna
import pytest
from mlflow import MlflowClient

from analysis.trials import read_record
from analysis.verdict import answer
from study.spec import find_study
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
    status = cli("status", "sci", "--results-root", str(tmp_path), cwd=tmp_path).stdout
    head, *rows = status.splitlines()
    assert "10 replicate completed" in head and sum("replicate completed" in row for row in rows) == 10
    assert "s=3 lr=0.001" in status
