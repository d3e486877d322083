"""Human-readable reports (rich tables) of a replay summary and of an explain trace."""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.table import Table


def _console(console: Optional[Console]) -> Console:
    return console if console is not None else Console(highlight=False)


def print_summary(summary: dict, console: Optional[Console] = None) -> None:
    """Packets, forwarded, dropped by reason, ENIs with peak connections, NAT gateways."""
    con = _console(console)
    packets, fwd, dropped = summary["packets"], summary["forwarded"], summary["dropped"]
    con.print(f"[bold]{packets}[/] packets: [green]{fwd} forwarded[/], [red]{dropped} dropped[/]"
              f"; {summary.get('connections', 0)} connections tracked")
    if summary.get("capture_truncated"):
        con.print("[yellow]the capture is truncated: its incomplete last record was not replayed[/]")
    if summary.get("drops"):
        table = Table(title="Drops by reason")
        table.add_column("reason")
        table.add_column("packets", justify="right")
        for reason, count in sorted(summary["drops"].items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(reason, str(count))
        con.print(table)
    if summary.get("enis"):
        table = Table(title="Hyperplane ENIs")
        for col in ("ENI", "subnet", "security groups", "private IP", "functions", "peak connections"):
            table.add_column(col, justify="right" if col == "peak connections" else "left")
        for eni in summary["enis"]:
            table.add_row(eni["id"], eni["subnet_id"], ", ".join(eni["security_group_ids"]),
                          str(eni["private_ip"]), ", ".join(eni["functions"]), str(eni["peak_connections"]))
        con.print(table)
    if summary.get("nat_gateways"):
        table = Table(title="NAT gateways")
        for col in ("NAT gateway", "public IP", "peak connections", "ErrorPortAllocation"):
            table.add_column(col)
        for nat in summary["nat_gateways"]:
            table.add_row(nat["id"], str(nat["public_ip"]), str(nat["peak_connections"]),
                          str(nat["error_port_allocation"]))
        con.print(table)


_DECISION_STYLE = {"allow": "green", "forward": "green", "pass": "green", "stateful": "green",
                   "translate": "cyan", "deny": "red", "drop": "red"}


def print_trace(trace, console: Optional[Console] = None) -> None:
    """The hop-by-hop trace of ``Engine.explain``, the verdict, and for a drop the fix hint."""
    con = _console(console)
    target = f"{trace.function} -> {trace.destination}:{trace.port}/{trace.protocol}"
    table = Table(title=target)
    for col in ("leg", "component", "id", "decision", "rule", "detail"):
        table.add_column(col)
    for hop in trace.hops:
        style = _DECISION_STYLE.get(hop.decision, "")
        decision = f"[{style}]{hop.decision}[/]" if style else hop.decision
        table.add_row(hop.leg, hop.kind, hop.component, decision, "" if hop.rule is None else str(hop.rule),
                      hop.detail)
    con.print(table)
    if trace.reachable:
        con.print("[green bold]reachable[/]: the request and its reply both pass")
        return
    rule = f", rule {trace.rule}" if trace.rule is not None else ""
    code = f" ({trace.explanation_code})" if trace.explanation_code else ""
    con.print(f"[red bold]blocked[/]: {trace.reason.label} at {trace.component}{rule}{code}")
    if trace.hint:
        con.print(f"fix: {trace.hint}")
