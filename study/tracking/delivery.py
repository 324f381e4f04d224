"""Delivery of the driver's trial events to MLflow, through a tracking server's outages.

Trials never wait for MLflow: Tune calls our callback (`TrackingCallback`) on its event loop, and
a request that blocks there (MLflow's client retries a refused connection for about four minutes
by default) would stop every trial's reports. So the client retries little (study.QUIET_ENV:
about 6 s), the first request that finds the server away switches the tracker to the backlog,
`<results>/mlflow_backlog.jsonl`, and the server is probed again at most every PROBE_EVERY_S.
Each event is appended and fsynced before the callback returns, so a driver killed during the
outage loses nothing: the next `resume` or `sync` sends it. Sending is idempotent (the layout
finds runs by tag, skips steps already logged, leaves a closed run as it is), so an event sent
twice is written once. Whatever needs MLflow's answer to go on (a phase's end: `needs_mlflow`)
waits for the server, up to LOOPSTUDY_MLFLOW_WAIT_S.
"""
from __future__ import annotations

import functools
import json
import os
import re
import time
from pathlib import Path

import requests
from mlflow.exceptions import RestException
from ray.tune import Callback

from analysis.layout import FAILED, GPU_IDS
from analysis.library_internals import MLFLOW_REST_FAILURE, TRIAL_ERROR_FILE
from trainables.jsonl import read_jsonl

from ..errors import ConfigError, Unavailable, causes
from ..outcome import classify
from ..retrying import until_deadline
from ..storage.credentials import redact
from ..storage.stores import SERVERS, Stores

BACKLOG = "mlflow_backlog.jsonl"
PROBE_EVERY_S = 10.0
WAIT_PROBE_S = 5.0              # how often a driver waiting for the tracking server probes it
# how long a driver waits at a phase's end (when it needs MLflow to go on) for the server to return
WAIT_ENV, WAIT_DEFAULT_S = "LOOPSTUDY_MLFLOW_WAIT_S", 3600.0


def wait_limit_s() -> float:
    given = os.environ.get(WAIT_ENV, str(WAIT_DEFAULT_S))
    try:
        return max(0.0, float(given))
    except ValueError:
        raise ConfigError(f"{WAIT_ENV} must be a number of seconds, got {given!r}") from None


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the tracking server is unreachable or failing (refused or reset
    connection, a timeout, an HTTP 5xx answer), not that the request was wrong; a local store's
    error (SQLite's, raised as an MLflow INTERNAL_ERROR too) is none."""
    if any(isinstance(seen, (requests.ConnectionError, requests.Timeout)) for seen in causes(error)):
        return True
    answered = isinstance(error, RestException) or str(error).startswith(MLFLOW_REST_FAILURE)
    return answered and error.get_http_status_code() >= 500


def why(error: BaseException) -> str:
    """The short reason of an outage: `[Errno 111] Connection refused`, or the first line."""
    text = redact(str(error))                 # MLflow's messages quote the URL, with its credentials
    found = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    return found.group(0).strip() if found else text.splitlines()[0][:200] if text else type(error).__name__


def answers(tracking_uri: str) -> bool:
    """Whether the tracking server at `tracking_uri` answers its health check now."""
    base = re.sub(r"(?<=://)[^/@]*@", "", tracking_uri).rstrip("/")      # /health needs no credentials
    try:
        return requests.get(base + "/health", timeout=3).ok
    except requests.RequestException:
        return False


class Backlog:
    """The events not yet in MLflow, one JSON object a line, in the order they happened."""

    def __init__(self, path: Path):
        self.path = path

    def __len__(self) -> int:
        return len(self.events())

    def append(self, event: dict) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(event, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def events(self) -> list[dict]:
        """The kept events; a last line cut short by a crash mid-write is dropped (its event was
        never acknowledged: the callback had not returned)."""
        if not self.path.is_file():
            return []
        return read_jsonl(self.path, lambda e: isinstance(e, dict) and "event" in e, "JSON of a trial event",
                          "fix or remove that line (each line is one trial event not yet in MLflow)")

    def keep(self, events: list[dict]) -> None:
        """Replace the backlog by `events` (those still not sent); none: remove the file."""
        if not events:
            self.path.unlink(missing_ok=True)
            return
        partial = self.path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
        os.replace(partial, self.path)


class TrackingUnavailable(Unavailable):
    """The tracking server did not answer when the driver could not go on without it; nothing
    was lost (the backlog and the run folders hold it)."""


class Outage:
    """Whether the tracking server is away, since when, and when it was last probed; prints
    the driver's lines when it goes away and when it is back."""

    def __init__(self, shown_uri: str, backlog: Backlog):
        self.shown, self.backlog = shown_uri, backlog
        self.since: float | None = None          # time.time() it went away; None: not away
        self.probed = 0.0                        # time.monotonic() of the last probe

    def went_away(self, error: BaseException) -> None:
        if self.since is None:
            self.since, self.probed = time.time(), time.monotonic()
            print(f"mlflow: {self.shown} does not answer ({why(error)}): trials go on; their events are "
                  f"kept in {self.backlog.path} and sent when it is back", flush=True)

    def may_probe(self) -> bool:
        if self.since is not None and time.monotonic() - self.probed < PROBE_EVERY_S:
            return False
        self.probed = time.monotonic()
        return True

    def back(self, sent: int) -> None:
        if self.since is not None:
            print(f"mlflow: {self.shown} is back after {time.time() - self.since:.0f} s; {sent} kept events "
                  "sent", flush=True)
        self.since = None


def needs_mlflow(at_start: bool = False):
    """For a tracker's method that cannot go on without MLflow's answer: first send the backlog;
    while the tracking server is away, wait for it (up to the tracker's `wait_s`: a running
    study's driver waits, other commands do not) or, `at_start` of a study, say at once that it
    does not answer."""
    def decorate(method):
        @functools.wraps(method)
        def steady(self: "Delivery", *args, **kwargs):
            deadline = time.monotonic() + (0 if at_start else self.wait_s)

            def attempt():
                self.wait_for_mlflow(deadline)
                return method(self, *args, **kwargs)
            return until_deadline(attempt, self._away, deadline, pause_s=0, timed_out=self._unavailable)
        return steady
    return decorate


class Delivery:
    """The tracker's half that gets events to MLflow (study/tracking/runs.py's Tracker is the
    other, which writes them): `record` an event now or keep it, send what was kept, wait."""
    stores: Stores
    wait_s: float

    def _start_delivery(self) -> None:
        self.backlog = Backlog(self.stores.root / BACKLOG)
        self.outage = Outage(self.stores.mlflow_shown, self.backlog)

    def _apply(self, event: dict) -> None:
        raise NotImplementedError        # the layout writes an event

    def _sent(self, event: dict) -> bool:
        """Whether `event` reached MLflow; False while the tracking server is away (noted)."""
        try:
            self._apply(event)
            return True
        except Exception as error:
            if not self._away(error):
                raise
            return False

    def _away(self, error: BaseException) -> bool:
        """Whether `error` means a tracking server is away (noted, and said once); a local
        store's errors are never an outage."""
        if not self.stores.mlflow_uri.startswith(SERVERS) or not is_outage(error):
            return False
        self.outage.went_away(error)
        return True

    def _unavailable(self, error: BaseException | None = None) -> TrackingUnavailable:
        kept = len(self.backlog)
        return TrackingUnavailable(
            f"'storage.mlflow' {self.stores.mlflow_shown} does not answer"
            + (f" ({why(error)})" if error else "") + (
                f"; {kept} trial events are kept in {self.backlog.path} and the run folders: start the "
                f"server, then `loopstudy sync {self.stores.root}` or `loopstudy resume {self.stores.root}`"
                if kept else ": start it (`loopstudy server`), or fix the address"))

    def record(self, event: dict) -> None:
        """A trial event from Tune's callback, written to MLflow now, or kept in the backlog (in
        order, behind any kept before) while the tracking server is away: never waits for it."""
        if not self.send_backlog() or not self._sent(event):
            self.backlog.append(event)

    def send_backlog(self, probe_now: bool = False) -> bool:
        """Send the kept events, if the server answers (while it is away, probed at most every
        PROBE_EVERY_S unless `probe_now`); whether it is back and none is left."""
        if self.outage.since is None and not self.backlog.path.is_file():
            return True
        if not (self.outage.may_probe() or probe_now) or not answers(self.stores.mlflow_uri):
            return False
        events = self.backlog.events()
        for sent, event in enumerate(events):
            if not self._sent(event):
                self.backlog.keep(events[sent:])
                return False
        self.backlog.keep([])
        self.outage.back(len(events))
        return True

    def wait_for_mlflow(self, deadline: float) -> None:
        """Send the backlog, waiting until `deadline` (time.monotonic()) for the server."""
        said = False
        while not self.send_backlog(probe_now=True):
            if time.monotonic() >= deadline:
                raise self._unavailable()
            if not said:
                print(f"mlflow: waiting for {self.stores.mlflow_shown} ({len(self.backlog)} events kept in "
                      f"{self.backlog.path}; up to {deadline - time.monotonic():.0f} s more; Ctrl-C stops, "
                      f"then `loopstudy sync {self.stores.root}` sends them)", flush=True)
                said = True
            time.sleep(WAIT_PROBE_S)


class TrackingCallback(Callback):
    """Tune callback feeding the Tracker: child runs, batched curves, final states."""

    def __init__(self, tracker: Delivery, max_steps: int):
        self.tracker, self.max_steps = tracker, max_steps

    def on_trial_start(self, iteration, trials, trial, **info):
        self.tracker.record({"event": "start", "tune_id": trial.trial_id, "config": trial.config})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        kept = {k: v for k, v in result.items() if k in ("step", "node_id", "node_ip", GPU_IDS) or "/" in k}
        self.tracker.record({"event": "result", "tune_id": trial.trial_id, "result": kept})

    def on_trial_complete(self, iteration, trials, trial, **info):
        state, reason = classify(trial.last_result, False, self.max_steps)
        self._end(trial, state, reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = (trial.get_error() or _local_error(trial)).strip().splitlines()
        self._end(trial, FAILED, (error[-1] if error else "the trial raised an error")[:500])

    def _end(self, trial, state: str, reason: str) -> None:
        self.tracker.record({"event": "end", "tune_id": trial.trial_id, "config": trial.config, "state": state,
                             "reason": reason, "run_dir": trial.path})


def _local_error(trial) -> str:
    """The trial's error text where Tune wrote it first (get_error reads the storage path, which
    is synced later: empty while the callback runs)."""
    path = getattr(trial, TRIAL_ERROR_FILE, None)
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""
