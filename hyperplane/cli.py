"""The ``hyperplane`` command line (click). Each command lives in ``hyperplane/commands/<name>.py``
and exposes a click command named ``command``; this module only assembles the group and turns user
mistakes into one clear line and exit status 2 (3 for unreadable captures), never a traceback."""
from __future__ import annotations

import importlib
import sys

import click

from hyperplane import __version__

COMMANDS = ("replay", "explain", "enis", "inspect", "demo", "bench")


class UserError(click.ClickException):
    """A mistake in the user's input: printed as one line, exit status 2."""

    exit_code = 2


class CaptureError(click.ClickException):
    """A capture that cannot be read at all: exit status 3."""

    exit_code = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hyperplane")
def main() -> None:
    """Emulate the AWS Lambda Hyperplane ENI dataplane, packet by packet."""


for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"hyperplane.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command not built yet
        if exc.name != f"hyperplane.commands.{_name}":
            raise
        continue
    main.add_command(_mod.command, _name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
