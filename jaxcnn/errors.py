"""Errors a user can fix: their message is one line that names what was wrong and what to do.

A bottom-layer module: data, train and the tasks all raise these.

Entry points (experiments/*) print `error: <message>` for these and exit with `exit_code`
instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RunError(Exception):
    """A problem with the run's inputs or environment (paths, workdir, disk, data)."""

    exit_code = 1


class UsageError(RunError):
    """A mistake on the command line or in a config (unknown key, bad value, wrong path)."""

    exit_code = 2
