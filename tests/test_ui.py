"""What a researcher browses: the params and curves a trial's run holds, the view `loopstudy ui`
opens, quiet servers that stop with everything they started, `status` without Ray, the reasons
that name the rule that stopped a trial, and a refused export that writes nothing."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.trials import _config_from_params
from study.outcome import classify
from study.spec import read_study_file
from study.tracking.trial_run import loops_trained, logged_params, science_curves
from study.ui import runs_view, runs_url
from trainables.config import load_config

from studyfiles import ENV, REPO, cli, start_cli, write_study

# what the MLflow servers print unless told otherwise (each once seen here)
NOISE = ("Security middleware", "Registry store URI not provided", "Creating initial MLflow database tables",
         "StarletteDeprecationWarning", "INFO", "GET /", "POST /")


def test_trial_params_leave_out_what_the_trainable_and_task_never_read():
    config = load_config("seed_dilation_cpu")
    params = logged_params(config, "train")
    assert not [k for k in params if k.startswith(("probe.", "synthetic."))]
    assert not {"task.noise_std", "task.sparsity", "task.hidden", "task.depth"} & set(params)
    assert "training.loop_dilation" in params and "curriculum.loops.end" in params
    assert "probe.steps" in logged_params(config, "probe") and "synthetic.seed_sd" in logged_params(config, "synthetic")
    sparse = logged_params(load_config("paper_sparse_linear_regression_looped_cpu"), "train")
    assert "task.sparsity" in sparse and "task.noise_std" not in sparse


@pytest.mark.parametrize("preset, overrides, trainable", [
    ("seed_dilation_cpu", ["training.learning_rate=1e-05"], "train"),
    ("seed_probe_looped_cpu", ["probe.steps=77"], "probe"),
    ("seed_dilation_cpu", ["probe.steps=77", "task.noise_std=0.3"], "train")])   # not read, not default
def test_the_logged_params_rebuild_the_exact_config(preset, overrides, trainable):
    config = load_config(preset, overrides)
    params = {k: str(v) for k, v in logged_params(config, trainable).items()}
    assert _config_from_params(params) == config


def test_b_trained_is_the_loop_count_at_the_last_step():
    config = load_config("seed_dilation_cpu", ["curriculum.loops.start=8", "curriculum.loops.end=16",
                                               "curriculum.loops.inc=2", "curriculum.loops.interval=10"])
    params = {k: str(v) for k, v in config.flat().items()}
    assert loops_trained(params, 25) == 12            # steps 0..24: the last one at 8 + 2*2
    assert loops_trained(params, 10_000) == 16        # capped at b
    assert loops_trained({**params, "model.family": "standard"}, 25) is None


def test_science_curves_are_stepped_by_k_and_by_iteration(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"eval": {
        "curve": [1.0, 0.5, 0.25], "last_point_vs_iteration": [0.9, 0.4, 0.3, 0.2],
        "curves_at_iterations": {"4": [1.0, 0.5, 0.25], "8": [1.0, 0.6, 0.3]}}}))
    curves: dict[str, dict[int, float]] = {}
    for metric in science_curves(tmp_path):
        curves.setdefault(metric.key, {})[metric.step] = metric.value
    assert curves == {"curve/err_vs_k": {0: 1.0, 1: 0.5, 2: 0.25},
                      "curve/err_vs_iteration": {1: 0.9, 2: 0.4, 3: 0.3, 4: 0.2},
                      "curve/err_vs_k_at_8_iterations": {0: 1.0, 1: 0.6, 2: 0.3}}


def test_test_time_depth_curves_are_stepped_by_iteration(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"eval": {
        "curve": [1.0, 0.5], "last_point_vs_iteration": [0.9, 0.4, 0.3, 0.35],
        "state_change": [None, 0.5, 0.1, 0.05], "err_last_at_iterations": {"2": 0.4, "4": 0.35}}}))
    curves: dict[str, dict[int, float]] = {}
    for metric in science_curves(tmp_path):
        curves.setdefault(metric.key, {})[metric.step] = metric.value
    assert curves["curve/state_change_vs_iteration"] == {2: 0.5, 3: 0.1, 4: 0.05}     # iteration 1: none
    assert curves["curve/err_last_at_scored_iterations"] == {2: 0.4, 4: 0.35}


def test_a_sampled_depth_shows_b_the_depth_evaluated():
    from study.tracking.trial_run import trial_name

    config = load_config("depth_sampling_cpu", ["curriculum.loops.start=5"])
    params = {k: str(v) for k, v in config.flat().items()}
    assert loops_trained(params, 25) == config.loop_budget == 12        # not the unread curriculum's 5
    name = trial_name({"config": config.to_dict(), "sampled": {}, "trial": 3, "repeats": 1})
    assert name.startswith("t003 s=1 T=5 b=12 D=64")
    # in a scientific study, trial numbers restart per compared value: the value's place names it too
    assert trial_name({"config": config.to_dict(), "sampled": {}, "trial": 3, "repeats": 1, "value": 2}
                      ).startswith("v2.t003 s=1 ")


def test_the_view_shows_objective_searched_params_seed_b_and_state_with_replicates(tmp_path):
    spec = read_study_file(write_study(tmp_path, "view", trainable="synthetic"))
    view = runs_view(spec)
    assert view["selectedColumns"][0] == "metrics.`eval/err_last`"
    assert {"params.`training.loop_dilation`", "params.`training.learning_rate`", "params.`training.seed`",
            "tags.`b_trained`", "tags.`state`", "tags.`loopstudy_role`"} <= set(view["selectedColumns"])
    assert view["searchFilter"] == "tags.loopstudy_role != 'parent'"      # trials and replicates
    assert view["chartsSearchFilter"] == "curve/"        # the chart view opens on the science curves
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`eval/err_last`", True)
    assert runs_url("http://127.0.0.1:5000", "3") == ("http://127.0.0.1:5000/#/experiments/3/runs?"
                                                      "viewStateShareKey=loopstudy&workflowType=machine_learning")
    assert runs_url("http://h:1", "3", "ab") == "http://h:1/#/experiments/3/runs/ab?workflowType=machine_learning"


def test_reasons_name_the_rule_that_stopped_a_trial():
    assert classify({"step": 20}, False, 40) == ("pruned", "stopped early by ASHA at the rung at step 20 of 40")
    assert classify({"step": 40}, False, 40)[0] == "completed"


def test_status_does_not_start_or_import_ray():
    code = "import sys, study.status; assert 'ray' not in sys.modules, 'study.status imports Ray'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, check=True)


# ------------------------------------------------------------ servers (service tier)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def group_members(pgid: int) -> list[int]:
    listed = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [int(p) for p in listed.stdout.split()]


def stop_and_check(lines, port: int, sig: int) -> str:
    """Send `sig` to a server command; it must exit 0 with every process it started, leaving
    the port free. Returns everything it printed."""
    children = subprocess.run(["pgrep", "-P", str(lines.process.pid)], capture_output=True, text=True)
    groups = {os.getpgid(int(p)) for p in children.stdout.split()}
    assert groups, "the command started no server process"
    lines.process.send_signal(sig)
    output = lines.rest(timeout_s=60)
    assert lines.process.returncode == 0, output
    assert port_is_free(port)
    assert not [pid for g in groups for pid in group_members(g)], "a server process survived"
    return output


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    path = write_study(root, "browse", trainable="synthetic", replicates={"top_k": 1, "seeds": 2},
                       space={"training.loop_dilation": {"categorical": [2, 3]},
                              "training.learning_rate": {"float": [1.0e-4, 1.0e-2], "log": True},
                              "curriculum.loops.start": None})
    done = cli("run", str(path), cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.mark.service
def test_the_ui_is_quiet_and_sigint_stops_it_with_its_server(finished_study):
    port = free_port()
    ui = start_cli("ui", "browse", "--results-root", str(finished_study), "--port", str(port), cwd=finished_study)
    (opened,) = ui.wait_for(r"^open (http://\S+)", timeout_s=180)
    import urllib.request
    for _ in range(3):                   # requests that would each log an access line
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read()
    output = stop_and_check(ui, port, signal.SIGINT)
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE)], output
    assert output.splitlines()[0] == opened.string and len(output.splitlines()) == 2     # and the study's run
    assert "the study's own run (its answer): http://127.0.0.1" in output


def command_lines() -> list[str]:
    """Every process's command line, as any user of the machine can read it."""
    found = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            found.append((process / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue            # ended meanwhile
    return found


@pytest.mark.service
def test_optuna_dashboard_stops_on_sigterm(finished_study):
    port = free_port()
    ui = start_cli("ui", "browse", "--optuna", "--results-root", str(finished_study), "--port", str(port),
                   cwd=finished_study)
    ui.wait_for(rf"^open http://127.0.0.1:{port}/dashboard/", timeout_s=120)
    dashboard = [c for c in command_lines() if "optuna-dashboard" in c and f"--port {port}" in c]
    assert dashboard and not [c for c in dashboard if "optuna.db" in c]   # its storage URL is in a private file
    output = stop_and_check(ui, port, signal.SIGTERM)
    assert len(output.splitlines()) == 1, output


@pytest.mark.service
def test_the_team_server_is_quiet_and_stops_on_sigterm(tmp_path):
    port = free_port()
    server = start_cli("server", "--backend", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts",
                       str(tmp_path / "artifacts"), "--port", str(port), cwd=tmp_path)
    server.wait_for(r"^MLflow tracking server ready: ", timeout_s=180)
    output = stop_and_check(server, port, signal.SIGTERM)
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE)], output


@pytest.mark.service
def test_a_refused_export_writes_nothing(finished_study):
    refused = cli("export", "browse", "--results-root", str(finished_study), "--format", "reference", "--top", "3",
                  cwd=finished_study)
    assert refused.returncode == 2 and "loop_dilation" in refused.stderr, refused.stdout + refused.stderr
    assert not (finished_study / "browse" / "export").exists()


@pytest.mark.service
def test_trial_runs_hold_lean_params_b_trained_and_science_curves(finished_study):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{finished_study / 'browse' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("browse")
    runs = client.search_runs([experiment.experiment_id], "tags.loopstudy_role != 'parent'")
    assert {r.data.tags["loopstudy_role"] for r in runs} == {"trial", "replicate"}
    for run in runs:
        assert not [k for k in run.data.params if k.startswith(("probe.", "task.noise_std"))], run.info.run_name
        assert "synthetic.seed_sd" in run.data.params
        steps = int(run.data.tags["steps"])
        assert run.data.tags["b_trained"] == str(loops_trained(run.data.params, steps))
        pruned = run.data.tags["state"] == "pruned"
        assert pruned == ("stopped early by ASHA at the rung at step" in run.data.tags["state_reason"])
        curve = client.get_metric_history(run.info.run_id, "curve/err_vs_k")   # of a finished training only
        assert [m.step for m in curve] == ([] if pruned else list(range(11)))  # the synthetic trainable's k
