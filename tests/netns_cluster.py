"""A real two-node Ray cluster on this machine, for tests: both nodes, the MLflow server and every
client run inside a network namespace holding only `lo`, so everything talks over 127.0.0.1,
nothing listens on the host's interfaces, and the namespace's fixed ports cannot collide with
other Ray clusters on the machine.

Token auth with a token of its own (RAY_AUTH_TOKEN_PATH; ~/.ray is left alone), one CPU and
memory flags per node, one temp dir per node (two nodes sharing one would share their
runtime_env cache, and a worker's cleanup would delete the job's working dir on the head).

Teardown kills exactly the processes inside the namespace (`ip netns pids`): `ray stop` would
kill every Ray process on the machine, other users' clusters included.
"""
from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studyfiles import ENV, Lines, start_cli

HEAD_PORT, JOBS_PORT, MLFLOW_PORT = 6379, 8265, 5001
NODE_FLAGS = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--memory=1500000000",
              "--object-store-memory=150000000", "--disable-usage-stats"]


class NetnsCluster:
    def __init__(self):
        # short: Ray's unix socket paths live under the temp dirs and must stay below 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="lsc", dir="/tmp"))
        self.ns = self.root.name
        self.shared = self.root / "shared"          # "the shared filesystem" every node mounts
        self.mlflow_db = self.root / "mlflow.db"
        self.artifacts = self.root / "artifacts"
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        # the cluster gets no PYTHONPATH: it imports the project only from what a job ships; and
        # not the local-only switch of study.LOCAL_RAY_ENV, which forbids nodes to join
        self.cluster_env = {k: v for k, v in ENV.items()
                            if k not in ("PYTHONPATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
        self.cluster_env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        self.env = {**self.cluster_env, "PYTHONPATH": ENV["PYTHONPATH"]}
        self.address = f"http://127.0.0.1:{JOBS_PORT}"
        self.mlflow_uri = f"http://127.0.0.1:{MLFLOW_PORT}"

    # ------------------------------------------------------------ running things inside

    def run(self, *command: str, env: dict | None = None, timeout: float = 300, check: bool = True):
        done = subprocess.run(["ip", "netns", "exec", self.ns, *command], env=env or self.cluster_env,
                              cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "study.cli", *args, env=self.env, timeout=timeout, check=False)

    def follow(self, job: str) -> Lines:
        """The job's log as it is written (the driver's progress events among it)."""
        return start_cli("logs", job, "--follow", "--address", self.address, cwd=self.root, env=self.env,
                         prefix=["ip", "netns", "exec", self.ns])

    def flags(self) -> list[str]:
        return ["--address", self.address, "--python", sys.executable]

    # ------------------------------------------------------------ up and down

    def start(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise RuntimeError("the two-node cluster test needs root and iproute2 (`ip netns`); it is "
                               "not skipped, so that a green run always means the cluster was tested")
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"], check=True)
        self.shared.mkdir()
        ray = str(Path(sys.executable).parent / "ray")
        self.mlflow = start_cli("server", "--backend", f"sqlite:///{self.mlflow_db}", "--artifacts",
                                str(self.artifacts), "--port", str(MLFLOW_PORT), cwd=self.root,
                                env=self.env, prefix=["ip", "netns", "exec", self.ns])
        self.run(ray, "start", "--head", f"--port={HEAD_PORT}", "--include-dashboard=true",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={JOBS_PORT}",
                 f"--temp-dir={self.root / 'head'}", *NODE_FLAGS)
        self.run(ray, "start", f"--address=127.0.0.1:{HEAD_PORT}", f"--temp-dir={self.root / 'worker'}",
                 *NODE_FLAGS)
        self.mlflow.wait_for(r"^MLflow tracking server ready: ", timeout_s=90)

    def raylets(self) -> dict[str, tuple[int, str]]:
        """{"head" | "worker": (raylet pid, node id)} of the nodes whose raylet still runs."""
        found = {}
        for pid in self.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if argv[0].endswith("/raylet"):
                node = next(a.split("=", 1)[1] for a in argv if a.startswith("--node_id="))
                found["head" if "--head" in argv else "worker"] = (pid, node)
        return found

    def pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in listed.stdout.split()]

    def stop(self) -> None:
        """Every process in the namespace (nodes, orphaned agents, drivers, MLflow), then the
        namespace and the folder."""
        for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
            exits = []
            for pid in self.pids():
                try:
                    exits.append(os.pidfd_open(pid))
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            wait_for_exits(exits, wait_s)
        if getattr(self, "mlflow", None):
            self.mlflow.process.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for_exits(pidfds: list[int], timeout_s: float) -> None:
    """Until every process behind `pidfds` has exited (a pidfd turns readable then) or the
    timeout passes; closes the descriptors."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    deadline, left = time.monotonic() + timeout_s, set(pidfds)
    while left and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            poller.unregister(fd)
            left.discard(fd)
    for fd in pidfds:
        os.close(fd)
