#!/usr/bin/env python
"""Thread policy for a 2-core study: two concurrent 1-thread trainings, or one 2-thread training?

Each layout runs full-size training steps of a config (default: the CPU preset,
paper_linear_regression_looped_cpu, curriculum at its end) in worker processes for the same
wall-clock window; the layouts alternate for --rounds rounds and the table gives the median
aggregate steps/s (the sum over concurrent workers), with the CPU load from other processes.

    python bench/concurrency.py                       # 1x2 vs 2x1 (and 1x1 for scale)
    python bench/concurrency.py --precision bf16 --seconds 30 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from common import CONFIGS, LoadMeter, fmt, full_size_config, median

# layout name -> (processes, threads per process)
LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}


def worker(args) -> None:
    from trainables.model import build_model
    from trainables.tasks import sample_prompts
    from trainables.training import autocast_for, make_optimizer, train_step

    torch.set_num_threads(args.threads)
    config = full_size_config(args.config, [f"training.precision={args.precision}"])
    c = config.curriculum
    torch.manual_seed(config.training.seed)
    model = build_model(config.model)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(args.seed)
    autocast = autocast_for(config, torch.device("cpu"))

    def step():
        xs, ys = sample_prompts(config.task, config.model.n_dims, config.training.batch_size,
                                c.points.end, c.dims.end, generator)
        train_step(model, optimizer, config, xs, ys, c.loops.end, autocast)

    for _ in range(args.warmup):
        step()
    # start together: wait for the wall-clock instant the parent chose
    while time.time() < args.start_at:
        time.sleep(0.001)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
                      "cpu_seconds": time.process_time() - cpu}))


def run_layout(layout: str, args) -> dict:
    processes, threads = LAYOUTS[layout]
    start_at = time.time() + args.startup
    command = [sys.executable, __file__, "--worker", "--config", args.config, "--precision", args.precision,
               "--threads", str(threads), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
               "--start-at", str(start_at)]
    workers = [subprocess.Popen(command + ["--seed", str(i)], stdout=subprocess.PIPE, text=True)
               for i in range(processes)]
    time.sleep(max(0.0, start_at - time.time()))
    meter = LoadMeter()
    outputs = [w.communicate()[0] for w in workers]
    load = meter.stop()
    if any(w.returncode for w in workers):
        raise SystemExit(f"a worker of layout {layout} failed")
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    # the meter saw our workers as other processes: take their CPU time out again
    window = max(r["seconds"] for r in results)
    load["foreign_cores"] = max(0.0, load["foreign_cores"] - sum(r["cpu_seconds"] for r in results) / window)
    return {"aggregate": sum(r["steps_per_s"] for r in results),
            "per_process": [r["steps_per_s"] for r in results], "load": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="cpu_looped_D64_d5_n11_b12_T5")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=["1x2", "2x1", "1x1"])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--startup", type=float, default=12.0,
                        help="seconds allowed for workers to import torch, build and warm up")
    # worker-only arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    print(f"# Concurrency on {args.config} ({args.precision}), torch {torch.__version__}, "
          f"{args.seconds:.0f} s windows, {args.rounds} alternating rounds\n")
    runs = {layout: [] for layout in args.layouts}
    for _ in range(args.rounds):
        for layout in args.layouts:
            runs[layout].append(run_layout(layout, args))
    print("| layout (processes x threads) | aggregate steps/s (median) | per round | per process (last round) "
          "| foreign cores (median) | load1 |")
    print("|---|---|---|---|---|---|")
    for layout, results in runs.items():
        busy = median([r["load"]["foreign_cores"] for r in results])
        print(f"| {layout} | {fmt(median([r['aggregate'] for r in results]))} "
              f"| {', '.join(fmt(r['aggregate']) for r in results)} "
              f"| {', '.join(fmt(v) for v in results[-1]['per_process'])} | {fmt(busy, 2)} "
              f"| {fmt(results[-1]['load']['loadavg'], 2)} |")
    if {"1x2", "2x1"} <= runs.keys():
        one = median([r["aggregate"] for r in runs["1x2"]])
        two = median([r["aggregate"] for r in runs["2x1"]])
        better = "two 1-thread trials" if two > one else "one 2-thread trial"
        print(f"\n2x1 / 1x2 aggregate = {two / one:.2f}: on 2 cores prefer {better} "
              f"(per-trial latency: 1x2 finishes one trial {one / (two / 2):.2f}x sooner).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
