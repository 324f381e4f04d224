"""The cluster commands of `loopstudy`: submit, jobs, logs, stop (Ray Jobs), and server (MLflow)."""
from __future__ import annotations

import argparse
import os
import sys

ENV_ADDRESS = os.environ.get("RAY_API_SERVER_ADDRESS")
ADDRESS_HELP = "the cluster's Jobs address, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)"


def _address(args) -> str:
    from ..errors import StudyError

    if not args.address:
        raise StudyError(f"`loopstudy {args.command}` needs --address http://HEAD:8265 "
                         "(or RAY_API_SERVER_ADDRESS)")
    return args.address


def submit_study(spec, args, resume: bool = False) -> None:
    """Submit, wait until every node reaches the stores, then follow the log or say how to."""
    from .jobs import follow, submit, wait_ready

    address = _address(args)
    job = submit(spec, address, args.python, resume=resume)
    print(f"submitted job {job}: study '{spec.name}' ({'resume' if resume else 'new'}), "
          f"results in {spec.results_dir}", flush=True)
    wait_ready(address, job)
    print("every node reaches the stores; the study is running", flush=True)
    if args.follow:
        status = follow(address, job)
        print(f"job {job}: {status}")
        if status != "SUCCEEDED":
            raise SystemExit(1)
    else:
        print(f"follow it: loopstudy logs {job} --follow --address {address}\n"
              f"stop it:   loopstudy stop {job} --address {address}   (resume: loopstudy resume "
              f"{spec.results_dir} --address {address})")


def cmd_submit(args) -> None:
    from ..spec import parse_study, read_study_file

    spec = read_study_file(args.study)
    storage = spec.storage.merged(storage_path=args.storage_path, optuna=args.optuna_storage,
                                  mlflow=args.mlflow_uri)
    spec = parse_study({**spec.source, "storage": storage.given()}, args.study)
    submit_study(spec, args, resume=args.resume)


def cmd_jobs(args) -> None:
    from analysis.layout import table
    from .jobs import job_rows

    rows = job_rows(_address(args))
    print(table(rows, ["job", "status", "study", "started", "entrypoint"]) if rows else "no jobs")


def cmd_logs(args) -> None:
    from .jobs import client, follow

    if args.follow:
        follow(_address(args), args.job)
    else:
        print(client(_address(args)).get_job_logs(args.job), end="")


def cmd_stop(args) -> None:
    from .jobs import client

    stopped = client(_address(args)).stop_job(args.job)
    print(f"job {args.job}: " + ("stopping (the driver got SIGINT; Tune saves its state)" if stopped
                                  else "already ended"))


def cmd_server(args) -> None:
    from .mlflow_server import serve_tracking

    serve_tracking(args.backend, args.artifacts, args.host, args.port)


def add_job_args(p: argparse.ArgumentParser, submitting: bool = False) -> None:
    """--address, --python, --follow: how a study's driver goes to a cluster (`resume` runs here
    unless given --address)."""
    p.add_argument("--address", default=ENV_ADDRESS if submitting else None,
                   help=ADDRESS_HELP if submitting else "resume as a job on the cluster at this Jobs "
                                                        "address, http://HEAD:8265")
    p.add_argument("--python", default=os.environ.get("LOOPSTUDY_CLUSTER_PYTHON", sys.executable),
                   help="the interpreter on the cluster that has Ray and this project's dependencies "
                        "(default: $LOOPSTUDY_CLUSTER_PYTHON, else this interpreter's path)")
    p.add_argument("--follow", action="store_true", help="print the job's log until it ends")


def add_cluster_commands(sub) -> None:
    p = sub.add_parser("submit", help="run a study on a Ray cluster, as a Ray Job")
    p.add_argument("study", help="study YAML")
    add_job_args(p, submitting=True)
    p.add_argument("--resume", action="store_true", help="resume this study instead of starting it")
    p.add_argument("--storage-path", help="shared filesystem path for Ray storage (storage.storage_path)")
    p.add_argument("--optuna-storage", help="journal:///SHARED/optuna.log or postgresql://... (storage.optuna)")
    p.add_argument("--mlflow-uri", help="MLflow tracking server, http://HOST:PORT (storage.mlflow)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list a cluster's jobs")
    p.add_argument("--address", default=ENV_ADDRESS, help=ADDRESS_HELP)
    p.set_defaults(func=cmd_jobs)

    for name, func, text in (("logs", cmd_logs, "a job's log"),
                             ("stop", cmd_stop, "stop a job (the study stays resumable)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", help="job id (see `loopstudy jobs`)")
        p.add_argument("--address", default=ENV_ADDRESS, help=ADDRESS_HELP)
        p.set_defaults(func=func)
    p = sub.choices["logs"]
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")

    p = sub.add_parser("server", help="a lean MLflow tracking server for a team (proxied artifacts)")
    p.add_argument("--backend", default="sqlite:///mlflow-server.db",
                   help="sqlite:///PATH or postgresql://USER:PW@HOST/DB (default: sqlite:///mlflow-server.db)")
    p.add_argument("--artifacts", default="mlflow-artifacts",
                   help="folder (or s3://...) the server stores artifacts in (default: ./mlflow-artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    p.set_defaults(func=cmd_server)
