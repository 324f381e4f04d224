"""The report's account of each value's nuisance choice, on hand-made records and curves: the
chosen config (the one its replicates repeat) beside every trial ASHA stopped, at the step it
was stopped, and the warning when the chosen config was no better there (fast: no MLflow)."""
import json

from analysis.layout import POINT, POINTS, REPLICATE, ROLE, SCIENTIFIC_VALUES
from analysis.nuisance_choice import choice_rows, choice_section
from analysis.trials import StudyRecord, Trial
from trainables.config import load_config

CONFIG = load_config("seed_dilation_cpu")
METRIC = "eval/err_last"


def trial(number, point, state, value, steps, role="trial", repeat=0):
    name = f"t{number:03d}{'.rep%d' % repeat if role == REPLICATE else ''} {point}"
    return Trial(number, name, state, "", {}, CONFIG, {METRIC: value}, steps, name, repeat,
                 {POINT: point, ROLE: role})


def record(trials, replicates):
    tags = {POINTS: json.dumps(["s=1", "s=2"]), SCIENTIFIC_VALUES: json.dumps({"training.loop_dilation": [1, 2]})}
    return StudyRecord(None, {"run_id": "", "params": {}, "tags": tags}, [(METRIC, "min")], trials, replicates)


# s=1: t000 chosen; t001 stopped at step 20 at 0.60 while t000 was at 0.70 there (a slow start)
# s=2: t000 chosen; t001 stopped at step 20 at 0.90 while t000 was at 0.50 there (rightly stopped)
CURVES = {"t000 s=1": [(10, 0.9), (20, 0.70), (40, 0.40)], "t000 s=2": [(10, 0.8), (20, 0.50), (40, 0.45)]}
TRIALS = [trial(0, "s=1", "completed", 0.40, 40), trial(1, "s=1", "pruned", 0.60, 20),
          trial(0, "s=2", "completed", 0.45, 40), trial(1, "s=2", "pruned", 0.90, 20), trial(2, "s=2", "completed", 0.5, 40)]
REPLICATES = [trial(0, p, "completed", 0.4, 40, REPLICATE, r) for p in ("s=1", "s=2") for r in range(2)]


def history(t, metric):
    assert metric == METRIC
    return CURVES[t.name]


def test_each_stopped_trial_is_put_beside_the_chosen_one_at_its_step():
    rows = choice_rows(record(TRIALS, REPLICATES), history)
    assert [(r["value"], r["chosen"], r["stopped"], r["step"], r["stopped_value"], r["chosen_there"], r["not_ahead"])
            for r in rows] == [("s=1", "t000 s=1", "t001 s=1", 20, 0.60, 0.70, True),
                               ("s=2", "t000 s=2", "t001 s=2", 20, 0.90, 0.50, False)]


def test_the_report_warns_only_where_the_chosen_config_was_not_ahead():
    text = "\n".join(choice_section(record(TRIALS, REPLICATES), history))
    assert "| s=1 | t000 s=1 (0.4) | t001 s=1 | 20 | 0.6 | 0.7 |" in text
    assert "**s=1: the chosen config was no better at step 20 than t001 s=1, which ASHA stopped there**" in text
    assert "**s=2:" not in text
    only_s2 = [t for t in TRIALS if t.name != "t001 s=1"]
    assert "the chosen config of its value was ahead of it" in "\n".join(choice_section(record(only_s2, REPLICATES),
                                                                                      history))


def test_no_stopped_trial_and_no_replicates():
    clean = [t for t in TRIALS if t.state == "completed"]
    rows = choice_rows(record(clean, REPLICATES), history)
    assert [(r["value"], r["stopped"]) for r in rows] == [("s=1", None), ("s=2", None)]
    assert "ASHA stopped no trial of a compared value." in "\n".join(choice_section(record(clean, REPLICATES), history))
    assert choice_section(record(TRIALS, []), history) == []          # nothing was chosen for replicates


def test_a_choice_made_on_a_lucky_seed_is_flagged_by_its_replicates():
    lucky = [trial(0, "s=1", "completed", 0.40, 40), trial(1, "s=1", "completed", 0.50, 40),
             trial(0, "s=2", "completed", 0.10, 40), trial(1, "s=2", "completed", 0.30, 40)]
    replicates = [trial(0, "s=1", "completed", v, 40, REPLICATE, r) for r, v in enumerate([0.3, 0.5])] + \
                 [trial(0, "s=2", "completed", v, 40, REPLICATE, r) for r, v in enumerate([0.6, 0.9, 0.2])]
    text = "\n".join(choice_section(record(lucky, replicates), history))
    assert ("**s=2: chosen on a lucky seed?** Its search value 0.1 is better than each of its 3 replicates at step "
            "40 (0.2 to 0.9)") in text
    assert "**s=1:" not in text                                  # 0.4 lies among its replicates 0.3, 0.5
    assert "each config judged on one seed" in text and "a seed outlier can decide the choice alone" in text
    fair = "\n".join(choice_section(record(lucky, replicates[:2] + replicates[2:3]), history))
    assert "lucky" not in fair and "no chosen config's search value is better than all" in fair   # s=2: 1 replicate
    two_seeds = record(lucky, replicates)
    two_seeds.parent["params"]["seeds_per_config"] = "2"
    text = "\n".join(choice_section(two_seeds, history))
    assert "each config judged on the mean of its 2 seeds" in text and "seed outlier" not in text


def test_a_value_with_one_candidate_config_had_no_choice_to_check():
    single = [trial(0, "s=1", "completed", 0.40, 40), trial(0, "s=2", "completed", 0.10, 40)]
    replicates = [trial(0, p, "completed", v, 40, REPLICATE, r) for p in ("s=1", "s=2") for r, v in enumerate([0.6, 0.9])]
    text = "\n".join(choice_section(record(single, replicates), history))
    assert "Each value had one candidate config: nothing was chosen between configs." in text
    assert "lucky" not in text and "seed outlier" not in text


def test_a_config_trained_on_two_seeds_is_one_candidate_judged_on_their_mean():
    repeats = [trial(0, "s=1", "completed", 0.10, 40), trial(0, "s=1", "completed", 0.50, 40, repeat=1),
               trial(1, "s=1", "completed", 0.60, 40), trial(1, "s=1", "completed", 0.70, 40, repeat=1)]
    replicates = [trial(0, "s=1", "completed", v, 40, REPLICATE, r) for r, v in enumerate([0.2, 0.4])]
    two_seeds = record(repeats, replicates)
    two_seeds.parent["params"]["seeds_per_config"] = "2"
    text = "\n".join(choice_section(two_seeds, history))
    assert "lucky" not in text                      # the mean 0.3 lies among 0.2 and 0.4 (0.1 alone would not)
    single = "\n".join(choice_section(record(repeats[:2], replicates), history))
    assert "Each value had one candidate config" in single     # two seeds of one config: one candidate
