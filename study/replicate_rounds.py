"""The replicate rounds of a study that declares a `question` (analysis/sequential_plan.py).

After the nuisance searches, each scientific value's chosen config trains on fresh seeds that
every value shares, round by round: round 1 gives every value the first `question.seeds.start`
seeds (study/replicate_plan.py: above every seed the search used); after each round the
completed replicate runs are read back from MLflow and judged (analysis/sequential_answer.py);
the next round gives seeds only to the values whose comparison is still open, and to the
reference, up to the paired seeds their next look wants. The rounds stop when every comparison
is answered, when the seed budget is spent, or when `question.time_limit_s` has passed (checked
between rounds: the open comparisons end unresolved).

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

from analysis.layout import BUDGET_SPENT, FAILED, QUESTION, REPLICATE, RUNNING
from analysis.library_internals import TUNE_EXPERIMENT_STATE
from analysis.sequential import Judgement
from analysis.sequential_answer import (answer_lines, answer_tags, judgement_of, look_sentence,
                                        paired_differences, question_tag)
from analysis.trials import read_record

from .replicate_plan import make_plan, reseeded
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


def planned_seeds(rounds: list[dict]) -> dict[str, list[int]]:
    """Each scientific point's seeds over every planned round, in order."""
    seeds: dict[str, list[int]] = {}
    for trial in (t for r in rounds for t in r["plan"]):
        seeds.setdefault(trial["scientific"], []).append(trial["config"]["training"]["seed"])
    return {point: sorted(found) for point, found in seeds.items()}


def next_plan(rounds: list[dict], judgement: Judgement, differences: dict[str, list[float]],
              reference: str, most: int) -> list[dict] | None:
    """The next round's trials: each open comparison's value gets as many more seeds as its next
    look lacks paired seeds, the next ones of the shared sequence (a value's seeds are always its
    first ones); the reference gets those it lacks. None when a value would pass `most` seeds (the
    budget is spent: a failed replicate uses up its seed)."""
    template = {t["scientific"]: t for t in rounds[0]["plan"] if t["repeat"] == 0}
    first_seed = template[reference]["config"]["training"]["seed"]
    planned = planned_seeds(rounds)
    given: dict[str, list[int]] = {}
    for name, wanted in judgement.wanted.items():
        have, lacking = len(planned[name]), wanted - len(differences[name])
        if have + lacking > most:
            return None
        given[name] = [first_seed + i for i in range(have, have + lacking)]
    given[reference] = sorted({s for seeds in given.values() for s in seeds} - set(planned[reference]))
    return [reseeded(template[point], seed, seed - first_seed) for point in template
            for seed in given.get(point, [])]


def _describe(plan: list[dict], number: int) -> str:
    seeds = planned_seeds([{"plan": plan}])
    shown = "; ".join(f"{point} on seeds {', '.join(map(str, s))}" for point, s in seeds.items())
    return f"replicates round {number}: {shown} ({len(plan)} trials, no early stopping)"


def _close_lost(tracker) -> None:
    """Replicate runs still open once a round has finished were lost with a killed driver."""
    for run in tracker.children(REPLICATE):
        if run.info.status == RUNNING.upper():
            print(f"{run.info.run_name}: {FAILED}: {LOST}", flush=True)
            tracker.end_child(run.info.run_id, FAILED, LOST)


def run_rounds(spec, stores: Stores, tracker, fit: Fit) -> tuple[bool, float, float]:
    """Run (or resume) the rounds until the question is answered or the budget spent; returns
    (finished, wall seconds, the trials' own seconds) of the rounds this call ran."""
    question, reference = spec.question, spec.phases[0].label
    tracker.tag_parent({QUESTION: question_tag(question)})
    rounds, wall, trials_s = read_rounds(stores), 0.0, 0.0
    if not rounds:
        rounds = [{"plan": make_plan(spec, stores, question.seeds.start), "done": False, "wall_s": 0.0}]
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
        plan, wanted = _judge_round(spec, stores, tracker, rounds)
        if plan is None:
            return True, wall, trials_s
        rounds.append({"plan": plan, "done": False, "wall_s": 0.0})
        _write_rounds(stores, rounds)           # then a driver killed now resumes with the next round
        print(f"round {number}: open: " + ", ".join(f"{c} vs {reference} wants {n} paired seeds"
                                                  for c, n in wanted.items()), flush=True)


def _judge_round(spec, stores: Stores, tracker, rounds: list[dict]) -> tuple[list[dict] | None, dict[str, int]]:
    """Judge the replicates after the last round: print each comparison's look, log it to the
    parent run (its metrics at step = the round, once), and return the next round's trials and
    the paired seeds each open comparison wants; None when the study has answered or spent its
    budget (then print and tag the answer)."""
    question, reference, number = spec.question, spec.phases[0].label, len(rounds)
    tracker.children(REPLICATE)                 # waits for a tracking server that is away
    record = read_record(stores)
    spent = question.time_limit_s is not None and sum(r["wall_s"] for r in rounds) >= question.time_limit_s
    if spent:
        print(f"replicates: question.time_limit_s={question.time_limit_s:g} s has passed", flush=True)
    judgement = judgement_of(record, budget_spent=spent)
    plan = None if judgement.stop else next_plan(rounds, judgement, paired_differences(record), reference,
                                                 question.seeds.max)
    if plan is None and not judgement.stop:
        print(f"replicates: the seed budget is spent (question.seeds.max={question.seeds.max}, failed "
              "replicates included)", flush=True)
        spent, judgement = True, judgement_of(record, budget_spent=True)
    for point in record.points[1:]:
        if point in judgement.latest:
            print(f"round {number}: {look_sentence(judgement.latest[point], reference, question)}", flush=True)
    tags, metrics = answer_tags(record, judgement)
    tracker.tag_parent({**tags, BUDGET_SPENT: str(spent).lower(), "rounds": str(number)},
                       None if rounds[-1].get("judged") else metrics, step=number)
    rounds[-1]["judged"] = True                 # written with the next round's plan, or below
    if plan is not None:
        return plan, judgement.wanted
    _write_rounds(stores, rounds)
    print("\n".join(answer_lines(record, judgement)), flush=True)
    return None, {}
