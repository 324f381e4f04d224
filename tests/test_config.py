import pytest
import yaml

from trainables.config import ConfigError, Schedule, from_dict, load_config
from trainables.preset_files import preset_names


def test_defaults_are_the_reference_values():
    c = load_config()
    assert (c.model.n_embd, c.model.n_head, c.model.n_dims, c.model.n_positions) == (256, 8, 20, 101)
    assert (c.training.batch_size, c.training.learning_rate, c.training.seed) == (64, 1e-4, 42)
    assert c.training.loop_dilation == 1 and c.training.precision == "fp32"
    assert c.curriculum.points == Schedule(11, 41, 2, 5000)
    assert c.eval.n_prompts == 1280 and c.eval.seed != c.training.seed


def test_curriculum_values_at_given_steps():
    dims = Schedule(5, 20, 1, 5000)
    assert [dims.value(s) for s in (0, 4999, 5000, 9999, 10000, 75000, 10**6)] == [5, 5, 6, 6, 7, 20, 20]
    loops = load_config("paper_linear_regression_looped").curriculum.loops
    assert (loops.start, loops.end) == (15, 20)
    assert [loops.value(s) for s in (0, 499, 500, 1000, 1500, 10**5)] == [15, 15, 17, 19, 20, 20]


def test_yaml_round_trip_and_dotted_overrides():
    c = load_config("seed_dilation", ["training.loop_dilation=3", "model.n_embd=32"])
    again = from_dict(yaml.safe_load(c.to_yaml()))
    assert again == c
    assert c.training.loop_dilation == 3 and c.model.n_embd == 32
    assert c.curriculum.loops.start == 15 * 3  # the seed's loop curriculum starts at T*s
    assert c.flat()["curriculum.loops.end"] == 60


@pytest.mark.parametrize("overrides, message", [
    (["training.loop_dilaton=2"], "did you mean 'training.loop_dilation'"),
    (["model.n_embd=65"], "'model.n_embd' (65) must be divisible by 'model.n_head' (8)"),
    (["curriculum.loops.start=20", "training.loop_dilation=4"], "'curriculum.loops.start' (20) is below (T-1)*s+1 = 57"),
    (["curriculum.points.end=150"], "'curriculum.points.end' (150) is more points than 'model.n_positions' (101)"),
    (["model.n_layer=-2"], "'model.n_layer' must be positive"),
    (["training.batch_size=0"], "'training.batch_size' must be positive"),
    (["task.name=linear"], "did you mean 'linear_regression'"),
    (["training.precision=fp16"], "'training.precision' must be 'fp32' or 'bf16'"),
    (["training.learning_rate=fast"], "'training.learning_rate' must be a number"),
    (["curriculum.loops=5"], "'curriculum.loops' must be a mapping"),
    (["model.n_embd.x=1"], "'model.n_embd' has no sub-field 'x'"),
])
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("seed_dilation", overrides)
    assert message in str(err.value)


def test_bad_files_name_the_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="x.yaml: not valid YAML"):
        load_config(path)
    path.write_text("extends: seed_dilation\nmodle: {n_embd: 8}\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'; did you mean 'model'"):
        load_config(path)
    with pytest.raises(ConfigError, match="no preset or file named 'seed_dilatoin'; did you mean 'seed_dilation'"):
        load_config("seed_dilatoin")


def test_every_preset_and_its_cpu_variant_is_valid():
    names = preset_names()
    assert "seed_dilation" in names and "seed_dilation_cpu" in names
    for name in names:
        c = load_config(name)
        if name.endswith("_cpu"):
            assert c.model.n_embd <= 64 and c.model.n_dims <= 5 and c.training.train_steps <= 10_000
    probe = load_config("seed_probe_looped")
    assert (probe.model.n_embd, probe.curriculum.loops.start, probe.loop_budget, probe.training.n_loop_window) == (128, 20, 100, 20)
    assert load_config("seed_probe_standard").model.n_layer == 20


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    from trainables.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "depth_sampling_cpu").mkdir()       # e.g. a study's results folder of that name
    assert load_config("depth_sampling_cpu").training.depth_sampling == "poisson_lognormal"
