"""Study files: everything validated before Ray starts; errors name the file and the field."""
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
import typing  # noqa: E402

from study.errors import StudyError  # noqa: E402
from study.spec import find_study, parse_study, read_study_file  # noqa: E402

STUDIES = Path(__file__).parents[1] / "study" / "studies"
GOOD = {
    "name": "s1", "base": "paper_linear_regression_looped_cpu",
    "overrides": {"training.train_steps": 40, "training.eval_every": 10, "curriculum.dims.interval": 1,
                  "curriculum.points.interval": 1, "curriculum.loops.interval": 1},
    "space": {"training.loop_dilation": {"categorical": [1, 2]}, "curriculum.loops.start": None},
    "objectives": [{"metric": "eval/err_last", "mode": "min"}],
    "budget": {"num_samples": 4, "max_concurrent": 2},
    "scheduler": {"grace_period": 10, "reduction_factor": 2},
}


def with_(**changes):
    data = {**GOOD, **changes}
    return {k: v for k, v in data.items() if v is not ...}


def test_a_valid_study_resolves_its_parts(tmp_path):
    spec = parse_study(with_(results_dir=str(tmp_path / "r")))
    assert spec.max_steps == 40 and spec.metrics == ["eval/err_last"] and spec.modes == ["min"]
    assert spec.space.searched == ["training.loop_dilation"]
    assert spec.scheduler.grace_period == 10 and spec.resources.cpu == 1 and spec.seeds_per_config == 1
    assert spec.results_dir == tmp_path / "r"
    assert parse_study(with_(results_dir=...)).results_dir == Path("results/s1").resolve()


def test_the_kept_copy_reads_back_the_same(tmp_path):
    folder = tmp_path / "s1"
    spec = parse_study(with_(results_dir=str(folder)))
    folder.mkdir()
    (folder / "study.yaml").write_text(spec.to_yaml())
    for again in (find_study(folder), find_study("s1", results_root=tmp_path)):
        assert again.source == {**spec.source, "results_dir": str(folder)}
        assert again.space == spec.space and again.budget == spec.budget
        assert again.results_dir == folder
    with pytest.raises(StudyError, match="run it first"):
        find_study("missing", results_root=tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"nmae": "x"}, "unknown field 'nmae'; did you mean 'name'"),
    ({"name": ...}, "'name' is required"),
    ({"name": "a b"}, "'name' must be letters"),
    ({"trainable": "fit"}, "'trainable' must be one of 'train', 'probe', 'synthetic', got 'fit'"),
    ({"overrides": {"training.train_step": 5}}, "'base'/'overrides'.*did you mean 'training.train_steps'"),
    ({"base": "no_such_preset"}, "'base'/'overrides'.*no preset"),
    ({"space": {"training.loop_dilaton": {"categorical": [1]}}}, "'space'.*training.loop_dilaton"),
    ({"space": {"training.loop_dilation": 3, "curriculum.loops.end": {"int": [5, 10]}}}, "'space'.*no valid config"),
    ({"objectives": []}, "'objectives' must be a non-empty list"),
    ({"objectives": [{"metric": "eval/err", "mode": "min"}]}, r"'objectives\[0\].metric' 'eval/err' is not reported"),
    ({"objectives": [{"metric": "eval/err_last", "mode": "low"}]}, r"'objectives\[0\].mode' must be 'min' or 'max'"),
    ({"objectives": [{"metrc": "eval/err_last"}]}, r"unknown field 'objectives\[0\].metrc'"),
    ({"budget": {"max_concurrent": 2}}, "'budget.num_samples' is required"),
    ({"budget": {"num_samples": "8"}}, "'budget.num_samples' must be an integer, got '8'"),
    ({"budget": {"num_samples": 0}}, "'budget.num_samples' must be >= 1"),
    ({"budget": {"num_samples": 2, "time_limit_s": -1}}, "'budget.time_limit_s' must be > 0"),
    ({"scheduler": {"grace_period": 40}}, r"'scheduler.grace_period' must be in \[1, training.train_steps=40\)"),
    ({"scheduler": {"grace_period": 10, "reduction_factor": 1}}, "'scheduler.reduction_factor' must be >= 2"),
    ({"resources": {"cpu": 0}}, "'resources.cpu' must be > 0"),
    ({"seeds_per_config": 0}, "'seeds_per_config' must be an integer >= 1"),
    ({"sampler": "grid"}, "'sampler' must be one of"),
    ({"seeds_per_config": 2}, "'scheduler' and 'seeds_per_config' > 1 do not mix"),
    ({"base": []}, "'base' must be a preset name or a config YAML path, or a list of distinct ones"),
    ({"base": ["seed_dilation_cpu", "seed_dilation_cpu"]}, "a list of distinct ones"),
    ({"base": ["seed_dilation_cpu", "nope"]}, "'base'/'overrides'.*no preset"),
    ({"trainable": "probe"}, r"'objectives\[0\].metric' 'eval/err_last' is not reported by probe \(probe/err_min"),
    ({"replicates": 3}, "'replicates' must be a mapping"),
    ({"replicates": {"seeds": 1}}, r"'replicates.seeds' must be >= 2 \(an interval needs two seeds\)"),
    ({"replicates": {"top_k": 0}}, "'replicates.top_k' must be >= 1"),
    ({"replicates": {"topk": 2}}, "unknown field 'replicates.topk'; did you mean 'replicates.top_k'"),
])
def test_invalid_studies_name_the_file_and_field(tmp_path, changes, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_(**changes)))
    with pytest.raises(StudyError, match=message) as info:
        read_study_file(path)
    assert str(info.value).startswith(str(path))


def test_shipped_studies_are_valid():
    files = sorted(STUDIES.glob("*.yaml"))
    assert files
    for path in files:
        spec = read_study_file(path)
        assert spec.name == path.stem and spec.budget.num_samples >= 1


def test_several_bases_are_one_more_searched_choice(tmp_path):
    import optuna

    bases = ["paper_linear_regression_standard_cpu", "seed_dilation_cpu"]
    spec = parse_study(with_(base=bases, space={"training.learning_rate": {"float": [1e-4, 1e-3]}},
                             results_dir=str(tmp_path / "r")))
    assert spec.bases == bases and spec.config.model.family == "standard"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(12):
        trial = spec.define_by_run()(study.ask())
        params, config = trial["params"], trial["config"]
        assert params["base"] in bases and 1e-4 <= params["training.learning_rate"] <= 1e-3
        # the config is resolved from the drawn base, with the drawn value in it
        assert config["model"]["family"] == ("standard" if params["base"] == bases[0] else "looped")
        assert config["training"]["learning_rate"] == params["training.learning_rate"]
        drawn.add(params["base"])
    assert drawn == set(bases)

    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump({"extends": "seed_dilation_cpu", "training": {"train_steps": 100}}))
    study_file = tmp_path / "mixed.yaml"
    study_file.write_text(yaml.safe_dump(with_(base=["seed_dilation_cpu", "longer.yaml"], overrides={},
                                               scheduler=None)))
    with pytest.raises(StudyError, match="'base': the bases run different step counts"):
        read_study_file(study_file)


def test_resume_refuses_a_base_whose_config_changed_since_the_start(tmp_path):
    from study.runner import BASE_CONFIGS, _check_base_configs, _write_base_configs
    from study.storage.stores import Stores

    spec = parse_study(with_(results_dir=str(tmp_path / "r")))
    stores = Stores.of(spec)
    stores.root.mkdir(parents=True)
    _write_base_configs(spec, stores)
    assert (stores.root / BASE_CONFIGS).is_file()
    _check_base_configs(spec, stores)                            # unchanged: resumes
    edited = parse_study(with_(results_dir=str(tmp_path / "r"),
                               overrides={**GOOD["overrides"], "training.batch_size": 32}))
    with pytest.raises(StudyError, match=r"base 'paper_linear_regression_looped_cpu' resolves to another "
                                         r"config .*training.batch_size: 64 -> 32"):
        _check_base_configs(edited, stores)


def test_every_trainable_a_study_may_name_has_a_tune_function_and_its_metrics():
    from trainables.ray_adapter import TRAINABLES
    from study.spec import METRICS, StudyFile

    named = set(typing.get_args(typing.get_type_hints(StudyFile)["trainable"]))
    assert named == set(TRAINABLES) == set(METRICS)


SCIENCE = {**GOOD, "overrides": {**GOOD["overrides"], "curriculum.loops.start": 5},
           "scientific": {"training.n_loop_window": [2, 4]},
           "space": {"training.learning_rate": {"categorical": [1.0e-3, 2.0e-3]}}}


@pytest.mark.parametrize("changes, message", [
    ({"objectives": [{"metric": "eval/err_last_at_3b"}]},
     r"'objectives\[0\].metric' 'eval/err_last_at_3b': paper_linear_regression_looped_cpu does not report it: "
     r"add 3 to eval.depth_multiples"),
    ({"objectives": [{"metric": "eval/err_last_at_b2"}]}, r"'objectives\[0\].metric' 'eval/err_last_at_b2' is not "
                                                          r"reported by train \(.*eval/err_last_at_<m>b"),
    ({"objectives": [{"metric": "eval/extrapolation_ratio"}], "base": "paper_linear_regression_standard_cpu",
      "space": {"training.learning_rate": {"float": [1e-4, 1e-3]}}},
     "does not report it: a standard model has no loop iterations"),
    ({"objectives": [{"metric": "eval/err_last_at_2b"}], "space": {"model.family": {"categorical": ["looped", "standard"]}}},
     "the space searches model.family, so not every trial reports it"),
])
def test_a_test_time_depth_objective_must_be_reported_by_every_trial(changes, message):
    with pytest.raises(StudyError, match=message):
        parse_study(with_(**changes))


def test_test_time_depth_objectives_are_accepted_where_scored():
    multiples = {"overrides": {**GOOD["overrides"], "eval.depth_multiples": [2, 3]}}
    for metric in ("eval/err_last_at_3b", "eval/err_last_at_2b", "eval/extrapolation_ratio",
                   "eval/state_change_at_b", "eval/last_state_change", "train/mean_depth"):
        assert parse_study(with_(objectives=[{"metric": metric}], **multiples)).metrics == [metric]
    b_searched = {**GOOD["space"], "curriculum.loops.end": {"int": [12, 16]}}
    with pytest.raises(StudyError, match="add 2 to eval.depth_multiples"):      # 2b is not scored for every b
        parse_study(with_(objectives=[{"metric": "eval/err_last_at_2b"}], space=b_searched,
                          overrides={**GOOD["overrides"], "eval.iteration_counts": [24]}))


@pytest.mark.parametrize("changes, message", [
    ({"compare_at": "equal_flops"}, "'compare_at' must be 'equal_steps' or 'equal_compute', got 'equal_flops'"),
    ({"compare_at": "equal_compute", "scientific": ...}, "'compare_at' equal_compute needs 'scientific'"),
    ({"compare_at": "equal_compute", "space": {"model.n_embd": {"categorical": [16, 32]}}},
     "'compare_at': equal_compute scales .* the space searches model.n_embd"),
    ({"compare_at": "equal_compute", "scheduler": {"grace_period": 35, "reduction_factor": 2}},
     r"'scheduler.grace_period' must be in \[1, training.train_steps=32\) for T=4, got 35"),
])
def test_equal_compute_is_refused_where_it_cannot_hold(changes, message):
    with pytest.raises(StudyError, match=message):
        parse_study({k: v for k, v in {**SCIENCE, **changes}.items() if v is not ...})


def test_equal_compute_scales_each_values_steps_to_the_reference_total():
    from trainables.flops import equal_compute_steps, train_flops_total

    at_steps = parse_study({**SCIENCE, "scheduler": None})
    assert [p.train_steps for p in at_steps.phases] == [None, None] and at_steps.confounds == []
    assert at_steps.compute[0].startswith("compared at equal steps, so at unequal compute: training GFLOP per "
                                          "step (expected, at the final curriculum): T=2 ")
    spec = parse_study({**SCIENCE, "scheduler": None, "compare_at": "equal_compute"})
    expected = equal_compute_steps(at_steps.compared, "T=2")
    assert expected["T=2"] == 40 and expected["T=4"] < 40          # the longer window costs more per step
    assert {p.label: p.train_steps for p in spec.phases} == expected
    assert {p.label: spec.phase_max_steps(p) for p in spec.phases} == expected
    assert {label: c.training.train_steps for label, c in spec.compared.items()} == expected
    totals = [train_flops_total(c) for c in spec.compared.values()]
    assert max(totals) / min(totals) < 1.03
    assert spec.confounds == []                                    # the steps differ by design
    assert spec.compute == ["compared at equal training compute: " + ", ".join(
        f"{label} {n} steps ({total / 1e9:.4g} GFLOP)" for (label, n), total in zip(expected.items(), totals))]
    import optuna
    phase = spec.phases[1]
    drawn = spec.define_by_run(phase.fixed)(optuna.create_study().ask())
    assert drawn["config"]["training"]["train_steps"] == expected["T=4"]
    assert drawn["config"]["training"]["n_loop_window"] == 4
