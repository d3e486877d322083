"""Helpers shared by the CLI commands: loading a configuration and parsing options into the
engine's terms, with every user mistake turned into one clear line (exit status 2)."""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import click

from hyperplane.errors import UserError


def load_model(paths: Sequence[str]):
    """``load_vpc`` with configuration errors and warnings shown the CLI way."""
    from hyperplane.vpc.errors import ConfigError
    from hyperplane.vpc.loader import load_vpc

    if not paths:
        raise UserError("no configuration given: pass --vpc FILE_OR_FOLDER (several allowed)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_vpc(*paths)
        except ConfigError as err:
            raise UserError(str(err)) from None
        except OSError as err:
            raise UserError(f"{err.filename or paths[0]}: {err.strerror or err}") from None
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    return model


def parse_sandboxes(specs: Iterable[str]):
    from hyperplane.engine import Sandbox

    out = []
    for spec in specs:
        try:
            out.append(Sandbox.parse(spec))
        except ValueError as err:
            raise UserError(f"--sandbox {spec}: {err}") from None
    return out


def parse_port_range(text: str) -> tuple[int, int]:
    try:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise UserError(f"--port-range {text}: expected LOW-HIGH, e.g. 1024-65535") from None
    if not (1 <= lo <= hi <= 65535):
        raise UserError(f"--port-range {text}: ports must satisfy 1 <= LOW <= HIGH <= 65535")
    return lo, hi


def parse_taps(specs: Iterable[str]) -> dict[str, str]:
    taps: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise UserError(f"--tap {spec}: expected NAME=FILE with NAME one of lambda, eni, internet")
        if name not in ("lambda", "eni", "internet"):
            raise UserError(f"--tap {spec}: unknown tap {name!r}; taps are lambda, eni, internet")
        if name in taps:
            raise UserError(f"--tap {name} given twice")
        taps[name] = path
    return taps
