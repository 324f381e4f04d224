#!/usr/bin/env python
"""GPU training speed, prepared to run once on a lent GPU (a few minutes in all).

1. Matmul ceilings (fp32, tf32, bf16) of this GPU.
2. For each config of bench/common.py CONFIGS (curriculum fixed at its end: the full-size step) and precision
   fp32 (TF32 off), tf32 (TF32 matmuls, what `train()` uses on CUDA for precision fp32) and
   bf16 (autocast): our s/step and the reference-style step's (bench/reference.py, same
   weights), GFLOP/s, MFU against the ceiling of that precision, and peak memory
   (torch.cuda.max_memory_allocated) of our step.
3. K concurrent trials sharing the GPU: K worker processes train the same config at once;
   aggregate steps/s for K = 1, 2, 4, 8.

    python bench/gpu.py --out bench/results/gpu_$(date +%F).md
    python bench/gpu.py --quick                      # seconds per row, for a first look
    python bench/gpu.py --configs looped_L1_D64_b60_T15 --precisions bf16 --ks 1 2 4 8 16
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time

import torch

from common import CONFIGS, fmt, full_size_config, save_table

PRECISIONS = ("fp32", "tf32", "bf16")
DEVICE = "cuda"  # --dry-run-cpu switches to "cpu" to exercise this script without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE == "cuda" else float("nan")


def require_cuda() -> None:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench/gpu.py needs a CUDA GPU, and this torch ({torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'}) sees none. Run it on a machine with "
                         "a GPU and a CUDA build of torch; bench/train_speed.py measures the CPU.")


def set_precision(precision: str) -> str:
    """Matmul mode for `precision`; returns the config's training.precision."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    return "bf16" if precision == "bf16" else "fp32"


def ceiling(precision: str, size: int = 8192, reps: int = 10) -> float:
    set_precision(precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    size = size if DEVICE == "cuda" else 512
    a = torch.randn(size, size, device=DEVICE, dtype=dtype)
    b = torch.randn(size, size, device=DEVICE, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9


class Stepper:
    """Our train_step (or the reference step) on CUDA with the data stream on the GPU."""

    def __init__(self, name: str, precision: str, reference: bool = False, compile: bool = False,
                 seed: int = 1):
        from reference import ReferenceModel, reference_step
        from trainables.model import build_model
        from trainables.tasks import sample_prompts
        from trainables.training import autocast_for, make_optimizer, train_step

        device = torch.device(DEVICE)
        self.config = config = full_size_config(name, [f"training.precision={set_precision(precision)}"])
        torch.manual_seed(config.training.seed)
        model = build_model(config.model)
        if reference:
            model = ReferenceModel(config).load_from(model)
            step_fn = reference_step
            optimizer = torch.optim.Adam(model.to(device).parameters(), lr=config.training.learning_rate)
        else:
            model = model.to(device)
            if compile:
                model.backbone.compile()
            step_fn, optimizer = train_step, make_optimizer(model, config)
        self.model, self.optimizer, self.step_fn = model, optimizer, step_fn
        self.generator = torch.Generator(device).manual_seed(seed)
        self.autocast = autocast_for(config, device)
        self.sample = sample_prompts
        c = config.curriculum
        self.points, self.dims, self.iterations = c.points.end, c.dims.end, c.loops.end

    def step(self) -> None:
        c = self.config
        xs, ys = self.sample(c.task, c.model.n_dims, c.training.batch_size, self.points, self.dims, self.generator)
        self.step_fn(self.model, self.optimizer, c, xs, ys, self.iterations, self.autocast)

    def seconds_per_step(self, seconds: float, windows: int = 3, warmup: int = 3) -> tuple[float, int]:
        """Median over `windows` timed windows of whole steps (a sync at each window's ends)."""
        for _ in range(warmup):
            self.step()
        sync()
        start = time.perf_counter()
        self.step()
        sync()
        per_window = max(1, round(seconds / windows / max(time.perf_counter() - start, 1e-4)))
        results = []
        for _ in range(windows):
            start = time.perf_counter()
            for _ in range(per_window):
                self.step()
            sync()
            results.append((time.perf_counter() - start) / per_window)
        return statistics.median(results), per_window * windows


def speed_rows(args, ceilings: dict) -> list[str]:
    from trainables.flops import train_flops_per_step

    rows = []
    for name in args.configs:
        for precision in args.precisions:
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            ours = Stepper(name, precision, compile=args.compile)
            if DEVICE == "cuda":
                torch.cuda.reset_peak_memory_stats()
            s, steps = ours.seconds_per_step(args.seconds)
            peak = peak_gib()
            gflop = train_flops_per_step(ours.config) / 1e9
            del ours
            ref_s = float("nan")
            if not args.no_ref:
                ref = Stepper(name, precision, reference=True)
                ref_s, _ = ref.seconds_per_step(args.seconds)
                del ref
            rows.append(f"| {name} | {precision} | {fmt(s, 3)} | {fmt(1 / s)} | {fmt(ref_s, 3)} | {fmt(ref_s / s)}x "
                        f"| {fmt(gflop / s)} | {fmt(gflop / s / ceilings[precision], 2)} | {fmt(peak, 3)} | {steps} |")
            print(rows[-1], flush=True)
    return rows


def worker(args) -> None:
    require_cuda()
    stepper = Stepper(args.worker_config, args.worker_precision, compile=args.compile, seed=args.seed)
    for _ in range(3):
        stepper.step()
    sync()
    while time.time() < args.start_at:
        time.sleep(0.001)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for _ in range(4):
            stepper.step()
        sync()
        steps += 4
    elapsed = time.perf_counter() - start
    print(json.dumps({"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
                      "peak_gib": peak_gib()}))


def concurrency_rows(args) -> list[str]:
    rows = []
    for name in args.concurrency_configs:
        base = None
        for k in args.ks:
            start_at = time.time() + args.startup
            command = [sys.executable, __file__, "--worker", "--worker-config", name, "--worker-precision",
                       args.concurrency_precision, "--seconds", str(args.seconds), "--start-at", str(start_at)]
            command += ["--compile"] * args.compile + ["--dry-run-cpu"] * (DEVICE == "cpu")
            workers = [subprocess.Popen(command + ["--seed", str(i)], stdout=subprocess.PIPE, text=True)
                       for i in range(k)]
            outputs = [w.communicate()[0] for w in workers]
            if any(w.returncode for w in workers):
                rows.append(f"| {name} | {args.concurrency_precision} | {k} | failed (out of memory?) | | | |")
                print(rows[-1], flush=True)
                break
            results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
            aggregate = sum(r["steps_per_s"] for r in results)
            base = base or aggregate
            rows.append(f"| {name} | {args.concurrency_precision} | {k} | {fmt(aggregate)} | {fmt(aggregate / base, 3)}x "
                        f"| {fmt(min(r['steps_per_s'] for r in results))} | {fmt(max(r['peak_gib'] for r in results), 3)} |")
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
                        help=f"configs (default all): {', '.join(CONFIGS)}")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per row / per concurrency run")
    parser.add_argument("--no-ref", action="store_true", help="skip the reference-style step")
    parser.add_argument("--compile", action="store_true", help="torch.compile our backbone")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8], help="concurrent trials per GPU")
    parser.add_argument("--concurrency-configs", nargs="*", choices=list(CONFIGS), metavar="NAME",
                        default=["looped_L1_D64_b60_T15", "cpu_looped_D64_d5_n11_b12_T5"])
    parser.add_argument("--concurrency-precision", choices=PRECISIONS, default="bf16")
    parser.add_argument("--startup", type=float, default=25.0,
                        help="seconds allowed for concurrent workers to start before their common window")
    parser.add_argument("--quick", action="store_true", help="1 s rows, K = 1 2 only")
    parser.add_argument("--out", help="also write the markdown output to this file")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="exercise the script on the CPU (tiny ceilings, meaningless numbers; for tests)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--worker-precision", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = "cpu" if args.dry_run_cpu else "cuda"
    if args.worker:
        worker(args)
        return 0
    require_cuda()
    if args.quick:
        args.seconds, args.ks = 1.0, [k for k in args.ks if k <= 2]

    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        device_name = f"{props.name}, {props.total_memory / 2 ** 30:.0f} GiB"
    else:
        device_name = "DRY RUN ON THE CPU (numbers meaningless)"
    ceilings = {p: ceiling(p) for p in PRECISIONS}
    lines = [f"# GPU training speed, {datetime.datetime.now():%Y-%m-%d %H:%M}", "",
             f"{device_name}, torch {torch.__version__}, "
             f"CUDA {torch.version.cuda}{', torch.compile' if args.compile else ''}. Matmul ceilings (8192^2): "
             + ", ".join(f"{p} {fmt(v)} GFLOP/s" for p, v in ceilings.items()) + ".",
             "fp32 = TF32 off; tf32 = TF32 matmuls (what train() uses on CUDA for precision fp32); "
             "bf16 = autocast. s/step: median of timed windows, synchronised at their ends only.", "",
             "| config | prec | ours s/step | ours steps/s | ref s/step | speed-up | GFLOP/s | MFU | peak GiB | steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    lines += speed_rows(args, ceilings)
    if args.concurrency_configs and args.ks:
        block = ["", f"K concurrent trials on one GPU ({args.seconds:.0f} s common window):", "",
                 "| config | prec | K | aggregate steps/s | vs K=1 | slowest trial steps/s | peak GiB per trial |",
                 "|---|---|---|---|---|---|---|"]
        print("\n".join(block), flush=True)
        lines += block + concurrency_rows(args)
    save_table(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
