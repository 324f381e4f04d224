"""The README is the manual: the commands it shows are the CLI's, every flag the CLI takes is
documented beside its verb, and every exit code the CLI can end with is listed."""
import re
from pathlib import Path

from study.cli import build_parser
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
