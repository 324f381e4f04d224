"""What a compared value's runs actually train, and what differs between compared values
besides the values themselves (a confound). Plain config arithmetic: the study service checks a
study file with it before anything runs, the analysis checks the finished runs with it."""
from __future__ import annotations

from trainables.config import Config


def trained(config: Config) -> dict[str, object]:
    """What a run of `config` actually trains, in words a confound message can use."""
    steps = config.training.train_steps
    facts = {"training steps": steps,
             "final dims": config.curriculum.dims.value(steps - 1),
             "final points": config.curriculum.points.value(steps - 1)}
    if config.model.family == "looped":
        first, last = config.loops_trained()
        facts["loop iterations trained (first..last step)"] = f"{first}..{last}" if first != last else first
    return facts


def confounds(configs: dict[str, Config]) -> list[str]:
    """What differs between the compared values' configs besides the values themselves, e.g.
    "loop iterations trained (first..last step): s=1 4..8, s=2 8..12" (empty when nothing)."""
    facts = {label: trained(config) for label, config in configs.items()}
    found = []
    for fact in next(iter(facts.values()), {}):
        values = {label: f.get(fact) for label, f in facts.items()}
        if len(set(map(str, values.values()))) > 1:
            found.append(f"{fact}: " + ", ".join(f"{label} {value}" for label, value in values.items()))
    return found
