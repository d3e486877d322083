"""``hyperplane enis``: the Hyperplane ENIs a configuration gives rise to and the functions using
each, like the Lambda ENI Finder (as a table, or ``--json`` in DescribeNetworkInterfaces shape)."""
from __future__ import annotations

import json

import click

from hyperplane.errors import UserError
from hyperplane.commands.common import load_model


@click.command()
@click.option("--vpc", "vpc_paths", multiple=True, metavar="PATH",
              help="AWS JSON/YAML export (file or folder); repeat to merge several.")
@click.option("--eni", "eni_id", metavar="ENI_ID", help="Only this ENI (which functions use it?).")
@click.option("--function", "function", metavar="NAME", help="Only the ENIs this function uses.")
@click.option("--json", "as_json", is_flag=True, help="Print {\"NetworkInterfaces\": [...]} instead of a table.")
def command(vpc_paths: tuple[str, ...], eni_id: str | None, function: str | None, as_json: bool) -> None:
    """List the Hyperplane ENIs of the configuration's VPC functions and who uses each."""
    from hyperplane.control import ControlPlane, State
    from hyperplane.control.finder import COLUMNS, describe, find_enis, rows

    model = load_model(vpc_paths)
    plane = ControlPlane(model)
    try:
        enis = find_enis(plane, eni_id=eni_id, function=function)
    except ValueError as err:
        raise UserError(str(err)) from None
    not_active = [s for s in plane.statuses().values() if s.state is not State.ACTIVE]

    if as_json:
        out = describe(enis)
        out["Functions"] = [s.to_lambda() for s in plane.statuses().values()]
        click.echo(json.dumps(out, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: full lines rather than an 80-column crop
        console = Console(width=200)
    table = Table(title=f"Hyperplane ENIs ({len(enis)})")
    for name in COLUMNS:  # identifiers never wrap; lists of groups and functions may
        wraps = name in ("Security groups", "Status", "Functions")
        table.add_column(name, overflow="fold", no_wrap=not wraps, min_width=8 if wraps else None)
    for row in rows(enis):
        table.add_row(*row)
    console.print(table)
    for status in not_active:
        reason = f" ({status.state_reason_code.value})" if status.state_reason_code else ""
        console.print(f"function {status.name}: {status.state.value}{reason}: {status.state_reason or ''}".rstrip(": "),
                      markup=False, highlight=False, soft_wrap=True)
