"""Security defaults: a local study's Ray and every server we start listen on loopback only,
with Ray's token auth on; a password of a store never reaches a file or a line of ours (it comes
from the environment, study/storage/credentials.py); and a study's terminal shows our lines, not the
libraries' start-up chatter."""
import ipaddress
import os
import re
import signal
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from study.errors import StudyError
from study.spec import parse_study, read_study_file
from study.storage.stores import Stores
from study.storage.credentials import expanded, redact
from study.tracking.runs import Tracker
from studyfiles import ENV, start_cli, write_study
from trainables.config import ConfigError

SERVER_UP = r"^MLflow tracking server ready: |^open http://127\.0\.0\.1:"   # `server`, `ui` once they answer
RUNNING_ON = r"^t\d{3} .*: running on node"                   # the driver's line at a trial's first result
SECRET = "hunter2-d0-not-print"
# what Ray, MLflow and Optuna print at a study's start unless study.quiet_* silences it
LIBRARY_NOISE = ("Token authentication is enabled", "Creating initial MLflow database tables",
                 "Updating database tables", "ExperimentalWarning", "A new study created in",
                 "View run")


# ---------------------------------------------------------------- listening sockets, from /proc

def _listening() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket of this machine."""
    found = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":                             # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)                      # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (socket.inet_ntop(family, raw), int(port, 16))
    return found


def _tree(root: int) -> list[int]:
    """`root` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pids.append(todo.pop())
        todo += children.get(pids[-1], [])
    return pids


def listening_sockets(root: int) -> list[tuple[int, str, str, int]]:
    """(pid, program, address, port) of each TCP socket the process tree of `root` listens on."""
    sockets, found = _listening(), []
    for pid in _tree(root):
        try:
            program = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:                                       # ended meanwhile
            continue
        for link in links:
            inode = int(link[8:-1]) if link.startswith("socket:[") else None
            if inode in sockets:
                found.append((pid, program, *sockets[inode]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback   # gRPC binds 127.0.0.1 as ::ffff:127.0.0.1


def assert_loopback_only(root: int) -> list[tuple[int, str, str, int]]:
    found = listening_sockets(root)
    exposed = [s for s in found if not is_loopback(s[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- passwords of the stores

def study_mapping(tmp_path: Path, **storage) -> dict:
    return {"name": "sec", "trainable": "synthetic", "base": "paper_linear_regression_looped_cpu",
            "space": {"training.loop_dilation": {"categorical": [1, 2]}},
            "objectives": [{"metric": "eval/err_last", "mode": "min"}], "budget": {"num_samples": 2},
            "results_dir": str(tmp_path / "sec"), "storage": storage}


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://optuna:pw@db:5432/optuna", "postgresql://optuna:***@db:5432/optuna"),
    ("postgresql+psycopg://optuna@db/optuna?sslmode=require&password=pw",
     "postgresql+psycopg://optuna@db/optuna?sslmode=require&password=***"),
    ("http://me:p:w@mlflow:5001", "http://me:***@mlflow:5001"),
    ("postgresql://optuna:${DB_PASSWORD}@db/optuna", "postgresql://optuna:${DB_PASSWORD}@db/optuna"),
    ("http://mlflow:5001", "http://mlflow:5001"), ("journal:///shared/optuna.log", "journal:///shared/optuna.log")])
def test_redact_hides_written_passwords_only(uri, shown):
    assert redact(uri) == shown


@pytest.mark.parametrize("field, uri, tools", [
    ("optuna", f"postgresql://optuna:{SECRET}@db/optuna", "PGPASSWORD or ~/.pgpass"),
    ("optuna", f"mysql://optuna@db/optuna?password={SECRET}", "PGPASSWORD or ~/.pgpass"),
    ("mlflow", f"http://me:{SECRET}@mlflow:5001", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")])
def test_a_password_written_in_a_store_uri_is_refused(tmp_path, field, uri, tools):
    with pytest.raises(StudyError) as refused:
        parse_study(study_mapping(tmp_path, **{field: uri}), "sec.yaml")
    message = str(refused.value)
    assert message.startswith(f"sec.yaml: 'storage.{field}' holds a password") and SECRET not in message
    assert tools in message and f"${{LOOPSTUDY_{field.upper()}_PASSWORD}}" in message


def test_a_password_reference_is_kept_and_only_opened_expanded(tmp_path, monkeypatch):
    """The kept study.yaml and the parent MLflow run (a real SQLite MLflow) hold the reference;
    only the URL a store is opened with holds the password."""
    reference = "postgresql://optuna:${LOOPSTUDY_TEST_DB_PASSWORD}@db.invalid/optuna"
    monkeypatch.setenv("LOOPSTUDY_TEST_DB_PASSWORD", SECRET + "/@")
    spec = parse_study(study_mapping(tmp_path, optuna=reference), "sec.yaml")
    stores = Stores.of(spec)
    assert stores.optuna_url == f"postgresql://optuna:{SECRET}%2F%40@db.invalid/optuna"
    assert stores.optuna_shown == reference

    kept = spec.to_yaml()
    assert reference in kept and SECRET not in kept
    stores.root.mkdir(parents=True)
    stores.study_file.write_text(kept)
    assert read_study_file(stores.study_file).storage.optuna == reference

    tracker = Tracker(stores)
    run = tracker.client.get_run(tracker.start_parent(spec))
    assert run.data.params["storage.optuna"] == reference
    artifact = Path(tracker.client.download_artifacts(run.info.run_id, "study.yaml", str(tmp_path)))
    assert SECRET not in str(run.data.params) + str(run.data.tags) + artifact.read_text()
    assert reference in artifact.read_text()


def test_an_unset_password_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPSTUDY_TEST_DB_PASSWORD", raising=False)
    reference = "postgresql://optuna:${LOOPSTUDY_TEST_DB_PASSWORD}@db.invalid/optuna"
    with pytest.raises(ConfigError, match=r"^'storage.optuna' .* takes its password from "
                                          r"\$LOOPSTUDY_TEST_DB_PASSWORD, which is not set here"):
        expanded(reference, "storage.optuna")
    spec = parse_study(study_mapping(tmp_path, optuna=reference), "sec.yaml")
    spec.results_dir.mkdir(parents=True)
    (spec.results_dir / "study.yaml").write_text(spec.to_yaml())
    env = {k: v for k, v in ENV.items() if k != "LOOPSTUDY_TEST_DB_PASSWORD"}
    status = start_cli("status", str(spec.results_dir), cwd=tmp_path, env=env)
    printed = status.rest()
    assert status.process.returncode == 2
    assert printed.strip().splitlines() == [
        f"loopstudy: error: 'storage.optuna' {reference} takes its password from $LOOPSTUDY_TEST_DB_PASSWORD, "
        "which is not set here: export it (on a cluster also in the environment of every Ray node)"]


# ---------------------------------------------------------------- what listens, what is printed

@pytest.mark.service
def test_a_local_study_listens_on_loopback_with_token_auth_and_prints_only_ours(tmp_path):
    path = write_study(tmp_path, "loopback", trainable="synthetic", scheduler=None, sampler="brute_force",
                       space={"training.loop_dilation": {"categorical": [1, 2, 3, 4]}},
                       budget={"num_samples": 4, "max_concurrent": 2})
    driver = start_cli("run", str(path), cwd=tmp_path)
    try:
        driver.wait_for(RUNNING_ON)
        found = assert_loopback_only(driver.process.pid)
        programs = {Path(program).name for _, program, _, _ in found}
        # the driver itself, Ray's GCS and raylet, and its workers were all looked at
        assert driver.process.pid in {pid for pid, *_ in found}
        assert {"gcs_server", "raylet"} <= programs and any(p.startswith("ray::") for p in programs), programs
        gcs = next(pid for pid, program, *_ in found if program.endswith("gcs_server"))
        assert "RAY_AUTH_MODE=token" in Path(f"/proc/{gcs}/environ").read_bytes().decode().split("\0")
    except BaseException:
        driver.process.send_signal(signal.SIGINT)     # like Ctrl+C: the driver ends and its Ray with it
        raise
    output = driver.rest()
    assert driver.process.returncode == 0, output
    assert len(re.findall(r"^t\d{3} .*: completed", output, re.MULTILINE)) == 4
    noise = [line for line in output.splitlines() if any(n in line for n in LIBRARY_NOISE)]
    assert not noise, "\n".join(noise)


@pytest.mark.service
def test_servers_listen_on_loopback_and_passwords_stay_out_of_a_study_on_them(tmp_path):
    """`loopstudy server` with its default host, a study tracked on it through a URI whose
    password comes from the environment (the plain server ignores it; the client sends it), and
    `loopstudy ui` on a study of its own: nothing beyond loopback, the password nowhere."""
    port = free_port()
    server = start_cli("server", "--port", str(port), "--backend", f"sqlite:///{tmp_path / 'server.db'}",
                       "--artifacts", str(tmp_path / "artifacts"), cwd=tmp_path)
    try:
        server.wait_for(SERVER_UP, timeout_s=120)
        assert port in {p for *_, p in assert_loopback_only(server.process.pid)}

        env = {**ENV, "LOOPSTUDY_TEST_MLFLOW_PASSWORD": SECRET}
        tracking = f"http://loopstudy:${{LOOPSTUDY_TEST_MLFLOW_PASSWORD}}@127.0.0.1:{port}"
        path = write_study(tmp_path, "remote", trainable="synthetic", scheduler=None,
                           budget={"num_samples": 2, "max_concurrent": 2}, storage={"mlflow": tracking})
        driver = start_cli("run", str(path), cwd=tmp_path, env=env)
        printed = driver.rest(timeout_s=300)
        assert driver.process.returncode == 0, printed
        status = start_cli("status", str(tmp_path / "remote"), cwd=tmp_path, env=env)
        shown = status.rest()
        assert status.process.returncode == 0 and "2 completed" in shown, shown
        client = MlflowClient(f"http://127.0.0.1:{port}")
        parent = client.search_runs([client.get_experiment_by_name("remote").experiment_id],
                                    "tags.loopstudy_role = 'parent'")[0]
        assert parent.data.params["storage.mlflow"] == tracking
        kept = client.download_artifacts(parent.info.run_id, "study.yaml", str(tmp_path))
        for where, text in {"the driver's output": printed, "status": shown,
                            "the kept study.yaml": (tmp_path / "remote" / "study.yaml").read_text(),
                            "MLflow": str(parent.data.params) + str(parent.data.tags) + Path(kept).read_text()}.items():
            assert SECRET not in text, where
        assert "View run" not in printed                       # MLflow's per-run line (with the URI)
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)

    spec = parse_study(study_mapping(tmp_path), "sec.yaml")      # a study with a parent run only
    spec.results_dir.mkdir(parents=True)
    (spec.results_dir / "study.yaml").write_text(spec.to_yaml())
    Tracker(Stores.of(spec)).start_parent(spec)
    port = free_port()
    ui = start_cli("ui", str(spec.results_dir), "--port", str(port), cwd=tmp_path)
    try:
        ui.wait_for(SERVER_UP, timeout_s=120)
        assert port in {p for *_, p in assert_loopback_only(ui.process.pid)}
    finally:
        ui.process.terminate()
        ui.process.wait(timeout=30)
