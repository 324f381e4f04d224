"""The house's rules that the code itself can check: which package imports which, and that the
science and the analysis need no Ray."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
NO_RAY = "import sys; sys.modules['ray'] = None  # any `import ray` now raises ImportError\n"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_RAY + code], cwd=REPO, capture_output=True, text=True)


def test_trainables_and_analysis_import_with_ray_unimportable():
    done = run("import trainables, trainables.training, trainables.probing, trainables.plots, search_spaces\n"
               "import analysis.trials, analysis.report, analysis.figures, analysis.export, analysis.verdict\n"
               "assert not [m for m in sys.modules if m == 'study' or m.startswith('study.')], 'study imported'\n"
               "print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    adapter = run("import trainables.ray_adapter")
    assert adapter.returncode != 0 and "No module named 'ray.tune'" in adapter.stderr   # the one that needs Ray


def test_the_import_graph_follows_the_house_rules():
    done = subprocess.run([sys.executable, "tools/import_graph.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    arrows = {tuple(line.split()[:3:2]) for line in done.stdout.splitlines() if "->" in line}
    assert ("study", "analysis") in arrows and ("analysis", "study") not in arrows
    assert ("analysis", "ray") not in arrows and ("trainables", "mlflow") not in arrows


def test_a_submitted_job_ships_every_package_of_the_house():
    from study.cluster.jobs import PACKAGES, REPO

    assert set(PACKAGES) == {"trainables", "search_spaces", "study", "analysis"}
    assert all((REPO / package / "__init__.py").is_file() for package in PACKAGES), REPO
