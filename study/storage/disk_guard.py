"""The disk a running study writes to, watched (checked before the start: disk_checks.py).

While a driver runs (`guarded`, around its work) it keeps RESERVE (16 MB) of each of those
filesystems in a file of its own (`.loopstudy-reserve`), freed the moment it stops, so that Tune's
last state snapshot and the driver's last writes fit even when the disk filled up. At each trial
result (`DiskGuard`, a Tune Stopper: it sees every result before the scheduler, the searcher and
the callbacks) the free space of those filesystems, the reserve counted as free (statvfs:
microseconds), is compared with what the study keeps free: max(LOOPSTUDY_MIN_FREE_MB, the largest
finished trial's folder x the trials running at once). Below it the study stops the way Ctrl-C
stops it (Tune saves its state, `fit()` returns, the runner reports the study interrupted) and
one line says where, how much is free and the fix (`free space on X, then loopstudy resume X`).
LOOPSTUDY_MIN_FREE_MB=0 turns the free-space checks off (not the handling of a full disk below).

A disk that fills up anyway (the checks off, or filled faster than trials report):
- on a worker (`stops_on_full_disk`, around the trainable): a write of the trial's run folder or
  of Tune's checkpoint copy fails with ENOSPC. That is not the configuration's fault: the trial
  reports `disk_full` instead of raising, the driver's guard stops the study as above, and on
  resume the trial continues from its last checkpoint (it is never told to Optuna or MLflow as
  failed). Any error of a trial while its filesystem has under 1 MB left counts as disk full.
- in the driver (an Optuna or MLflow SQLite write, "database or disk is full"; an MLflow
  artifact copy): the error ends Tune's loop without a last state snapshot; `guarded` turns it
  into one StudyError line (`loopstudy: error: disk full ...`, exit 2) instead of a traceback,
  and the study resumes from Tune's last periodic snapshot, as after a killed driver.

MB here are 2**20 bytes, as `df -m` counts them.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from pathlib import Path

from ray.tune import Stopper

from analysis.library_internals import TUNE_INTERRUPT_HANDLER

from ..errors import StudyError, causes
from .disk_checks import (MB, MIN_FREE_ENV, RESERVE, RESERVE_FILE, Location, free_bytes, locations, min_free_bytes,
                          reserved, shown_mb)

NEARLY_FULL = 1 * MB           # a trial's error with less than this left on its disk: disk full
DISK_FULL = "disk_full"        # the key of the report a trial makes instead of failing
WAIT_FOR_STOP_S = 120          # how long such a trial waits for the driver to stop the study
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def _says_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS or any(t in str(exc).lower() for t in FULL_TEXTS)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` or an exception it was raised from says the disk (or quota) is full."""
    return any(map(_says_full, causes(exc)))


def _describe(exc: BaseException) -> str:
    """One line: the innermost disk-full error of the chain, else `exc`."""
    found = [e for e in causes(exc) if _says_full(e)]
    found = found[-1] if found else exc
    return " ".join(f"{type(found).__name__}: {found}".split())[:300]


def _keep_reserve(location: Location) -> Path | None:
    """RESERVE bytes allocated in `location` (where at least twice that is free), or None."""
    path = location.path / RESERVE_FILE
    if not location.reserve:
        return None
    try:
        if reserved(location) >= RESERVE:
            return path
        if free_bytes(location.path) < 2 * RESERVE:
            return None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, RESERVE)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                block = b"\0" * MB                  # a filesystem without fallocate: written out
                for _ in range(RESERVE // MB):
                    os.write(fd, block)
        finally:
            os.close(fd)
        return path
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        return None


class _Watch:
    """The driver's watch over the study's filesystems (one per driver process, see `guarded`)."""

    def __init__(self, stores, concurrency: int, resume_command: str):
        self.locations, devices = [], set()
        for location in locations(stores):
            with contextlib.suppress(OSError):
                device = os.stat(location.path).st_dev
                if device not in devices:
                    devices.add(device)
                    self.locations.append(location)
        self.floor = min_free_bytes()
        self.reserves = [p for p in map(_keep_reserve, self.locations) if p]
        self.concurrency = max(1, concurrency)
        self.resume_command = resume_command
        self.largest_trial = 0                  # bytes of the largest finished trial's folder
        self.last_step: dict[str, int] = {}     # Tune trial id -> its last reported step
        self.stopped: str | None = None         # the line printed when it stopped the study

    def release(self) -> None:
        """Free the reserve: the room for the last writes after a stop."""
        for path in self.reserves:
            with contextlib.suppress(OSError):
                path.unlink()
        self.reserves = []

    def need(self) -> int:
        return max(self.floor, self.concurrency * self.largest_trial) if self.floor else 0

    def fullest(self) -> tuple[Location, int]:
        """The watched location with the least free space (its reserve counted), and that space."""
        spaces = []
        for location in self.locations:
            with contextlib.suppress(OSError):
                spaces.append((free_bytes(location.path) + reserved(location), location))
        free, location = min(spaces, key=lambda s: s[0], default=(0, self.locations[0]))
        return location, free

    def on_result(self, trial_id: str, result: dict) -> None:
        if self.stopped:
            return
        if DISK_FULL in result:
            # a trial's report of a full disk: shown and logged at the trial's last real step
            result["step"] = self.last_step.get(trial_id, 0)
            location, _ = self.fullest()
            self.stop(f"disk full: {result[DISK_FULL]} ({_trial_label(result)}): stopping the study; "
                      f"free space on {location.path}, then `{self.resume_command}`")
            return
        if "step" in result:
            self.last_step[trial_id] = result["step"]
        if result.get("done"):
            self.largest_trial = max(self.largest_trial, _folder_size(result, trial_id))
        need = self.need()
        if not need:
            return
        location, free = self.fullest()
        if free < need:
            self.stop(f"disk space: only {shown_mb(free)} MB free on {location.path} (the study's {location.what}), "
                      f"below the {shown_mb(need)} MB a study keeps free ({MIN_FREE_ENV}): stopping the study; "
                      f"free space on {location.path}, then `{self.resume_command}`")

    def stop(self, line: str) -> None:
        """Print `line`, free the reserve and end Tune's loop the way SIGINT does (its state is
        saved, fit() returns)."""
        self.stopped = line
        self.release()
        print(line, flush=True)
        handler = signal.getsignal(signal.SIGUSR1)
        if getattr(handler, "__name__", "") != TUNE_INTERRUPT_HANDLER:
            # Tune catches signals only when it runs in the main thread; without its handler the
            # loop can only be left by an error (no last state snapshot: resume as after a crash)
            raise StudyError(f"{line} (Tune's stop handler is not installed: stopped without saving "
                             "Tune's last state)")
        handler(signal.SIGUSR1, None)     # its "Stop signal received" line: study.quiet_libraries


def _trial_label(result: dict) -> str:
    config = result.get("config") or {}
    return f"trial t{config['trial']:03d}" if isinstance(config.get("trial"), int) else "a trial"


def _folder_size(result: dict, trial_id: str) -> int:
    """Bytes in a finished trial's folder (<run_root>/<trial id>: run folder and Tune's files)."""
    root = (result.get("config") or {}).get("run_root")
    total = 0
    if root:
        for folder, _, names in os.walk(Path(root) / trial_id):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


_WATCH: _Watch | None = None


class DiskGuard(Stopper):
    """Tune's stopper for the study (RunConfig(stop=...)): it never stops a trial itself, it
    hands every result to this driver's watch (`guarded`), before the scheduler, the searcher
    and the callbacks see it. Stateless, so the copy pickled in tuner.pkl works on resume."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        if _WATCH is not None:
            _WATCH.on_result(trial_id, result)
        return False

    def stop_all(self) -> bool:
        return False


@contextlib.contextmanager
def guarded(stores, concurrency: int, resume_command: str):
    """Watch the study's disks while the block runs (keeping the reserve); a disk-full error
    raised in it (a driver write) becomes one StudyError line with the fix. Yields the watch
    (`.stopped`: the line printed when it stopped the study, else None)."""
    global _WATCH
    _WATCH = watch = _Watch(stores, concurrency, resume_command)
    try:
        yield watch
    except Exception as exc:
        if isinstance(exc, StudyError) or not is_disk_full(exc):
            raise
        watch.release()
        location, free = watch.fullest()
        raise StudyError(f"disk full: {_describe(exc)}: the driver stopped ({shown_mb(free)} MB free on "
                         f"{location.path}); free space there, then `{resume_command}`") from None
    finally:
        _WATCH = None
        watch.release()


# ---------------------------------------------------------------- on the worker

def stops_on_full_disk(trainable):
    """A Tune function trainable that, when its disk is full, reports `disk_full` instead of
    failing (the driver's guard then stops the study; resume continues the trial from its last
    checkpoint), and waits for the driver to end it. Any other error is raised as before."""
    @functools.wraps(trainable)
    def guarded_trainable(tune_config: dict) -> None:
        try:
            trainable(tune_config)
        except Exception as exc:
            try:
                nearly_full = free_bytes(Path(tune_config["run_root"])) < NEARLY_FULL
            except (OSError, KeyError):
                nearly_full = False
            if not (is_disk_full(exc) or nearly_full):
                raise
            import ray.tune

            ray.tune.report({DISK_FULL: _describe(exc), "step": -1})
            time.sleep(WAIT_FOR_STOP_S)     # the driver stops the study (and this actor) meanwhile
            raise

    return guarded_trainable
