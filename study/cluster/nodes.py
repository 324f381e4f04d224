"""Inside a Ray cluster: can every node reach the study's stores, and can some node hold a trial?

A study's trials write run folders and checkpoints under the Ray storage path on whichever node
they land, so each alive node is checked with a tiny task pinned to it before the study starts;
the error names the node and what it could not reach. A trial that asks for more CPUs or GPUs
than any node has would wait for ever behind Ray's "insufficient resources" warning: refused.
"""
from __future__ import annotations

import urllib.request
import uuid

from ..errors import StudyError
from ..storage.credentials import redact
from ..storage.stores import SERVERS, Stores

READY = "loopstudy: every node reaches the stores"      # `loopstudy submit` waits for this line


def store_problems(stores: Stores) -> list[str]:
    """What this machine cannot reach: the Ray storage path, the MLflow server, the Optuna storage."""
    problems = []
    probe = stores.ray / f".loopstudy-probe-{uuid.uuid4().hex}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        problems.append(f"cannot write the Ray storage path {stores.ray}: {exc}")
    if stores.mlflow_shown.startswith(SERVERS):
        url = redact(stores.mlflow_shown).rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()
        except OSError as exc:
            problems.append(f"the MLflow server does not answer at {url}: {exc}")
    try:
        stores.optuna_storage().get_all_studies()
    except Exception as exc:        # any driver error (OperationalError, OSError, ...) means unreachable
        problems.append(f"cannot open the Optuna storage {redact(stores.optuna_shown)}: {type(exc).__name__}: "
                        f"{redact(str(exc))}")
    return problems


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def check_nodes(stores: Stores) -> int:
    """Run `store_problems` on every alive node; raise StudyError naming each failing node.
    Returns the number of nodes checked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    task = ray.remote(num_cpus=0)(store_problems)
    answers = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(stores) for n in nodes])
    failed = [f"node {n['NodeID'][:12]} ({n['NodeManagerAddress']}): {p}"
              for n, problems in zip(nodes, answers) for p in problems]
    if failed:
        raise StudyError("not every node reaches the study's stores:\n  " + "\n  ".join(failed))
    return len(nodes)


def check_trial_fits(cpu: float, gpu: float) -> None:
    """Refuse a study whose trial (`resources: {cpu, gpu}`) no alive node can hold."""
    nodes = alive_nodes()

    def has(node: dict, key: str) -> float:
        return node["Resources"].get(key, 0.0)

    if any(has(n, "CPU") >= cpu and has(n, "GPU") >= gpu for n in nodes):
        return
    have = "; ".join(f"{n['NodeManagerAddress']}: {has(n, 'CPU'):g} CPU, {has(n, 'GPU'):g} GPU" for n in nodes)
    raise StudyError(f"resources: each trial asks for {cpu:g} CPU and {gpu:g} GPU, and no node of this Ray "
                     f"has that ({have}): lower 'resources' in the study file, or run where a node has them "
                     "(a cluster's nodes declare theirs with `ray start --num-gpus`; a local Ray takes "
                     "`--num-gpus`)")
