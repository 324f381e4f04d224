"""bench/train_speed.py keeps working: a quick run on the CPU config prints a table of numbers."""
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_train_speed_quick_prints_a_table_of_numbers(tmp_path):
    out = tmp_path / "speed.md"
    done = subprocess.run([sys.executable, str(BENCH / "train_speed.py"), "--quick", "--threads", "1",
                           "--configs", "cpu_looped_D64_d5_n11_b12_T5", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert out.read_text().strip() == done.stdout.strip()
    header = next(line for line in done.stdout.splitlines() if line.startswith("| config"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("| cpu_looped")]
    assert [r[1] for r in rows] == ["fp32", "bf16"]
    for row in rows:
        values = dict(zip(columns, row))
        for key in ("ours s/step", "ref s/step", "ours GFLOP/s", "ours MFU", "ceiling GFLOP/s"):
            assert math.isfinite(float(values[key])) and float(values[key]) > 0, (key, values)
        assert float(values["speed-up"].rstrip("x")) > 0
    # the reference-style step computes the same function as ours
    agreement = next(line for line in done.stdout.splitlines() if line.startswith("Same function"))
    assert float(agreement.rsplit(" ", 1)[1]) < 1e-4


def test_gpu_bench_explains_a_missing_gpu():
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--ks" in done.stdout
    import torch
    if not torch.cuda.is_available():
        done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--quick"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and "needs a CUDA GPU" in done.stderr and "Traceback" not in done.stderr
