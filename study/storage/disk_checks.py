"""The disk a study writes to, checked before anything starts (watched while the study runs:
study/storage/disk_guard.py).

Before Ray starts (`check_locations`, from `loopstudy run` and `resume`): every local place the
study writes (the results folder; where they are local, the Ray storage path, the folders of a
sqlite:/// Optuna or MLflow file or of a journal:/// file, and MLflow's artifacts; and Ray's
session folder, /tmp/ray or $RAY_TMPDIR/ray, which Ray and Tune write too) is created if
missing, written to (a small probe file, written and removed: permission bits do not stop root,
a read-only filesystem or a path under a regular file does) and must have LOOPSTUDY_MIN_FREE_MB
free. A resume also checks that Tune's saved experiment state is whole (`check_tune_state`): from a state cut short
Tune logs an error and silently starts the experiment over. A refusal is one StudyError naming
the path and what is wrong; folders created only for the check are removed again.

MB here are 2**20 bytes, as `df -m` counts them.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import pickletools
from dataclasses import dataclass
from pathlib import Path

from analysis.library_internals import TUNE_STAGED_STATE, TUNE_STATE, TUNER_FILE

from ..errors import StudyError
from .stores import JOURNAL, SERVERS

MB = 2 ** 20
MIN_FREE_ENV = "LOOPSTUDY_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 100
RESERVE = 16 * MB              # kept on each filesystem while a driver runs, freed when it stops
RESERVE_FILE = ".loopstudy-reserve"
PROBE_FILE = ".loopstudy-write-check"


def min_free_bytes() -> int:
    """What a study keeps free on each filesystem it writes: LOOPSTUDY_MIN_FREE_MB (0: no check)."""
    text = os.environ.get(MIN_FREE_ENV, str(DEFAULT_MIN_FREE_MB))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise StudyError(f"{MIN_FREE_ENV}={text!r}: expected the MB a study keeps free on its disk "
                         f"(a number >= 0; 0 turns the check off; default {DEFAULT_MIN_FREE_MB})")
    return int(value * MB)


def shown_mb(size: float) -> str:
    return f"{size / MB:.1f}" if size < 10 * MB else f"{size / MB:.0f}"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on `path`'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True)
class Location:
    """A local folder the study writes: what it is, the setting that moves it, and whether a
    driver keeps its reserve there (not in Ray's folder, which every study on the machine shares)."""
    path: Path
    what: str
    setting: str
    reserve: bool = True


def ray_temp_dir() -> Path:
    """Where Ray keeps its sessions on this machine (logs; Tune stages its experiment state
    there before copying it to the storage path): as ray._common.utils finds it in Ray 2.60."""
    system = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(system) / "ray"


def locations(stores) -> list[Location]:
    """The local folders `stores` writes, each once; servers (PostgreSQL, an MLflow tracking
    server) are not local and not checked."""
    found = [Location(stores.root, "results folder", "--results")]
    if stores.storage.storage_path:
        found.append(Location(stores.ray, "Ray storage", "'storage.storage_path'"))
    else:
        found.append(Location(stores.ray, "results folder's Ray storage", "--results"))
    for uri, name, store in ((stores.optuna_shown, "optuna", "Optuna"), (stores.mlflow_shown, "mlflow", "MLflow")):
        for scheme in ("sqlite:///", JOURNAL):
            if uri.startswith(scheme):
                found.append(Location(Path(uri[len(scheme):]).parent, f"{store} store's folder",
                                      f"'storage.{name}'"))
    if not stores.mlflow_shown.startswith(SERVERS):          # a tracking server keeps its own
        found.append(Location(stores.artifacts, "MLflow artifacts folder", "--results"))
    found.append(Location(ray_temp_dir(), "Ray session folder", "RAY_TMPDIR", reserve=False))
    unique: dict[Path, Location] = {}
    for location in found:
        path = Path(os.path.abspath(location.path))
        unique.setdefault(path, Location(path, location.what, location.setting, location.reserve))
    return list(unique.values())


def reserved(location: Location) -> int:
    """Bytes of `location`'s filesystem a running driver holds in its reserve file there."""
    path = location.path / RESERVE_FILE
    if not location.reserve:
        return 0
    with contextlib.suppress(OSError):
        return path.stat().st_blocks * 512
    return 0



# ---------------------------------------------------------------- before anything starts

def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _create(location: Location, created: list[Path]) -> None:
    """Make `location.path` (and its missing parents, noted in `created`), or say why not."""
    path, missing = location.path, []
    existing = path
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise StudyError(f"{path}: cannot create the study's {location.what} there: {existing} is a "
                         f"file, not a directory; give another {location.setting}")
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            where = f" ({folder})" if folder != path else ""
            raise StudyError(f"{path}: cannot create the study's {location.what}: {_reason(exc)}{where}; "
                             f"give another {location.setting}") from None
        created.append(folder)


def _probe(location: Location) -> None:
    """Write and remove a small file in the folder, or say why it cannot be written."""
    probe = location.path / f"{PROBE_FILE}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"loopstudy\n")
        finally:
            os.close(fd)
    except OSError as exc:
        raise StudyError(f"{location.path}: the study's {location.what} is not writable: {_reason(exc)}; "
                         f"make it writable, or give another {location.setting}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def remove_created(created: list[Path]) -> None:
    """Remove the empty folders a check made (`created`, outermost first)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_locations(stores, resume: bool = False, experiments=()) -> list[Path]:
    """Refuse (StudyError, naming the path) a study whose local locations cannot be written or
    have less than LOOPSTUDY_MIN_FREE_MB free, or (on resume) whose Tune state in one of the
    `experiments` folders is damaged; folders created for the check are removed when it refuses,
    else returned (the caller removes them if it stops before the study starts)."""
    need = min_free_bytes()
    created: list[Path] = []
    try:
        devices = set()
        for location in locations(stores):
            if not location.path.is_dir():
                _create(location, created)
            _probe(location)
            st, device = os.statvfs(location.path), os.stat(location.path).st_dev
            if device in devices:
                continue
            devices.add(device)
            if st.f_files and not st.f_favail:
                raise StudyError(f"{location.path}: no free inodes left on its filesystem (the study's "
                                 f"{location.what}): remove files there, or give another {location.setting}")
            free = st.f_bavail * st.f_frsize + reserved(location)
            if free < need:
                fix = "then resume again" if resume else f"or give another {location.setting}"
                raise StudyError(f"{location.path}: only {shown_mb(free)} MB free on its filesystem (the study's "
                                 f"{location.what}), a study needs at least {shown_mb(need)} MB ({MIN_FREE_ENV}): "
                                 f"free space, {fix}")
    except StudyError:
        remove_created(created)
        raise
    for experiment in experiments if resume else ():
        check_tune_state(Path(experiment))
    return created


def _whole(path: Path, kind: str) -> bool:
    """Whether a JSON file parses, or a pickle's opcodes run to its STOP (nothing is loaded)."""
    try:
        data = path.read_bytes()
        if kind == "json":
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
        return bool(data)
    except (OSError, ValueError):
        return False


def check_tune_state(experiment: Path) -> None:
    """Refuse to resume from a Tune experiment state that was cut short (e.g. by a full disk
    during Tune's copy of it to the storage path, which overwrites the file in place): Tune's
    restore would log the error and start the experiment over, drawing new trials."""
    if not (experiment / TUNER_FILE).is_file():
        return
    for pattern, kind in TUNE_STATE.items():
        newest = max(experiment.glob(pattern), default=None)
        if newest is None or _whole(newest, kind):
            continue
        staged_in = [part.format(experiment=experiment.name) for part in TUNE_STAGED_STATE]
        staged = [Path(p) for p in glob.glob(os.path.join(ray_temp_dir(), *staged_in, newest.name))]
        copies = [p for p in staged if _whole(p, kind)]
        hint = (f"Ray's own copy {max(copies, key=lambda p: p.stat().st_mtime)} is whole: copy it over the "
                "damaged file, then resume again" if copies else
                "restore the folder from a backup, or run the study again in a new results folder")
        raise StudyError(f"{newest}: Tune's saved experiment state is damaged (cut short, e.g. by a full disk); "
                         f"Tune would start the study over from it, so it is not resumed: {hint}")
