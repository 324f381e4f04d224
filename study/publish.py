"""`loopstudy report` and `loopstudy export`: analysis reads the stores; this module is where
the report lands back in MLflow (study is the only MLflow writer) and configs land on disk."""
from __future__ import annotations

from pathlib import Path

import yaml

from analysis.export import scale_full, to_reference
from analysis.report import write_report
from analysis.verdict import answer, ranked_for_export
from analysis.trials import read_record

from .spec import BASE, StudySpec
from .errors import StudyError
from .storage.stores import Stores
from .tracking.runs import Tracker

FORMATS = ("loopstudy", "reference")


def report(spec: StudySpec, out: Path | None = None, record=None) -> Path:
    """Writes report.md and its figures (default: <results>/report/), logs them as artifacts of
    the study's parent run, under `report/`, and tags the parent run with the answer."""
    stores = Stores.of(spec)
    out = Path(out) if out else stores.root / "report"
    record = record or read_record(stores)
    data = write_report(record, spec.space.params, str(stores.study_file), out)
    tracker = Tracker(stores)
    tracker.client.log_artifacts(tracker.parent_id(), str(out), "report")
    tracker.tag_parent(*data["answer"].parent_tags())       # the parent run states the same answer
    return out / "report.md"


def export(spec: StudySpec, top: int = 1, fmt: str = "loopstudy", scale: str | None = None,
           out: Path | None = None) -> list[Path]:
    """YAML configs of the `top` best completed trials, one file each (ranked by replicate mean
    where the study ran replicates); each file's header says what it was compared on and, when
    the study's answer names no winner (analysis/verdict.py), why."""
    if fmt not in FORMATS:
        raise StudyError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if scale not in (None, "full"):
        raise StudyError(f"--scale must be 'full', got '{scale}'")
    stores = Stores.of(spec)
    record = read_record(stores)
    ranked = ranked_for_export(record)
    if not ranked:
        raise StudyError(f"study '{spec.name}' has no completed trial to export")
    out = Path(out) if out else stores.root / "export"
    fixed = {name: p.value for name, p in spec.space.params.items() if p.kind == "fixed"}
    problems = "".join(f"# no winner named: {p}\n" for p in answer(record).problems)
    files = {}                   # every file is built (and may be refused) before any is written
    for rank, (trial, group) in enumerate(ranked[:top], 1):
        sampled = {k: v for k, v in trial.sampled.items() if k != BASE}
        config = scale_full(trial.sampled.get(BASE, spec.bases[0]), {**fixed, **sampled}) if scale else trial.config
        label = "_".join([trial.name.split()[0], *trial.point.split()]) + ("_full" if scale else "")
        judged = (f"# {spec.name} rank {rank}: {trial.name}; "
                  + ", ".join(f"{m}={trial.value(m):.4g}" for m, _ in record.objectives if trial.value(m) is not None)
                  + (f" (search, one seed); replicate mean {group.mean:.4g} over {len(group.values)} fresh "
                     "seeds" if group else " (search, one seed)") + f"\n{problems}")
        if fmt == "reference":      # YAML comments: the reference's loader skips them
            text = judged + yaml.safe_dump(to_reference(config, out_dir=f"./results/{spec.name}_{label}"),
                                           sort_keys=False)
        else:
            text = judged + f"# rerun: loopstudy train {out / (label + '.yaml')}\n" + config.to_yaml()
        files[out / f"{label}{'_reference' if fmt == 'reference' else ''}.yaml"] = text
    out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
