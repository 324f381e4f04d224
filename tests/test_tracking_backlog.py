"""The backlog of trial events kept while a tracking server is away (study/tracking/delivery.py):
what counts as an outage, what its reason shows, and a backlog cut short by a crash."""
from __future__ import annotations

import socket

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from study.tracking.delivery import Backlog, is_outage, why
from trainables.config import ConfigError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]          # nothing listens there once the socket is closed


def refused(monkeypatch, uri: str) -> MlflowException:
    """What MLflow's client raises for a request to a server that is not there."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as raised:
        MlflowClient(uri).log_batch("0" * 32, tags=[RunTag("a", "b")])
    return raised.value


def test_a_refused_connection_is_an_outage_and_its_reason_hides_the_password(monkeypatch):
    error = refused(monkeypatch, f"http://alice:s3cret@127.0.0.1:{closed_port()}")
    assert is_outage(error)
    assert why(error) == "[Errno 111] Connection refused"
    assert "s3cret" not in why(MlflowException("API request to http://alice:s3cret@host/api failed: oops"))


def test_a_wrong_request_is_not_an_outage():
    """As the client raises a server's JSON error answer (RestException)."""
    assert not is_outage(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}))   # 400
    assert not is_outage(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}))  # 404
    assert is_outage(RestException({"error_code": "INTERNAL_ERROR", "message": "database down"}))      # 500
    assert is_outage(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "later"}))     # 503
    assert is_outage(MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error "
                                      "code 502 != 200. Response body: 'Bad Gateway'", error_code=TEMPORARILY_UNAVAILABLE))
    # a local SQLite store's failure is an MLflow INTERNAL_ERROR too, and no server is away
    assert not is_outage(MlflowException("(sqlite3.OperationalError) database or disk is full"))


def test_events_come_back_in_order_and_a_line_cut_by_a_crash_is_dropped(tmp_path):
    backlog = Backlog(tmp_path / "mlflow_backlog.jsonl")
    events = [{"event": "result", "tune_id": "a", "result": {"step": s, "eval/err_last": 1 / s}} for s in (1, 2, 3)]
    for event in events:
        backlog.append(event)
    assert backlog.events() == events and len(backlog) == 3
    with backlog.path.open("a") as out:
        out.write('{"event": "result", "tune_id": "a", "res')         # the driver died mid-write
    assert backlog.events() == events
    backlog.keep(events[2:])                                            # two were sent
    assert backlog.events() == events[2:]
    backlog.keep([])
    assert not backlog.path.exists() and backlog.events() == []


def test_a_damaged_line_inside_the_backlog_is_named(tmp_path):
    path = tmp_path / "mlflow_backlog.jsonl"
    path.write_text('{"event": "start"}\nnot json\n{"event": "end"}\n')
    with pytest.raises(ConfigError, match=r"mlflow_backlog.jsonl: line 2 is not JSON"):
        Backlog(path).events()
