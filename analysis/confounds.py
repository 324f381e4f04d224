"""What a compared value's runs actually train, and what differs between compared values
besides the values themselves (a confound), and what they cost (training FLOPs). Plain config
arithmetic: the study service checks a study file with it before anything runs, the analysis
checks the finished runs with it.

Compared at equal steps (a study file's `compare_at: equal_steps`, the default), a difference in
training FLOPs is stated beside the answer, not counted as a confound: it is what the compared
value costs. Compared at equal compute, each value trains its own step count (set so that the
totals match): that difference is the design, not a confound."""
from __future__ import annotations

from trainables.config import Config, depth_bounds
from trainables.depth import expected_depth
from trainables.flops import train_flops_per_step, train_flops_total

from .layout import EQUAL_COMPUTE, EQUAL_STEPS

STEPS = "training steps"      # the fact a comparison at equal compute sets per value


def trained(config: Config) -> dict[str, object]:
    """What a run of `config` actually trains, in words a confound message can use. The loop
    iterations are a curriculum's range, or a sampled depth's distribution: a different fact,
    so a curriculum is not compared with a distribution (that is the compared value itself)."""
    steps = config.training.train_steps
    facts = {STEPS: steps,
             "final dims": config.curriculum.dims.value(steps - 1),
             "final points": config.curriculum.points.value(steps - 1)}
    if config.model.family == "looped":
        tr = config.training
        if tr.depth_sampling == "curriculum":
            first, last = config.loops_trained()
            facts["loop iterations trained (first..last step)"] = f"{first}..{last}" if first != last else first
        else:
            low, high = depth_bounds(config)
            facts["loop iterations sampled per step"] = (f"{tr.depth_sampling} {low}..{high}, "
                                                         f"mean {expected_depth(config):.1f}")
        facts["loop budget b (the depth evaluated)"] = config.loop_budget
    return facts


def confounds(configs: dict[str, Config], compare_at: str = EQUAL_STEPS) -> list[str]:
    """What differs between the compared values' configs besides the values themselves, e.g.
    "loop iterations trained (first..last step): s=1 4..8, s=2 8..12" (empty when nothing).
    Only facts that every compared config has are compared; at equal compute not the steps."""
    facts = {label: trained(config) for label, config in configs.items()}
    found = []
    for fact in next(iter(facts.values()), {}):
        if any(fact not in f for f in facts.values()) or fact == STEPS and compare_at == EQUAL_COMPUTE:
            continue
        values = {label: f[fact] for label, f in facts.items()}
        if len(set(map(str, values.values()))) > 1:
            found.append(f"{fact}: " + ", ".join(f"{label} {value}" for label, value in values.items()))
    return found


def compute_differences(configs: dict[str, Config]) -> list[str]:
    """The compared values' training compute where it differs, e.g. "training GFLOP per step
    (expected, at the final curriculum): T=5 1.20, T=15 3.10 (x2.58)", and the same for the
    whole run: a comparison at equal steps is then one at unequal compute (empty when equal
    within 0.1%)."""
    found = []
    for what, count in (("training GFLOP per step (expected, at the final curriculum)", train_flops_per_step),
                        ("training GFLOP in total (expected)", train_flops_total)):
        values = {label: count(config) / 1e9 for label, config in configs.items()}
        low, high = min(values.values()), max(values.values())
        if high > low * 1.001:
            found.append(f"{what}: " + ", ".join(f"{label} {value:.4g}" for label, value in values.items())
                         + f" (x{high / low:.2f})")
    return found


def compute_comparison(configs: dict[str, Config], compare_at: str = EQUAL_STEPS) -> list[str]:
    """What the comparison means for the compared values' training compute, in sentences a study
    prints, tags and states beside its answer: at equal steps, where their FLOPs differ
    (compute_differences); at equal compute, each value's steps and total."""
    if not configs:
        return []
    if compare_at == EQUAL_STEPS:
        return [f"compared at equal steps, so at unequal compute: {line}" for line in compute_differences(configs)]
    return ["compared at equal training compute: " + ", ".join(
        f"{label} {config.training.train_steps} steps ({train_flops_total(config) / 1e9:.4g} GFLOP)"
        for label, config in configs.items())]
