"""A lean MLflow tracking server: one worker, no job runner (a fifth of the defaults' memory and
a third of their start-up: bench/results/design_figures.md), proxied artifacts so that clients on other machines
never need the server's disk. `loopstudy server` runs it for a team; `loopstudy ui` for one study.

Both log errors only: no access line per request, no start-up notices, no warnings; and both
stop the server with every process it started (its own process group) on SIGINT or SIGTERM.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .. import QUIET_ENV
from ..storage.credentials import redact

LEAN_ENV = {**QUIET_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_LOGGING_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"}
# what `mlflow server` prints on every start whatever its flags (mlflow/cli/__init__.py)
START_NOTICES = ("[MLflow] Security middleware enabled",)


def mlflow_server_command(backend: str, artifacts: str | Path, host: str = "127.0.0.1",
                          port: int = 5001) -> list[str]:
    """`mlflow server` on `backend` (sqlite:///PATH or postgresql://...), artifacts stored under
    `artifacts` and served through the server (`mlflow-artifacts:/` URIs)."""
    return [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend,
            "--registry-store-uri", backend, "--artifacts-destination", str(artifacts), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1",
            "--uvicorn-opts", "--log-level error --no-access-log"]


class Server:
    """A server process in its own process group, its output passed on without START_NOTICES;
    `stop` ends the whole group (the server, its workers)."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._pass_output, daemon=True).start()

    def _pass_output(self) -> None:
        for line in self.process.stdout:
            if not line.startswith(START_NOTICES):
                sys.stderr.write(line)

    def wait_until_up(self, url: str, given_up: threading.Event, timeout_s: float = 120) -> bool:
        """Whether `url` answers before `given_up` is set or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while not given_up.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except OSError:
                given_up.wait(0.2)
        return False

    def stop(self, grace_s: float = 5) -> None:
        """SIGTERM to the group, then SIGKILL to whatever of it is left after `grace_s`."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def run_until_signal(command: list[str], env: dict[str, str], health_url: str, ready_line: str) -> int:
    """Run the server, print `ready_line` once `health_url` answers, and stop it (and all it
    started) on SIGINT or SIGTERM, or when it exits by itself. Returns an exit code."""
    ended = threading.Event()
    signalled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: (signalled.append(signum), ended.set()))
    server = Server(command, env)
    threading.Thread(target=lambda: (server.process.wait(), ended.set()), daemon=True).start()
    try:
        if server.wait_until_up(health_url, ended):
            print(ready_line, flush=True)
        elif not ended.is_set():
            print(f"loopstudy: error: the server did not answer at {health_url}", file=sys.stderr)
            return 1
        ended.wait()
    finally:
        server.stop()
    return 0 if signalled else server.process.returncode or 1


def serve_tracking(backend: str, artifacts: str, host: str, port: int) -> None:
    """The team server, in the foreground until SIGINT or SIGTERM."""
    command = mlflow_server_command(backend, artifacts if "://" in artifacts else Path(artifacts).resolve(),
                                    host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: MLflow on {host}:{port} has no authentication; anyone who reaches it can "
              "read and write every run", file=sys.stderr)
    print(f"MLflow tracking server: http://{host}:{port}  (backend {redact(backend)}, artifacts {artifacts})",
          flush=True)
    answers_at = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    code = run_until_signal(command, LEAN_ENV, f"http://{answers_at}:{port}/health",
                            f"MLflow tracking server ready: http://{host}:{port}")
    if code:
        raise SystemExit(code)
