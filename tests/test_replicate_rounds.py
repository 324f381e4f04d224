"""A study's `question` (fast): validated before anything runs, errors naming the file and the
field; and how the replicate rounds hand out seeds (study/replicate_rounds.py), without Ray."""
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
import yaml  # noqa: E402

from analysis.sequential import judge  # noqa: E402
from analysis.sequential_plan import HorizonBudget, Question, SeedBudget  # noqa: E402
from study.errors import StudyError  # noqa: E402
from study.replicate_plan import reseeded  # noqa: E402
from study.replicate_rounds import at_horizon, next_plan, planned_seeds  # noqa: E402
from study.spec import read_study_file  # noqa: E402
from trainables.config import Config  # noqa: E402

SCIENTIFIC = {
    "name": "q", "base": "seed_dilation_cpu", "trainable": "synthetic",
    "overrides": {"training.train_steps": 40, "training.eval_every": 10, "curriculum.loops.start": 13,
                  "curriculum.dims.interval": 1, "curriculum.points.interval": 1, "curriculum.loops.interval": 1},
    "scientific": {"training.loop_dilation": [1, 2, 3]},
    "space": {"training.learning_rate": {"categorical": [1.0e-3]}},
    "objectives": [{"metric": "eval/err_last", "mode": "min"}],
    "budget": {"num_samples": 1},
    "question": {"confidence": 0.9, "delta": 0.02, "seeds": {"start": 3, "step": 2, "max": 7}},
}


def _study(tmp_path, **changes):
    data = {**SCIENTIFIC, **changes}
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not ...}))
    return path


def test_a_question_is_read_with_its_defaults(tmp_path):
    spec = read_study_file(_study(tmp_path))
    assert spec.question.seeds == SeedBudget(start=3, step=2, max=7) and spec.question.delta == 0.02
    assert spec.question.spending == "obrien_fleming" and spec.question.power == 0.8
    # the first horizon is the study's training.train_steps, resolved before anything runs
    assert read_study_file(_study(tmp_path, question={})).question == Question(horizon=HorizonBudget(40, 40))
    longer = read_study_file(_study(tmp_path, question={"horizon": {"max": 100}})).question
    assert longer.horizon.ladder() == (40, 80, 100) and longer.family(2) == 6
    assert read_study_file(_study(tmp_path, question=...)).question is None      # no question: as before


@pytest.mark.parametrize("changes, message", [
    ({"question": {"confidence": 1.5}}, r"'question.confidence': expected a number in \(0, 1\)"),
    ({"question": {"delta": -1}}, "'question.delta': expected a positive number"),
    ({"question": {"seeds": {"start": 1}}}, "'question.seeds.start': expected an integer >= 2"),
    ({"question": {"seeds": {"start": 4, "max": 2}}}, r"'question.seeds.max': expected an integer >= seeds.start \(4\)"),
    ({"question": {"seeds": {"strat": 4}}}, "'question.seeds.strat': unknown field"),
    ({"question": {"spending": "haybittle"}}, "'question.spending': expected one of pocock, obrien_fleming"),
    ({"question": {"time_limit_s": 0}}, "'question.time_limit_s': expected a positive number"),
    ({"question": {"confidnce": 0.9}}, "'question.confidnce': unknown field"),
    ({"question": 3}, "'question' must be a mapping"),
    ({"question": {"horizon": {"start": 50}}}, r"'question.horizon.start': the replicates train the study's "
                                               r"training.train_steps=40; got 50"),
    ({"question": {"horizon": {"max": 30}}}, r"'question.horizon.max': expected an integer >= horizon.start "
                                             r"\(40\), got 30"),
    ({"trainable": "probe", "objectives": [{"metric": "probe/err_min", "mode": "min"}],
      "question": {"horizon": {"max": 80}}}, "'question.horizon.max': a probe trial is not continued"),
    ({"scientific": ...}, "'question' needs 'scientific'"),
    ({"scientific": {"training.loop_dilation": [2]}}, "'question' needs two or more 'scientific' values"),
    ({"replicates": {"seeds": 5}}, "'question' and 'replicates' do not mix"),
])
def test_an_invalid_question_names_the_file_and_field(tmp_path, changes, message):
    path = _study(tmp_path, **changes)
    with pytest.raises(StudyError, match=message) as info:
        read_study_file(path)
    assert str(info.value).startswith(str(path))


def _trial(point: str, seed: int, first: int = 43) -> dict:
    return reseeded({"scientific": point, "trial": 0, "params": {}, "sampled": {}, "config": Config().to_dict()},
                    seed, seed - first)


def _round(points, seeds) -> dict:
    return {"plan": [_trial(p, s) for p in points for s in seeds], "done": True, "wall_s": 1.0}


# looks at 3, 5, 7 paired seeds; horizons 40, 80
QUESTION = Question(seeds=SeedBudget(start=3, step=2, max=7), horizon=HorizonBudget(40, 80))


def _next(rounds, differences):
    return next_plan(rounds, judge(differences, QUESTION), differences, "s=1", QUESTION.seeds.max, QUESTION)


def test_only_open_comparisons_and_the_reference_get_the_next_seeds():
    rounds = [_round(["s=1", "s=2", "s=3"], [43, 44, 45])]
    differences = {"s=2": [-0.5, -0.52, -0.51], "s=3": [0.3, -0.2, 0.1]}       # s=2 better; s=3 open
    plan = _next(rounds, differences)
    assert planned_seeds([{"plan": plan}]) == {"s=1": [46, 47], "s=3": [46, 47]}
    rounds.append({"plan": plan, "done": True, "wall_s": 1.0})
    differences["s=3"] += [0.2, -0.3]
    assert planned_seeds([{"plan": _next(rounds, differences)}]) == {"s=1": [48, 49], "s=3": [48, 49]}


def test_a_failed_seed_is_replaced_and_the_budget_caps_the_seeds():
    rounds = [_round(["s=1", "s=2"], [43, 44, 45])]
    short = {"s=2": [0.3, -0.2]}                         # one of the three seeds failed: the look lacks one
    assert planned_seeds([{"plan": _next(rounds, short)}]) == {"s=1": [46], "s=2": [46]}
    rounds = [_round(["s=1", "s=2"], range(43, 50))]     # 7 seeds planned (the most), one failed
    assert _next(rounds, {"s=2": [0.3, -0.2, 0.1, 0.0, -0.1, 0.2]}) is None   # the budget is spent


def test_a_longer_horizon_grows_each_values_steps_and_its_new_seeds_follow_the_continued_ones():
    first = [{**_trial(p, s), "horizon": 40} for p in ("s=1", "s=2") for s in (43, 44, 45)]
    for trial in first:
        trial["config"]["training"]["train_steps"] = 40 if trial["scientific"] == "s=1" else 60   # equal compute
    longer = [at_horizon({**t, "continue_from": "somewhere"}, 80, QUESTION.horizon.ladder()) for t in first
              if t["config"]["training"]["seed"] != 44 or t["scientific"] == "s=1"]   # s=2's seed 44 failed
    assert {t["scientific"]: t["config"]["training"]["train_steps"] for t in longer} == {"s=1": 80, "s=2": 120}
    assert all(t["horizon"] == 80 and t["horizon_index"] == 1 and "continue_from" not in t for t in longer)
    assert len({t["config_hash"] for t in longer}) == len(longer) and longer[0]["config_hash"] != first[0]["config_hash"]
    rounds = [{"plan": first, "done": True, "wall_s": 1.0, "horizon": 40},
              {"plan": longer, "done": True, "wall_s": 1.0, "horizon": 80}]
    differences = {"s=2": [0.3, -0.2]}                   # at 80 steps: seeds 43 and 45 paired, open
    plan = _next(rounds, differences)
    assert planned_seeds([{"plan": plan}]) == {"s=1": [46], "s=2": [46]}      # after the seeds it has
    assert all(t["horizon"] == 80 and t["config"]["training"]["train_steps"] == {"s=1": 80, "s=2": 120}[t["scientific"]]
               for t in plan)
