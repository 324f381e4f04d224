"""Print the import graph between the top-level packages (trainables, search_spaces, study,
analysis) and the third-party runtimes each imports at module level, read from the source with
`ast` (nothing is imported). `--check` exits 1 when an arrow breaks the house rules.

    python tools/import_graph.py            # every arrow, with the files that make it
    python tools/import_graph.py --check    # ... and the rule each forbidden arrow breaks
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search_spaces", "study", "analysis")
RUNTIMES = ("ray", "mlflow", "optuna", "torch")
# the arrows the house allows (ARCHITECTURE.md); the Ray adapter is the one module of
# trainables that may import Ray, and only study imports it
ALLOWED = {"trainables": set(), "search_spaces": {"trainables"},
           "analysis": {"trainables"}, "study": {"trainables", "search_spaces", "analysis"}}
FORBIDDEN_RUNTIMES = {"trainables": {"ray", "mlflow"}, "search_spaces": {"ray", "mlflow"},
                      "analysis": {"ray"}}
RAY_ADAPTER, ADAPTER_MODULE = "trainables/ray_adapter.py", "trainables.ray_adapter"


def modules(path: Path) -> set[str]:
    """Dotted modules a file imports, anywhere in it (relative imports made absolute)."""
    package = path.relative_to(ROOT).parts[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = f"{package}.{node.module or ''}".rstrip(".") if node.level else node.module or ""
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def files() -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): modules(p) for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def graph(imported: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(from package, to package or runtime) -> the files making that arrow."""
    arrows: dict[tuple[str, str], list[str]] = {}
    for rel, names in imported.items():
        package = rel.split("/")[0]
        for name in sorted({n.split(".")[0] for n in names}):
            if name != package and name in PACKAGES + RUNTIMES:
                arrows.setdefault((package, name), []).append(rel)
    return arrows


def violations(arrows, imported: dict[str, set[str]]) -> list[str]:
    found = []
    for (source, target), files in sorted(arrows.items()):
        if target in PACKAGES and target not in ALLOWED[source]:
            found.append(f"{source} -> {target} ({', '.join(files)}): not an allowed arrow")
        if target in FORBIDDEN_RUNTIMES.get(source, ()):
            users = [f for f in files if f != RAY_ADAPTER]
            if users:
                found.append(f"{source} imports {target} ({', '.join(users)})")
    found += [f"{rel} imports the Ray adapter (only study may)" for rel, names in imported.items()
              if ADAPTER_MODULE in names and not rel.startswith("study/")]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 on a forbidden arrow")
    args = parser.parse_args()
    imported = files()
    arrows = graph(imported)
    for (source, target), users in sorted(arrows.items()):
        kind = "package" if target in PACKAGES else "runtime"
        print(f"{source:>13} -> {target:<13} [{kind}] {', '.join(users)}")
    adapter = sorted(rel for rel, names in imported.items() if ADAPTER_MODULE in names)
    print(f"{ADAPTER_MODULE} imported by: {', '.join(adapter) or 'nothing'}")
    bad = violations(arrows, imported)
    if bad:
        print("\nbreaks the house rules:\n  " + "\n  ".join(bad))
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
