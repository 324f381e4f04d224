"""`loopstudy ui NAME`: a lean MLflow UI (one worker, no job runner) on the study's stores, or
optuna-dashboard with `--optuna`; both on 127.0.0.1, in the foreground until Ctrl+C."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

from .spec import Objective, find_study
from .stores import Stores
from .tracking import ROLE, Tracker

LEAN_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1"}


def ui_command(stores: Stores, objective: Objective, optuna: bool, port: int) -> tuple[list[str], str]:
    """The server command line and the URL to open (MLflow: the trial runs, best first)."""
    bin_dir = Path(sys.executable).parent
    if optuna:
        return ([str(bin_dir / "optuna-dashboard"), stores.optuna_url, "--host", "127.0.0.1",
                 "--port", str(port)], f"http://127.0.0.1:{port}/dashboard/")
    experiment = Tracker(stores).experiment_id
    return ([str(bin_dir / "mlflow"), "server", "--backend-store-uri", stores.mlflow_uri,
             "--artifacts-destination", str(stores.artifacts), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?" + urlencode({
                "searchFilter": f"tags.{ROLE} = 'trial'", "orderByKey": f"metrics.`{objective.metric}`",
                "orderByAsc": str(objective.mode == "min").lower()}, quote_via=quote))


def serve(name: str, results_root: str, optuna: bool = False, port: int = 5000) -> None:
    spec = find_study(name, results_root)
    command, url = ui_command(Stores(spec.results_dir, spec.name), spec.objectives[0], optuna, port)
    print(f"open {url}   (Ctrl+C stops the server)", flush=True)
    try:
        subprocess.run(command, env={**os.environ, **LEAN_ENV}, check=False)
    except KeyboardInterrupt:
        pass
