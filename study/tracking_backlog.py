"""While the tracking server is away: the driver's trial events are kept, in order, in
`<results>/mlflow_backlog.jsonl` and sent when it answers again (or by `loopstudy sync NAME`).

Trials never wait for MLflow: Tune calls our callback on its event loop, and a request that
blocks there (MLflow's client retries a refused connection for about four minutes by default)
would stop every trial's reports. So the client retries little (study.QUIET_ENV: about 6 s), the
first request that finds the server away switches the tracker to the backlog, and the server is
probed again at most every PROBE_EVERY_S. Each event is appended and fsynced before the callback
returns, so a driver killed during the outage loses nothing: the next `resume` or `sync` sends it.
Sending is idempotent (study/tracking.py: runs are found by tag, steps already logged are
skipped, a closed run is left as it is), so an event sent twice is written once.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import requests
from mlflow.exceptions import RestException

from trainables.config import ConfigError

from .stores import redact

BACKLOG = "mlflow_backlog.jsonl"
PROBE_EVERY_S = 10.0
REST_FAILURE = "API request to "     # how MLflow's REST client begins a failed request's error (utils/rest_utils.py)
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
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
            return True
        seen = seen.__cause__ or seen.__context__
    answered = isinstance(error, RestException) or str(error).startswith(REST_FAILURE)
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
        lines = self.path.read_text().splitlines()
        events = []
        for number, line in enumerate(lines, 1):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number < len(lines):
                    raise ConfigError(f"{self.path}: line {number} is not JSON ({error}): fix or remove that "
                                      "line (each line is one trial event not yet in MLflow)") from None
        return events

    def keep(self, events: list[dict]) -> None:
        """Replace the backlog by `events` (those still not sent); none: remove the file."""
        if not events:
            self.path.unlink(missing_ok=True)
            return
        partial = self.path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
        os.replace(partial, self.path)


class TrackingUnavailable(ConfigError):
    """The tracking server did not answer when the driver could not go on without it; nothing
    was lost (the backlog and the run folders hold it). The CLI exits EXIT_CODE."""
    EXIT_CODE = 75          # EX_TEMPFAIL: try again later


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
