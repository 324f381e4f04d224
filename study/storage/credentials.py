"""Passwords in store URIs: never written out in anything of ours, shown as ***, taken from the
environment when a store is opened.

No password is ever written into a URI of ours: one in the study file or a flag would be kept in
study.yaml (and the study's MLflow parent run) and shown by whatever prints the URI. It comes
from the environment: the tools' own (PGPASSWORD or ~/.pgpass for PostgreSQL,
MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD for an MLflow server), or a reference in the
password's place, `postgresql://optuna:${OPTUNA_DB_PASSWORD}@host/db`, expanded only when a store
is opened (`expanded`). `redact` shows any URI without its password.
"""
from __future__ import annotations

import os
import re
from urllib.parse import quote

from ..errors import ConfigError

# where a URI carries a password (group 1): scheme://user:PASSWORD@host, or ...?password=PASSWORD
PASSWORDS = (re.compile(r"(?<=://)[^/@:]*:([^/@]*)@"), re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE))
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")     # ${VARIABLE}


def replace_passwords(uri: str, replace) -> str:
    """`uri` with each non-empty password `p` replaced by `replace(p)`."""
    def one(match: re.Match) -> str:
        if not match.group(1):
            return match.group(0)
        start, end = match.start(1) - match.start(0), match.end(1) - match.start(0)
        return match.group(0)[:start] + replace(match.group(1)) + match.group(0)[end:]

    for pattern in PASSWORDS:
        uri = pattern.sub(one, uri)
    return uri


def redact(uri: str) -> str:
    """`uri` as it may be shown: a password written out becomes ***; a ${VARIABLE} stays."""
    return replace_passwords(uri, lambda p: p if REFERENCE.fullmatch(p) else "***")


def has_password(uri: str) -> bool:
    """Whether `uri` holds a password written out (not a ${VARIABLE} reference)."""
    return redact(uri) != uri


def expanded(uri: str, where: str) -> str:
    """`uri` with its ${VARIABLE} password taken from the environment (percent-encoded); the
    error names the variable and the field (`where`)."""
    def value(password: str) -> str:
        reference = REFERENCE.fullmatch(password)
        if reference is None:
            return password
        if reference.group(1) not in os.environ:
            raise ConfigError(f"'{where}' {redact(uri)} takes its password from ${reference.group(1)}, which is "
                              "not set here: export it (on a cluster also in the environment of every "
                              "Ray node)")
        return quote(os.environ[reference.group(1)], safe="")

    return replace_passwords(uri, value)
