"""``hyperplane inspect``: load a VPC configuration and print what the emulator understood.

Shows VPCs, subnets with the route table and network ACL that apply to them (explicit
association, else the main table / default ACL, as AWS decides), security groups with their rule
counts, route tables with their routes, NAT gateways, VPC endpoints, network interfaces and Lambda
functions, then the loader's warnings. ``--json`` prints the same summary as one JSON object.
"""
from __future__ import annotations

import json
import sys
import warnings

import click
from rich.console import Console
from rich.table import Table

from hyperplane.errors import UserError
from hyperplane.vpc import example_vpc_path
from hyperplane.vpc.errors import ConfigError, ConfigWarning
from hyperplane.vpc.loader import load_vpc
from hyperplane.vpc.model import VpcModel


def summarize(model: VpcModel) -> dict:
    """The model as plain JSON-ready data (what ``--json`` prints)."""
    def route_table_id(subnet_id: str):
        table = model.route_table_of(subnet_id)
        return table.id if table else None

    def nacl_id(subnet_id: str):
        acl = model.nacl_of(subnet_id)
        return acl.id if acl else None

    return {
        "vpcs": [{"id": v.id, "cidrs": [str(c) for c in v.cidrs], "ipv6_cidrs": [str(c) for c in v.ipv6_cidrs],
                  "amazon_dns": str(v.amazon_dns), "dns_servers": [str(s) for s in v.dns_servers]}
                 for v in model.vpcs.values()],
        "subnets": [{"id": s.id, "vpc_id": s.vpc_id, "cidr": str(s.cidr),
                     "ipv6_cidr": str(s.ipv6_cidr) if s.ipv6_cidr else None,
                     "availability_zone": s.availability_zone, "route_table": route_table_id(s.id),
                     "network_acl": nacl_id(s.id)} for s in model.subnets.values()],
        "security_groups": [{"id": g.id, "name": g.name, "vpc_id": g.vpc_id, "ingress_rules": len(g.ingress),
                             "egress_rules": len(g.egress)} for g in model.security_groups.values()],
        "route_tables": [{"id": t.id, "vpc_id": t.vpc_id, "main": t.main, "subnets": list(t.subnet_ids),
                          "routes": [{"destination": r.prefix_list_id or str(r.destination), "target": r.target_id,
                                      "kind": r.target_kind, "state": r.state} for r in t.routes]}
                         for t in model.route_tables.values()],
        "network_acls": [{"id": a.id, "vpc_id": a.vpc_id, "default": a.is_default, "subnets": list(a.subnet_ids),
                          "ingress_rules": len(a.rules(False)), "egress_rules": len(a.rules(True))}
                         for a in model.network_acls.values()],
        "nat_gateways": [{"id": n.id, "subnet_id": n.subnet_id, "state": n.state, "connectivity": n.connectivity,
                          "private_ip": str(n.private_ip) if n.private_ip else None,
                          "public_ips": [str(ip) for ip in n.public_ips]} for n in model.nat_gateways.values()],
        "vpc_endpoints": [{"id": e.id, "type": e.endpoint_type, "service": e.service_name,
                           "route_tables": list(e.route_table_ids), "subnets": list(e.subnet_ids)}
                          for e in model.vpc_endpoints.values()],
        "network_interfaces": [{"id": i.id, "subnet_id": i.subnet_id, "type": i.interface_type,
                                "private_ips": [str(ip) for ip in i.private_ips + i.ipv6_addresses],
                                "security_groups": list(i.group_ids)} for i in model.network_interfaces.values()],
        "functions": [{"name": f.name, "vpc_id": f.vpc_id, "subnets": list(f.subnet_ids),
                       "security_groups": list(f.security_group_ids),
                       "ipv6_allowed_for_dual_stack": f.ipv6_allowed_for_dual_stack} for f in model.functions.values()],
        "warnings": list(model.warnings),
    }


def _table(title: str, columns: tuple[str, ...], rows: list[tuple]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) if cell is not None else "-" for cell in row))
    return table


def render(summary: dict, console: Console, source: str) -> None:
    console.print(f"[bold]VPC configuration[/bold] from {source}")
    console.print(_table("VPCs", ("id", "CIDRs", "Amazon DNS", "DNS servers"), [
        (v["id"], ", ".join(v["cidrs"] + v["ipv6_cidrs"]), v["amazon_dns"], ", ".join(v["dns_servers"]) or "AmazonProvidedDNS")
        for v in summary["vpcs"]]))
    console.print(_table("Subnets", ("id", "CIDR", "zone", "route table", "network ACL"), [
        (s["id"], s["cidr"] + (f", {s['ipv6_cidr']}" if s["ipv6_cidr"] else ""), s["availability_zone"],
         s["route_table"], s["network_acl"]) for s in summary["subnets"]]))
    console.print(_table("Security groups", ("id", "name", "ingress rules", "egress rules"), [
        (g["id"], g["name"], g["ingress_rules"], g["egress_rules"]) for g in summary["security_groups"]]))
    for table in summary["route_tables"]:
        title = f"Route table {table['id']}" + (" (main)" if table["main"] else "")
        if table["subnets"]:
            title += ": " + ", ".join(table["subnets"])
        console.print(_table(title, ("destination", "target", "kind", "state"), [
            (r["destination"], r["target"], r["kind"], r["state"]) for r in table["routes"]]))
    console.print(_table("Network ACLs", ("id", "default", "subnets", "ingress", "egress"), [
        (a["id"], "yes" if a["default"] else "no", ", ".join(a["subnets"]) or "-", a["ingress_rules"], a["egress_rules"])
        for a in summary["network_acls"]]))
    if summary["nat_gateways"]:
        console.print(_table("NAT gateways", ("id", "subnet", "state", "private IP", "public IPs"), [
            (n["id"], n["subnet_id"], n["state"], n["private_ip"], ", ".join(n["public_ips"]) or "-")
            for n in summary["nat_gateways"]]))
    if summary["vpc_endpoints"]:
        console.print(_table("VPC endpoints", ("id", "type", "service", "route tables / subnets"), [
            (e["id"], e["type"], e["service"], ", ".join(e["route_tables"] + e["subnets"]) or "-")
            for e in summary["vpc_endpoints"]]))
    if summary["network_interfaces"]:
        console.print(_table("Network interfaces", ("id", "subnet", "type", "addresses", "security groups"), [
            (i["id"], i["subnet_id"], i["type"], ", ".join(i["private_ips"]), ", ".join(i["security_groups"]) or "-")
            for i in summary["network_interfaces"]]))
    console.print(_table("Lambda functions", ("name", "subnets", "security groups"), [
        (f["name"], ", ".join(f["subnets"]) or "(no VPC)", ", ".join(f["security_groups"]) or "-")
        for f in summary["functions"]]))
    for message in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


@click.command()
@click.option("--vpc", "vpc_paths", multiple=True, metavar="PATH",
              help="AWS describe-*/list-functions output: a JSON or YAML file, or a folder of them. Repeatable. "
                   "Default: the bundled example export.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(vpc_paths: tuple[str, ...], as_json: bool) -> None:
    """Load a VPC configuration and print what the emulator understood: VPCs, subnets with their
    route table and network ACL, security groups, routes, NAT gateways, endpoints and functions.

    With no --vpc, shows the bundled example export (hyperplane/data/example-vpc).
    """
    paths = vpc_paths or (example_vpc_path(),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # shown in the summary instead
        try:
            model = load_vpc(*paths)
        except ConfigError as err:
            raise UserError(str(err)) from None
    summary = summarize(model)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    render(summary, console, ", ".join(paths) if vpc_paths else "the bundled example (hyperplane/data/example-vpc)")
