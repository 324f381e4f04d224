"""The errors a user can act on. Each message is the whole story (it names the file or field,
what was expected, and what to do), so the CLI prints it without a traceback and exits with
the error's EXIT_CODE; any other exception is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to do."""
    EXIT_CODE = 1


class ConfigError(UserError, ValueError):
    """A value or key that is not allowed; the message names the dotted field."""
    EXIT_CODE = 2           # bad input, as argparse's own usage errors


class Unavailable(UserError):
    """A service the command needs (a tracking server, a database) does not answer; nothing was
    lost: run the command again once it is back."""
    EXIT_CODE = 75          # EX_TEMPFAIL: try again later
