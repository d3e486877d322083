"""``hyperplane explain``: can function F reach IP:PORT/PROTO, and if not, which rule stops it?"""
from __future__ import annotations

import ipaddress
import json

import click

from hyperplane.errors import UserError
from hyperplane.commands.common import load_model, parse_sandboxes


def parse_destination(text: str) -> tuple[str, int, str]:
    """``10.0.3.10:5432/tcp`` or ``[2001:db8::1]:443/tcp`` -> (ip, port, proto)."""
    addr_port, sep, proto = text.rpartition("/")
    proto = proto.lower()
    if not sep or proto not in ("tcp", "udp"):
        raise UserError(f"--to {text}: expected IP:PORT/tcp or IP:PORT/udp")
    if addr_port.startswith("["):
        host, _, port_s = addr_port[1:].partition("]:")
    else:
        host, _, port_s = addr_port.rpartition(":")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_s)
    except ValueError:
        raise UserError(f"--to {text}: expected IP:PORT/PROTO, e.g. 10.0.3.10:5432/tcp") from None
    if not 0 < port < 65536:
        raise UserError(f"--to {text}: port {port} is not in 1-65535")
    return str(ip), port, proto


@click.command()
@click.option("--vpc", "vpc_paths", multiple=True, required=True, metavar="PATH",
              help="AWS describe-* JSON/YAML file or folder (several merge).")
@click.option("--function", "function", required=True, help="Lambda function name.")
@click.option("--to", "destination", required=True, metavar="IP:PORT/tcp|udp")
@click.option("--sandbox", "sandbox_specs", multiple=True, metavar="FUNCTION=CIDR[@SUBNET_ID]",
              help="Pin the function's execution environment (and subnet).")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def command(vpc_paths, function, destination, sandbox_specs, as_json):
    """Trace a synthetic connection from FUNCTION hop by hop and say why it passes or where it stops."""
    from hyperplane.engine import Engine
    from hyperplane.report import print_trace

    model = load_model(vpc_paths)
    if function not in model.functions:
        known = ", ".join(sorted(model.functions)) or "none"
        raise UserError(f"--function {function}: no such function in the configuration (known: {known})")
    ip, port, proto = parse_destination(destination)
    try:
        engine = Engine(model, parse_sandboxes(sandbox_specs), backend="reference")
        trace = engine.explain(function, ip, port, proto)
    except ValueError as err:
        raise UserError(str(err)) from None
    if as_json:
        click.echo(json.dumps(trace.as_dict(), indent=2))
    else:
        print_trace(trace)
