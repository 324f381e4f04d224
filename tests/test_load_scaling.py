"""What a study of hundreds of trials needs from the reads and the printed output (found with
bench/load.py at 500 trials): every run read back past one search page, artifacts read without
a run lookup each, and an answer, a progress table and an isolation figure that state the best
configs instead of growing with the study. Real MLflow on SQLite; no Ray started."""
from __future__ import annotations

import json
from types import SimpleNamespace

from mlflow import MlflowClient

from analysis.figures import isolation
from analysis.mlflow_sqlite import RunRow, read_runs
from analysis.layout import NUMBER, PARENT, POINT, POINTS, ROLE, SCIENTIFIC_VALUES, STATE, TRIAL
from analysis.trials import StudyRecord, Trial, read_record, search_all
from analysis.verdict import SHOWN_CONFIGS, Answer, comparisons, groups
from trainables.config import load_config


def stores(tmp_path, name="many"):
    return SimpleNamespace(name=name, mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def study_runs(tmp_path, trials: int) -> tuple[MlflowClient, str]:
    """A study's MLflow layout: a parent run and `trials` trial runs with a summary.json each."""
    client = MlflowClient(stores(tmp_path).mlflow_uri)
    experiment = client.create_experiment("many", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="many", tags={ROLE: PARENT}).info.run_id
    client.log_param(parent, "objectives", "eval/err_last:min")
    for number in range(trials):
        run = client.create_run(experiment, run_name=f"t{number:03d}",
                                tags={ROLE: TRIAL, NUMBER: str(number), STATE: "completed"}).info.run_id
        client.log_param(run, "training.learning_rate", str(1e-3 * (number + 1)))
        client.log_metric(run, "eval/err_last", 0.5 + number / 100)
        client.log_text(run, json.dumps({"number": number}), "summary.json")
    return client, experiment


def test_every_run_is_read_back_past_one_search_page(tmp_path):
    client, experiment = study_runs(tmp_path, 7)
    assert len(client.search_runs([experiment], max_results=3)) == 3          # one call: a silent cut
    assert len({r.info.run_id for r in search_all(client, experiment, page=3)}) == 8   # a tracking server
    assert len(search_all(client, experiment, f"tags.{ROLE} = '{TRIAL}'", page=3)) == 7
    record = read_record(stores(tmp_path))          # an embedded store: read with sqlite3, not paged
    assert [t.number for t in record.trials] == list(range(7))
    assert record.trials[6].config.training.learning_rate == 7e-3


def test_artifacts_are_read_from_the_runs_artifact_uri(tmp_path):
    study_runs(tmp_path, 2)
    record = read_record(stores(tmp_path))
    first, second = record.trials
    assert first.artifact_uri.endswith("/artifacts")
    assert record.artifact_json(second, "summary.json") == {"number": 1}
    assert record.artifact_json(first, "probe/summary.json") is None
    first.artifact_uri = ""                 # a Trial built by hand: its run is looked up once
    assert record.artifact_json(first, "summary.json") == {"number": 0}


def flat_record(configs: int) -> StudyRecord:
    """A study without `scientific`: `configs` configs of one seed each (two searched values)."""
    runs = []
    for number in range(configs):
        sampled = {"training.learning_rate": 1e-4 * (number + 1), "training.loop_dilation": 1 + number % 2}
        config = load_config("seed_dilation_cpu", sampled)
        runs.append(Trial(number, f"t{number:03d}", "completed", "", sampled, config,
                          {"eval/err_last": 0.4 + number / 1000}, 100, "run", tags={ROLE: TRIAL}))
    return StudyRecord(None, {"run_id": "", "params": {}, "tags": {SCIENTIFIC_VALUES: "{}"}},
                       [("eval/err_last", "min")], runs)


def test_a_plain_study_states_its_best_configs_not_every_one(tmp_path):
    record = flat_record(300)
    answer = Answer("eval/err_last", "min", groups(record), comparisons(record), record.ranked()[0])
    lines = answer.lines()
    # the search best, the 10 best configs, how many more, the best two compared, the lowest mean
    assert len(answer.groups) == 300 and len(lines) == 1 + SHOWN_CONFIGS + 3, lines
    assert lines[1].startswith("  lr=0.0001 s=1:") and lines[SHOWN_CONFIGS].startswith("  lr=0.001 s=2:")
    assert lines[SHOWN_CONFIGS + 1].startswith(f"  ({300 - SHOWN_CONFIGS} more configs, ranked below these")
    assert lines[-1] == "lowest mean: lr=0.0001 s=1"
    tags, metrics = answer.parent_tags()
    assert len([k for k in metrics if k.startswith("mean/")]) == SHOWN_CONFIGS
    drawn = isolation(answer, tmp_path / "isolation.png")      # was a 572 x 19 041 px heat map
    assert len(drawn["series"]) == SHOWN_CONFIGS and not drawn["heat_map"]
    from PIL import Image
    assert Image.open(tmp_path / "isolation.png").size[1] < 1000


def test_the_progress_table_does_not_grow_with_the_study():
    from study.progress_table import FULL_TABLE, SHOWN_ENDED, ProgressCallback

    table = ProgressCallback(["eval/err_last"], 8, 500, every_s=0)
    trials = [SimpleNamespace(trial_id=f"id{i}", status="TERMINATED" if i < 497 else "RUNNING",
                              last_result={"step": 8, "eval/err_last": 0.5}) for i in range(500)]
    for trial in trials:
        table._names[trial.trial_id] = f"t{trial.trial_id}"
    for trial in trials[:497]:
        table._ended[trial.trial_id] = None
    text = table.render(trials)
    head, body = text.splitlines()[0], text.splitlines()[2:]
    assert "500/500 trials: 497 completed, 3 running" in head
    assert [row.split()[0] for row in body] == [f"tid{i}" for i in range(492, 500)]   # 5 ended last, 3 running
    assert len(table.render(trials[:FULL_TABLE]).splitlines()) == FULL_TABLE + 2 and SHOWN_ENDED == 5


def test_the_sqlite_reader_returns_what_mlflow_search_returns(tmp_path):
    """`status` and `report` read an embedded store with sqlite3 (analysis/mlflow_sqlite.py,
    no MLflow import): the same runs, names, artifact URIs, tags, params and latest metrics as
    MLflow's own search, deleted runs and other experiments left out, NaN kept."""
    client, experiment = study_runs(tmp_path, 3)
    runs = search_all(client, experiment)
    client.log_metric(runs[0].info.run_id, "eval/err_last", float("nan"))
    client.log_metric(runs[1].info.run_id, "train/loss", 2.0, step=5)
    client.log_metric(runs[1].info.run_id, "train/loss", 1.0, step=7)          # the latest step wins
    client.delete_run(runs[2].info.run_id)
    other = client.create_experiment("other")
    client.create_run(other, run_name="elsewhere", tags={ROLE: TRIAL})

    def rows(found) -> dict:
        return {r.run_id: (r.run_name, r.artifact_uri, r.tags, r.params,
                           {k: "nan" if v != v else v for k, v in r.metrics.items()}) for r in found}

    direct = read_runs(tmp_path / "mlflow.db", "many")
    assert rows(direct) == rows(RunRow.of(r) for r in search_all(client, experiment))
    assert len(direct) == 3 and rows(direct)[runs[1].info.run_id][4]["train/loss"] == 1.0
    assert read_runs(tmp_path / "mlflow.db", "absent") is None


def trial(number: int, sampled: dict, value: float, **tags) -> Trial:
    config = load_config("seed_dilation_cpu", sampled)           # every one on the base seed
    return Trial(number, f"t{number:03d} s={config.training.loop_dilation}", "completed", "", sampled, config,
                 {"eval/err_last": value}, 100, "run", tags={ROLE: TRIAL, **tags})


def test_configs_that_print_alike_are_still_two_configs():
    """At 500 TPE trials, 317 completed configs printed as 183 (lr to 3 digits): each merged
    group kept one of its same-seed values, and the search best had no line of its own."""
    lrs = (0.0010301, 0.0010304)
    record = StudyRecord(None, {"run_id": "", "params": {}, "tags": {SCIENTIFIC_VALUES: "{}"}},
                         [("eval/err_last", "min")],
                         [trial(n, {"training.learning_rate": lr}, v)
                          for n, (lr, v) in enumerate(zip(lrs, (0.48, 0.55)))])
    found = groups(record)
    assert [(g.label, g.values) for g in found] == [("lr=0.00103", [0.48]), ("lr=0.00103 (t001)", [0.55])]
    answer = Answer("eval/err_last", "min", found, comparisons(record), record.ranked()[0])
    assert sorted(answer.parent_tags()[1]) == ["mean/lr_0.00103", "mean/lr_0.00103__t001_", "search_best/eval/err_last"]


def test_a_scientific_value_without_replicates_is_its_best_config():
    """Each value's search configs share the base seed: the value's group held all of them and
    stated the worst one's objective beside the best one's learning rate."""
    runs = [trial(n, {"training.learning_rate": lr}, value, **{POINT: f"s={s}"})
            for n, (s, lr, value) in enumerate([(1, 1e-3, 0.3), (1, 2e-3, 0.5), (2, 1e-3, 0.4), (2, 2e-3, 0.6)])]
    tags = {SCIENTIFIC_VALUES: json.dumps({"training.loop_dilation": [1, 2]}), POINTS: json.dumps(["s=1", "s=2"])}
    record = StudyRecord(None, {"run_id": "", "params": {}, "tags": tags}, [("eval/err_last", "min")], runs)
    assert [(g.label, g.nuisance, g.values) for g in groups(record)] == [
        ("s=1", {"training.learning_rate": 1e-3}, [0.3]), ("s=2", {"training.learning_rate": 1e-3}, [0.4])]
