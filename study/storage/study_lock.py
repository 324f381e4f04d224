"""One driver per study: `StudyLock(folder)` holds an exclusive lock on `<folder>/study.lock`
while a `loopstudy run` or `resume` drives the study, and a second driver is refused with who
holds it:

    study 'X' is running: held by pid 1234 on host h (user u) since 2026-12-02 00:41:07
    (lock file /path/study.lock); wait for it or stop it

The lock is `fcntl.flock` on the open file, so the kernel drops it when the holder's process
ends, however it ends: a driver killed with SIGKILL leaves no stale lock to clean up. The file
itself stays; while held it names the holder (pid, host, user, start time, command).

Shared filesystems. flock is only as good as the filesystem's locking across machines, which
is not guaranteed: on NFS, Linux turns flock into a byte-range lock that the server arbitrates
(NFSv4, or v3 with lockd), but a mount with `nolock` or `local_lock=flock|all` keeps locks on
one client; Lustre shares them only when mounted with `-o flock` (`localflock` keeps them on one
client); FUSE mounts of buckets (mountpoint-s3, gcsfuse) share none. Where locks are per client,
two drivers on two machines both get the lock. For cluster users that means: start every driver
of a study on one machine. `loopstudy submit` and `resume --address` do, since a Ray Job's driver
runs on the head node; a `loopstudy run`/`resume` typed on another machine against the same
shared folder is excluded only where the filesystem shares locks.
"""
from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ..errors import StudyError

LOCK_FILE = "study.lock"


def _holder() -> dict:
    """Who this process is, as the lock file records it."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": getpass.getuser(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": shlex.join(sys.orig_argv)}


def _describe(recorded: bytes) -> str:
    try:
        h = json.loads(recorded)
        return f"pid {h['pid']} on host {h['host']} (user {h['user']}) since {h['since']}"
    except (ValueError, KeyError, TypeError):       # the holder has not written itself yet
        return "a process that has not recorded itself yet"


class StudyLock:
    """`with StudyLock(results_folder, name):` the study is this process's until the block ends
    (or the process does). The folder is created if missing: a folder nobody has locked yet."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.path = Path(folder) / LOCK_FILE
        self.name = name or Path(folder).name
        self._fd: int | None = None

    def __enter__(self) -> "StudyLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)     # not inherited by what we exec
        except OSError as exc:
            raise StudyError(f"{self.path}: cannot create the study's lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            recorded = os.pread(fd, 4096, 0)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise self._running(_describe(recorded)) from None
            raise StudyError(f"{self.path}: cannot lock the study ({exc.strerror}): the filesystem "
                             "does not support file locks (see study/storage/study_lock.py)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _running(self, holder: str) -> StudyError:
        return StudyError(f"study '{self.name}' is running: held by {holder} "
                          f"(lock file {self.path}); wait for it or stop it")

    def holder(self) -> str | None:
        """Who holds the study now ("pid 1234 on host h (user u) since ..."), or None when no
        driver does; nothing is taken or written."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None             # no lock file: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)      # conflicts only with a holder's exclusive lock
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _describe(os.pread(fd, 4096, 0))
        finally:
            os.close(fd)
        return None

    def refuse_if_held(self) -> None:
        """Refuse at once when another driver holds the study, before checks that read its files
        (a running driver writes them) and before this driver takes the lock itself; a missing or
        free lock passes (the checks after this name the folder)."""
        held = self.holder()
        if held:
            raise self._running(held)

    def __exit__(self, *exc_info) -> None:
        os.ftruncate(self._fd, 0)          # no holder any more
        os.close(self._fd)                 # closing releases the lock
        self._fd = None
