"""A study's driver as a Ray Job: `loopstudy submit`, `jobs`, `logs`, `stop` (Ray Jobs SDK).

The job ships the project's packages (runtime_env py_modules) and a working folder holding the
study file with its resolved `storage` section (and its base config, when that is a file), and
runs `PYTHON -m study.cli run study.yaml` with the cluster's interpreter given explicitly (a bare
`python` would be whatever the head's PATH finds). The driver joins the cluster, checks every
node against the stores, and prints `cluster.READY`; `submit` waits for that line, so a node that
cannot reach a store fails the submit with that node's error.

`loopstudy stop` sends the driver SIGINT (RAY_JOB_STOP_SIGNAL in the job's environment): Tune
saves its state, and the study is resumable with `loopstudy resume FOLDER --address ...` or
`loopstudy submit STUDY.yaml --resume`.
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .. import QUIET_ENV
from ..errors import StudyError
from ..spec import StudySpec
from .nodes import READY

REPO = Path(__file__).resolve().parents[2]      # study/cluster/jobs.py -> the repository
PACKAGES = ("study", "trainables", "search_spaces", "analysis")
JOB_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _stage(spec: StudySpec, folder: Path) -> None:
    """The job's working folder: study.yaml with its storage resolved, and the base config files."""
    source = dict(spec.source)
    bases = []
    for i, base in enumerate(spec.bases):
        if Path(base).suffix in (".yaml", ".yml"):
            shutil.copy(base, folder / f"base{i}.yaml")
            base = f"base{i}.yaml"
        bases.append(base)
    source["base"] = bases if isinstance(spec.base, list) else bases[0]
    (folder / "study.yaml").write_text(yaml.safe_dump({**source, "storage": spec.storage.given()}, sort_keys=False))


def submit(spec: StudySpec, address: str, python: str, resume: bool = False) -> str:
    """Submit the study (or its resumption) to the cluster at `address`; returns the job id."""
    errors = spec.storage.cluster_errors()
    if errors:
        raise StudyError(f"study '{spec.name}' cannot run on a cluster:\n  " + "\n  ".join(errors)
                         + "\n(set them in the study's `storage` section or with --storage-path, "
                           "--optuna-storage, --mlflow-uri)")
    command = f"resume {spec.results_dir}" if resume else "run study.yaml"
    with tempfile.TemporaryDirectory(prefix="loopstudy-job-") as staging:
        _stage(spec, Path(staging))
        runtime_env = {"working_dir": staging, "excludes": ["__pycache__", "*.pyc"],
                       "py_modules": [str(REPO / p) for p in PACKAGES],
                       "env_vars": {**QUIET_ENV, **JOB_ENV}}
        return client(address).submit_job(
            entrypoint=f"{python} -m study.cli {command}", runtime_env=runtime_env,
            submission_id=f"loopstudy-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            metadata={"loopstudy_study": spec.name, "loopstudy_resume": str(resume).lower()})


def wait_ready(address: str, job_id: str, timeout_s: float = 600) -> None:
    """Until the driver says every node reaches the stores; a job that ends first is an error
    carrying the end of its log (which names the node and the store)."""
    jobs = client(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(jobs.get_job_status(job_id).value)
        logs = jobs.get_job_logs(job_id)
        if READY in logs:
            return
        if status in TERMINAL:
            tail = "\n".join(logs.strip().splitlines()[-25:])
            raise StudyError(f"job {job_id} {status.lower()} before the study started: "
                             f"{jobs.get_job_info(job_id).message}\n{tail}")
        time.sleep(1)
    raise StudyError(f"job {job_id} did not start within {timeout_s:.0f} s; "
                     f"see `loopstudy logs {job_id} --address {address}`")


def follow(address: str, job_id: str) -> str:
    """Print the job's log as it grows until the job ends; returns its final status."""
    async def tail() -> None:
        async for chunk in client(address).tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    return str(client(address).get_job_status(job_id).value)


def job_rows(address: str) -> list[list[str]]:
    """One row per job, newest first: id, status, study, started, entrypoint."""
    jobs = sorted(client(address).list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
    return [[j.submission_id or j.job_id or "-", str(j.status.value), (j.metadata or {}).get("loopstudy_study", "-"),
             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-",
             j.entrypoint] for j in jobs]
