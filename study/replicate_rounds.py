"""The replicate rounds of a study that declares a `question` (analysis/sequential_plan.py).

After the nuisance searches, each scientific value's chosen config trains on fresh seeds that
every value shares, round by round: round 1 gives every value the first `question.seeds.start`
seeds (study/replicate_plan.py: above every seed the search used); after each round the
completed replicate runs are read back from MLflow and judged (analysis/sequential_answer.py);
the next round gives seeds only to the values whose comparison is still open, and to the
reference, up to the paired seeds their next look wants. The rounds stop when every comparison
is answered, when the seed budget is spent, or when `question.time_limit_s` has passed (checked
between rounds: the open comparisons end unresolved).

Horizons (question.horizon: start, doubled, max): after a round whose replicates are still
improving (analysis/verdict.py: some value's objective fell by more than FALLING over the last
evaluation interval), a study with a longer horizon left continues every completed replicate run
from its last checkpoint to the next horizon in an extension round (the same seeds, each run's
folder copied and trained on: trainables/ray_adapter.py) instead of buying seeds where every
curve still falls; the shorter horizon's open comparisons end unresolved there. The longer
horizon is judged afresh, its rounds adding seeds (trained from the start) while a comparison is
open and nothing still improves. Each horizon is stated on its own ("at 1500 steps: ...; at 3000
steps: ..."), so an effect on how fast the values learn is told from one on where they end. Compared at equal compute, each value's steps
grow in proportion. The time limit ends the study without a longer horizon.

Each round is its own Tune experiment (ray/NAME-replicates-rK) and is written to
<results>/replicate_rounds.yaml before it starts. A driver killed between rounds or mid-round
resumes where it stopped: a finished round is not run again, an interrupted one is restored
from Tune's state (started again when Tune had saved none yet), and the next round is planned
from the completed runs in MLflow, so the same seeds are chosen and each completes once. A
replicate run lost with a killed driver (begun after Tune's last save, so Tune trains its seed
again in a new run) ends `failed` with a `lost` reason once its round has finished.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import yaml

from analysis.layout import (BUDGET_SPENT, COMPLETED, CONFIG_HASH, CONTINUED_FROM, FAILED, QUESTION, REPLICATE,
                             RUNNING, TUNE_ID, config_hash)
from analysis.library_internals import TUNE_EXPERIMENT_STATE
from analysis.sequential import Judgement
from analysis.sequential_answer import (answer_lines, answer_tags, horizon_of, judgement_of, judgements_of,
                                        look_sentence, paired_differences, question_of, question_tag)
from analysis.trials import StudyRecord, read_record
from analysis.verdict import FALLING, improvement

from .replicate_plan import make_plan, reseeded
from .spec import resolved
from .storage.stores import Stores

ROUNDS_FILE = "replicate_rounds.yaml"
LOST = "lost: its driver was killed before Tune saved the trial; its seed trained again in a new run"

# fit(plan, experiment folder, resume) -> (finished, wall seconds, the trials' own seconds)
Fit = Callable[[list, Path, bool], tuple]


def round_experiment(stores: Stores, number: int) -> Path:
    """Ray's experiment folder of replicate round `number` (1, 2, ...)."""
    return stores.experiment_of(f"{stores.name}-replicates-r{number}")


def read_rounds(stores: Stores) -> list[dict]:
    """The rounds planned so far, each {"plan": trials, "done": bool, "wall_s": seconds}."""
    path = stores.root / ROUNDS_FILE
    return yaml.safe_load(path.read_text()) if path.is_file() else []


def _write_rounds(stores: Stores, rounds: list[dict]) -> None:
    """Written whole, then renamed: a driver killed while writing leaves the previous rounds."""
    path = stores.root / ROUNDS_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(yaml.safe_dump(rounds, sort_keys=False))
    os.replace(partial, path)


def round_horizon(round_: dict, question) -> int:
    """The horizon a round trains to (a rounds file from before horizons: the first)."""
    return round_.get("horizon") or question.horizon.start


def at_horizon(trial: dict, horizon: int, ladder: tuple[int, ...]) -> dict:
    """A plan's trial trained to `horizon` of the `ladder` instead of its own: its steps in
    proportion (compared at equal compute, each value has its own), tagged with the horizon."""
    steps = trial["config"]["training"]["train_steps"] * horizon // trial.get("horizon", ladder[0])
    config = resolved(trial["config"], {"training.train_steps": steps})
    kept = {k: v for k, v in trial.items() if k not in ("continue_from", CONTINUED_FROM)}
    return {**kept, "config": config, CONFIG_HASH: config_hash(config), "horizon": horizon,
            "horizon_index": ladder.index(horizon)}


def planned_seeds(rounds: list[dict]) -> dict[str, list[int]]:
    """Each scientific point's seeds over every planned round, in order."""
    seeds: dict[str, list[int]] = {}
    for trial in (t for r in rounds for t in r["plan"]):
        seeds.setdefault(trial["scientific"], []).append(trial["config"]["training"]["seed"])
    return {point: sorted(found) for point, found in seeds.items()}


def next_plan(rounds: list[dict], judgement: Judgement, differences: dict[str, list[float]],
              reference: str, most: int, question) -> list[dict] | None:
    """The next round's trials at the last round's horizon: each open comparison's value gets as
    many more seeds as its next look lacks paired seeds, the next ones of the shared sequence
    after those it has at this horizon; the reference gets those it lacks. None when a value
    would pass `most` seeds (the budget is spent: a failed replicate uses up its seed)."""
    ladder, horizon = question.horizon.ladder(), round_horizon(rounds[-1], question)
    template = {t["scientific"]: at_horizon(t, horizon, ladder) for t in rounds[0]["plan"] if t["repeat"] == 0}
    first_seed = template[reference]["config"]["training"]["seed"]
    planned = planned_seeds([r for r in rounds if round_horizon(r, question) == horizon])
    given: dict[str, list[int]] = {}
    for name, wanted in judgement.wanted.items():
        have, lacking = planned.get(name, []), wanted - len(differences[name])
        if len(have) + lacking > most:
            return None
        after = max(have, default=first_seed - 1) + 1
        given[name] = list(range(after, after + lacking))
    given[reference] = sorted({s for seeds in given.values() for s in seeds} - set(planned.get(reference, [])))
    return [reseeded(template[point], seed, seed - first_seed) for point in template
            for seed in given.get(point, [])]


def extension_plan(stores: Stores, record: StudyRecord, rounds: list[dict], question, horizon: int) -> list[dict]:
    """Every replicate run completed at the last round's horizon, continued to `horizon` from its
    run folder (the same config but the steps, the same seed)."""
    shorter = round_horizon(rounds[-1], question)
    trials = {(t["scientific"], t["config"]["training"]["seed"]): {"horizon": shorter, **t}
              for r in rounds for t in r["plan"] if round_horizon(r, question) == shorter}
    plan = []
    for run in sorted(record.every_replicate, key=lambda r: (r.point, r.seed)):
        if run.state == COMPLETED and horizon_of(run, question) == shorter:
            trial = at_horizon(trials[run.point, run.seed], horizon, question.horizon.ladder())
            plan.append({**trial, "continue_from": str(_run_folder(stores, len(rounds), run.tags[TUNE_ID])),
                         CONTINUED_FROM: run.name})
    return plan


def _run_folder(stores: Stores, rounds: int, tune_id: str) -> Path:
    """The run folder of a replicate trial (run folders lie in their round's Tune experiment)."""
    for number in range(rounds, 0, -1):
        folder = round_experiment(stores, number) / tune_id
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"no run folder of replicate trial {tune_id} in {stores.ray} (rounds 1-{rounds})")


def next_horizon(question, horizon: int) -> int | None:
    ladder = question.horizon.ladder()
    return ladder[ladder.index(horizon) + 1] if horizon in ladder and horizon != ladder[-1] else None


def still_improving(record: StudyRecord, horizon: int) -> dict[str, float]:
    """The values whose completed replicate runs at `horizon` were still improving at its end:
    point -> their mean relative improvement over the last evaluation interval."""
    question, found = question_of(record), {}
    for point in record.points:
        runs = [r for r in record.every_replicate
                if r.point == point and r.state == COMPLETED and horizon_of(r, question) == horizon]
        change = improvement(record, runs) if runs else None
        if change is not None and change[0] > FALLING:
            found[point] = change[0]
    return found


def _describe(plan: list[dict], number: int) -> str:
    seeds = planned_seeds([{"plan": plan}])
    shown = "; ".join(f"{point} on seeds {', '.join(map(str, s))}" for point, s in seeds.items())
    continued = (f", continued to {plan[0]['horizon']} steps from their runs of the shorter horizon"
                 if plan and "continue_from" in plan[0] else "")
    return f"replicates round {number}: {shown} ({len(plan)} trials{continued}, no early stopping)"


def _close_lost(tracker) -> None:
    """Replicate runs still open once a round has finished were lost with a killed driver."""
    for run in tracker.children(REPLICATE):
        if run.info.status == RUNNING.upper():
            print(f"{run.info.run_name}: {FAILED}: {LOST}", flush=True)
            tracker.end_child(run.info.run_id, FAILED, LOST)


def run_rounds(spec, stores: Stores, tracker, fit: Fit) -> tuple[bool, float, float]:
    """Run (or resume) the rounds until the question is answered at every horizon it goes to or
    the budget is spent; returns (finished, wall seconds, the trials' own seconds) of the rounds
    this call ran."""
    question, reference = spec.question, spec.phases[0].label
    ladder = question.horizon.ladder()
    tracker.tag_parent({QUESTION: question_tag(question)})
    rounds, wall, trials_s = read_rounds(stores), 0.0, 0.0
    if not rounds:
        plan = [at_horizon(t, ladder[0], ladder) for t in make_plan(spec, stores, question.seeds.start)]
        rounds = [{"plan": plan, "done": False, "wall_s": 0.0, "horizon": ladder[0]}]
        _write_rounds(stores, rounds)
    while True:
        number, current = len(rounds), rounds[-1]
        if not current["done"]:
            print(_describe(current["plan"], number), flush=True)
            experiment = round_experiment(stores, number)
            # Tune restores from its experiment state; a driver killed before Tune first saved one
            # started nothing Tune knows of: the round starts again (a run it began ends lost)
            resume = any(experiment.glob(TUNE_EXPERIMENT_STATE))
            finished, round_wall, round_trials_s = fit(current["plan"], experiment, resume)
            wall, trials_s = wall + round_wall, trials_s + round_trials_s
            current["wall_s"] += round_wall
            current["done"] = finished
            _write_rounds(stores, rounds)
            if not finished:
                return False, wall, trials_s
            _close_lost(tracker)
        plan, wanted, longer, improving, record, judgements = _judge_round(spec, stores, tracker, rounds)
        if improving:
            print(f"horizon {round_horizon(current, question)} steps: still improving over the last evaluation "
                  "interval (" + ", ".join(f"{p} by {c:.1%}" for p, c in improving.items())
                  + f"): every completed replicate continues to {longer} steps", flush=True)
            rounds.append({"plan": extension_plan(stores, record, rounds, question, longer), "done": False,
                           "wall_s": 0.0, "horizon": longer})
            _write_rounds(stores, rounds)
            tracker.tag_parent({BUDGET_SPENT: "false"})      # the new horizon has its own budget of looks
        elif plan is not None:
            rounds.append({"plan": plan, "done": False, "wall_s": 0.0, "horizon": round_horizon(current, question)})
            _write_rounds(stores, rounds)       # then a driver killed now resumes with the next round
            print(f"round {number}: open: " + ", ".join(f"{c} vs {reference} wants {n} paired seeds"
                                                      for c, n in wanted.items()), flush=True)
        else:
            if longer:
                print(f"horizon {round_horizon(current, question)} steps: no value's replicates still improving "
                      f"by more than {FALLING:.0%} over their last evaluation interval: no longer horizon is needed",
                      flush=True)
            print("\n".join(answer_lines(record, judgements)), flush=True)
            return True, wall, trials_s


def _judge_round(spec, stores: Stores, tracker, rounds: list[dict]):
    """Judge the replicates of the last round's horizon: print each comparison's look, log it to
    the parent run (its metrics at step = the round, once). Values still improving with a longer
    horizon left (and time) end this horizon: its open comparisons are unresolved here, and the
    replicates go on to the longer one rather than buy seeds where every curve still falls.
    Returns (the next round's trials at this horizon, or None when it is answered, its budget
    spent or the study goes on to `longer`; the paired seeds each open comparison wants; the
    next horizon or None; the values still improving -> by how much, when the study goes on to
    it; the record judged; each horizon's judgement)."""
    question, reference, number = spec.question, spec.phases[0].label, len(rounds)
    horizon = round_horizon(rounds[-1], question)
    tracker.children(REPLICATE)                 # waits for a tracking server that is away
    record = read_record(stores)
    out_of_time = question.time_limit_s is not None and sum(r["wall_s"] for r in rounds) >= question.time_limit_s
    if out_of_time:
        print(f"replicates: question.time_limit_s={question.time_limit_s:g} s has passed", flush=True)
    longer = None if out_of_time else next_horizon(question, horizon)
    improving = still_improving(record, horizon) if longer else {}
    spent = out_of_time or bool(improving)
    judgement = judgement_of(record, budget_spent=spent, horizon=horizon)
    plan = None if judgement.stop else next_plan(rounds, judgement, paired_differences(record, horizon),
                                                 reference, question.seeds.max, question)
    if plan is None and not judgement.stop:
        print(f"replicates: the seed budget is spent (question.seeds.max={question.seeds.max}, failed "
              "replicates included)", flush=True)
        spent, judgement = True, judgement_of(record, budget_spent=True, horizon=horizon)
    at = f" at {horizon} steps" if len(question.horizon.ladder()) > 1 else ""
    for point in record.points[1:]:
        if point in judgement.latest:
            print(f"round {number}{at}: {look_sentence(judgement.latest[point], reference, question)}", flush=True)
    judgements = {**judgements_of(record), horizon: judgement}
    tags, metrics = answer_tags(record, judgements)
    tracker.tag_parent({**tags, BUDGET_SPENT: str(spent).lower(), "rounds": str(number)},
                       None if rounds[-1].get("judged") else metrics, step=number)
    rounds[-1]["judged"] = True                 # written with the next round's plan, or below
    if plan is None and not improving:
        _write_rounds(stores, rounds)
    return plan, judgement.wanted, longer, improving, record, judgements
