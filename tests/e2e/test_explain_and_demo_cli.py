"""``hyperplane explain`` on the demo's three classic questions, and ``hyperplane demo``."""
from __future__ import annotations

import json
import os

import pytest

from e2e_support import DEMO, assert_one_clear_line, cli, cli_subprocess

VPC = os.path.join(DEMO, "vpc")

QUESTIONS = [
    # (function, destination, reachable, reason, component, rule, explanation code)
    ("report-worker", "10.0.3.10:5432/tcp", False, "sg-ingress", "sg-0db00000000000000", None,
     "ENI_SG_RULES_MISMATCH"),
    ("report-worker", "203.0.113.20:443/tcp", False, "nacl-ingress", "acl-0reports000000000", "*",
     "SUBNET_ACL_RESTRICTION"),
    ("orders-api", "10.0.3.10:5432/tcp", True, None, None, None, None),
]


@pytest.mark.parametrize("function, to, reachable, reason, component, rule, code", QUESTIONS)
def test_explain_json_answers_the_classic_questions(function, to, reachable, reason, component, rule, code):
    run = cli("explain", "--vpc", VPC, "--function", function, "--to", to, "--json")
    assert run.exit_code == 0, run.stderr
    trace = json.loads(run.stdout)
    ip, _, rest = to.partition(":")
    port, _, proto = rest.partition("/")
    assert (trace["function"], trace["destination"], trace["port"], trace["protocol"]) == (function, ip, int(port), proto)
    assert trace["reachable"] is reachable
    assert (trace["reason"], trace["component"], trace["rule"], trace["explanation_code"]) == (reason, component, rule, code)
    legs = [h["leg"] for h in trace["hops"]]
    assert legs and legs[0] == "request"
    kinds = [h["kind"] for h in trace["hops"]]
    assert "security-group" in kinds and "network-acl" in kinds and "route-table" in kinds
    if reachable:
        assert trace["hint"] is None
        assert "reply" in legs  # the answer was walked back as well
        assert all(h["decision"] not in ("deny", "drop") for h in trace["hops"])
    else:
        assert trace["hint"] and component in trace["hint"]
        last = trace["hops"][-1]
        assert (last["decision"], last["component"], last["rule"]) == ("drop", component, rule)


def test_explain_sg_ingress_hint_names_the_missing_group_reference():
    trace = json.loads(cli("explain", "--vpc", VPC, "--function", "report-worker", "--to", "10.0.3.10:5432/tcp",
                           "--json").stdout)
    assert "sg-0reports000000000" in trace["hint"] and "5432" in trace["hint"]


def test_explain_nacl_hint_names_the_ephemeral_ports():
    trace = json.loads(cli("explain", "--vpc", VPC, "--function", "report-worker", "--to", "203.0.113.20:443/tcp",
                           "--json").stdout)
    assert "1024-65535" in trace["hint"] and "inbound" in trace["hint"]


@pytest.mark.parametrize("function, to, reachable, reason, component, rule, code", QUESTIONS)
def test_explain_table_states_the_verdict_and_the_fix(function, to, reachable, reason, component, rule, code):
    run = cli("explain", "--vpc", VPC, "--function", function, "--to", to)
    assert run.exit_code == 0, run.stderr
    text = " ".join(run.stdout.split())
    if reachable:
        assert "reachable" in text and "blocked" not in text
    else:
        assert f"blocked: {reason} at {component}" in text
        assert "fix:" in text


def test_explain_in_a_real_process():
    proc = cli_subprocess("explain", "--vpc", VPC, "--function", "report-worker", "--to", "10.0.3.10:5432/tcp", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["reason"] == "sg-ingress"


@pytest.mark.parametrize("args, code, fragments", [
    (["--function", "billing", "--to", "10.0.3.10:5432/tcp"], 2, ["--function billing", "orders-api", "report-worker"]),
    (["--function", "orders-api", "--to", "10.0.3.10:5432"], 2, ["--to 10.0.3.10:5432"]),
    (["--function", "orders-api", "--to", "10.0.3.10:99999/tcp"], 2, ["99999"]),
    (["--function", "orders-api", "--to", "db.internal:5432/tcp"], 2, ["--to db.internal:5432/tcp"]),
    (["--function", "orders-api", "--to", "10.0.3.10:5432/icmp"], 2, ["icmp"]),
    (["--function", "orders-api", "--to", "10.0.3.10:5432/tcp", "--sandbox", "orders-api=x"], 2, ["--sandbox"]),
])
def test_explain_usage_errors(args, code, fragments):
    assert_one_clear_line(cli("explain", "--vpc", VPC, *args), code, *fragments)


def test_explain_missing_vpc_folder(tmp_path):
    missing = tmp_path / "export"
    run = cli("explain", "--vpc", missing, "--function", "orders-api", "--to", "10.0.3.10:5432/tcp")
    assert_one_clear_line(run, 2, str(missing))


def test_demo_writes_its_outputs_and_every_story_check_passes(tmp_path):
    out = tmp_path / "demo"
    run = cli("demo", "--out", out)
    assert run.exit_code == 0, run.stdout + run.stderr
    lines = [line.strip() for line in run.stdout.splitlines()]
    story = lines[lines.index("Story check") + 1:]
    checks = [line for line in story if line.startswith(("ok", "FAIL"))]
    assert len(checks) >= 8 and all(line.startswith("ok") for line in checks), checks
    for name in ("lambda.pcap", "eni.pcap", "internet.pcap", "drops.jsonl", "flow-logs.log", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["packets"] == 1404 and summary["dropped"] == 12
