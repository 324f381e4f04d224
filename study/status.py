"""`loopstudy status NAME`: one row per Optuna trial (the search history) joined with its MLflow
run (the name people browse, the steps it trained), then one row per replicate run. Reads the
stores only; Ray need not run."""
from __future__ import annotations

import sys
from pathlib import Path

import optuna

from analysis import verdict
from analysis.sequential_answer import answer_lines
from analysis.layout import INTERRUPTED, NUMBER, REASON, RUNNING, TUNE_ID, fmt, params_text, table
from analysis.trials import NoRecord, StudyRecord, Trial, read_record

from .design import Phase
from .outcome import state_of
from .spec import StudySpec
from .storage.stores import Stores
from .storage.study_lock import StudyLock

HEADER = ["trial", "state", "params", "objective", "steps", "reason"]


def status_rows(spec: StudySpec, record: StudyRecord | None = None, unfinished: str = RUNNING) -> list[list[str]]:
    """Each search phase's Optuna trials (one phase per scientific point) joined with their
    runs, then the replicates: one read of MLflow (`record`, read here when not given) and one
    Optuna storage. A trial without an end is shown `unfinished` ("interrupted" once no driver
    holds the study)."""
    stores = Stores.of(spec)
    record = record or _record(stores)
    runs: dict[tuple[str, int], list[Trial]] = {}
    for run in record.trials if record else []:
        runs.setdefault((run.point, run.number), []).append(run)
    storage = stores.optuna_storage()
    rows = []
    for phase in spec.phases:
        try:
            study = optuna.load_study(study_name=phase.study_name(spec.name), storage=storage)
        except KeyError:
            continue            # this phase never asked for a trial
        for trial in study.get_trials(deepcopy=False):
            state = state_of(trial, unfinished)
            params = params_text({**phase.point, **trial.params})
            objective = ", ".join(fmt(v) for v in trial.values) if trial.values else "-"
            reason = trial.user_attrs.get(REASON, "")
            found = sorted(runs.get((phase.label, trial.number), []), key=lambda r: r.name)
            for run in found or [None]:
                name = run.name if run else f"t{trial.number:03d} {phase.label} (no run)".rstrip()
                # the run's reason names an error (the last line of its traceback), Optuna's only that it raised
                rows.append([name, state, params, objective, str(run.steps) if run else "-",
                             (run.reason if run else "") or reason])
    metric = spec.metrics[0]
    for run in sorted(record.every_replicate if record else [], key=lambda r: r.name):
        value = run.value(metric)
        state = unfinished if run.state == RUNNING else run.state
        rows.append([run.name, f"replicate {state}", params_text(run.sampled),
                     fmt(value) if value is not None else "-", str(run.steps), run.reason])
    return rows


def _record(stores: Stores) -> StudyRecord | None:
    """The study read back from MLflow; None before its parent run exists."""
    try:
        return read_record(stores)
    except NoRecord:
        return None


def format_status(spec: StudySpec, record: StudyRecord | None = None) -> str:
    """The trials' table; a study with a question ends with its sequential answer so far."""
    record = record or _record(Stores.of(spec))
    holder = StudyLock(spec.results_dir, spec.name).holder()
    rows = status_rows(spec, record, RUNNING if holder else INTERRUPTED)
    if not rows:
        return f"study '{spec.name}': no trials yet"
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    head = f"study '{spec.name}' ({spec.results_dir}): " + ", ".join(f"{v} {k}" for k, v in counts.items())
    return "\n".join([head, table(rows, HEADER), *_driver_lines(spec, holder, counts),
                      *(answer_lines(record) if record else [])])


def _driver_lines(spec: StudySpec, holder: str | None, counts: dict[str, int]) -> list[str]:
    """Who drives the study; one whose driver stopped mid-trial says what continues it."""
    if holder:
        return [f"driven by {holder}"]
    stopped = sum(n for state, n in counts.items() if state.endswith(INTERRUPTED))
    if not stopped:
        return []
    return [f"no driver holds this study's lock: its {stopped} interrupted trials stopped with their "
            f"driver; continue them with `{loopstudy_command()} resume {spec.results_dir}`"]


def best_summary(spec: StudySpec, record=None) -> str:
    """The study's answer (analysis/verdict.py: the search best on its one seed, each compared
    value over its seeds, the comparisons, and the guards that forbid naming a winner), or the
    Pareto set of a multi-objective study; then how to browse the study."""
    stores = Stores.of(spec)
    record = record or read_record(stores)
    if len(spec.objectives) > 1:
        lines = _pareto_lines(spec, stores)
    else:
        lines = verdict.answer(record).lines()
        best = record.ranked()[0] if record.ranked() else None
        if best:
            phase = Phase(best.point, {})
            run_dir = stores.experiment_of(phase.experiment_name(spec.name)) / best.tags[TUNE_ID]
            lines.insert(1, f"    config: {run_dir / 'config.yaml'}")
    lines.append(f"browse it: {loopstudy_command()} ui {spec.results_dir}   (Optuna: add --optuna)")
    return "\n".join(lines)


def loopstudy_command() -> str:
    """How to call loopstudy from a new shell: this checkout's .venv/bin/loopstudy when that is
    what runs (make demo, make test), else `loopstudy` (installed on PATH)."""
    venv = Path.cwd() / ".venv"
    if Path(sys.prefix).resolve() == venv.resolve() and (venv / "bin" / "loopstudy").exists():
        return ".venv/bin/loopstudy"
    return "loopstudy"


def _pareto_lines(spec: StudySpec, stores: Stores) -> list[str]:
    study = stores.optuna_study()
    if not [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]:
        return ["no trial completed"]
    from .tracking import Tracker       # Ray Tune comes with it: not for `status`

    names = {int(r.data.tags[NUMBER]): r for r in Tracker(stores).children()}
    lines = ["Pareto set (search, one seed each):"]
    for trial in study.best_trials:
        run = names.get(trial.number)
        values = ", ".join(f"{o.metric}={fmt(v)}" for o, v in zip(spec.objectives, trial.values))
        lines.append(f"  {run.info.run_name if run else f't{trial.number:03d}'}: {values}")
    return lines
