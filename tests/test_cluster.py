"""Cluster mode on a real two-node Ray cluster (tests/netns_cluster.py: a network namespace with
only loopback, token auth, one CPU per node), a real `mlflow server` with proxied artifacts
(started by `loopstudy server`) and Optuna on a JournalStorage file both nodes reach; studies go
in through `loopstudy submit` (Ray Jobs), as a user would send them.

The first tests need no Ray: the storage section's rules and the per-node store checks.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.cluster.nodes import READY, store_problems
from study.errors import StudyError
from study.spec import parse_study
from study.storage.stores import Storage, Stores
from studyfiles import TINY, write_study

# ---------------------------------------------------------------- no Ray needed

def test_cluster_storage_rules(tmp_path):
    errors = "\n".join(Storage(optuna=f"sqlite:///{tmp_path}/o.db").cluster_errors())
    assert "'storage.optuna' must not be SQLite on a cluster" in errors
    assert "'storage.storage_path' is required" in errors and "'storage.mlflow' must be a tracking server" in errors
    assert "object-store URIs (s3://) are not supported" in Storage(storage_path="s3://b/x").errors()[0]
    good = Storage(str(tmp_path / "shared"), f"journal://{tmp_path}/optuna.log", "http://127.0.0.1:5001")
    assert good.cluster_errors() == []
    assert good.merged(mlflow="http://other:5001", optuna=None).mlflow == "http://other:5001"

    path = write_study(tmp_path, "s", storage={"storage_path": good.storage_path, "optuna": good.optuna})
    spec = parse_study(yaml.safe_load(path.read_text()), str(path))
    assert spec.results_dir == tmp_path / "shared" / "s"          # the study folder is on shared storage
    stores = Stores.of(spec)
    assert stores.experiment == spec.results_dir and stores.mlflow_uri.startswith("sqlite:")
    assert type(stores.optuna_storage()).__name__ == "JournalStorage"
    assert parse_study(yaml.safe_load(spec.to_yaml())).storage == spec.storage
    with pytest.raises(StudyError, match=r"s.yaml: 'storage.optuna' must be journal"):
        parse_study({**yaml.safe_load(path.read_text()), "storage": {"optuna": "redis://x"}}, str(path))


def test_gpu_fractions_share_a_gpu_below_one_only(tmp_path):
    path = write_study(tmp_path, "g", resources={"cpu": 1, "gpu": 0.25})
    assert parse_study(yaml.safe_load(path.read_text())).resources.gpu == 0.25
    with pytest.raises(StudyError, match=r"'resources.gpu' 1.5: Ray shares a GPU only in fractions below 1"):
        parse_study({**yaml.safe_load(path.read_text()), "resources": {"gpu": 1.5}})


def test_store_problems_name_what_is_unreachable(tmp_path):
    (tmp_path / "file").write_text("")
    stores = Stores(tmp_path, "s", Storage(str(tmp_path / "file" / "ray"), f"journal://{tmp_path}/file/o.log",
                                           "http://127.0.0.1:9"))
    problems = store_problems(stores)
    assert [p.split(" ")[:2] for p in problems] == [["cannot", "write"], ["the", "MLflow"], ["cannot", "open"]]
    assert "http://127.0.0.1:9/health" in problems[1] and "journal://" in problems[2]
    assert store_problems(Stores(tmp_path / "ok", "s")) == []


# ---------------------------------------------------------------- the two-node cluster

@pytest.fixture(scope="module")
def cluster():
    from netns_cluster import NetnsCluster

    cluster = NetnsCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def cluster_study(cluster, name: str, steps: int, every: int, **fields) -> Path:
    """A study of 2 trials at 1 CPU each, no early stopping: with one CPU per node, one per node."""
    folder = cluster.root / "studies"
    folder.mkdir(exist_ok=True)
    return write_study(folder, name, scheduler=None, budget={"num_samples": 2, "max_concurrent": 2, "max_failures": 2},
                       overrides={**TINY, "training.train_steps": steps, "training.eval_every": every,
                                  "training.checkpoint_every": every, "training.log_every": every},
                       space={"training.learning_rate": {"float": [1.0e-4, 1.0e-2], "log": True},
                              "curriculum.loops.start": None}, **fields)


def storage_flags(cluster) -> list[str]:
    return ["--storage-path", str(cluster.shared / "ray"), "--optuna-storage",
            f"journal://{cluster.shared}/optuna.log", "--mlflow-uri", cluster.mlflow_uri]


def submitted(done: subprocess.CompletedProcess) -> str:
    """The job id `loopstudy submit` printed."""
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"^submitted job (\S+):", done.stdout, re.M).group(1)


def runs(cluster, name: str):
    """(client, parents, children) read from the MLflow server's own backend database."""
    client = MlflowClient(f"sqlite:///{cluster.mlflow_db}")
    experiment = client.get_experiment_by_name(name)
    found = client.search_runs([experiment.experiment_id]) if experiment else []
    return (client, [r for r in found if r.data.tags.get("loopstudy_role") == "parent"],
            [r for r in found if r.data.tags.get("loopstudy_role") == "trial"])


def assert_study_finished(cluster, name: str, steps: list[int]) -> list:
    """One finished parent run, one completed child run per trial with every step once, and two
    COMPLETE trials in the Optuna journal."""
    client, parents, children = runs(cluster, name)
    assert len(parents) == 1 and parents[0].data.tags["state"] == "finished"
    assert len(children) == 2 and len({r.data.tags["tune_trial_id"] for r in children}) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "completed"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/err_last")] == steps
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")          # proxied by the server
        stored = cluster.artifacts / run.info.artifact_uri.split(":/", 1)[1]
        assert {"config.yaml", "eval.png", "summary.json"} <= {p.name for p in stored.iterdir()}
    journal = Storage(optuna=f"journal://{cluster.shared}/optuna.log")
    study = Stores(cluster.root, name, journal).optuna_study()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    return children


@pytest.mark.cluster
def test_submit_names_the_node_that_cannot_reach_a_store(cluster):
    path = cluster_study(cluster, "unreachable", steps=20, every=10)
    flags = storage_flags(cluster)
    flags[flags.index("--mlflow-uri") + 1] = "http://127.0.0.1:9"
    done = cluster.cli("submit", str(path), *cluster.flags(), *flags)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not every node reaches the study's stores" in done.stderr
    for _, node in cluster.raylets().values():
        assert f"node {node[:12]} (127.0.0.1): the MLflow server does not answer at http://127.0.0.1:9/health" \
            in done.stderr
    assert not (cluster.shared / "ray" / "unreachable").exists()          # nothing started


RUNNING_ON = r"^t\d{3} .*: running on node (\w+)"     # the driver's line at a trial's first result


@pytest.mark.cluster
def test_submitted_study_runs_on_both_nodes_stops_and_resumes(cluster):
    storage = {"storage_path": str(cluster.shared / "ray"), "optuna": f"journal://{cluster.shared}/optuna.log",
               "mlflow": cluster.mlflow_uri}
    path = cluster_study(cluster, "both", steps=400, every=50, storage=storage)
    job = submitted(cluster.cli("submit", str(path), *cluster.flags()))       # storage from the file
    nodes = {name: node for name, (_, node) in cluster.raylets().items()}
    log = cluster.follow(job)
    started = {m.group(1) for m in log.wait_for(RUNNING_ON, count=2)}     # one trial on each node
    assert started == {node[:12] for node in nodes.values()}, log.seen
    stopped = cluster.cli("stop", job, "--address", cluster.address)
    assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stdout + stopped.stderr
    logs = log.rest(timeout_s=300)
    assert READY in logs and "study interrupted" in logs, logs
    assert runs(cluster, "both")[1][0].data.tags["state"] == "interrupted"

    folder = cluster.shared / "ray" / "both"                                  # the study folder, shared
    resumed = cluster.cli("resume", str(folder), *cluster.flags(), "--follow")
    again = submitted(resumed)
    assert f"job {again}: SUCCEEDED" in resumed.stdout, resumed.stdout + resumed.stderr
    children = assert_study_finished(cluster, "both", list(range(50, 401, 50)))
    assert {r.data.tags["nodes"].split(",")[0] for r in children} == set(nodes.values())

    listed = cluster.cli("jobs", "--address", cluster.address).stdout.splitlines()
    assert [line.split()[:3] for line in listed if line.split()[0] in (job, again)] == \
        [[again, "SUCCEEDED", "both"], [job, "STOPPED", "both"]], listed


@pytest.mark.cluster
def test_killed_worker_raylet_retries_the_trial_from_its_checkpoint(cluster):
    path = cluster_study(cluster, "retry", steps=400, every=50)
    job = submitted(cluster.cli("submit", str(path), *cluster.flags(), *storage_flags(cluster)))
    raylets = cluster.raylets()
    (worker_pid, worker), (_, head) = raylets["worker"], raylets["head"]
    log = cluster.follow(job)
    log.wait_for(RUNNING_ON.replace(r"(\w+)", worker[:12]))     # the worker's trial has checkpointed
    os.kill(worker_pid, 9)

    logs = log.rest(timeout_s=300)
    status = cluster.cli("jobs", "--address", cluster.address).stdout
    assert any(line.split()[:2] == [job, "SUCCEEDED"] for line in status.splitlines()), logs + status

    children = assert_study_finished(cluster, "retry", list(range(50, 401, 50)))
    moved = [r for r in children if r.data.tags["nodes"] == f"{worker},{head}"]
    assert len(moved) == 1, [r.data.tags["nodes"] for r in children]        # the one run continued
    rows = [json.loads(line) for line in
            (cluster.shared / "ray" / "retry" / moved[0].data.tags["tune_trial_id"] / "result.json").open()]
    restored = [r for r in rows if r["node_id"] == head]
    assert restored and restored[0]["step"] > 50 and restored[0]["iterations_since_restore"] == 1, rows
