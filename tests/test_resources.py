"""Resources a study asks for: a trial that no node can hold is refused before anything runs
(Ray would leave it pending for ever), and GPUs declared to a local Ray (`--num-gpus`) are shared
in the fractions `resources.gpu` asks for, each trial's GPU recorded on its MLflow run, and a
trial given a GPU that torch cannot see fails saying so instead of training on the CPU. The GPUs
here are declared, not real (no GPU on these machines): Ray's accounting is what is tested."""
import re

import pytest
import torch
from mlflow import MlflowClient

from studyfiles import cli, write_study

pytestmark = pytest.mark.service


def _synthetic(tmp_path, name, resources, **fields):
    return write_study(tmp_path, name, trainable="synthetic", base="seed_dilation_cpu", scheduler=None,
                       overrides={"training.train_steps": 40, "training.eval_every": 10, "synthetic.eval_s": 0.5,
                                  "curriculum.loops.start": 13},
                       space={"training.learning_rate": {"float": [1e-4, 1e-2], "log": True}},
                       resources=resources, **fields)


@pytest.mark.parametrize("resources, asked", [({"cpu": 1, "gpu": 1}, "1 CPU and 1 GPU"),
                                              ({"cpu": 64, "gpu": 0}, "64 CPU and 0 GPU")], ids=["gpu", "cpu"])
def test_a_trial_no_node_can_hold_is_refused_before_anything_runs(tmp_path, resources, asked):
    path = _synthetic(tmp_path, "unplaceable", resources)
    done = cli("run", str(path), "--num-gpus", "0", cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"resources: each trial asks for {asked}, and no node of this Ray has that" in done.stderr
    assert re.search(r"\(127\.0\.0\.1: \d+ CPU, 0 GPU\)", done.stderr), done.stderr
    assert not (tmp_path / "unplaceable" / "mlflow.db").exists()       # nothing started, nothing recorded
    again = cli("run", str(path), "--num-gpus", "0", cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and "already holds study" not in again.stderr, again.stderr


def test_declared_gpus_are_shared_in_fractions_and_each_trial_records_its_gpu(tmp_path):
    # 4 CPU slots of 0.5 and one GPU in halves: two trials at a time, both on GPU 0
    path = _synthetic(tmp_path, "halves", {"cpu": 0.5, "gpu": 0.5}, budget={"num_samples": 4, "max_concurrent": 4})
    done = cli("run", str(path), "--num-gpus", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/ 2 concurrent" in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'halves' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("halves").experiment_id
    runs = client.search_runs([experiment], "tags.loopstudy_role = 'trial'")
    assert len(runs) == 4 and {r.data.tags.get("gpu_ids") for r in runs} == {"0"}
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    running = [sum(change for _, change in events[:i + 1]) for i in range(len(events))]
    assert max(running) == 2, events             # the GPU, not the 4 CPU slots, bounds the concurrency


def test_a_trial_given_a_gpu_that_torch_cannot_see_fails_saying_so_instead_of_using_the_cpu(tmp_path):
    assert not torch.cuda.is_available(), "this test needs a torch that sees no GPU (the pinned CPU build)"
    path = write_study(tmp_path, "no_cuda", scheduler=None, resources={"cpu": 1, "gpu": 1},
                       space={"training.learning_rate": {"categorical": [1e-3]}, "curriculum.loops.start": None},
                       sampler="brute_force", budget={"num_samples": 1, "max_concurrent": 1, "max_failures": 0})
    done = cli("run", str(path), "--num-gpus", "1", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr          # its one trial failed: nothing completed
    assert "loopstudy: no trial of study 'no_cuda' completed (1 failed)" in done.stderr
    status = cli("status", "no_cuda", "--results-root", str(tmp_path), cwd=tmp_path).stdout
    assert "Ray gave this trial GPU 0 (CUDA_VISIBLE_DEVICES='0') but torch" in status and "sees no CUDA device" in status
    assert not list((tmp_path / "no_cuda" / "ray").glob("*/*/metrics.jsonl"))     # it never trained
