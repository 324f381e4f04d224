"""The verdict's statistics on the stand-in trainable's known answer (trainables/synthetic.py:
an effect per unit of s, plus seed noise shared by every value): no Ray, no MLflow."""
import pytest

from analysis.layout import POINT, POINTS, REPLICATE, ROLE, SCIENTIFIC_VALUES
from analysis.trials import StudyRecord, Trial
from analysis.verdict import MIN_SEEDS, comparisons, groups
from trainables.config import load_config
from trainables.synthetic import level

import json

SEEDS = range(43, 43 + 6)


def record(values: dict[str, dict[int, float]], scientific: bool = True) -> StudyRecord:
    """A finished study's record: replicate runs with these objective values per label and seed."""
    runs = []
    for label, by_seed in values.items():
        for seed, value in by_seed.items():
            s = int(label.split("=")[1])
            config = load_config("seed_dilation_cpu", {"training.loop_dilation": s, "training.seed": seed})
            runs.append(Trial(0, f"t000.rep{seed - 43} {label}", "completed", "", {"training.loop_dilation": s,
                              "training.seed": seed}, config, {"eval/err_last": value}, 100, "run", seed - 43,
                              {ROLE: REPLICATE, **({POINT: label} if scientific else {})}))
    tags = {SCIENTIFIC_VALUES: json.dumps({"training.loop_dilation": [int(l.split("=")[1]) for l in values]}),
            POINTS: json.dumps(list(values))} if scientific else {SCIENTIFIC_VALUES: "{}"}
    return StudyRecord(None, {"run_id": "", "params": {}, "tags": tags}, [("eval/err_last", "min")], [], runs)


def synthetic(effect: float, dilations=(1, 2), seeds=SEEDS) -> dict[str, dict[int, float]]:
    """The stand-in's final level per s and seed: seed noise (sd 0.1) shared by both values."""
    return {f"s={s}": {seed: level(load_config("seed_dilation_cpu", {
        "training.loop_dilation": s, "training.seed": seed, "synthetic.effect_per_dilation": effect}))
        for seed in seeds} for s in dilations}


def test_paired_seeds_detect_an_effect_that_unpaired_comparison_misses():
    (c,) = comparisons(record(synthetic(effect=-0.03)))
    assert c.value == "s=2" and c.reference == "s=1" and c.seeds == list(SEEDS)
    assert c.mean == pytest.approx(-0.03, abs=0.01)
    lo, hi = c.paired
    assert hi < 0 and c.verdict == "better"                      # the pairing removes the seed's noise
    lo_u, hi_u = c.unpaired
    assert lo_u < 0 < hi_u                                       # ignoring it, the effect is lost
    assert c.sentence().startswith("s=2 vs s=1: -0.0") and "(paired, 6 seeds; unpaired [" in c.sentence()


def test_two_identical_values_are_not_distinguishable():
    # a 90% interval calls a null effect distinguishable about 10% of the time: count over 40
    # independent blocks of 6 seeds, beside the rate at which a real effect is found
    blocks = [range(100 + 6 * i, 106 + 6 * i) for i in range(40)]
    null = [comparisons(record(synthetic(effect=0.0, seeds=b)))[0] for b in blocks]
    real = [comparisons(record(synthetic(effect=-0.03, seeds=b)))[0] for b in blocks]
    assert sum(c.verdict == "not distinguishable" for c in null) >= 33          # expected 36 of 40
    assert sum(c.verdict == "better" for c in real) >= 38                       # paired: found
    assert sum(c.unpaired[1] < 0 for c in real) <= 12                           # unpaired: mostly missed


def test_a_worse_value_is_called_worse_and_groups_follow_the_listed_order():
    found = record(synthetic(effect=0.05, dilations=(1, 3, 2)))
    assert [g.label for g in groups(found)] == ["s=1", "s=3", "s=2"]   # the first listed is the reference
    verdicts = {c.value: c.verdict for c in comparisons(found)}
    assert verdicts == {"s=3": "worse", "s=2": "worse"}


def test_fewer_seeds_than_an_interval_needs_show_the_seeds():
    few = record(synthetic(effect=-0.03, seeds=range(43, 43 + MIN_SEEDS - 1)))
    (c,) = comparisons(few)
    assert c.paired is None and c.verdict == "too few seeds for an interval"
    assert f"(n={MIN_SEEDS - 1} paired seeds: " in c.sentence()


def test_seeds_trained_by_one_value_only_are_left_out_of_the_pairing():
    values = synthetic(effect=-0.03)
    del values["s=2"][43]
    (c,) = comparisons(record(values))
    assert c.seeds == list(SEEDS)[1:] and len(c.differences) == len(SEEDS) - 1


def test_without_scientific_parameters_the_best_config_is_compared_unpaired():
    values = {"s=1": {s: 0.10 + 0.01 * (s % 2) for s in SEEDS}, "s=2": {s: 0.30 + 0.01 * (s % 2) for s in SEEDS}}
    (c,) = comparisons(record(values, scientific=False))
    assert (c.value, c.reference) == ("s=1", "s=2") and not c.is_paired
    assert c.verdict == "better" and c.interval[1] < 0 and "(unpaired, 6 seeds)" in c.sentence()


class SummaryRecord(StudyRecord):
    """A record whose runs' summary.json hold `err_last` (eval/err_last at b) and a flat history."""

    def __init__(self, record: StudyRecord, err_last: float):
        super().__init__(None, record.parent, record.objectives, [], record.replicates)
        self.err_last = err_last

    def artifact_json(self, trial, name):
        return {"eval/err_last": self.err_last, "baselines": {"averaging": {"err_last": 0.9, "err_mean": 0.5}}}

    def metric_history(self, trial, metric):
        return []


@pytest.mark.parametrize("metric, err_last, not_learned", [
    ("eval/extrapolation_ratio", 0.2, None),        # a ratio near 1 is no error: judged on eval/err_last
    ("eval/extrapolation_ratio", 0.8, "not learned: the best mean eval/err_last (of the runs whose "
                                      "eval/extrapolation_ratio is compared) 0.8 is not clearly below"),
    ("eval/err_last_at_2b", 0.2, "not learned: the best mean eval/err_last_at_2b 1 is not clearly below "
                                 "predicting 0 (about 1) and averaging (0.9)"),   # the last point's baseline
    ("train/loss", 0.8, None),                      # no error a trivial predictor scores
])
def test_the_learning_guard_judges_an_error(metric, err_last, not_learned):
    from analysis.verdict import learning_problems

    values = {"s=1": dict.fromkeys(SEEDS, 1.0), "s=2": dict.fromkeys(SEEDS, 1.05)}
    base = record(values)
    for run in base.replicates:
        run.objectives = {metric: run.objectives.pop("eval/err_last")}
    base.objectives = [(metric, "min")]
    summaries = SummaryRecord(base, err_last)
    problems = learning_problems(summaries, groups(summaries)[0])
    assert (any(p.startswith(not_learned) for p in problems) if not_learned else problems == []), problems


class PerValueRecord(StudyRecord):
    """A record whose runs' summary.json hold each value's `err_last`, with per-metric histories."""

    def __init__(self, record: StudyRecord, err_last: dict[str, float], histories: dict[str, list] | None = None):
        super().__init__(None, record.parent, record.objectives, [], record.replicates)
        self.err_last, self.histories = err_last, histories or {}

    def artifact_json(self, trial, name):
        return {"eval/err_last": self.err_last[trial.point], "baselines": {"averaging": {"err_last": 0.9}}}

    def metric_history(self, trial, metric):
        return self.histories.get(metric, [])


def probe_record(objective: str, err_last: dict[str, float], histories=None) -> StudyRecord:
    base = record({"s=1": dict.fromkeys(SEEDS, 0.02), "s=2": dict.fromkeys(SEEDS, 0.30)})
    for run in base.replicates:
        run.objectives = {objective: run.objectives.pop("eval/err_last")}
    base.objectives = [(objective, "min")]
    return PerValueRecord(base, err_last, histories)


def guards(record: StudyRecord) -> list[str]:
    """The answer's learning and still-improving problems (seed_dilation_cpu's s=2 also trains
    other loop counts: a confound, not what these tests are about)."""
    from analysis.verdict import answer

    return [p for p in answer(record).problems if not p.startswith("confounded:")]


def test_a_probe_measure_is_compared_only_where_every_value_learned():
    # s=1 has the best probe measure but its model learned nothing: a probe of it means nothing
    assert guards(probe_record("probe/late_rise_tail", {"s=1": 0.95, "s=2": 0.1})) == [
        "not learned: the mean eval/err_last of s=1 (of the runs whose probe/late_rise_tail is compared) 0.95 is "
        "not clearly below predicting 0 (about 1) and averaging (0.9): more than 75% of 0.9"]
    problems = guards(probe_record("probe/late_rise_tail", {"s=1": 0.1, "s=2": 0.95}))
    assert len(problems) == 1 and problems[0].startswith("not learned: the mean eval/err_last of s=2"), problems
    assert guards(probe_record("probe/late_rise_tail", {"s=1": 0.1, "s=2": 0.2})) == []
    # an error objective: the best value is judged, as before (s=2's unlearned model is a result)
    assert guards(probe_record("eval/err_last", {"s=1": 0.02, "s=2": 0.95})) == []


def test_a_probe_measure_is_still_improving_when_its_models_still_learn():
    falling = [(250, 0.40), (500, 0.20)]            # the training error halves over the last interval
    settled = [(250, 0.20), (500, 0.199)]
    learned = {"s=1": 0.1, "s=2": 0.2}
    probed = probe_record("probe/late_rise_tail", learned, {"eval/err_last": falling})
    trained = probed.replicates[0].config.training.train_steps      # not the trial's last (probe) step
    assert trained != probed.replicates[0].steps
    assert [p.split(" changed")[0] for p in guards(probed)] == [
        f"still improving at step {trained}: eval/err_last of s={s}" for s in (1, 2)]
    # a probe measure's own history is its probes' fitting, not the model's training: not judged
    assert guards(probe_record("probe/late_rise_tail", learned, {"eval/err_last": settled,
                                                                 "probe/late_rise_tail": falling})) == []
