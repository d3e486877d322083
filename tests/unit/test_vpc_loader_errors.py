"""Every validation error of the VPC loader: one ConfigError, ``file: JSON.path: message``."""
from __future__ import annotations

import json
import os
import sys

import pytest

from hyperplane.vpc.errors import ConfigError
from hyperplane.vpc.loader import load_vpc
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from vpc_configs import VPC, base_config


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_of(config, name="vpc.json") -> ConfigError:
    from pathlib import Path

    Path(name).write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_vpc(name)
    return info.value


def mutate(fn):
    config = base_config()
    fn(config)
    return config


def _set(path, value):
    """A mutation setting ``config[path...] = value`` (path of keys and indexes)."""
    def apply(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _append(path, value):
    def apply(config):
        target = config
        for key in path:
            target = target[key]
        target.append(value)
    return apply


SUBNET = {"SubnetId": "subnet-c", "VpcId": VPC, "CidrBlock": "10.0.3.0/24"}
NACL_ENTRY = {"RuleNumber": 120, "Egress": False, "Protocol": "6", "RuleAction": "allow", "CidrBlock": "10.0.0.0/8",
              "PortRange": {"From": 80, "To": 80}}

CASES = [
    ("port out of range", _set(["SecurityGroups", 0, "IpPermissions", 0, "FromPort"], 70000),
     "vpc.json: SecurityGroups[0].IpPermissions[0].FromPort: 70000 is not a port"),
    ("reversed port range", _set(["SecurityGroups", 0, "IpPermissions", 0, "ToPort"], 80),
     "vpc.json: SecurityGroups[0].IpPermissions[0].ToPort: 80 is below FromPort 443"),
    ("missing port", lambda c: c["SecurityGroups"][0]["IpPermissions"][0].pop("FromPort"),
     "vpc.json: SecurityGroups[0].IpPermissions[0].FromPort: required field is missing"),
    ("icmp all types with a code", _set(["SecurityGroups", 0, "IpPermissions", 0],
                                        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": 3,
                                         "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}),
     "vpc.json: SecurityGroups[0].IpPermissions[0].ToPort: 3: all ICMP types (FromPort -1) requires all codes (-1)"),
    ("icmp type out of range", _set(["SecurityGroups", 0, "IpPermissions", 0],
                                    {"IpProtocol": "icmp", "FromPort": 300, "ToPort": -1}),
     "vpc.json: SecurityGroups[0].IpPermissions[0].FromPort: 300 is not an ICMP type (-1 for all, or 0-255)"),
    ("unknown SG protocol", _set(["SecurityGroups", 0, "IpPermissions", 0, "IpProtocol"], "tcpx"),
     "vpc.json: SecurityGroups[0].IpPermissions[0].IpProtocol: 'tcpx' is not a protocol "
     "(use -1, tcp, udp, icmp, icmpv6 or a number 0-255)"),
    ("protocol number out of range", _set(["NetworkAcls", 0, "Entries", 0, "Protocol"], "300"),
     "vpc.json: NetworkAcls[0].Entries[0].Protocol: '300' is not a protocol "
     "(use -1, tcp, udp, icmp, icmpv6 or a number 0-255)"),
    ("bad SG CIDR", _set(["SecurityGroups", 0, "IpPermissions", 0, "IpRanges", 0, "CidrIp"], "10.0.0.0/33"),
     "vpc.json: SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp: '10.0.0.0/33' is not an IPv4 CIDR"),
    ("IPv6 CIDR where IPv4 expected", _set(["Subnets", 1, "CidrBlock"], "2001:db8::/64"),
     "vpc.json: Subnets[1].CidrBlock: '2001:db8::/64' is not an IPv4 CIDR"),
    ("address without prefix", _set(["Vpcs", 0, "CidrBlock"], "10.0.0.0"),
     "vpc.json: Vpcs[0].CidrBlock: '10.0.0.0' is not an IPv4 CIDR"),
    ("wrong type", _set(["Subnets", 0, "CidrBlock"], 5),
     "vpc.json: Subnets[0].CidrBlock: expected a string, got 5"),
    ("list expected", _set(["Subnets"], {"SubnetId": "subnet-a"}),
     "vpc.json: Subnets: expected a list, got an object"),
    ("boolean expected", _set(["NetworkAcls", 0, "Entries", 0, "Egress"], "no"),
     "vpc.json: NetworkAcls[0].Entries[0].Egress: expected a boolean, got 'no'"),
    ("missing id", lambda c: c["Subnets"][0].pop("SubnetId"),
     "vpc.json: Subnets[0].SubnetId: required field is missing"),
    ("NACL rule number 0", _set(["NetworkAcls", 0, "Entries", 0, "RuleNumber"], 0),
     "vpc.json: NetworkAcls[0].Entries[0].RuleNumber: 0 is outside 1-32766"),
    ("NACL rule number too high", _set(["NetworkAcls", 0, "Entries", 0, "RuleNumber"], 40000),
     "vpc.json: NetworkAcls[0].Entries[0].RuleNumber: 40000 is outside 1-32766"),
    ("32767 used for an allow", _set(["NetworkAcls", 0, "Entries", 0, "RuleNumber"], 32767),
     "vpc.json: NetworkAcls[0].Entries[0].RuleNumber: 32767 is reserved for the * rule that denies all IPv4 traffic"),
    ("32768 used for IPv4", _set(["NetworkAcls", 0, "Entries", 0],
                                 {"RuleNumber": 32768, "Egress": False, "Protocol": "-1", "RuleAction": "deny",
                                  "CidrBlock": "0.0.0.0/0"}),
     "vpc.json: NetworkAcls[0].Entries[0].RuleNumber: 32768 is reserved for the * rule that denies all IPv6 traffic"),
    ("duplicate NACL rule number", _append(["NetworkAcls", 0, "Entries"], {**NACL_ENTRY, "RuleNumber": 100}),
     "vpc.json: NetworkAcls[0].Entries[2].RuleNumber: rule number 100 is used twice for ingress "
     "(also at NetworkAcls[0].Entries[0])"),
    ("NACL rule action", _set(["NetworkAcls", 0, "Entries", 0, "RuleAction"], "permit"),
     "vpc.json: NetworkAcls[0].Entries[0].RuleAction: 'permit' is not a rule action (allow or deny)"),
    ("NACL port", _append(["NetworkAcls", 0, "Entries"], {**NACL_ENTRY, "PortRange": {"From": 80, "To": 65536}}),
     "vpc.json: NetworkAcls[0].Entries[2].PortRange.To: 65536 is not a port"),
    ("NACL entry without CIDR", _append(["NetworkAcls", 0, "Entries"],
                                        {k: v for k, v in NACL_ENTRY.items() if k != "CidrBlock"}),
     "vpc.json: NetworkAcls[0].Entries[2]: a network ACL entry needs exactly one of CidrBlock and Ipv6CidrBlock"),
    ("subnet in an unknown VPC", _append(["Subnets"], {**SUBNET, "VpcId": "vpc-0ffffffffffffffff"}),
     "vpc.json: Subnets[2].VpcId: vpc-0ffffffffffffffff is not in the files (no such entry in Vpcs)"),
    ("subnet outside its VPC", _append(["Subnets"], {**SUBNET, "CidrBlock": "10.1.0.0/24"}),
     f"vpc.json: Subnets[2].CidrBlock: 10.1.0.0/24 is outside the CIDRs of {VPC} (10.0.0.0/16)"),
    ("subnet too small", _append(["Subnets"], {**SUBNET, "CidrBlock": "10.0.3.0/29"}),
     "vpc.json: Subnets[2].CidrBlock: 10.0.3.0/29 is not a valid subnet size (/16 to /28)"),
    ("overlapping subnets", _append(["Subnets"], {**SUBNET, "CidrBlock": "10.0.1.128/25"}),
     "vpc.json: Subnets[2].CidrBlock: 10.0.1.128/25 overlaps subnet subnet-a (10.0.1.0/24)"),
    ("function with an unknown subnet", _set(["Functions", 0, "VpcConfig", "SubnetIds"], ["subnet-a", "subnet-x"]),
     "vpc.json: Functions[0].VpcConfig.SubnetIds[1]: subnet-x is not in the files (no such entry in Subnets)"),
    ("function with an unknown group", _set(["Functions", 0, "VpcConfig", "SecurityGroupIds"], ["sg-x"]),
     "vpc.json: Functions[0].VpcConfig.SecurityGroupIds[0]: sg-x is not in the files (no such entry in SecurityGroups)"),
    ("function with 17 subnets", _set(["Functions", 0, "VpcConfig", "SubnetIds"], [f"subnet-{i}" for i in range(17)]),
     "vpc.json: Functions[0].VpcConfig.SubnetIds: 17 subnets; Lambda allows at most 16"),
    ("function with 6 groups", _set(["Functions", 0, "VpcConfig", "SecurityGroupIds"], [f"sg-{i}" for i in range(6)]),
     "vpc.json: Functions[0].VpcConfig.SecurityGroupIds: 6 security groups; Lambda allows at most 5"),
    ("function with subnets but no group", _set(["Functions", 0, "VpcConfig", "SecurityGroupIds"], []),
     "vpc.json: Functions[0].VpcConfig.SecurityGroupIds: subnets without security groups: "
     "a VPC function needs at least one security group"),
    ("two main route tables", _append(["RouteTables"], {"RouteTableId": "rtb-2", "VpcId": VPC,
                                                        "Associations": [{"Main": True}], "Routes": []}),
     f"vpc.json: RouteTables[1].Associations: {VPC} has two main route tables (rtb-main and rtb-2)"),
    ("route without a destination", _append(["RouteTables", 0, "Routes"], {"GatewayId": "igw-1"}),
     "vpc.json: RouteTables[0].Routes[1]: a route needs exactly one of DestinationCidrBlock, "
     "DestinationIpv6CidrBlock, DestinationPrefixListId"),
    ("route without a target", _append(["RouteTables", 0, "Routes"], {"DestinationCidrBlock": "0.0.0.0/0"}),
     "vpc.json: RouteTables[0].Routes[1]: a route needs a target (GatewayId, NatGatewayId, NetworkInterfaceId, ...)"),
    ("duplicate route", _append(["RouteTables", 0, "Routes"], {"DestinationCidrBlock": "10.0.0.0/16",
                                                               "GatewayId": "igw-1"}),
     "vpc.json: RouteTables[0].Routes[1]: destination 10.0.0.0/16 appears twice in rtb-main (also at RouteTables[0].Routes[0])"),
    ("interface address outside its subnet", _set(["NetworkInterfaces"], [
        {"NetworkInterfaceId": "eni-1", "VpcId": VPC, "SubnetId": "subnet-a", "PrivateIpAddress": "10.0.2.9"}]),
     "vpc.json: NetworkInterfaces[0].PrivateIpAddress: 10.0.2.9 is outside subnet subnet-a (10.0.1.0/24)"),
    ("interface on a reserved address", _set(["NetworkInterfaces"], [
        {"NetworkInterfaceId": "eni-1", "VpcId": VPC, "SubnetId": "subnet-a", "PrivateIpAddress": "10.0.1.2"}]),
     "vpc.json: NetworkInterfaces[0].PrivateIpAddress: 10.0.1.2 is a reserved address of subnet subnet-a"),
    ("two interfaces on one address", _set(["NetworkInterfaces"], [
        {"NetworkInterfaceId": "eni-1", "VpcId": VPC, "SubnetId": "subnet-a", "PrivateIpAddress": "10.0.1.9"},
        {"NetworkInterfaceId": "eni-2", "VpcId": VPC, "SubnetId": "subnet-a", "PrivateIpAddress": "10.0.1.9"}]),
     "vpc.json: NetworkInterfaces[1].PrivateIpAddress: 10.0.1.9 is also the address of eni-1"),
    ("interface in an unknown subnet", _set(["NetworkInterfaces"], [
        {"NetworkInterfaceId": "eni-1", "VpcId": VPC, "SubnetId": "subnet-z", "PrivateIpAddress": "10.0.1.9"}]),
     "vpc.json: NetworkInterfaces[0].SubnetId: subnet-z is not in the files (no such entry in Subnets)"),
    ("subnet associated with two tables", lambda c: c["RouteTables"].extend([
        {"RouteTableId": "rtb-1", "VpcId": VPC, "Associations": [{"SubnetId": "subnet-a"}], "Routes": []},
        {"RouteTableId": "rtb-2", "VpcId": VPC, "Associations": [{"SubnetId": "subnet-a"}], "Routes": []}]),
     "vpc.json: RouteTables[2].Associations[0].SubnetId: subnet-a is associated with two route tables "
     "(rtb-1 and this one)"),
]


@pytest.mark.parametrize("mutation,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_error_message(in_tmp, mutation, expected):
    err = error_of(mutate(mutation))
    assert str(err) == expected
    assert err.file == "vpc.json"
    assert expected.startswith(f"vpc.json: {err.path}: " if err.path else "vpc.json: ")


def test_error_carries_file_path_and_message(in_tmp):
    err = error_of(mutate(_set(["SecurityGroups", 0, "IpPermissions", 0, "FromPort"], 70000)))
    assert (err.file, err.path, err.message) == ("vpc.json", "SecurityGroups[0].IpPermissions[0].FromPort",
                                                 "70000 is not a port")


def test_malformed_json_names_line_and_column(in_tmp):
    err = error_of('{\n  "Vpcs": [\n    {"VpcId": "vpc-1",}\n  ]\n}\n')
    assert str(err) == ("vpc.json: malformed JSON at line 3 column 23: Expecting property name enclosed in "
                        "double quotes")


def test_malformed_yaml_names_line(in_tmp):
    err = error_of("Vpcs:\n- VpcId: vpc-1\n  CidrBlock: [10.0.0.0/16\n", name="vpc.yaml")
    assert str(err).startswith("vpc.yaml: malformed YAML at line 4 column 1: ")


def test_top_level_must_be_an_object(in_tmp):
    assert str(error_of("[1, 2]")) == "vpc.json: expected an object of AWS responses (Vpcs, Subnets, ...), got a list"


def test_empty_yaml_file(in_tmp):
    assert str(error_of("", name="empty.yaml")) == "empty.yaml: the file is empty"


def test_missing_path(in_tmp):
    with pytest.raises(ConfigError) as info:
        load_vpc("nowhere.json")
    assert str(info.value) == "nowhere.json: no such file or folder"


def test_folder_without_configuration_files(in_tmp):
    (in_tmp / "exports").mkdir()
    (in_tmp / "exports" / "notes.txt").write_text("not a config")
    with pytest.raises(ConfigError) as info:
        load_vpc("exports")
    assert str(info.value) == "exports: folder holds no .json, .yaml or .yml file"


def test_no_path_at_all():
    with pytest.raises(ConfigError, match="no VPC configuration given"):
        load_vpc()


def test_conflicting_definitions_in_two_files(in_tmp):
    (in_tmp / "a.json").write_text(json.dumps(base_config()))
    other = {"Subnets": [{"SubnetId": "subnet-a", "VpcId": VPC, "CidrBlock": "10.0.9.0/24"}]}
    (in_tmp / "b.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError) as info:
        load_vpc("a.json", "b.json")
    assert str(info.value) == "b.json: Subnets[0]: subnet-a conflicts with its other definition at a.json: Subnets[0]"
