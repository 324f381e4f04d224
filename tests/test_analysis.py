"""Reports, figures and exports from a real small finished study (real Ray, Optuna, MLflow), and
the statistics and export rules on their own (fast)."""
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from analysis.export import scale_full, to_reference
from analysis.verdict import groups
from analysis.report import write_report
from analysis.trials import read_record
from study.spec import read_study_file
from study.storage.stores import Stores
from trainables import train
from trainables.config import ConfigError, load_config

from studyfiles import cli as run_cli

# the reference implementation's schema (Leiay/looped_transformer scripts/schema.py)
REFERENCE_TOP = {"out_dir", "gpu", "model", "training", "wandb", "debug_mode"}
REFERENCE_MODEL = {"family", "n_positions", "n_dims", "n_embd", "n_layer", "n_head", "pred_type",
                   "pretrained_path", "loop_func"}
REFERENCE_TRAINING = {"seed", "task_name", "use_fixed_dataset", "train_size", "test_size", "use_ctx",
                      "batch_size", "learning_rate", "weight_decay", "train_steps", "save_every_steps",
                      "keep_every_steps", "resume_id", "curriculum", "n_loop_window", "sparsity",
                      "add_inputs_embeds", "test_idx"}


def cli(*args, cwd) -> str:
    done = run_cli(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A dilation study, s in {1, 2}, two seeds per config, trained to the end (no ASHA), then
    both configs replicated with two fresh seeds."""
    root = tmp_path_factory.mktemp("analysis")
    study = {"name": "an", "base": "paper_linear_regression_looped_cpu",
             "overrides": {"model.n_embd": 16, "model.n_head": 2, "training.train_steps": 30,
                           "training.eval_every": 10, "training.checkpoint_every": 10,
                           "training.log_every": 10, "eval.n_prompts": 64, "eval.bootstrap": 50},
             "space": {"training.loop_dilation": {"categorical": [1, 2]}, "curriculum.loops.start": None},
             "objectives": [{"metric": "eval/err_last", "mode": "min"}],
             "budget": {"num_samples": 2, "max_concurrent": 2}, "seeds_per_config": 2,
             "replicates": {"top_k": 2, "seeds": 2}, "sampler_seed": 0, "results_dir": str(root / "an")}
    (root / "an.yaml").write_text(yaml.safe_dump(study))
    cli("run", str(root / "an.yaml"), cwd=root)
    return root, read_study_file(root / "an" / "study.yaml")


@pytest.mark.service
def test_report_figures_show_the_expected_series(finished, tmp_path):
    root, spec = finished
    record = read_record(Stores(spec.results_dir, spec.name))
    assert len(record.trials) == 4 and record.by_state() == {"completed": 4}
    assert len(record.replicates) == 4 and {t.state for t in record.replicates} == {"completed"}
    values = {t.sampled["training.loop_dilation"] for t in record.trials}
    data = write_report(record, spec.space.params, "an.yaml", tmp_path)
    curves = data["curves_loop_dilation.png"]
    assert set(curves["series"]) == values and curves["missing"] == []  # one curve per value searched
    for value, series in curves["series"].items():             # every run of the value: search + replicates
        runs = [t for t in record.trials + record.replicates if t.sampled["training.loop_dilation"] == value]
        assert sorted(series["runs"]) == sorted(t.name for t in runs) and len(runs) == 4
        assert len(series["mean"]) == 11 and all(lo <= m <= hi for lo, m, hi in
                                                 zip(series["lo"], series["mean"], series["hi"]))
    assert "least_squares" in curves["baselines"] and "averaging" in curves["baselines"]
    fixed = data["fixed_point.png"]["series"]
    assert set(fixed) == values and all(len(s["curve"]) == 24 for s in fixed.values())  # eval.iteration_counts [24]
    flags = data["objective_by_param.png"]["training.loop_dilation"]
    # 4 completed trials over 2 values are too few to call the best an edge of the range
    assert flags["range"] == [1, 2] and not flags["judged"] and not flags["on_boundary"]
    assert len(data["learning_curves.png"]["series"]) == 4
    assert all(len(h) == 3 for h in data["learning_curves.png"]["series"].values())  # steps 10, 20, 30
    depth = data["test_time_depth.png"]          # the runs the answer uses: each replicated config's seeds
    assert set(depth) == {"s=1", "s=2"} and all(len(d["runs"]) == 2 for d in depth.values())
    assert all(len(d["err"]["mean"]) == 24 and len(d["state_change"]["mean"]) == 23 for d in depth.values())
    for png in ("curves_loop_dilation.png", "fixed_point.png", "objective_by_param.png", "learning_curves.png",
                "replicates.png", "test_time_depth.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    text = (tmp_path / "report.md").read_text()
    assert "4 completed" in text and "loopstudy run an.yaml --results ../an-rerun" in text
    assert "trained again on fresh seeds" in text and text.count("| s=") == 2  # a row per replicated config
    assert "(n=2: " in text and "not drawn: 4 completed trials, at least 10 needed" in text   # honest stats
    assert "- compute: compared at equal steps, so at unequal compute: training GFLOP per step" in text
    shown = data["replicates.png"]["series"]
    assert set(shown) == {"s=1", "s=2"}
    for key, series in shown.items():
        runs = [t for t in record.replicates if f"s={t.sampled['training.loop_dilation']}" == key]
        assert sorted(series["values"]) == sorted(t.value("eval/err_last") for t in runs)
        assert {t.config.training.seed for t in runs} == {44, 45}      # the search used 42 and 43
        search = [t.value("eval/err_last") for t in record.trials if t.number == runs[0].number]
        assert series["search_value"] == pytest.approx(sum(search) / 2)
        assert series["interval"] is None                  # 2 seeds: the seeds and their range, no interval


@pytest.mark.service
def test_report_command_logs_to_the_parent_run(finished):
    root, spec = finished
    out = cli("report", "an", "--results-root", str(root), cwd=root)
    assert "report.md" in out and (spec.results_dir / "report" / "report.md").is_file()
    client = MlflowClient(Stores(spec.results_dir, spec.name).mlflow_uri)
    parent = read_record(Stores(spec.results_dir, spec.name)).parent["run_id"]
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/curves_loop_dilation.png"} <= logged


@pytest.mark.service
def test_exported_configs_load_and_train(finished, tmp_path):
    root, spec = finished
    out = cli("export", "an", "--results-root", str(root), "--top", "2", "--out", str(tmp_path), cwd=root)
    paths = [Path(p) for p in out.split()]
    assert len(paths) == 2
    record = read_record(Stores(spec.results_dir, spec.name))
    winner = groups(record)[0].runs[0].number              # by replicate mean, not by one lucky seed
    best = next(t for t in record.ranked() if t.number == winner)
    config = load_config(paths[0])
    assert config == best.config                          # the winner, exactly as it trained
    assert "replicate mean" in paths[0].read_text().splitlines()[0]
    short = load_config(paths[0], ["training.train_steps=3", "training.eval_every=3"])
    assert train(short, out_dir=tmp_path / "rerun")["step"] == 3


@pytest.mark.service
def test_reference_export_has_exactly_the_reference_layout(finished, tmp_path):
    root, spec = finished
    record = read_record(Stores(spec.results_dir, spec.name))
    plain = next(t for t in record.trials if t.sampled["training.loop_dilation"] == 1)
    exported = to_reference(plain.config)
    assert set(exported) == REFERENCE_TOP
    assert set(exported["model"]) <= REFERENCE_MODEL and exported["model"]["family"] == "gpt2_loop"
    assert {"family", "n_embd", "n_layer", "n_head", "n_dims", "n_positions"} <= set(exported["model"])
    assert set(exported["training"]) <= REFERENCE_TRAINING
    assert set(exported["training"]["curriculum"]) == {"dims", "points", "loops"}
    assert exported["training"]["n_loop_window"] == plain.config.training.n_loop_window
    dilated = next(t for t in record.trials if t.sampled["training.loop_dilation"] == 2)
    with pytest.raises(ConfigError, match="'training.loop_dilation' is 2: the reference implementation hard-codes 1"):
        to_reference(dilated.config)


@pytest.mark.service
def test_scale_full_keeps_the_searched_values(finished, tmp_path):
    root, spec = finished
    record = read_record(Stores(spec.results_dir, spec.name))
    plain = next(t for t in record.trials if t.sampled["training.loop_dilation"] == 1)
    config = scale_full(spec.base, plain.sampled)
    assert (config.model.n_dims, config.curriculum.points.end, config.training.train_steps) == (20, 41, 500_000)
    assert config.training.loop_dilation == 1 and config.model.n_embd == 256
    # s=2 needs loops to start at T*s = 30 > the full-size budget b = 20: refused, naming the fields
    done = run_cli("export", "an", "--results-root", str(root), "--scale", "full", "--top", "2",
                   "--out", str(tmp_path), cwd=root)
    assert done.returncode != 0 and "'curriculum.loops.end' (20) must be >= 'curriculum.loops.start' (30)" in done.stderr



@pytest.mark.parametrize("preset, override, field", [
    ("paper_decision_tree_looped_cpu", "task.depth=3", "task.depth"),
    ("paper_relu_2nn_looped_cpu", "task.hidden=50", "task.hidden"),
    ("paper_linear_regression_looped_cpu", "training.precision=bf16", "training.precision"),
    ("seed_dilation_cpu", "training.loop_dilation=2", "training.loop_dilation"),
])
def test_reference_export_refuses_what_the_reference_hard_codes(preset, override, field):
    config = load_config(preset, [override])
    with pytest.raises(ConfigError, match=rf"'{field}' is .*the reference implementation hard-codes"):
        to_reference(config)
    full_size = preset.removesuffix("_cpu")                                # the reference's own values
    to_reference(load_config(full_size, ["training.loop_dilation=1"]))
    noisy = load_config("paper_linear_regression_looped_cpu", ["task.name=noisy_linear_regression",
                                                               "task.noise_std=0.5"])
    with pytest.raises(ConfigError, match="'task.noise_std' is 0.5"):
        to_reference(noisy)



def test_a_title_wider_than_its_figure_is_wrapped_not_cut():
    import matplotlib.pyplot as plt

    from analysis.figures import fit_titles

    fig, ax = plt.subplots(figsize=(4, 3))
    words = [f"dilation_science_cpu{i}" for i in range(8)]
    ax.set_title(" ".join(words) + "\n(band: lowest to highest seed)")
    renderer = fig.canvas.get_renderer()
    assert ax.title.get_window_extent(renderer).width > fig.bbox.width        # cut off as it stands
    fit_titles(fig)
    box = ax.title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
    assert ax.title.get_text().split() == words + ["(band:", "lowest", "to", "highest", "seed)"]
    plt.close(fig)
