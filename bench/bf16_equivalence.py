#!/usr/bin/env python
"""Is bf16 training equivalent to fp32 here? Trains the CPU-sized preset (default
paper_linear_regression_looped_cpu, its own curriculum) with N seeds in fp32 and the same N
seeds in bf16 (autocast) for the same number of steps, then asks whether bf16's held-out error
curve lies inside the fp32 seed-to-seed spread.

Printed: per evaluation step, err_mean (mean over k of the normalised error) of every run; at the
final step, the error per in-context count k: fp32 min..max over seeds, fp32 mean, bf16 mean,
bf16 min..max, and bf16-trained models re-scored in fp32 (so the evaluation's own precision is
taken out). For independent runs, a bf16 run falls inside the range of n fp32 seeds with
probability (n-1)/(n+1) (1/2 for 3 seeds). Here bf16 seed s shares its initialisation and data
with fp32 seed s, so the script also gives the paired ratio: mean |bf16_s - fp32_s| over seeds
divided by the mean |fp32_s - fp32_s'| over seed pairs; well below 1 means precision moves the
curve less than the seed does.

    python bench/bf16_equivalence.py --steps 2000 --parallel 2      # ~15 min on 2 quiet cores
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import LoadMeter, fmt, save_table

PRECISIONS = ("fp32", "bf16")


def worker(args) -> None:
    from trainables import load_config, train
    config = load_config(args.preset, [f"training.train_steps={args.steps}", f"training.seed={args.seed}",
                                       f"training.precision={args.precision}",
                                       f"training.eval_every={args.eval_every}",
                                       f"training.checkpoint_every={args.steps}"])
    train(config, out_dir=args.out, num_threads=args.threads)


def fp32_rescore(run_dir: Path) -> list[float]:
    """The run's final model evaluated without autocast."""
    from trainables.evaluation import Evaluator
    from trainables.model import build_model
    from trainables.run_folder import latest_checkpoint, read_config

    config = read_config(run_dir / "config.yaml")
    model = build_model(config.model)
    state = torch.load(latest_checkpoint(run_dir) / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return Evaluator(config)(model, contextlib.nullcontext)["curve"]


def paired_ratio(values: dict, seeds: list[int]) -> float:
    """mean_s |bf16_s - fp32_s| / mean_{s<s'} |fp32_s - fp32_s'| for one quantity."""
    paired = sum(abs(values[("bf16", s)] - values[("fp32", s)]) for s in seeds) / len(seeds)
    pairs = [(a, b) for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    spread = sum(abs(values[("fp32", a)] - values[("fp32", b)]) for a, b in pairs) / max(1, len(pairs))
    return paired / spread if spread else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper_linear_regression_looped_cpu")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per training")
    parser.add_argument("--runs", help="folder for the run folders (default: a temporary one); "
                        "finished runs found there are reused")
    parser.add_argument("--out", help="also write the markdown output to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    root = Path(args.runs or tempfile.mkdtemp(prefix="bf16_equivalence_"))
    # a run folder that already holds a summary is reused (rerun the analysis, or resume a batch)
    jobs = [(p, s) for s in args.seeds for p in PRECISIONS
            if not (root / f"{p}_{s}" / "summary.json").exists()]
    running: list[tuple[subprocess.Popen, tuple]] = []
    started, meter, children = time.perf_counter(), LoadMeter(), sum(os.times()[2:4])
    while jobs or running:
        while jobs and len(running) < args.parallel:
            precision, seed = jobs.pop(0)
            command = [sys.executable, __file__, "--worker", "--preset", args.preset, "--steps", str(args.steps),
                       "--eval-every", str(args.eval_every), "--threads", str(args.threads),
                       "--seed", str(seed), "--precision", precision, "--out", str(root / f"{precision}_{seed}")]
            running.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             text=True), (precision, seed)))
        time.sleep(1)
        for proc, job in list(running):
            if proc.poll() is not None:
                running.remove((proc, job))
                if proc.returncode:
                    raise SystemExit(f"training {job} failed:\n{proc.stderr.read()}")
    load = meter.stop()
    # our trainings are child processes, which the meter counts as other processes: take them out
    wall = time.perf_counter() - started
    load["foreign_cores"] = max(0.0, load["foreign_cores"] - (sum(os.times()[2:4]) - children) / wall)
    from trainables.run_folder import read_metrics

    runs = {(p, s): read_metrics(root / f"{p}_{s}") for p in PRECISIONS for s in args.seeds}
    evals = {key: [e for e in events if e.get("event") == "eval"] for key, events in runs.items()}
    speed = {key: [e["perf/steps_per_s"] for e in events if "perf/steps_per_s" in e] for key, events in runs.items()}
    summary = json.loads((root / f"fp32_{args.seeds[0]}" / "summary.json").read_text())
    lsq = summary["baselines"]["least_squares"]["curve"]

    lines = [f"# bf16 vs fp32 on {args.preset}: {args.steps} steps, seeds {args.seeds}, "
             f"{args.threads} thread(s) per training, {args.parallel} at a time",
             "", f"wall {wall:.0f} s; other processes kept {fmt(load['foreign_cores'], 2)} cores busy "
             f"meanwhile (load1 at the end {fmt(load['loadavg'], 2)}); run folders in {root}", ""]
    steps = [e["step"] for e in evals[("fp32", args.seeds[0])]]
    lines += ["err_mean (mean over k of the normalised error) at each evaluation:", "",
              "| step | " + " | ".join(f"{p} s{s}" for p in PRECISIONS for s in args.seeds)
              + " | fp32 range | bf16 mean inside | paired / seed spread |",
              "|---|" + "---|" * (2 * len(args.seeds) + 3)]
    for i, step in enumerate(steps):
        values = {key: evals[key][i]["err_mean"] for key in runs}
        lo = min(values[("fp32", s)] for s in args.seeds)
        hi = max(values[("fp32", s)] for s in args.seeds)
        bf = sum(values[("bf16", s)] for s in args.seeds) / len(args.seeds)
        lines.append(f"| {step} | " + " | ".join(fmt(values[(p, s)]) for p in PRECISIONS for s in args.seeds)
                     + f" | {fmt(lo)}..{fmt(hi)} | {'yes' if lo <= bf <= hi else 'NO'} "
                     f"| {fmt(paired_ratio(values, args.seeds), 2)} |")

    final = {key: evals[key][-1]["curve"] for key in runs}
    rescored = {s: fp32_rescore(root / f"bf16_{s}") for s in args.seeds}
    n_k = len(final[("fp32", args.seeds[0])])
    lines += ["", f"Final error per in-context count k (step {steps[-1]}):", "",
              "| k | fp32 min..max | fp32 mean | bf16 mean | bf16 min..max | bf16 runs inside fp32 range "
              "| bf16-trained scored fp32, mean | least squares |", "|---|---|---|---|---|---|---|---|"]
    inside_total = inside_mean = inside_rescored = 0
    for k in range(n_k):
        f = [final[("fp32", s)][k] for s in args.seeds]
        b = [final[("bf16", s)][k] for s in args.seeds]
        r = [rescored[s][k] for s in args.seeds]
        inside = sum(min(f) <= v <= max(f) for v in b)
        inside_total += inside
        inside_mean += min(f) <= sum(b) / len(b) <= max(f)
        inside_rescored += min(f) <= sum(r) / len(r) <= max(f)
        lines.append(f"| {k + 1} | {fmt(min(f))}..{fmt(max(f))} | {fmt(sum(f) / len(f))} | {fmt(sum(b) / len(b))} "
                     f"| {fmt(min(b))}..{fmt(max(b))} | {inside}/{len(b)} | {fmt(sum(r) / len(r))} | {fmt(lsq[k])} |")
    mean_speed = {p: sum(sum(speed[(p, s)][-3:]) / max(1, len(speed[(p, s)][-3:])) for s in args.seeds) / len(args.seeds)
                  for p in PRECISIONS}
    ratios = [paired_ratio({key: final[key][k] for key in runs}, args.seeds) for k in range(n_k)]
    lines += ["", f"bf16 runs inside the fp32 range: {inside_total}/{n_k * len(args.seeds)} (k, seed) points "
              f"(independent runs: about {(len(args.seeds) - 1) / (len(args.seeds) + 1):.2f}); "
              f"paired |bf16 - fp32| / fp32 seed spread over k: median {fmt(sorted(ratios)[n_k // 2], 2)}, "
              f"max {fmt(max(ratios), 2)}; bf16 mean inside the fp32 range at {inside_mean}/{n_k} k; "
              f"bf16-trained models scored in fp32, mean inside at {inside_rescored}/{n_k} k.",
              f"Training steps/s late in the runs (1 thread, {args.parallel} concurrent): "
              + ", ".join(f"{p} {fmt(v)}" for p, v in mean_speed.items()) + "."]
    print("\n".join(lines))
    save_table(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
