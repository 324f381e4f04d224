"""Scientific studies are checked before anything runs: the grid of compared values, the
curriculum-aware grace period, and the confounds between compared values."""
from pathlib import Path

import pytest

from study.errors import StudyError
from study.spec import parse_study, read_study_file

STUDIES = Path(__file__).parents[1] / "study" / "studies"
SCIENCE = {"name": "sci", "base": "seed_dilation_cpu",
           "overrides": {"training.train_steps": 1000, "training.eval_every": 250,
                         "curriculum.dims.interval": 100, "curriculum.points.interval": 100,
                         "curriculum.loops.start": 13},
           "scientific": {"training.loop_dilation": [1, 2, 4]},
           "space": {"training.learning_rate": {"categorical": [1.0e-3, 3.0e-3]}},
           "objectives": [{"metric": "eval/err_last"}], "budget": {"num_samples": 2},
           "scheduler": {"grace_period": 500}, "replicates": {"seeds": 5}}


def study(**changes):
    return parse_study({**SCIENCE, **changes})


def test_each_scientific_point_is_a_phase_with_its_own_optuna_study():
    spec = study()
    assert [p.label for p in spec.phases] == ["s=1", "s=2", "s=4"]
    assert [p.study_name("sci") for p in spec.phases] == ["sci[s=1]", "sci[s=2]", "sci[s=4]"]
    assert {label: c.training.loop_dilation for label, c in spec.compared.items()} == {"s=1": 1, "s=2": 2, "s=4": 4}
    assert spec.confounds == []                       # the same loop curriculum for every s
    two = study(scientific={"training.n_loop_window": [2, 4], "curriculum.loops.end": [16, 20]}, scheduler=None)
    assert [p.label for p in two.phases] == ["T=2 b=16", "T=2 b=20", "T=4 b=16", "T=4 b=20"]
    assert two.phases[1].point == {"training.n_loop_window": 2, "curriculum.loops.end": 20}


def test_listed_points_compare_fields_that_change_together():
    family = [{"model.family": "standard", "model.n_layer": 4}, {"model.family": "looped", "model.n_layer": 1}]
    spec = study(scientific=family, scheduler=None)
    assert [p.label for p in spec.phases] == ["family=standard L=4", "family=looped L=1"]
    assert [p.point for p in spec.phases] == family
    assert {label: (c.model.family, c.model.n_layer) for label, c in spec.compared.items()} == {
        "family=standard L=4": ("standard", 4), "family=looped L=1": ("looped", 1)}
    assert spec.confounds == []          # the loop facts of the looped model have no standard twin
    grid = study(scientific={"training.n_loop_window": [2, 4]}, scheduler=None)
    listed = study(scientific=[{"training.n_loop_window": 2}, {"training.n_loop_window": 4}], scheduler=None)
    assert [(p.label, p.point) for p in listed.phases] == [(p.label, p.point) for p in grid.phases]


def test_the_point_is_drawn_into_every_trial_of_its_phase():
    import optuna

    spec = study()
    trial = spec.define_by_run(spec.phases[2].point)(optuna.create_study().ask())
    assert trial["config"]["training"]["loop_dilation"] == 4 and "training.loop_dilation" not in trial["params"]


@pytest.mark.parametrize("changes, message", [
    ({"scientific": {"training.learning_rate": [1e-3]}}, "'scientific' and 'space' both hold"),
    ({"scientific": {"training.loop_dilation": 2}}, "'scientific.training.loop_dilation' must be a list"),
    ({"scientific": {"training.loop_dilation": []}}, "must be a non-empty list of distinct plain values"),
    ({"scientific": {"training.loop_dilation": [1, 1]}}, "distinct"),
    ({"scientific": {"training.loop_dilaton": [1]}}, "did you mean 'training.loop_dilation'"),
    ({"scientific": {"training.loop_dilation": [1, 5]}}, r"'scientific' point s=5: 'curriculum.loops.start' \(13\) is below"),
    ({"scientific": []}, "'scientific' is empty"),
    ({"scientific": {}}, "'scientific' is empty"),
    ({"scientific": [{"training.loop_dilation": 1}, 2]}, r"'scientific\[1\]' must be a mapping"),
    ({"scientific": [{"training.loop_dilation": 1}, {}]}, r"'scientific\[1\]' must be a mapping"),
    ({"scientific": [{"training.loop_dilation": 1}, {"training.n_loop_window": 2}]},
     r"'scientific\[1\]' sets \['training.n_loop_window'\], but 'scientific\[0\]' sets \['training.loop_dilation'\]"),
    ({"scientific": [{"training.loop_dilation": [1, 2]}]}, r"'scientific\[0\].training.loop_dilation' must be a plain value"),
    ({"scientific": [{"training.loop_dilation": 2}, {"training.loop_dilation": 2}]}, "two compared points are both 's=2'"),
    ({"scientific": [{"training.learning_rate": 1e-3}]}, "'scientific' and 'space' both hold"),
    ({"scientific": [{"training.loop_dilation": 1}, {"training.loop_dilation": 5}]},
     r"'scientific' point s=5: 'curriculum.loops.start' \(13\) is below"),
    ({"replicates": {"seeds": 5, "top_k": 2}}, "each value's best nuisance config is replicated"),
    ({"scheduler": {"grace_period": 250}}, r"before the curriculum completes at step 400 \(curriculum.loops reaches "
                                           r"its end then for seed_dilation_cpu\).*set scheduler.grace_period >= 500"),
    ({"scheduler": {"grace_period": 600}}, "must be a multiple of training.eval_every=250"),
])
def test_bad_scientific_studies_name_the_field(changes, message):
    with pytest.raises(StudyError, match=message):
        study(**changes)


def test_a_curriculum_that_never_completes_refuses_asha():
    with pytest.raises(StudyError, match="curriculum.loops does not reach its end within training.train_steps"):
        study(overrides={**SCIENCE["overrides"], "training.train_steps": 350}, scheduler={"grace_period": 250})


def test_the_old_demo_is_confounded_and_its_grace_period_refused():
    old = {"name": "dilation_cpu", "base": "seed_dilation_cpu",
           "overrides": {"training.train_steps": 600, "training.eval_every": 100,
                         "curriculum.dims.interval": 100, "curriculum.points.interval": 100},
           "space": {"training.loop_dilation": {"categorical": [1, 2, 3, 4]},
                     "training.seed": {"categorical": [0, 1]}, "curriculum.loops.start": None},
           "objectives": [{"metric": "eval/err_last"}], "budget": {"num_samples": 8},
           "scheduler": {"grace_period": 200}}
    with pytest.raises(StudyError, match="'scheduler.grace_period' \\(200\\) ASHA would rank trials before the "
                                         "curriculum is complete"):
        parse_study(old)
    spec = parse_study({**old, "scheduler": None})
    assert spec.confounds == ["loop iterations trained (first..last step): s=1 4..8, s=2 8..12, "
                              "s=3 12..16, s=4 16"]


def test_shipped_science_studies_compare_only_the_dilation():
    for name, values in (("dilation_science_cpu", [1, 2, 3, 4]), ("dilation_cpu", [1, 4])):
        spec = read_study_file(STUDIES / f"{name}.yaml")
        assert spec.scientific == {"training.loop_dilation": values} and spec.confounds == []
        assert spec.space.searched == ["training.learning_rate"]
        loops = {c.loops_trained() for c in spec.compared.values()}
        assert len(loops) == 1                        # every s trains the same loop counts
        assert spec.question is not None and spec.replicates is None     # they run until they answer
    science = read_study_file(STUDIES / "dilation_science_cpu.yaml")
    assert science.question.seeds.start >= 4 and science.resources.cpu == 1
    assert science.question.horizon.ladder() == (1500, 3000)
    assert science.scheduler is None              # no early stopping: each s's rate chosen at the final step


def test_the_shipped_probe_study_compares_the_families_on_one_training():
    spec = read_study_file(STUDIES / "probe_cpu.yaml")
    assert spec.trainable == "probe" and [p.label for p in spec.phases] == ["family=standard L=6", "family=looped L=1"]
    standard, looped = spec.compared.values()
    assert (standard.model.family, looped.model.family) == ("standard", "looped")
    assert standard.model.n_embd == looped.model.n_embd                       # matched in width
    for section in ("training", "curriculum", "task", "probe"):             # the same training and probes
        assert getattr(standard, section) == getattr(looped, section), section
    assert spec.confounds == [] and spec.space.params["training.seed"].choices == (0,)   # nothing tuned
    assert list(spec.space.params) == ["training.seed"]
    assert spec.question is not None and standard.probe.control           # paired seeds, control probes
