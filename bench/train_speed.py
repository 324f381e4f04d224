#!/usr/bin/env python
"""Training speed on this CPU: our trainer's step against a reference-style step (the paper's
code path, bench/reference.py) with the same weights, measured in one process.

For each config (bench/common.py CONFIGS; every curriculum fixed at its end so each step is the
full-size step) and precision: median s/step of our `trainables.training.train_step` and of the
reference step, measured in alternating rounds so both see the same machine load; GFLOP/s from
the analytic count (trainables.flops); model-FLOP utilisation (MFU) against a large square
matmul of the same dtype and thread count, measured between the rounds; and the CPU cores other
processes kept busy meanwhile (these machines are shared: read speeds with that column).

    python bench/train_speed.py                      # the full table (~15-25 min on 2 cores)
    python bench/train_speed.py --quick --configs cpu_looped_D64_d5_n11_b12_T5
    python bench/train_speed.py --out bench/results/cpu_$(date +%F).md
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import torch

from common import CONFIGS, LoadMeter, fmt, full_size_config, matmul_ceiling, median, save_table
from reference import ReferenceModel, reference_loss, reference_step
from trainables.flops import train_flops_per_step
from trainables.model import build_model
from trainables.tasks import sample_prompts
from trainables.training import autocast_for, loss_fn, make_optimizer, train_step

CPU = torch.device("cpu")


class Runner:
    """A model, its optimizer and a data stream, stepped by `step()`."""

    def __init__(self, config, model, optimizer, step_fn, seed: int):
        self.config, self.model, self.optimizer, self.step_fn = config, model, optimizer, step_fn
        self.generator = torch.Generator().manual_seed(seed)
        self.autocast = autocast_for(config, CPU)
        c = config.curriculum
        self.points, self.dims, self.iterations = c.points.end, c.dims.end, c.loops.end

    def step(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one step."""
        start, cpu = time.perf_counter(), time.process_time()
        xs, ys = sample_prompts(self.config.task, self.config.model.n_dims, self.config.training.batch_size,
                                self.points, self.dims, self.generator)
        self.step_fn(self.model, self.optimizer, self.config, xs, ys, self.iterations, self.autocast)
        return time.perf_counter() - start, time.process_time() - cpu


def build_pair(name: str, precision: str, ours_kwargs: dict, compile: bool = False):
    config = full_size_config(name, [f"training.precision={precision}"])
    torch.manual_seed(config.training.seed)
    model = build_model(config.model)
    ref_model = ReferenceModel(config).load_from(model)
    if compile:
        model.backbone.compile()  # as train(compile=True) does; compiled during the warm-up
    ours = Runner(config, model, make_optimizer(model, config),
                  lambda *a: train_step(*a, **ours_kwargs), seed=1)
    ref_optimizer = torch.optim.Adam(ref_model.parameters(), lr=config.training.learning_rate,
                                     betas=(0.9, 0.999), eps=1e-8, weight_decay=config.training.weight_decay)
    ref = Runner(config, ref_model, ref_optimizer, reference_step, seed=1)
    return config, ours, ref


def loss_agreement(name: str) -> float:
    """|our loss - reference loss| / loss on one fp32 batch with the same weights (before any step)."""
    config = full_size_config(name)
    torch.manual_seed(config.training.seed)
    model = build_model(config.model)
    ref_model = ReferenceModel(config).load_from(model)
    c = config.curriculum
    xs, ys = sample_prompts(config.task, config.model.n_dims, 8, c.points.end, c.dims.end,
                            torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = loss_fn(model, config, xs, ys, c.loops.end).item()
        theirs = reference_loss(ref_model, config, xs, ys, c.loops.end).item()
    return abs(ours - theirs) / abs(theirs)


def measure(name: str, precision: str, args, ours_kwargs: dict, with_ref: bool) -> dict:
    config, ours, ref = build_pair(name, precision, ours_kwargs, compile=args.compile)
    runners = {"ours": ours, **({"ref": ref} if with_ref else {})}
    # warm-up; the fastest warm-up step sizes the rounds, so a row takes about args.seconds
    fastest = {key: min(r.step()[0] for _ in range(args.warmup + 1)) for key, r in runners.items()}
    per_round = max(1, round(args.seconds / args.rounds / sum(fastest.values())))
    times = {key: [] for key in runners}
    ceilings, meter = [], LoadMeter()
    for _ in range(args.rounds):
        ceilings.append(matmul_ceiling(precision, size=args.ceiling_size, reps=3))
        for key, runner in runners.items():
            times[key] += [runner.step() for _ in range(per_round)]
    ceilings.append(matmul_ceiling(precision, size=args.ceiling_size, reps=3))
    load = meter.stop()
    gflop = train_flops_per_step(config) / 1e9
    ceiling = median([wall for wall, _ in ceilings])
    ceiling_cpu = median([cpu for _, cpu in ceilings])
    row = {"config": name, "precision": precision, "steps": len(times["ours"]), "gflop": gflop,
           "ceiling": ceiling, "ceiling_cpu": ceiling_cpu, **load}
    for key, values in times.items():
        s = median([wall for wall, _ in values])
        row[f"{key}_cpu_s"] = median([cpu for _, cpu in values])
        row[f"{key}_s"] = s
        row[f"{key}_gflops"] = gflop / s
        row[f"{key}_mfu"] = gflop / s / ceiling
        row[f"{key}_mfu_cpu"] = gflop / row[f"{key}_cpu_s"] / ceiling_cpu
    return row


HEADER = ("| config | prec | ours s/step | ours steps/s | ref s/step | speed-up | speed-up vs ref fp32 | speed-up in CPU time "
          "| ours GFLOP/s | ours MFU | ref MFU | ours MFU in CPU time | ceiling GFLOP/s | quiet ref s/step | steps | foreign cores | load1 |")


def table_row(row: dict, ref_fp32: dict) -> str:
    """One markdown row; 'ref' is the reference in the row's precision, 'ref fp32' the fp32 one."""
    nan = float("nan")
    fp32 = ref_fp32.get(row["config"], {}).get("ref_s", nan)
    return (f"| {row['config']} | {row['precision']} | {fmt(row['ours_s'])} | {fmt(1 / row['ours_s'])} "
            f"| {fmt(row.get('ref_s'))} "
            f"| {fmt(row.get('ref_s', nan) / row['ours_s'], 3)}x | {fmt(fp32 / row['ours_s'], 3)}x "
            f"| {fmt(row.get('ref_cpu_s', nan) / row['ours_cpu_s'], 3)}x "
            f"| {fmt(row['ours_gflops'])} | {fmt(row['ours_mfu'], 2)} | {fmt(row.get('ref_mfu'), 2)} "
            f"| {fmt(row['ours_mfu_cpu'], 2)} "
            f"| {fmt(row['ceiling'])} | {fmt(CONFIGS[row['config']][2])} | {row['steps']} "
            f"| {fmt(row['foreign_cores'], 2)} | {fmt(row['loadavg'], 2)} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps each (CI smoke test)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
                        help=f"configs (default all): {', '.join(CONFIGS)}")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="measuring time per config and precision, ours and reference together")
    parser.add_argument("--rounds", type=int, default=4, help="alternating ours/reference rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-ref-bf16", action="store_true",
                        help="measure the reference in fp32 only (bf16 speed-ups then compare with it)")
    parser.add_argument("--compile", action="store_true",
                        help="our step with torch.compile'd backbone, as train(compile=True)")
    parser.add_argument("--out", help="also write the markdown output to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup = 0.0, 2, 1
    args.ceiling_size = 1024 if args.quick else 2048
    torch.set_num_threads(args.threads)
    ours_kwargs: dict = {}

    lines = [f"# Training speed, {datetime.datetime.now():%Y-%m-%d %H:%M}",
             "",
             f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{args.threads} threads, python {platform.python_version()}; "
             f"{'quick' if args.quick else f'{args.seconds:.0f} s per row in {args.rounds} alternating rounds'}"
             f"{', ours with torch.compile (compile time not counted)' if args.compile else ''}.",
             "speed-up = reference s/step / ours s/step, both measured in this process, the reference "
             "in the row's precision; 'vs ref fp32' compares with the fp32 reference of the same config; "
             "'in CPU time' is the same ratio of process CPU seconds per step (less sensitive to other "
             "processes taking our cores, exact at 1 thread). MFU = GFLOP/s / ceiling, the "
             "ceiling a square matmul of the same dtype and threads measured between the rounds; 'in CPU "
             "time' divides model FLOPs per CPU second by the ceiling's FLOPs per CPU second. "
             "'foreign cores' = CPU cores busy with other processes while the row was measured; "
             "'quiet ref' = the reference step measured earlier on a quiet machine (bench/common.py).",
             ""]
    print("\n".join(lines), flush=True)
    agreement = {}
    for name in args.configs:
        agreement[name] = loss_agreement(name)
    lines.append("Same function: relative loss difference ours vs reference on one fp32 batch, same weights: "
                 + ", ".join(f"{n} {v:.1e}" for n, v in agreement.items()))
    lines += ["", HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    print("\n".join(lines[-4:]), flush=True)
    ref_fp32: dict = {}
    for name in args.configs:
        for precision in args.precisions:
            with_ref = not (precision == "bf16" and args.no_ref_bf16)
            row = measure(name, precision, args, ours_kwargs, with_ref)
            if precision == "fp32":
                ref_fp32[name] = row
            lines.append(table_row(row, ref_fp32))
            print(lines[-1], flush=True)
    save_table(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
