"""The study's record in MLflow: the layout of its runs (runs), what a trial's run holds
(trial_run), and the delivery of the driver's events through a tracking server's outages
(delivery)."""
from importlib import import_module

# study folders started before study/ had rooms pickled the tracker and its callback as
# study.tracking.Tracker and study.tracking.TrackingCallback (tuner.pkl): found here, lazily
_PICKLED_BEFORE = {"Tracker": "study.tracking.runs", "TrackingCallback": "study.tracking.delivery"}


def __getattr__(name: str):
    if name in _PICKLED_BEFORE:
        return getattr(import_module(_PICKLED_BEFORE[name]), name)
    raise AttributeError(f"module 'study.tracking' has no attribute {name!r}")
