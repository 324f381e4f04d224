"""JSON Lines files written as things happen (one JSON value a line, appended), read back
knowing that a crash may have cut the last line short."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .schema import shown


def read_jsonl(path: Path, accepts: Callable[[object], bool], item: str, fix: str = "") -> list:
    """The values of `path`, one a line (blank lines skipped). A last line cut short by a crash
    mid-write (no newline after it) is dropped: its writer had not returned. Any other line that
    does not parse, or that `accepts` refuses, is an error naming the file, the line and `item`
    (what each line must be), then `fix` (what to do)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            ok = accepts(value)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break
            value, ok = line, False
        if not ok:
            raise ConfigError(f"{path}: line {number} is not {item}: {shown(value)}" + (f"; {fix}" if fix else ""))
        values.append(value)
    return values
