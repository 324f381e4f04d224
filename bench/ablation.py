#!/usr/bin/env python
"""What each trainer speed change gave: the step with the changes switched on one by one,
starting from the seed trainer (commit 94c7dce), all in one process with the same weights.

  seed       fused SDPA attention everywhere, no_grad loop prefix from Y_0 = zeros, per-tensor Adam
  +attn      explicit baddbmm/softmax/bmm attention for bfloat16 on CPU (fused SDPA stays in fp32)
  +infer     loop prefix under torch.inference_mode, first iteration fed P directly
  +foreach   multi-tensor Adam (bitwise identical on CPU)     (= the current trainer)

Times are medians of per-step main-thread CPU time (at --threads 1 robust to other processes
on a shared machine; at 2 threads close to wall time) and of wall time; variants run in
alternating rounds whose order rotates.

    python bench/ablation.py --configs looped_L1_D64_b60_T15 --precisions fp32 bf16
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch
import torch.nn.functional as F

from common import CONFIGS, LoadMeter, fmt, full_size_config, median
from trainables.model import build_model
from trainables.tasks import interleave, sample_prompts
from trainables.training import autocast_for, train_step

model_module = importlib.import_module("trainables.model")
train_module = importlib.import_module("trainables.training")  # the module (`trainables.train` is the function)
CURRENT = {"attention": model_module.causal_attention,
           "forward": model_module.LoopedTransformer.forward,
           "optimizer": train_module.make_optimizer}


def seed_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def seed_forward(self, xs, ys, n_iterations, keep=None, trace=None):
    keep = set(keep or [n_iterations])
    first = min(keep)
    p = self.read_in(interleave(xs, ys))
    y = torch.zeros_like(p)
    predictions = {}
    for t in range(1, n_iterations + 1):
        with torch.set_grad_enabled(torch.is_grad_enabled() and t >= first):
            y = self.backbone(y + p)
        if t in keep:
            predictions[t] = self.predict(y)
    return predictions


def seed_optimizer(model, config):
    tr = config.training
    return torch.optim.Adam(model.parameters(), lr=tr.learning_rate, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=tr.weight_decay)


VARIANTS = {"seed": set(), "+attn": {"attention"}, "+infer": {"attention", "forward"},
            "+foreach": {"attention", "forward", "optimizer"}}


def activate(changes: set[str]) -> None:
    model_module.causal_attention = CURRENT["attention"] if "attention" in changes else seed_attention
    model_module.LoopedTransformer.forward = CURRENT["forward"] if "forward" in changes else seed_forward
    train_module.make_optimizer = CURRENT["optimizer"] if "optimizer" in changes else seed_optimizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        default=["looped_L1_D128_b20_T20", "looped_L1_D64_b60_T15", "cpu_looped_D64_d5_n11_b12_T5"])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="per config and precision, all variants")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"| config | prec | {' | '.join(f'{v} CPU-s/step' for v in VARIANTS)} | total speed-up "
          f"| {' | '.join(f'{v} wall' for v in VARIANTS)} | foreign cores |")
    print("|" + "---|" * (2 * len(VARIANTS) + 4))
    for name in args.configs:
        for precision in args.precisions:
            config = full_size_config(name, [f"training.precision={precision}"])
            c = config.curriculum
            runners = {}
            for variant, changes in VARIANTS.items():
                activate(changes)
                torch.manual_seed(config.training.seed)
                model = build_model(config.model)
                runners[variant] = (model, train_module.make_optimizer(model, config),
                                    torch.Generator().manual_seed(1))
            autocast = autocast_for(config, torch.device("cpu"))

            def step(variant):
                activate(VARIANTS[variant])
                model, optimizer, generator = runners[variant]
                xs, ys = sample_prompts(config.task, config.model.n_dims, config.training.batch_size,
                                        c.points.end, c.dims.end, generator)
                cpu, wall = time.thread_time(), time.perf_counter()
                train_step(model, optimizer, config, xs, ys, c.loops.end, autocast)
                return time.thread_time() - cpu, time.perf_counter() - wall

            first = {v: step(v) for v in VARIANTS}  # warm-up, and a time to size the rounds
            per_round = max(1, round(args.seconds / args.rounds / sum(w for _, w in first.values())))
            times = {v: [] for v in VARIANTS}
            meter = LoadMeter()
            order = list(VARIANTS)
            for round_ in range(args.rounds):
                # rotate the order each round so no variant always runs first or last
                for variant in order[round_ % len(order):] + order[:round_ % len(order)]:
                    times[variant] += [step(variant) for _ in range(per_round)]
            load = meter.stop()
            cpu = {v: median([t for t, _ in ts]) for v, ts in times.items()}
            wall = {v: median([w for _, w in ts]) for v, ts in times.items()}
            print(f"| {name} | {precision} | {' | '.join(fmt(cpu[v]) for v in VARIANTS)} "
                  f"| {fmt(cpu['seed'] / cpu['+foreach'])}x | {' | '.join(fmt(wall[v]) for v in VARIANTS)} "
                  f"| {fmt(load['foreign_cores'], 2)} |", flush=True)
    activate(set(VARIANTS["+foreach"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
