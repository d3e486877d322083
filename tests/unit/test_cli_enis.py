"""``hyperplane enis``: the ENI finder on the command line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hyperplane.cli import main

EXPORT = {
    "Vpcs": [{"VpcId": "vpc-1", "OwnerId": "111122223333", "CidrBlock": "10.0.0.0/16"}],
    "Subnets": [
        {"SubnetId": "subnet-a", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24", "AvailabilityZone": "us-east-1a"},
        {"SubnetId": "subnet-b", "VpcId": "vpc-1", "CidrBlock": "10.0.2.0/24", "AvailabilityZone": "us-east-1b"},
    ],
    "SecurityGroups": [
        {"GroupId": "sg-1", "GroupName": "lambda", "VpcId": "vpc-1", "IpPermissions": [], "IpPermissionsEgress": []},
        {"GroupId": "sg-2", "GroupName": "db-clients", "VpcId": "vpc-1", "IpPermissions": [], "IpPermissionsEgress": []},
    ],
    "Functions": [
        {"FunctionName": "orders", "VpcConfig": {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]}},
        {"FunctionName": "billing", "VpcConfig": {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"]}},
        {"FunctionName": "reports", "VpcConfig": {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-2", "sg-1"]}},
        {"FunctionName": "locked", "HyperplaneRoleCanCreateEnis": False,
         "VpcConfig": {"SubnetIds": ["subnet-b"], "SecurityGroupIds": ["sg-2"]}},
        {"FunctionName": "public"},
    ],
}


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "vpc.json"
    path.write_text(json.dumps(EXPORT))
    return str(path)


def run(*args):
    return CliRunner(env={"COLUMNS": "220"}).invoke(main, ["enis", *args])


def test_json_lists_each_eni_with_its_functions(export):
    result = run("--vpc", export, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    got = {(n["SubnetId"], tuple(g["GroupId"] for g in n["Groups"])): n for n in out["NetworkInterfaces"]}
    assert set(got) == {("subnet-a", ("sg-1",)), ("subnet-b", ("sg-1",)), ("subnet-a", ("sg-1", "sg-2"))}
    assert got[("subnet-a", ("sg-1",))]["Functions"] == ["billing", "orders"]
    assert got[("subnet-b", ("sg-1",))]["Functions"] == ["orders"]
    assert got[("subnet-a", ("sg-1", "sg-2"))]["Functions"] == ["reports"]
    assert all(n["InterfaceType"] == "lambda" for n in out["NetworkInterfaces"])
    states = {f["FunctionName"]: (f["State"], f.get("StateReasonCode")) for f in out["Functions"]}
    assert states["locked"] == ("Failed", "InsufficientRolePermissions")
    assert states["public"] == ("Active", None)


def test_table_shows_enis_functions_and_failed_functions(export):
    result = run("--vpc", export)
    assert result.exit_code == 0, result.output
    assert "Hyperplane ENIs (3)" in result.output
    assert "billing, orders" in result.output and "10.0.1.4" in result.output
    assert "function locked: Failed (InsufficientRolePermissions)" in result.output


def test_filter_by_eni_and_function(export):
    out = json.loads(run("--vpc", export, "--json", "--function", "reports").stdout)
    (eni,) = out["NetworkInterfaces"]
    assert eni["Functions"] == ["reports"]
    again = json.loads(run("--vpc", export, "--json", "--eni", eni["NetworkInterfaceId"]).stdout)
    assert [n["NetworkInterfaceId"] for n in again["NetworkInterfaces"]] == [eni["NetworkInterfaceId"]]


def test_output_is_deterministic(export):
    assert run("--vpc", export, "--json").stdout == run("--vpc", export, "--json").stdout


@pytest.mark.parametrize("args, message", [
    (("--eni", "eni-nope"), "unknown Hyperplane ENI 'eni-nope'"),
    (("--function", "nope"), "unknown function 'nope'"),
])
def test_unknown_filters_are_user_errors(export, args, message):
    result = run("--vpc", export, *args)
    assert result.exit_code == 2 and message in result.output


def test_bad_configuration_is_one_line_exit_2(tmp_path):
    bad = dict(EXPORT, Functions=[{"FunctionName": "f", "VpcConfig": {"SubnetIds": ["subnet-zz"], "SecurityGroupIds": ["sg-1"]}}])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = run("--vpc", str(path))
    assert result.exit_code == 2
    assert "subnet-zz is not in the files" in result.output and "Traceback" not in result.output


def test_missing_vpc_option_is_a_user_error():
    result = run()
    assert result.exit_code == 2 and "--vpc" in result.output
