"""``hyperplane inspect``: readable summary, --json, and user errors as one line with exit 2."""
from __future__ import annotations

import json
import os

from click.testing import CliRunner

from hyperplane.cli import main

AWS_CLI = os.path.join(os.path.dirname(__file__), "..", "fixtures", "aws-cli")


def run(*args):
    return CliRunner().invoke(main, ["inspect", *args])


def test_default_is_the_bundled_example():
    result = run()
    assert result.exit_code == 0, result.output
    assert "bundled example" in result.output
    for text in ("10.0.0.0/16", "orders-api", "report-worker", "blackhole", "com.amazonaws.us-east-1.s3", "nat_gateway"):
        assert text in result.output
    assert "warning:" in result.output and "is deleted" in result.output


def test_help_mentions_the_bundled_example():
    result = run("--help")
    assert result.exit_code == 0 and "bundled example" in result.output


def test_json_summary_of_given_files():
    result = run("--vpc", AWS_CLI, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    subnets = {s["id"]: s for s in summary["subnets"]}
    assert subnets["subnet-0d5a11ac0ffee0a03"]["network_acl"] == "acl-0d5a11ac0ffee0c01"
    assert subnets["subnet-0d5a11ac0ffee0a01"]["route_table"] == "rtb-0d5a11ac0ffee0d01"
    assert subnets["subnet-0d5a11ac0ffee0a01"]["ipv6_cidr"] == "2600:1f18:4a2:6c01::/64"
    assert summary["vpcs"][0]["amazon_dns"] == "10.20.0.2"
    groups = {g["id"]: g for g in summary["security_groups"]}
    assert (groups["sg-0d5a11ac0ffee0b01"]["ingress_rules"], groups["sg-0d5a11ac0ffee0b01"]["egress_rules"]) == (0, 4)
    assert summary["functions"] == [{"name": "ipv6-client", "vpc_id": "vpc-0d5a11ac0ffee0001",
                                     "subnets": ["subnet-0d5a11ac0ffee0a01", "subnet-0d5a11ac0ffee0a02"],
                                     "security_groups": ["sg-0d5a11ac0ffee0b01"], "ipv6_allowed_for_dual_stack": True}]
    assert summary["warnings"] == []


def test_configuration_error_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "vpc.json"
    bad.write_text(json.dumps({"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/33"}]}))
    result = run("--vpc", str(bad))
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {bad}: Vpcs[0].CidrBlock: '10.0.0.0/33' is not an IPv4 CIDR"
    assert "Traceback" not in result.output


def test_missing_path_exit_2(tmp_path):
    result = run("--vpc", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "no such file or folder" in result.output
