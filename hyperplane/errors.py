"""Errors the command line turns into one clear line and an exit status, never a traceback."""
from __future__ import annotations

import click


class UserError(click.ClickException):
    """A mistake in the user's input (usage or configuration): one line, exit status 2."""

    exit_code = 2


class CaptureError(click.ClickException):
    """A capture that cannot be read at all: one line, exit status 3."""

    exit_code = 3
