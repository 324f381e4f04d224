"""Shared pieces of the benchmarks: full-size configs, matmul ceilings, and a meter of the
CPU load that other processes put on the machine while we measure."""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from trainables.config import Config, load_config  # noqa: E402

# the benchmarked configs: name -> (preset, overrides, the reference s/step measured on a quiet machine)
CONFIGS: dict[str, tuple[str, list[str], float | None]] = {
    "looped_L1_D128_b20_T20": ("seed_probe_looped", ["curriculum.loops.end=20"], 1.149),
    "looped_L1_D128_b100_T20": ("seed_probe_looped", [], 2.775),
    "looped_L1_D64_b60_T15": ("seed_dilation", [], 0.698),
    "standard_L20_D128": ("seed_probe_standard", [], 1.118),
    "standard_L12_D256": ("paper_linear_regression_standard", [], 2.096),
    "cpu_looped_D64_d5_n11_b12_T5": ("paper_linear_regression_looped_cpu", [], 0.052),
}


def full_size_config(name: str, extra: list[str] = ()) -> Config:
    """The named config with every curriculum schedule fixed at its end value."""
    preset, overrides, _ = CONFIGS[name]
    config = load_config(preset, list(overrides) + list(extra))
    for schedule in (config.curriculum.dims, config.curriculum.points, config.curriculum.loops):
        schedule.start = schedule.end
    return config


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_ceiling(precision: str, size: int = 2048, reps: int = 5) -> tuple[float, float]:
    """GFLOP/s of a large square matmul in this dtype with the current thread count (median):
    per wall-clock second, and per CPU second of this process."""
    dtype = DTYPES[precision]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    walls, cpus = [], []
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=out)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    flop = 2 * size ** 3 / 1e9
    return flop / statistics.median(walls), flop / max(statistics.median(cpus), 1e-9)


def _busy_jiffies() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


class LoadMeter:
    """CPU cores kept busy by OTHER processes between start() and stop() (from /proc/stat minus
    this process's own CPU time), and the 1-minute load average at the end."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self):
        self.start()

    @staticmethod
    def _own_cpu() -> float:
        return sum(os.times()[:2])

    def start(self) -> None:
        self._busy, self._own, self._wall = _busy_jiffies(), self._own_cpu(), time.perf_counter()

    def stop(self) -> dict:
        busy, own, wall = _busy_jiffies(), self._own_cpu(), time.perf_counter()
        elapsed = max(wall - self._wall, 1e-9)
        foreign = None
        if busy is not None and self._busy is not None:
            foreign = max(0.0, ((busy - self._busy) / self.HZ - (own - self._own)) / elapsed)
        return {"foreign_cores": foreign, "own_cores": (own - self._own) / elapsed,
                "loadavg": os.getloadavg()[0]}


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def save_table(path: str | None, lines: list[str]) -> None:
    """The printed markdown, also written to `path` (a bench/results/ record) when given."""
    if path:
        Path(path).write_text("\n".join(lines) + "\n")
