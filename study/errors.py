"""The study service's errors, and the walk along an exception's causes that several of its
rooms need (is this error, or one it was raised from, a full disk? a server away?)."""
from __future__ import annotations

from typing import Iterator

from trainables.errors import ConfigError, Unavailable, UserError

__all__ = ["ConfigError", "StudyError", "Unavailable", "UserError", "causes"]


class StudyError(ConfigError):
    """An invalid study file or results folder; the message names the file and the field."""


def causes(error: BaseException | None, limit: int = 20) -> Iterator[BaseException]:
    """`error`, then each exception it was raised from or while handling (`__cause__`, else
    `__context__`), innermost last; at most `limit` (a cycle ends there)."""
    for _ in range(limit):
        if error is None:
            return
        yield error
        error = error.__cause__ or error.__context__
