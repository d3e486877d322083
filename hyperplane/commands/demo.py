"""``hyperplane demo``: the bundled scenario, replayed end to end, with its story checked.

The scenario (made by ``pcaps/make_demo.py`` with moto and scapy; the story is in pcaps/README.md):
orders-api reaches its database through a security-group reference and the internet through a NAT
gateway, overflowing one Hyperplane ENI into a second; report-worker is stopped by a NACL without an
inbound ephemeral-port rule and by a database security group that does not reference its group.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from typing import Optional

import click
import yaml
from rich.console import Console

from hyperplane.errors import UserError


def demo_dir() -> str:
    """The demo's folder: package data when installed, ``pcaps/demo`` in a source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "data", "demo"), os.path.join(os.path.dirname(here), "pcaps", "demo")):
        if os.path.isfile(os.path.join(candidate, "demo.yaml")):
            return candidate
    raise UserError("the demo scenario is not installed (expected hyperplane/data/demo/demo.yaml)")


def load_manifest(folder: str) -> dict:
    with open(os.path.join(folder, "demo.yaml")) as fh:
        return yaml.safe_load(fh)


def check_story(summary: dict, drops: list[dict], expect: dict) -> list[tuple[bool, str]]:
    """Compare a replay with the manifest's expectations; one (ok, line) per claim of the story."""
    checks: list[tuple[bool, str]] = []

    def claim(ok: bool, text: str) -> None:
        checks.append((bool(ok), text))

    claim(summary["packets"] == expect["packets"], f"{expect['packets']} packets replayed (got {summary['packets']})")
    claim(summary["forwarded"] == expect["forwarded"] and summary["dropped"] == expect["dropped"],
          f"{expect['forwarded']} forwarded, {expect['dropped']} dropped "
          f"(got {summary['forwarded']}, {summary['dropped']})")
    by_index = {d["index"]: d for d in drops}
    for detail in expect.get("drop_details", []):
        got = [by_index.get(i) for i in detail["indices"]]
        ok = all(d is not None and d["reason"] == detail["reason"] and d["component"] == detail["component"]
                 and d["rule"] == detail["rule"] for d in got)
        rule = f", rule {detail['rule']}" if detail.get("rule") is not None else ""
        claim(ok, f"{len(detail['indices'])} packets dropped: {detail['reason']} at {detail['component']}{rule}")
    enis = expect.get("enis", {})
    if enis:
        per_function: Counter = Counter()
        for eni in summary["enis"]:
            for fn in eni["functions"]:
                per_function[fn] += 1
        claim(len(summary["enis"]) == enis["total"],
              f"{enis['total']} Hyperplane ENIs (got {len(summary['enis'])})")
        for fn, n in enis.get("by_function", {}).items():
            claim(per_function[fn] == n, f"{fn} uses {n} ENI{'s' if n != 1 else ''} (got {per_function[fn]})")
        if "first_eni_peak_connections" in enis and summary["enis"]:
            peak = summary["enis"][0]["peak_connections"]
            claim(peak == enis["first_eni_peak_connections"],
                  f"the first ENI fills up to {enis['first_eni_peak_connections']} connections (got {peak})")
    return checks


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the outputs (default: a new temporary folder).")
@click.option("--backend", type=click.Choice(["auto", "core", "reference"]), default="auto", show_default=True)
def command(out_dir: Optional[str], backend: str):
    """Replay the bundled scenario and print what happened to every connection, and why."""
    import json

    from hyperplane.commands.common import load_model, parse_sandboxes
    from hyperplane.replay import ReplayConfig, run_replay
    from hyperplane.report import print_summary

    console = Console(highlight=False)
    folder = demo_dir()
    manifest = load_manifest(folder)
    out = out_dir or tempfile.mkdtemp(prefix="hyperplane-demo-")
    os.makedirs(out, exist_ok=True)
    console.rule(f"[bold]hyperplane demo[/]: {manifest['name']}")
    console.print(manifest["description"].strip())
    options = manifest.get("options", {})
    console.print(f"\nENI capacity lowered to {options.get('eni_capacity')} for the demo (AWS: 65,000).")
    cfg = ReplayConfig(
        capture=os.path.join(folder, manifest["capture"]),
        model=load_model([os.path.join(folder, manifest["vpc"])]),
        sandboxes=parse_sandboxes(manifest["sandboxes"]),
        taps={tap: os.path.join(out, f"{tap}.pcap") for tap in ("lambda", "eni", "internet")},
        drops_path=os.path.join(out, "drops.jsonl"),
        flow_logs_path=os.path.join(out, "flow-logs.log"),
        summary_path=os.path.join(out, "summary.json"),
        eni_capacity=options.get("eni_capacity"),
        backend=backend,
    )
    summary = run_replay(cfg)
    print_summary(summary, console)
    with open(cfg.drops_path) as fh:
        drops = [json.loads(line) for line in fh]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for d in drops:
        groups[(d["reason"], d["component"], d["rule"], d["explanation_code"])].append(d["index"])
    if groups:
        console.print("\n[bold]Why packets were dropped[/]")
        for (reason, component, rule, code), indices in groups.items():
            rule_text = f" rule {rule}" if rule is not None else ""
            code_text = f" ({code})" if code else ""
            console.print(f"  {reason}: {len(indices)} packets stopped by {component}{rule_text}{code_text}")
    console.print("\n[bold]Story check[/]")
    checks = check_story(summary, drops, manifest.get("expect", {}))
    for ok, line in checks:
        console.print(f"  {'[green]ok[/]  ' if ok else '[red]FAIL[/]'} {line}")
    console.print(f"\nOutputs in [bold]{out}[/]: lambda.pcap, eni.pcap, internet.pcap, drops.jsonl, "
                  f"flow-logs.log, summary.json")
    console.print("Try: hyperplane explain --vpc " + os.path.join(folder, manifest["vpc"])
                  + " --function report-worker --to 10.0.3.10:5432/tcp")
    if not all(ok for ok, _ in checks):
        raise click.ClickException("the replay did not match the demo's story (see FAIL lines above)")
