"""The README is the manual: the commands it shows are the CLI's, every flag the CLI takes is
documented beside its verb, every exit code the CLI can end with is listed, and the verbs a
study's user runs after it do what the README says on a tiny study."""
import re
from pathlib import Path

import pytest
import yaml

from study.cli import build_parser
from studyfiles import cli, write_study
from trainables.errors import ConfigError, Unavailable, UserError

README = (Path(__file__).parents[1] / "README.md").read_text()


def _verbs() -> dict[str, set[str]]:
    """Each sub-command with its long options (--help aside)."""
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return {verb: {o for action in p._actions for o in action.option_strings if o.startswith("--")} - {"--help"}
            for verb, p in sub.choices.items()}


def _command_lines() -> list[str]:
    """The README's command lines: in code blocks, starting with `loopstudy ` (continuations joined)."""
    lines, blocks = [], re.findall(r"```[a-z]*\n(.*?)```", README, re.DOTALL)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("loopstudy "):
                lines.append(line)
    return lines


def test_every_command_the_readme_shows_is_one_the_cli_takes():
    verbs, shown = _verbs(), _command_lines()
    assert len(shown) > 15
    for line in shown:
        verb = line.split()[1]
        assert verb in verbs, f"README shows `{line}`: no verb {verb!r}"
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert flag in verbs[verb], f"README shows `{line}`: `{verb}` takes no {flag}"


def test_every_flag_of_every_verb_is_documented_with_its_verb():
    shown = {}
    for line in _command_lines():
        shown.setdefault(line.split()[1], set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    for verb, flags in _verbs().items():
        assert verb in shown, f"no README command line shows `loopstudy {verb}`"
        missing = flags - shown[verb] - {"--results-root"}    # every NAME|DIR verb's, documented once
        assert not missing, f"`loopstudy {verb}` takes {sorted(missing)}, which no README command line shows"
    assert "--results-root" in README


def test_every_exit_code_is_listed():
    codes = re.search(r"Exit codes: (.*?)\n\n", README, re.DOTALL).group(1)
    expected = {cls.EXIT_CODE for cls in (UserError, ConfigError, Unavailable)} | {0, 66, 130, 143}
    for code in expected:
        assert re.search(rf"(?<!\d){code}(?!\d)", codes), f"exit code {code} is not in the README's list"


@pytest.mark.service
def test_the_documented_verbs_do_what_the_readme_says_on_a_tiny_study(tmp_path):
    name = "documented"
    path = write_study(tmp_path, name, trainable="synthetic", base="seed_dilation_cpu", scheduler=None,
                       overrides={"training.train_steps": 20, "training.eval_every": 10, "curriculum.loops.start": 13},
                       space={"training.learning_rate": {"float": [1e-4, 1e-2], "log": True}},
                       budget={"num_samples": 3, "max_concurrent": 2})
    folder, root = tmp_path / name, str(tmp_path)
    run = cli("run", str(path), cwd=tmp_path)                 # "the answer is printed by run"
    assert run.returncode == 0, run.stdout + run.stderr
    assert "search best (one seed): t00" in run.stdout and f"report: {folder}/report/report.md" in run.stdout
    overhead = int(re.search(r"overhead (-?\d+)%", run.stdout).group(1))
    assert 0 <= overhead <= 100, run.stdout           # trials of milliseconds: all of it overhead

    status = cli("status", name, "--results-root", root, cwd=tmp_path)     # trial, state, params, ...
    header = status.stdout.splitlines()[1].split()
    assert header == ["trial", "state", "params", "objective", "steps", "reason"], status.stdout
    assert status.stdout.count(" completed ") == 3 and "no driver holds" not in status.stdout

    report = cli("report", name, "--results-root", root, cwd=tmp_path)     # report.md with its figures
    assert report.returncode == 0, report.stderr
    text = (folder / "report" / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((folder / "report" / f).is_file() for f in figures), figures

    export = cli("export", name, "--results-root", root, "--top", "2", cwd=tmp_path)   # headed by what it was judged on
    files = export.stdout.split()
    assert export.returncode == 0 and len(files) == 2, export.stdout + export.stderr
    for rank, file in enumerate(files, 1):
        head = Path(file).read_text().splitlines()
        assert head[0].startswith(f"# {name} rank {rank}: t00") and "(search, one seed)" in head[0], head[:3]
        comments = [line for line in head if line.startswith("#")]       # then the answer's no-winner lines
        assert comments[-1] == f"# rerun: loopstudy train {file}", head[:4]
    reference = cli("export", name, "--results-root", root, "--format", "reference", cwd=tmp_path)
    file, = reference.stdout.split()
    assert Path(file).read_text().startswith(f"# {name} rank 1: t00") and yaml.safe_load(Path(file).read_text())

    rerun = cli("train", files[0], "--set", "training.train_steps=10", "--out", str(tmp_path / "rerun"), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr            # "loopstudy format reruns with loopstudy train FILE"
    assert (tmp_path / "rerun" / "config.yaml").is_file() and (tmp_path / "rerun" / "metrics.jsonl").is_file()

    sync = cli("sync", name, "--results-root", root, cwd=tmp_path)       # nothing kept: nothing to send
    assert sync.returncode == 0 and sync.stdout.startswith("nothing to send"), sync.stdout + sync.stderr
    presets = cli("presets", cwd=tmp_path)
    assert presets.returncode == 0 and "seed_dilation_cpu" in presets.stdout
