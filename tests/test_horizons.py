"""A question with two horizons end to end on real Ray, Optuna and MLflow, with the stand-in
trainable's known answer: s=2 learns twice as slowly as s=1 and ends at the same level, so at
40 steps it is worse, and the replicates, still improving, continue from their checkpoints to 80
steps, where the two are equivalent within ±delta; a driver stopped during the extension
(SIGTERM) ends cleanly and resumes to the same answer with nothing trained twice."""
import json
import math
import signal
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from analysis.sequential_answer import judgements_of
from analysis.trials import read_record
from study.spec import find_study
from trainables.synthetic import level as synthetic_level
from study.storage.stores import Stores
from studyfiles import cli, start_cli, write_study

pytestmark = pytest.mark.service
NAME = "horizons"
DELTA = 0.03
# err(t) = level + (1 - level) exp(-t / tau), tau = 10 (s=1) or 20 (s=2); level ~ 0.5 for both
TAU = {"s=1": 10, "s=2": 20}


def _study(tmp_path: Path, eval_s: float = 0.0, noise_sd: float = 0.001) -> Path:
    return write_study(
        tmp_path, NAME, trainable="synthetic", base="seed_dilation_cpu", sampler="brute_force", scheduler=None,
        overrides={"training.train_steps": 40, "training.eval_every": 20, "training.checkpoint_every": 20,
                   "curriculum.loops.start": 13, "curriculum.dims.interval": 1, "curriculum.points.interval": 1,
                   "curriculum.loops.interval": 1, "synthetic.eval_s": eval_s, "synthetic.steps_to_learn": 10,
                   "synthetic.slowdown_per_dilation": 1.0, "synthetic.seed_sd": 0.01, "synthetic.noise_sd": noise_sd},
        scientific={"training.loop_dilation": [1, 2]},
        space={"training.weight_decay": {"categorical": [0.0]}},
        budget={"num_samples": 1, "max_concurrent": 4},
        question={"confidence": 0.9, "delta": DELTA, "seeds": {"start": 4, "step": 4, "max": 8},
                  "horizon": {"max": 80}})


def _answer(folder: Path) -> dict:
    """Each horizon's decision and interval, and the completed replicate runs per horizon and seed."""
    record = read_record(Stores.of(find_study(folder)))
    looks = {h: {name: (look.decision, look.n, round(look.lo, 9), round(look.hi, 9)) for name, look in j.latest.items()}
             for h, j in judgements_of(record).items()}
    runs = {}
    for run in record.every_replicate:
        if run.state == "completed":
            key = (int(run.tags["horizon"]), run.point, run.seed)
            assert key not in runs, f"{run.name}: trained twice"
            runs[key] = run
    return {"looks": looks, "runs": runs, "record": record}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("horizons")
    done = cli("run", str(_study(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / NAME, _answer(tmp_path / NAME), done.stdout


def _assert_the_answer(folder: Path, answer: dict) -> None:
    assert set(answer["looks"]) == {40, 80}
    decision, n, lo, hi = answer["looks"][40]["s=2"]
    expected = 0.5 * (math.exp(-40 / TAU["s=2"]) - math.exp(-40 / TAU["s=1"]))   # (1 - level) ~ 0.5
    assert (decision, n) == ("worse", 4) and 0.6 * expected < lo < hi < 1.4 * expected
    decision, n, lo, hi = answer["looks"][80]["s=2"]
    assert (decision, n) == ("equivalent", 4) and -DELTA < lo < hi < DELTA
    runs = answer["runs"]
    seeds = {(p, s) for (h, p, s) in runs if h == 40}
    assert len(seeds) == 8 and {(p, s) for (h, p, s) in runs if h == 80} == seeds    # the same seeds continued
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    for (horizon, point, seed), run in runs.items():
        steps = [m.step for m in client.get_metric_history(run.run_id, "eval/err_last")]
        assert steps == ([20, 40] if horizon == 40 else [60, 80]), (run.name, steps)   # each step logged once
        assert run.config.training.train_steps == horizon and run.steps == horizon
        level = synthetic_level(run.config)    # the stand-in's curve, known: the value at its last step
        assert run.value("eval/err_last") == pytest.approx(level + (1 - level) * math.exp(-horizon / TAU[point]))
        if horizon == 80:
            assert "@80 " in run.name and run.tags["continued_from"] == runs[40, point, seed].name


def test_a_learning_speed_effect_is_answered_per_horizon(uninterrupted):
    folder, answer, stdout = uninterrupted
    _assert_the_answer(folder, answer)
    assert "horizon 40 steps: still improving over the last evaluation interval (s=1 by " in stdout
    assert "every completed replicate continues to 80 steps" in stdout
    assert "horizon 80 steps" not in stdout                  # the last horizon: nothing longer to ask for
    rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
    assert [(r["horizon"], len(r["plan"])) for r in rounds] == [(40, 8), (80, 8)]
    assert all(t["continue_from"].startswith(str(folder / "ray")) for t in rounds[1]["plan"])
    lines = stdout[stdout.index("sequential answer"):].splitlines()
    assert "for all 1 comparisons at each of 2 horizons (40, 80 steps), 2 statements at once" in lines[0]
    assert lines[1] == "  at 40 steps:" and lines[2].startswith("    s=2 vs s=1: ") and lines[2].endswith(": worse")
    assert lines[3] == "  at 80 steps:" and lines[4].endswith(f"equivalent within ±{DELTA:g}")
    tags = answer["record"].parent["tags"]
    assert tags["decision/s_2"] == "equivalent"
    assert tags["answer/s_2"].startswith("at 40 steps: s=2 vs s=1: ") and "; at 80 steps: " in tags["answer/s_2"]
    question = json.loads(tags["question"])
    assert question["horizon"] == {"start": 40, "max": 80}
    status = cli("status", NAME, "--results-root", str(folder.parent), cwd=folder.parent).stdout
    assert "  at 80 steps:" in status and "equivalent within" in status
    report = (folder / "report" / "report.md").read_text()
    assert "| s=2 vs s=1 | 40 | 1 | 4 |" in report and "| s=2 vs s=1 | 80 | 1 | 4 |" in report


def test_the_continued_run_folder_holds_the_whole_run(uninterrupted):
    folder, answer, _ = uninterrupted
    rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
    for trial in rounds[1]["plan"]:
        source = Path(trial["continue_from"])
        continued, = [p for p in (folder / "ray" / f"{NAME}-replicates-r2").iterdir()
                      if p.is_dir() and (p / "config.yaml").is_file()
                      and yaml.safe_load((p / "config.yaml").read_text())["training"]["seed"]
                      == trial["config"]["training"]["seed"]
                      and yaml.safe_load((p / "config.yaml").read_text())["training"]["loop_dilation"]
                      == trial["config"]["training"]["loop_dilation"]]
        events = [json.loads(line) for line in (continued / "metrics.jsonl").read_text().splitlines()]
        assert [e["step"] for e in events] == [20, 40, 60, 80]
        before = [json.loads(line) for line in (source / "metrics.jsonl").read_text().splitlines()]
        assert events[:2] == before                                    # the shorter run's own history
        assert yaml.safe_load((continued / "config.yaml").read_text())["training"]["train_steps"] == 80


def test_an_open_comparison_goes_on_to_the_longer_horizon_before_it_buys_seeds(tmp_path):
    """With noise 20x larger, 4 seeds cannot tell s=2 from s=1 at 40 steps; the curves still fall
    there, so the 4 seeds continue to 80 steps (40 ends unresolved), and only there, where nothing
    still improves, does a round add seeds, trained from the start to 80 steps."""
    done = cli("run", str(_study(tmp_path, noise_sd=0.02)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / NAME
    rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
    shape = [(r["horizon"], sorted({t["config"]["training"]["seed"] for t in r["plan"]}), "continue_from" in r["plan"][0])
             for r in rounds]
    assert shape == [(40, [43, 44, 45, 46], False), (80, [43, 44, 45, 46], True), (80, [47, 48, 49, 50], False)]
    answer = _answer(folder)
    assert answer["looks"][40]["s=2"][:2] == ("unresolved", 4)
    assert answer["looks"][80]["s=2"][1] == 8
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    for seed in (47, 48, 49, 50):
        run = answer["runs"][80, "s=2", seed]
        assert "continued_from" not in run.tags and run.config.training.train_steps == 80
        assert [m.step for m in client.get_metric_history(run.run_id, "eval/err_last")] == [20, 40, 60, 80]
    assert "round 1 at 40 steps: s=2 vs s=1: " in done.stdout and "unresolved at budget" in done.stdout
    assert "horizon 80 steps" not in done.stdout


def test_a_driver_stopped_during_an_extension_resumes_to_the_same_answer(tmp_path, uninterrupted):
    lines = start_cli("run", str(_study(tmp_path, eval_s=0.4)), cwd=tmp_path)
    lines.wait_for(r"^replicates round 2: ")
    lines.wait_for(r"\.rep\d+@80 .*: running on node")       # a continued replicate has reported
    lines.process.send_signal(signal.SIGTERM)
    output = lines.rest()
    folder = tmp_path / NAME
    assert lines.process.returncode == 143, output
    assert f"loopstudy resume {folder}" in output, output
    for advice in ("Tuner.restore", "Traceback", "PC: @", "SIGTERM received"):
        assert advice not in output, (advice, output)
    rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
    assert len(rounds) == 2 and not rounds[1]["done"]                 # stopped inside the extension
    resumed = cli("resume", NAME, "--results-root", str(tmp_path), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    answer = _answer(folder)
    assert answer["looks"] == uninterrupted[1]["looks"]
    _assert_the_answer(folder, answer)
    expected = {k: r.value("eval/err_last") for k, r in uninterrupted[1]["runs"].items()}
    assert {k: r.value("eval/err_last") for k, r in answer["runs"].items()} == pytest.approx(expected, abs=1e-12)
    lost = [r for r in answer["record"].every_replicate if r.state != "completed"]
    assert all(r.state == "failed" and r.reason.startswith("lost") for r in lost), [(r.name, r.reason) for r in lost]
