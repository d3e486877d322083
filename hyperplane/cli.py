"""The ``hyperplane`` command line (click). Each command lives in ``hyperplane/commands/<name>.py``
and exposes a click command named ``command``; this module only assembles the group and turns user
mistakes into one clear line and exit status 2 (3 for unreadable captures), never a traceback."""
from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from hyperplane import __version__
from hyperplane.errors import CaptureError, UserError

__all__ = ["main", "UserError", "CaptureError"]

COMMANDS = ("replay", "explain", "enis", "inspect", "demo", "bench")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hyperplane")
def main() -> None:
    """Emulate the AWS Lambda Hyperplane ENI dataplane, packet by packet."""
    _exit_on_sigterm()


def _exit_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does, by an exception (SystemExit, status 143): open
    outputs are closed, and so cut to what was written (hyperplane/io/output.py), instead of the
    process vanishing with them half-written."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


for _name in COMMANDS:
    main.add_command(importlib.import_module(f"hyperplane.commands.{_name}").command, _name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
