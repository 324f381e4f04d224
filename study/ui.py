"""`loopstudy ui NAME`: a lean MLflow UI (one worker, no job runner) on the study's stores, or
optuna-dashboard with `--optuna`; both on 127.0.0.1, in the foreground until Ctrl+C. A study
tracked on an MLflow server (cluster) gets that server's URL instead."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

from .server import LEAN_ENV, mlflow_server_command
from .spec import Objective, find_study
from .stores import SERVERS, Stores
from analysis.layout import ROLE

from .tracking import Tracker


def ui_command(stores: Stores, objective: Objective, optuna: bool, port: int) -> tuple[list[str], str]:
    """The server command line (none when the study's MLflow is already a server) and the URL to
    open (MLflow: the trial runs, best first)."""
    bin_dir = Path(sys.executable).parent
    if optuna:
        return ([str(bin_dir / "optuna-dashboard"), stores.optuna_url, "--host", "127.0.0.1",
                 "--port", str(port)], f"http://127.0.0.1:{port}/dashboard/")
    experiment = Tracker(stores).experiment_id
    remote = stores.mlflow_uri.startswith(SERVERS)
    return ([] if remote else mlflow_server_command(stores.mlflow_uri, stores.artifacts, port=port),
            (stores.mlflow_uri.rstrip("/") if remote else f"http://127.0.0.1:{port}")
            + f"/#/experiments/{experiment}/runs?" + urlencode({
                "searchFilter": f"tags.{ROLE} = 'trial'", "orderByKey": f"metrics.`{objective.metric}`",
                "orderByAsc": str(objective.mode == "min").lower()}, quote_via=quote))


def serve(name: str, results_root: str, optuna: bool = False, port: int = 5000) -> None:
    spec = find_study(name, results_root)
    command, url = ui_command(Stores.of(spec), spec.objectives[0], optuna, port)
    print(f"open {url}" + "   (Ctrl+C stops the server)" * bool(command), flush=True)
    if not command:
        return
    try:
        subprocess.run(command, env={**os.environ, **LEAN_ENV}, check=False)
    except KeyboardInterrupt:
        pass
