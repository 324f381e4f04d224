"""A study with a `question` end to end on real Ray, Optuna and MLflow, with the stand-in
trainable's known answer: replicate rounds that stop giving seeds to an answered comparison,
a null comparison that runs to the budget and ends unresolved with a projection, and a driver
stopped in every phase (search, between phases and rounds, mid-round; SIGINT, SIGTERM, SIGKILL),
one study stopped at each in turn, that resumes to the same answer with nothing run twice."""
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from analysis.sequential_answer import judgement_of
from analysis.trials import read_record
from study.spec import find_study
from study.storage.stores import Stores
from studyfiles import cli, descendants, start_cli, write_study

pytestmark = pytest.mark.service
NAME = "question"
# level = 0.5 + 0.1 |log10(lr / 1e-3)| + seed noise: lr 1e-3 is 0.1 better than 1e-2, lr 1e-4 is not
LEARNING_RATES = [1.0e-2, 1.0e-4, 1.0e-3]
REFERENCE, NULL, EFFECT = "lr=0.01", "lr=0.0001", "lr=0.001"
FIRST_SEED = 43                         # the search trains seed 42


def _study(tmp_path: Path, eval_s: float = 0.0) -> Path:
    """The study; `eval_s` slows each trial (0.4 s per evaluation: time to be interrupted in)
    without changing the answer."""
    return write_study(
        tmp_path, NAME, trainable="synthetic", base="seed_dilation_cpu", sampler="brute_force", scheduler=None,
        overrides={"training.train_steps": 40, "training.eval_every": 10, "training.checkpoint_every": 20,
                   "curriculum.loops.start": 13, "curriculum.dims.interval": 1, "curriculum.points.interval": 1,
                   "curriculum.loops.interval": 1, "synthetic.eval_s": eval_s},
        scientific={"training.learning_rate": LEARNING_RATES},
        space={"training.weight_decay": {"categorical": [0.0]}},
        budget={"num_samples": 1, "max_concurrent": 4},
        question={"confidence": 0.9, "seeds": {"start": 4, "step": 4, "max": 8}})   # looks at 4 and 8 seeds


def _outcome(folder: Path) -> dict:
    """What the study concluded and spent: each comparison's decision, seeds and interval, each
    value's seeds and objective per seed, the rounds' planned seeds; and its replicate runs."""
    record = read_record(Stores.of(find_study(folder)))
    judgement = judgement_of(record)
    values = {}
    for run in record.replicates:
        if run.state == "completed":
            assert (run.seed not in values.setdefault(run.point, {})), f"{run.name}: a seed completed twice"
            values[run.point][run.seed] = run.value("eval/err_last")
    rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
    return {"looks": {name: (look.decision, look.n, round(look.lo, 9), round(look.hi, 9), look.seeds_needed)
                      for name, look in judgement.latest.items()},
            "values": values, "parent": record.parent,
            "rounds": [sorted((t["scientific"], t["config"]["training"]["seed"]) for t in r["plan"]) for r in rounds],
            "runs": record.replicates}


def _assert_no_duplicates(folder: Path, outcome: dict) -> None:
    """One completed replicate run per value and seed, each Tune trial one MLflow run, every step
    logged once; any other replicate run was lost with the killed driver and says so."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = outcome["runs"]
    assert len({r.tags["tune_trial_id"] for r in runs}) == len(runs)
    for run in runs:
        if run.state != "completed":
            assert run.state == "failed" and run.reason.startswith("lost"), (run.name, run.state, run.reason)
            continue
        steps = [m.step for m in client.get_metric_history(run.run_id, "eval/err_last")]
        assert steps == [10, 20, 30, 40], f"{run.name}: steps missing or logged twice: {steps}"
    planned = sorted(pair for r in outcome["rounds"] for pair in r)
    assert sorted((p, s) for p, seeds in outcome["values"].items() for s in seeds) == planned


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict, str]:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    done = cli("run", str(_study(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / NAME, _outcome(tmp_path / NAME), done.stdout


def test_a_real_effect_resolves_early_and_a_null_runs_to_the_budget(uninterrupted):
    folder, outcome, stdout = uninterrupted
    assert outcome["rounds"] == [sorted((p, s) for p in (REFERENCE, NULL, EFFECT) for s in range(43, 47)),
                                 sorted((p, s) for p in (REFERENCE, NULL) for s in range(47, 51))]
    decision, n, lo, hi, _ = outcome["looks"][EFFECT]
    assert (decision, n) == ("better", 4) and -0.13 < lo < hi < -0.07      # answered after round 1
    decision, n, lo, hi, needed = outcome["looks"][NULL]
    assert (decision, n) == ("unresolved", 8) and lo < 0 < hi and needed > 8    # with the seeds it would need
    assert sorted(outcome["values"][EFFECT]) == list(range(43, 47))          # fewer seeds than the most
    assert sorted(outcome["values"][REFERENCE]) == sorted(outcome["values"][NULL]) == list(range(43, 51))
    _assert_no_duplicates(folder, outcome)
    for line in (f"round 1: {EFFECT} vs {REFERENCE}: ", f"round 1: open: {NULL} vs {REFERENCE} wants 8 paired seeds",
                 f"round 2: {NULL} vs {REFERENCE}: ", "unresolved at budget; a fixed design would need about "
                 f"{needed} paired seeds", "sequential answer (90% for all 2 comparisons at once"):
        assert line in stdout, line
    tags = outcome["parent"]["tags"]
    assert tags["decision/lr_0.001"] == "better" and tags["decision/lr_0.0001"] == "unresolved"
    assert tags["question_budget_spent"] == "false" and tags["rounds"] == "2"
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    history = client.get_metric_history(outcome["parent"]["run_id"], "sequential_mean/lr_0.0001")
    assert [m.step for m in history] == [1, 2]                  # each round's interval, logged once
    status = cli("status", NAME, "--results-root", str(folder.parent), cwd=folder.parent).stdout
    assert "  lr=0.0001 vs lr=0.01: " in status and "unresolved at budget" in status
    report = (folder / "report" / "report.md").read_text()
    assert "![](trajectory.png)" in report and "| lr=0.0001 vs lr=0.01 | 2 | 8 |" in report


def _kill(lines, sig) -> str:
    """Send `sig` to the driver; SIGKILL also what it leaves behind (Ray's processes)."""
    driver = lines.process
    assert driver.poll() is None, "the study ended before it could be interrupted"
    spawned = descendants(driver.pid)
    driver.send_signal(sig)
    output = lines.rest()
    for pid in spawned if sig == signal.SIGKILL else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return output


def _assert_a_clean_stop(folder: Path, lines, sig, output: str) -> None:
    """What an interrupt ends with: the shell's exit code, the resume command, no library advice,
    traceback or native stack, and the parent run marked interrupted."""
    assert lines.process.returncode == 128 + sig, output
    assert f"loopstudy resume {folder}" in output, output
    for advice in ("Tuner.restore", "Resume experiment with", "Traceback", "PC: @", "SIGTERM received"):
        assert advice not in output, (advice, output)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME).experiment_id
    parent, = client.search_runs([experiment], "tags.loopstudy_role = 'parent'")
    assert parent.info.status == "KILLED" and parent.data.tags["state"] == "interrupted"


# one study stopped again and again, each time where the last resume left it, and resumed to the
# uninterrupted study's answer: (what the stop is, the lines the driver waits for, the signal,
# how many times it is sent). The search phases train v1, v2, v3 one after the other; then the
# rounds: round 1 (seeds 43-46), judged ("round 1: open"), round 2 (seeds 47-50)
ROUND_2_RUNNING = (r"^replicates round 2: ", r"\.rep\d+ .* seed=(47|48|49|50): running on node")
STOPS = [("first-search-phase-sigint", (r"^v1\.t000 .*: running on node",), signal.SIGINT, 1),
         ("between-phases-sigint", (r"^v1\.t000 .*: completed",), signal.SIGINT, 1),
         ("search-phase-sigint-twice", (r"^v2\.t000 .*: running on node",), signal.SIGINT, 2),
         ("later-search-phase-sigterm", (r"^v3\.t000 .*: running on node",), signal.SIGTERM, 1),
         ("between-rounds-sigkill", (r"^round 1: open: ",), signal.SIGKILL, 1),
         ("mid-round-sigint", ROUND_2_RUNNING, signal.SIGINT, 1),
         ("mid-round-sigkill", ROUND_2_RUNNING, signal.SIGKILL, 1)]


def test_a_driver_stopped_anywhere_ends_cleanly_and_resumes_to_the_same_answer(tmp_path, uninterrupted):
    """Every stop of STOPS in turn on one study (each resume is itself stopped at the next one):
    a clean stop for a signal a driver can catch (exit code, resume hint, no library advice, the
    trial it was running shown interrupted), the rounds' plan on disk where a round was cut, and
    at the end the uninterrupted study's answer, seeds and values with nothing trained twice."""
    folder = tmp_path / NAME
    lines = start_cli("run", str(_study(tmp_path, eval_s=0.4)), cwd=tmp_path)
    for stop, patterns, sig, times in STOPS:
        for pattern in patterns:
            lines.wait_for(pattern)
        if sig == signal.SIGKILL:
            output = _kill(lines, sig)
        else:
            for _ in range(times):
                lines.process.send_signal(sig)
                time.sleep(0.3)
            output = lines.rest()
            _assert_a_clean_stop(folder, lines, sig, output)
        if "search-phase" in stop and times == 1 and "running on node" in patterns[-1]:
            table = output[[m.start() for m in re.finditer(r"^trial ", output, re.MULTILINE)][-1]:]
            assert re.search(r"^v\d\.t000 .* interrupted ", table, re.MULTILINE) and " pruned " not in table, \
                (stop, table)
            assert "no driver holds this study's lock: its 1 interrupted trials" in table, (stop, table)
        if stop.startswith("mid-round"):
            rounds = yaml.safe_load((folder / "replicate_rounds.yaml").read_text())
            assert len(rounds) == 2 and not rounds[1]["done"], stop          # stopped inside round 2
        lines = start_cli("resume", NAME, "--results-root", str(tmp_path), cwd=tmp_path)
    output = lines.rest(timeout_s=300)
    assert lines.process.returncode == 0, output
    outcome, expected = _outcome(folder), uninterrupted[1]
    assert outcome["looks"] == expected["looks"] and outcome["rounds"] == expected["rounds"]
    assert outcome["values"] == expected["values"]               # the same seeds, each trained once
    _assert_no_duplicates(folder, outcome)
    assert outcome["parent"]["tags"]["state"] == "finished"
