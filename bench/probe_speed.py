#!/usr/bin/env python
"""Probe fitting speed: every (state, target) probe stacked and batched (trainables.probe_heads)
against one nn.Module per probe in a Python loop, in one process, on the same states.

Shape: the seed's probing run, a looped model L=1 D=128 with 100 iterations (101 states),
wols targets (20), d=20, n=41, batch 1280. The model has random weights. Collecting its states
costs both methods the same and dominates on a CPU, so it is timed apart (per model iteration)
and both probe updates are fed the same bank of real states (state s is bank[s % bank]).
Baselines, one nn.Module per probe (one Adam over all of them), looped over in Python:
  loop, reference pooling: (h * softmax(alpha)[None, :, None]).sum(1), as the reference does
  loop, matmul pooling:    the same probe with its pooling as a matrix product
A loop is linear in its number of probes: it is timed on --loop-states states (x targets) and
scaled to all states; pass --loop-states 101 to time it whole (long on a CPU).

    python bench/probe_speed.py                  # ~1.5 min of CPU time; 4 min on 2 busy cores
    python bench/probe_speed.py --loop-states 101 --steps 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from trainables.config import ModelConfig
from trainables.model import build_model
from trainables.probe_heads import StackedProbes, fit_step, probe_prompts, wols_targets


class OneProbe(nn.Module):
    def __init__(self, positions: int, width: int, hidden: int, out: int, matmul_pooling: bool):
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(positions))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self.matmul_pooling = matmul_pooling

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weights = self.alpha.softmax(0)
        pooled = torch.einsum("t,btd->bd", weights, h) if self.matmul_pooling else \
            (h * weights[None, :, None]).sum(1)
        return self.mlp(pooled)


class ProbeLoop:
    """probes[s][k] for s < n_states: the double loop of the reference's ProbeModel."""

    def __init__(self, n_states, n_targets, positions, width, hidden, out, matmul_pooling, device):
        self.probes = nn.ModuleList(
            nn.ModuleList(OneProbe(positions, width, hidden, out, matmul_pooling) for _ in range(n_targets))
            for _ in range(n_states)).to(device)
        self.optimizer = torch.optim.Adam(self.probes.parameters(), lr=1e-3)

    def step(self, bank: list[torch.Tensor], targets: torch.Tensor) -> None:
        total = 0
        for k, target in enumerate(targets):
            for s, probes in enumerate(self.probes):
                total = total + ((probes[k](bank[s % len(bank)]) - target) ** 2).mean(1)
        (total / len(targets)).mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=101, help="probe states: model iterations + 1")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--n-dims", type=int, default=20, help="d, also the number of wols targets")
    parser.add_argument("--points", type=int, default=41)
    parser.add_argument("--batch", type=int, default=1280)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bank", type=int, default=3, help="distinct states computed and reused")
    parser.add_argument("--chunk", type=int, default=8, help="states per batched chunk (probe.chunk)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method (after one warm-up)")
    parser.add_argument("--loop-states", type=int, default=2, help="states the loops are timed on")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    positions, n_targets = 2 * args.points, args.n_dims
    model = build_model(ModelConfig(family="looped", n_layer=1, n_head=8, n_embd=args.width,
                                    n_dims=args.n_dims)).to(device).requires_grad_(False)
    xs, ys = probe_prompts(args.n_dims, args.points, args.batch, torch.Generator(device).manual_seed(0))
    targets = wols_targets(xs, ys)

    states = model.states(xs, ys, args.states - 1)
    bank, per_iteration = [next(states)], []
    for _ in range(args.bank - 1):
        per_iteration.append(timed(lambda: bank.append(next(states)), device))
    iteration_s = statistics.median(per_iteration)

    batched = StackedProbes(1, args.states, n_targets, positions, args.width, args.hidden, args.n_dims).to(device)
    optimizer = torch.optim.Adam(batched.parameters(), lr=1e-3)

    def batched_step():
        fit_step(batched, (bank[s % len(bank)] for s in range(args.states)), targets, chunk=args.chunk)
        optimizer.step()

    loop_states = min(args.loop_states, args.states)
    loops = {name: ProbeLoop(loop_states, n_targets, positions, args.width, args.hidden, args.n_dims,
                             matmul, device)
             for name, matmul in (("loop, reference pooling", False), ("loop, matmul pooling", True))}
    methods = {"batched (trainables.probe_heads)": batched_step,
               **{name: (lambda loop=loop: loop.step(bank, targets)) for name, loop in loops.items()}}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(args.steps + 1):   # alternating rounds: every method sees the same load
        for name, fn in methods.items():
            seconds = timed(fn, device)
            if round_:
                times[name].append(seconds if name.startswith("batched") else seconds * args.states / loop_states)

    collect_s = iteration_s * (args.states - 1)
    print(f"probing {args.states} states x {n_targets} targets = {args.states * n_targets} probes; "
          f"D={args.width}, d={args.n_dims}, n={args.points}, batch {args.batch}, hidden {args.hidden}; "
          f"{device}, {torch.get_num_threads()} threads; medians of {args.steps} steps")
    print(f"state collection (same for every method): {iteration_s:.3f} s per model iteration, "
          f"{collect_s:.1f} s per step for {args.states - 1} iterations")
    ours = statistics.median(times["batched (trainables.probe_heads)"])
    print(f"{'method':<30} {'probe s/step':>12} {'steps/s':>9} {'speed-up':>9} {'with states':>12}")
    for name, values in times.items():
        seconds = statistics.median(values)
        scaled = f"  (timed on {loop_states} states, scaled)" if not name.startswith("batched") and \
            loop_states < args.states else ""
        print(f"{name:<30} {seconds:12.2f} {1 / seconds:9.4f} {seconds / ours:8.1f}x "
              f"{(seconds + collect_s) / (ours + collect_s):11.1f}x{scaled}")
    print("speed-up: the method's probe update time over the batched one's; 'with states' adds "
          "the state collection to both")


if __name__ == "__main__":
    main()
