#!/usr/bin/env python
"""Load: a study of many tiny trials (the stand-in `synthetic` trainable, 8 steps each, a
checkpoint every 4, ASHA, TPE, 2 at a time) on the embedded stores (Optuna and MLflow on SQLite,
a local Ray), run as `loopstudy run` in a subprocess. Every 0.5 s meanwhile: the driver's RSS
and open files, and those of the driver with every process below it (Ray's), and their CPU time.
Then: wall time per trial, disk used per trial by store, and how long `loopstudy status`,
`loopstudy report` and the MLflow runs page (headless Chromium through Playwright, as
tests/test_ui_browser.py) take at that size.

    python bench/load.py                          # 500 trials: about 8 min on 2 cores
    python bench/load.py --trials 40 --keep /tmp/load40
    python bench/load.py --sqlite-wal --no-readers    # the driver's SQLite stores in WAL mode
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from common import fmt, median, save_table

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CLI = [sys.executable, "-m", "study.cli"]
END = re.compile(r"^t\d{3}\S* .*: (completed|pruned|failed)\b")     # study/progress_table.py
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
HZ, PAGE_KB = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE") // 1024
# --sqlite-wal: the driver with every SQLite connection in WAL mode, synchronous=NORMAL (a
# commit without a journal file and an fsync of its own; it survives a killed process, not a power cut)
WAL_DRIVER = """import sys
from sqlalchemy import engine, event
@event.listens_for(engine.Engine, "connect")
def _wal(connection, _):
    if type(connection).__module__ == "sqlite3":
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
from study.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_study(root: Path, trials: int) -> Path:
    study = {"name": "load", "trainable": "synthetic", "base": "paper_linear_regression_looped_cpu",
             "overrides": {"training.train_steps": 8, "training.eval_every": 1, "training.checkpoint_every": 4,
                           "training.log_every": 1, "curriculum.dims.interval": 1,
                           "curriculum.points.interval": 1, "curriculum.loops.interval": 1},
             "space": {"training.loop_dilation": {"categorical": [1, 2]},
                       "training.learning_rate": {"float": [1.0e-4, 1.0e-2], "log": True},
                       "curriculum.loops.start": None},
             "objectives": [{"metric": "eval/err_last", "mode": "min"}],
             "budget": {"num_samples": trials, "max_concurrent": 2},
             "scheduler": {"grace_period": 4, "reduction_factor": 2}, "sampler": "tpe", "sampler_seed": 0,
             "results_dir": str(root / "load")}
    path = root / "load.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Ray's GCS, raylet, workers, agents)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            children.setdefault(int(_proc(int(entry.name), "stat").rsplit(")", 1)[1].split()[1]), []).append(
                int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


class Sampler(threading.Thread):
    """Every `every` s: open files and RSS (KiB) of the driver and of its process tree (peaks),
    and each process's CPU seconds by name (the driver, raylet, ray::ImplicitFunc, ...)."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.stop = pid, every, threading.Event()
        self.peak = dict.fromkeys(("driver_fds", "driver_rss", "tree_fds", "tree_rss", "tree_procs"), 0)
        self.cpu: dict[int, tuple[str, float]] = {}     # pid -> (name, CPU seconds at its last sample)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            tree = {"tree_fds": 0, "tree_rss": 0, "tree_procs": 0}
            for pid in descendants(self.pid):
                try:
                    fds, rss = len(os.listdir(f"/proc/{pid}/fd")), int(_proc(pid, "statm").split()[1]) * PAGE_KB
                    cpu = sum(map(int, _proc(pid, "stat").rsplit(")", 1)[1].split()[11:13])) / HZ
                    self.cpu[pid] = ("driver" if pid == self.pid else _proc(pid, "comm").strip(), cpu)
                except OSError:
                    continue
                for key, value in (("tree_fds", fds), ("tree_rss", rss), ("tree_procs", 1)):
                    tree[key] += value
                if pid == self.pid:
                    self.peak["driver_fds"], self.peak["driver_rss"] = (max(self.peak["driver_fds"], fds),
                                                                        max(self.peak["driver_rss"], rss))
            self.peak.update({k: max(self.peak[k], v) for k, v in tree.items()})


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (for the load beside the study)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / HZ


def disk_used(*paths: Path) -> int:
    """Bytes allocated on disk (st_blocks) by files and folder trees."""
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*"))]
    return sum(f.stat(follow_symlinks=False).st_blocks * 512 for f in files if not f.is_symlink())


def run_study(path: Path, wal: bool) -> dict:
    """`loopstudy run` with the sampler beside it; the times at which trials ended (the driver's
    end lines), its output, the peaks and CPU seconds by process name."""
    start, busy = time.monotonic(), busy_cpu_s()
    driver = subprocess.Popen([*([sys.executable, "-c", WAL_DRIVER] if wal else CLI), "run", str(path)],
                              cwd=path.parent, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = Sampler(driver.pid)
    sampler.start()
    ends, lines = [], []
    for line in driver.stdout:
        lines.append(line)
        if END.search(line):
            ends.append(time.monotonic() - start)
    code, wall = driver.wait(), time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    (path.parent / "driver.log").write_text("".join(lines))
    if code or not ends:
        sys.exit(f"the study failed (exit {code}):\n" + "".join(lines[-40:]))
    cpu: dict[str, float] = {}
    for name, seconds in sampler.cpu.values():
        cpu[name] = cpu.get(name, 0) + seconds
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    return {"wall": wall, "ends": ends, "gaps": gaps, "lines": lines, "peak": sampler.peak, "cpu": cpu,
            "foreign": max(0.0, (busy_cpu_s() - busy - sum(cpu.values())) / wall)}


def timed_cli(*args: str, cwd: Path, repeat: int) -> tuple[float, str]:
    """Median wall seconds of a CLI command (a fresh process each time), and its output."""
    walls, out = [], ""
    for _ in range(repeat):
        start = time.monotonic()
        done = subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=1800)
        walls.append(time.monotonic() - start)
        if done.returncode:
            sys.exit(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        out = done.stdout
    return median(walls), out


def list_every_run(page) -> tuple[int, int, int, float]:
    """MLflow lists 100 runs ("100 matching runs" below the table) and a button for 100 more at
    the table's end: click it until every run is listed; (first page, all, clicks, seconds)."""
    more, footer = page.get_by_role("button", name="Load more"), page.get_by_text(re.compile(r"^\d+ matching runs$"))
    first, start, clicks = int(footer.first.inner_text().split()[0]), time.monotonic(), 0
    while True:
        page.evaluate("document.querySelectorAll('.ag-body-viewport').forEach(e => e.scrollTop = 1e9)")
        page.wait_for_timeout(300)                  # the button is drawn once the table is at its end
        if not (more.count() and more.first.is_visible()):
            return first, int(footer.first.inner_text().split()[0]), clicks, time.monotonic() - start
        listed = int(footer.first.inner_text().split()[0])
        more.first.click()
        while int(footer.first.inner_text().split()[0]) <= listed:
            page.wait_for_timeout(50)
        clicks += 1


def time_ui(root: Path, loads: int = 3) -> dict:
    """`loopstudy ui`: seconds until it prints the link; each load of that link until the runs
    table shows a run and the objective's column; the runs/search requests; listing every run."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    ui = subprocess.Popen([*CLI, "ui", "load", "--results-root", str(root), "--port", str(port)], cwd=root,
                          env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = next(m.group(1) for m in map(re.compile(r"^open (http://\S+)").search, ui.stdout) if m)
        found, asked = {"server": time.monotonic() - start, "loads": [], "search_s": []}, {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(300_000)
            page.on("request", lambda r: asked.setdefault(r, time.monotonic()) if "runs/search" in r.url else None)
            page.on("requestfinished", lambda r: r in asked and found["search_s"].append(time.monotonic() - asked[r]))
            run = page.get_by_role("link", name=re.compile(r"^t\d{3}")).first
            objective = page.locator('[role="columnheader"]').filter(has_text=re.compile(r"^eval/err_last$")).first
            for _ in range(loads):
                page.goto("about:blank")            # a fresh load each time (the cache warm after the first)
                t0 = time.monotonic()
                page.goto(url)
                run.wait_for(state="visible")
                objective.wait_for(state="visible")
                found["loads"].append(time.monotonic() - t0)
            page.screenshot(path=str(root / "load_runs.png"))
            found["first"], found["all"], found["clicks"], found["all_s"] = list_every_run(page)
            browser.close()
        return found
    finally:
        ui.terminate()
        ui.wait(timeout=60)


def readers(root: Path, repeat: int) -> list[tuple[str, str]]:
    """`status`, `report` and the MLflow runs page on the finished study, as table rows."""
    where = ("load", "--results-root", str(root))
    status_s, status_out = timed_cli("status", *where, cwd=root, repeat=repeat)
    report_s, _ = timed_cli("report", *where, cwd=root, repeat=repeat)
    ui = time_ui(root)
    return [(f"`loopstudy status` (median of {repeat})", f"{status_s:.1f} s, {len(status_out.splitlines())} lines"),
            (f"`loopstudy report` (median of {repeat})", f"{report_s:.1f} s"),
            ("`loopstudy ui` until it prints the link", f"{ui['server']:.1f} s"),
            ("runs page until a run and the objective column show: first load / again",
             f"{ui['loads'][0]:.1f} s / {', '.join(f'{x:.1f}' for x in ui['loads'][1:])} s"),
            ("  runs/search requests (s each)", ", ".join(f"{x:.2f}" for x in ui["search_s"]) or "-"),
            ("  runs listed at first (MLflow's page)", str(ui["first"])),
            ("  every run listed (clicks on Load more; s, with 0.3 s per scroll)",
             f"{ui['all']} ({ui['clicks']} clicks; {ui['all_s']:.1f} s)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs of status and report (median)")
    parser.add_argument("--keep", help="results root to keep, with driver.log and load_runs.png (default: removed)")
    parser.add_argument("--sqlite-wal", action="store_true", help="the driver's SQLite stores in WAL mode (above)")
    parser.add_argument("--no-readers", action="store_true", help="the study only: no status, report, ui")
    parser.add_argument("--out")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="loopstudy-load-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    n, folder, mib = args.trials, root / "load", 1024 ** 2
    try:
        run = run_study(write_study(root, n), args.sqlite_wal)
        ends, gaps, peak = run["ends"], run["gaps"], run["peak"]
        quarters = [median(gaps[i * len(gaps) // 4:(i + 1) * len(gaps) // 4]) for i in range(4)]
        stores = {name: disk_used(*(folder / (name + end) for end in ("", "-wal", "-shm")))
                  for name in ("ray", "optuna.db", "mlflow.db", "mlartifacts")}
        total = disk_used(folder)
        rows = [("trials ended (the driver's end lines)", f"{len(ends)} of {n}"),
                ("wall time, `loopstudy run` start to exit", f"{run['wall']:.0f} s"),
                ("  first / last trial ended at", f"{ends[0]:.0f} s / {ends[-1]:.0f} s"),
                ("  after the last trial (status, answer, report)", f"{run['wall'] - ends[-1]:.0f} s"),
                ("wall per trial, total / N", f"{run['wall'] / n:.2f} s"),
                ("wall per trial, median gap between trial ends", f"{median(gaps):.2f} s"),
                ("  the same by quarter of the study", ", ".join(fmt(q) for q in quarters)),
                ("the driver's own line", next((x.strip() for x in run["lines"] if x.startswith("finished:")), "-")),
                ("lines the driver printed", str(len(run["lines"]))),
                ("peak open files, driver / driver + Ray processes",
                 f"{peak['driver_fds']} / {peak['tree_fds']} ({peak['tree_procs']} processes)"),
                ("peak RSS, driver / driver + Ray processes (sum)",
                 f"{peak['driver_rss'] / 1024:.0f} / {peak['tree_rss'] / 1024:.0f} MiB"),
                ("CPU of the study's processes / foreign load",
                 f"{sum(run['cpu'].values()):.0f} s / {run['foreign']:.2f} cores"),
                ("  CPU per trial by process", ", ".join(f"{k} {v / n:.2f} s" for k, v in
                                                         sorted(run["cpu"].items(), key=lambda x: -x[1])[:4])),
                ("disk used, total / per trial", f"{total / mib:.1f} MiB / {total / n / 1024:.0f} KiB"),
                *((f"  {name}", f"{b / mib:.1f} MiB ({b / n / 1024:.0f} KiB per trial)") for name, b in stores.items())]
        rows += [] if args.no_readers else readers(root, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lines = [f"# Load: {n} synthetic trials (8 steps, checkpoint every 4, ASHA, TPE), 2 concurrent, SQLite "
             f"stores{' in WAL mode' if args.sqlite_wal else ''}, local Ray; {os.cpu_count()} cores", "",
             "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    print("\n".join(lines))
    save_table(args.out, lines)


if __name__ == "__main__":
    main()
