"""Five tiers: fast (no Ray: seconds), service (`@pytest.mark.service`: real local Ray, Optuna
and MLflow), cluster (`@pytest.mark.cluster`: a two-node Ray cluster in a network namespace,
which needs root and iproute2), postgres (`@pytest.mark.postgres`: the cluster stores on a
real PostgreSQL server the test starts, which needs the server binaries) and tmpfs
(`@pytest.mark.tmpfs`: studies on small tmpfs filesystems in a private mount namespace, which
needs root or user namespaces). `make test` runs every
tier this machine can and names each one it could not; with LOOPSTUDY_ALL_TIERS=1 (`.ci/run`) a
tier that cannot run fails instead."""
import functools
import os
import pwd
import shutil
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Callable

from study import quiet_environment

quiet_environment()         # nothing we launch may wait on an unreachable host

import pytest  # noqa: E402

from trainables.config import load_config  # noqa: E402

TINY = ["model.n_embd=16", "model.n_head=2", "model.n_dims=4", "curriculum.dims.start=4",
        "curriculum.dims.end=4", "curriculum.points.start=6", "curriculum.points.end=6",
        "training.batch_size=8", "eval.n_prompts=32", "eval.bootstrap=50"]
ALL_TIERS = os.environ.get("LOOPSTUDY_ALL_TIERS") == "1"
POSTGRES_PROGRAMS = ("initdb", "postgres", "pg_ctl")
POSTGRES_USER = "postgres"       # who runs the server when the tests run as root (it refuses root)


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb, postgres and pg_ctl: PATH's, else the newest Debian install
    (/usr/lib/postgresql/VERSION/bin, which Debian keeps off PATH)."""
    debian = max(glob("/usr/lib/postgresql/[0-9]*/bin/initdb"), key=lambda p: int(Path(p).parts[4]), default=None)
    for initdb in (shutil.which("initdb"), debian):
        folder = Path(initdb).resolve().parent if initdb else None
        if folder and all((folder / p).is_file() for p in POSTGRES_PROGRAMS):
            return folder
    return None


def cluster_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces (ip netns)"
    if not shutil.which("ip"):
        return "needs iproute2 (`ip netns`)"
    return None


def tmpfs_problem() -> str | None:
    """Why this machine cannot mount a small tmpfs in a private mount namespace (None: it can):
    root does it with `unshare -m`, anyone else where user namespaces are allowed (`unshare -rm`)."""
    import subprocess
    import tempfile

    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            return f"needs {tool} (util-linux) for a tmpfs in a private mount namespace"
    target = tempfile.mkdtemp(prefix="lstmpfs")
    try:
        tried = subprocess.run(["unshare", "-m" if os.geteuid() == 0 else "-rm", "--propagation", "private",
                                "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target],
                               capture_output=True, text=True, timeout=30)
    finally:
        os.rmdir(target)
    if tried.returncode:
        return f"cannot mount a tmpfs in a private mount namespace ({tried.stderr.strip()}): needs root or user namespaces"
    return None


def postgres_problem() -> str | None:
    if postgres_bin_dir() is None:
        return "needs the PostgreSQL server binaries (initdb, postgres, pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"PostgreSQL refuses to run as root and there is no '{POSTGRES_USER}' user to run it as"
    return None


@dataclass
class Tier:
    """A test tier that needs something of the machine; `problem` says what is missing (None: it can run)."""
    name: str
    description: str
    problem: Callable[[], str | None]
    remedy: str

    @functools.cached_property
    def why_not(self) -> str | None:
        return self.problem()


TIERS = [Tier("cluster", "runs a two-node Ray cluster in a network namespace", cluster_problem,
              "run as root for it (CI does)"),
         Tier("postgres", "runs the cluster stores on a real PostgreSQL server the test starts",
              postgres_problem, "`apt-get install -y postgresql` for it (CI does)"),
         Tier("tmpfs", "runs studies on small tmpfs filesystems in a private mount namespace", tmpfs_problem,
              "run as root, or allow user namespaces, for it (CI runs as root)")]


def pytest_configure(config):
    config.addinivalue_line("markers", "service: runs a real local Ray, Optuna and MLflow")
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier.name}: {tier.description}")


def _tiers_not_runnable(item) -> list[Tier]:
    return [tier for tier in TIERS if tier.why_not and tier.name in item.keywords]


def _not_run(tier: Tier) -> str:
    return f"{tier.name} tier not run: "


def pytest_collection_modifyitems(config, items):
    if ALL_TIERS:
        return                  # pytest_runtest_setup fails them instead
    for item in items:
        for tier in _tiers_not_runnable(item):
            item.add_marker(pytest.mark.skip(reason=_not_run(tier) + tier.why_not))


def pytest_runtest_setup(item):
    missing = _tiers_not_runnable(item) if ALL_TIERS else []
    if missing:
        pytest.fail("every tier is required (LOOPSTUDY_ALL_TIERS=1) but this test's cannot run: "
                    + "; ".join(f"{t.name} tier: {t.why_not}" for t in missing), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Each tier that was skipped, counted from the skip reports (with pytest-xdist the tests
    are collected by its workers, and only their reports reach this process)."""
    reasons = [str(report.longrepr) for report in terminalreporter.stats.get("skipped", [])]
    for tier in TIERS:
        skipped = sum(_not_run(tier) in reason for reason in reasons)
        if skipped:
            terminalreporter.write_line(f"TIER NOT RUN: {tier.name} ({skipped} tests): {tier.why_not}; "
                                        f"{tier.remedy}", yellow=True, bold=True)


@dataclass(frozen=True)
class PostgresInstall:
    bin: Path                              # initdb, postgres, pg_ctl
    owner: pwd.struct_passwd | None        # who runs the server: POSTGRES_USER when we are root


@pytest.fixture(scope="session")
def postgres_install() -> PostgresInstall:
    """The PostgreSQL server on this machine (the postgres tier runs only where there is one)."""
    return PostgresInstall(postgres_bin_dir(), pwd.getpwnam(POSTGRES_USER) if os.geteuid() == 0 else None)


@pytest.fixture
def tiny_config():
    """A toy looped config that trains in well under a second per step."""
    def make(*overrides, preset="paper_linear_regression_looped_cpu"):
        return load_config(preset, TINY + list(overrides))
    return make
