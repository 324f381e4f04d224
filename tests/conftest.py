"""Three tiers: fast (no Ray: seconds), service (`@pytest.mark.service`: real local Ray, Optuna
and MLflow), cluster (`@pytest.mark.cluster`: a two-node Ray cluster in a network namespace,
which needs root and iproute2). `make test` runs every tier this machine can and names the one it
could not; with LOOPSTUDY_ALL_TIERS=1 (`.ci/run`) a tier that cannot run fails instead."""
import os
import shutil

from study import quiet_environment

quiet_environment()         # nothing we launch may wait on an unreachable host

import pytest  # noqa: E402

from trainables.config import load_config  # noqa: E402

TINY = ["model.n_embd=16", "model.n_head=2", "model.n_dims=4", "curriculum.dims.start=4",
        "curriculum.dims.end=4", "curriculum.points.start=6", "curriculum.points.end=6",
        "training.batch_size=8", "eval.n_prompts=32", "eval.bootstrap=50"]
ALL_TIERS = os.environ.get("LOOPSTUDY_ALL_TIERS") == "1"
SKIPPED_CLUSTER_TESTS: list[str] = []


def cluster_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces (ip netns)"
    if not shutil.which("ip"):
        return "needs iproute2 (`ip netns`)"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "service: runs a real local Ray, Optuna and MLflow")
    config.addinivalue_line("markers", "cluster: runs a two-node Ray cluster in a network namespace")


def pytest_collection_modifyitems(config, items):
    problem = cluster_problem()
    for item in items:
        if problem and "cluster" in item.keywords:
            if ALL_TIERS:
                item.add_marker(pytest.mark.usefixtures("_cluster_tier_required"))
            else:
                item.add_marker(pytest.mark.skip(reason=f"cluster tier not run: {problem}"))
                SKIPPED_CLUSTER_TESTS.append(item.nodeid)


@pytest.fixture
def _cluster_tier_required():
    pytest.fail(f"cluster tier required (LOOPSTUDY_ALL_TIERS=1) but it cannot run: {cluster_problem()}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if SKIPPED_CLUSTER_TESTS:
        terminalreporter.write_line(f"TIER NOT RUN: cluster ({len(SKIPPED_CLUSTER_TESTS)} tests): {cluster_problem()}; "
                                    "run as root for it (CI does)", yellow=True, bold=True)


@pytest.fixture
def tiny_config():
    """A toy looped config that trains in well under a second per step."""
    def make(*overrides, preset="paper_linear_regression_looped_cpu"):
        return load_config(preset, TINY + list(overrides))
    return make
