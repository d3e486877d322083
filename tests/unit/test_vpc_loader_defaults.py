"""Defaults the loader applies as AWS does, warnings, merging, and the model's queries."""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import warnings

import pytest

from hyperplane.vpc.errors import ConfigWarning
from hyperplane.vpc.loader import load_vpc
from hyperplane.vpc.model import ALL_PORTS
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from vpc_configs import VPC, base_config, write

AWS_CLI = os.path.join(os.path.dirname(__file__), "..", "fixtures", "aws-cli")


def load(tmp_path, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_vpc(write(tmp_path, config))


def test_main_route_table_and_default_nacl_apply_without_explicit_association(tmp_path):
    config = base_config()
    config["RouteTables"].append({"RouteTableId": "rtb-b", "VpcId": VPC, "Associations": [{"SubnetId": "subnet-b"}],
                                  "Routes": []})
    config["NetworkAcls"].append({"NetworkAclId": "acl-b", "VpcId": VPC, "IsDefault": False,
                                  "Associations": [{"SubnetId": "subnet-b"}], "Entries": []})
    model = load(tmp_path, config)
    assert model.route_table_of("subnet-a").id == "rtb-main"
    assert model.route_table_of("subnet-b").id == "rtb-b"
    assert model.nacl_of("subnet-a").id == "acl-default"
    assert model.nacl_of("subnet-b").id == "acl-b"


def test_custom_nacl_without_entries_denies_everything_with_the_star_rules(tmp_path):
    config = base_config()
    config["NetworkAcls"].append({"NetworkAclId": "acl-b", "VpcId": VPC, "Entries": []})
    acl = load(tmp_path, config).network_acls["acl-b"]
    for egress in (False, True):
        (star,) = acl.rules(egress)
        assert (star.rule_number, star.allow, star.protocol, str(star.network), star.label) == (
            32767, False, -1, "0.0.0.0/0", "*")


def test_ipv6_star_rule_only_in_a_vpc_with_ipv6(tmp_path):
    config = base_config()
    assert [e.rule_number for e in load(tmp_path, config).network_acls["acl-default"].rules(False)] == [100, 32767]
    config["Vpcs"][0]["Ipv6CidrBlockAssociationSet"] = [{"Ipv6CidrBlock": "2600:1f18::/56",
                                                         "Ipv6CidrBlockState": {"State": "associated"}}]
    rules = load(tmp_path, config).network_acls["acl-default"].rules(True)
    assert [(e.rule_number, str(e.network)) for e in rules] == [(100, "0.0.0.0/0"), (32767, "0.0.0.0/0"),
                                                                (32768, "::/0")]


def test_nacl_entries_sorted_by_rule_number(tmp_path):
    config = base_config()
    config["NetworkAcls"][0]["Entries"].insert(0, {"RuleNumber": 200, "Egress": False, "Protocol": "tcp",
                                                   "RuleAction": "deny", "CidrBlock": "10.9.0.5/16",
                                                   "PortRange": {"From": 22, "To": 22}})
    rules = load(tmp_path, config).network_acls["acl-default"].rules(False)
    assert [e.rule_number for e in rules] == [100, 200, 32767]
    assert str(rules[1].network) == "10.9.0.0/16"  # canonicalised as AWS does
    assert (rules[1].protocol, rules[1].port_from, rules[1].port_to) == (6, 22, 22)


def test_missing_main_table_and_default_nacl_are_created_with_warnings(tmp_path):
    config = base_config()
    del config["RouteTables"], config["NetworkAcls"]
    with pytest.warns(ConfigWarning) as record:
        model = load_vpc(write(tmp_path, config))
    assert [str(w.message) for w in record] == list(model.warnings)
    assert "no main route table" in model.warnings[0] and "no default network ACL" in model.warnings[1]
    table = model.route_table_of("subnet-a")
    assert table.main and [r.label for r in table.routes] == ["10.0.0.0/16 -> local"]
    acl = model.nacl_of("subnet-a")
    assert acl.is_default and [(e.rule_number, e.allow) for e in acl.rules(False)] == [(100, True), (32767, False)]
    assert len(model.warnings) == 2


def test_local_route_added_when_missing(tmp_path):
    config = base_config()
    config["Vpcs"][0]["CidrBlockAssociationSet"] = [{"CidrBlock": "10.0.0.0/16"}, {"CidrBlock": "100.64.0.0/20"}]
    config["RouteTables"][0]["Routes"] = [{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"}]
    config["InternetGateways"] = [{"InternetGatewayId": "igw-1", "Attachments": [{"VpcId": VPC, "State": "available"}]}]
    routes = load(tmp_path, config).route_tables["rtb-main"].routes
    assert [(r.label, r.target_kind, r.origin) for r in routes] == [
        ("10.0.0.0/16 -> local", "local", "CreateRouteTable"), ("100.64.0.0/20 -> local", "local", "CreateRouteTable"),
        ("0.0.0.0/0 -> igw-1", "igw", "CreateRoute")]


@pytest.mark.parametrize("field,target,kind", [
    ("GatewayId", "local", "local"), ("GatewayId", "igw-1", "igw"), ("GatewayId", "vpce-1", "vpce"),
    ("GatewayId", "vgw-1", "vgw"), ("NatGatewayId", "nat-1", "nat"), ("NetworkInterfaceId", "eni-1", "eni"),
    ("InstanceId", "i-1", "instance"), ("VpcPeeringConnectionId", "pcx-1", "pcx"),
    ("TransitGatewayId", "tgw-1", "tgw"), ("EgressOnlyInternetGatewayId", "eigw-1", "eigw"),
])
def test_route_target_kind(tmp_path, field, target, kind):
    config = base_config()
    config["RouteTables"][0]["Routes"].append({"DestinationCidrBlock": "192.168.0.0/16", field: target})
    route = load(tmp_path, config).route_tables["rtb-main"].routes[-1]
    assert (route.target_kind, route.target_id) == (kind, target)


@pytest.mark.parametrize("field,target", [("NatGatewayId", "nat-gone"), ("GatewayId", "igw-gone"),
                                          ("GatewayId", "vpce-gone"), ("NetworkInterfaceId", "eni-gone")])
def test_route_to_a_missing_target_is_a_blackhole(tmp_path, field, target):
    config = base_config()
    config["RouteTables"][0]["Routes"].append({"DestinationCidrBlock": "0.0.0.0/0", field: target, "State": "active"})
    with pytest.warns(ConfigWarning, match=f"target {target} is not in the files"):
        model = load_vpc(write(tmp_path, config))
    assert model.route_tables["rtb-main"].routes[-1].state == "blackhole"


def test_route_to_a_detached_internet_gateway_is_a_blackhole(tmp_path):
    config = base_config()
    config["InternetGateways"] = [{"InternetGatewayId": "igw-1", "Attachments": []}]
    config["RouteTables"][0]["Routes"].append({"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"})
    model = load(tmp_path, config)
    assert model.route_tables["rtb-main"].routes[-1].state == "blackhole"
    assert any(f"igw-1 is not attached to {VPC}" in w for w in model.warnings)


def test_sg_permissions_flatten_one_rule_per_peer_in_order(tmp_path):
    config = base_config()
    config["SecurityGroups"][0]["IpPermissions"] = [{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5433,
        "IpRanges": [{"CidrIp": "10.0.1.0/24", "Description": "app"}, {"CidrIp": "10.0.2.0/24"}],
        "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/64"}], "PrefixListIds": [{"PrefixListId": "pl-1"}],
        "UserIdGroupPairs": [{"GroupId": "sg-a", "UserId": "111122223333"}],
    }]
    config["PrefixLists"] = [{"PrefixListId": "pl-1", "PrefixListName": "x", "Entries": [{"Cidr": "192.0.2.0/24"}]}]
    rules = load(tmp_path, config).security_groups["sg-a"].ingress
    assert [(r.index, r.peer_kind, r.peer, r.id) for r in rules] == [
        (0, "cidr", "10.0.1.0/24", "sg-a:ingress:0"), (1, "cidr", "10.0.2.0/24", "sg-a:ingress:1"),
        (2, "cidr", "2001:db8::/64", "sg-a:ingress:2"), (3, "prefix-list", "pl-1", "sg-a:ingress:3"),
        (4, "group", "sg-a", "sg-a:ingress:4")]
    assert all((r.protocol, r.from_port, r.to_port) == (6, 5432, 5433) for r in rules)
    assert rules[0].description == "app" and rules[0].network == ipaddress.ip_network("10.0.1.0/24")


@pytest.mark.parametrize("protocol,ports,expected", [
    ("-1", {}, (-1, 0, 65535)), ("all", {}, (-1, 0, 65535)), ("tcp", {"FromPort": 1, "ToPort": 2}, (6, 1, 2)),
    ("6", {"FromPort": 1, "ToPort": 2}, (6, 1, 2)), ("UDP", {"FromPort": 53, "ToPort": 53}, (17, 53, 53)),
    ("icmp", {"FromPort": 8, "ToPort": -1}, (1, 8, -1)), ("icmpv6", {}, (58, -1, -1)),
    ("50", {"FromPort": 1, "ToPort": 2}, (50, 0, 65535)),  # other protocols: all ports whatever the range
])
def test_sg_protocols_and_port_normalisation(tmp_path, protocol, ports, expected):
    config = base_config()
    config["SecurityGroups"][0]["IpPermissions"] = [{"IpProtocol": protocol, **ports,
                                                     "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]
    (rule,) = load(tmp_path, config).security_groups["sg-a"].ingress
    assert (rule.protocol, rule.from_port, rule.to_port) == expected
    if expected[0] == -1:
        assert (rule.from_port, rule.to_port) == ALL_PORTS


def test_unknown_top_level_key_is_a_warning_and_ignored(tmp_path):
    config = base_config()
    config["Reservations"] = []
    with pytest.warns(ConfigWarning) as record:
        model = load_vpc(write(tmp_path, config))
    expected = f"{tmp_path / 'vpc.json'}: Reservations: unknown top-level key 'Reservations' ignored"
    assert model.warnings[0].startswith(expected)
    assert str(record[0].message) == model.warnings[0]


def test_reference_to_unknown_group_is_a_warning(tmp_path):
    config = base_config()
    config["SecurityGroups"][0]["IpPermissions"][0]["UserIdGroupPairs"] = [{"GroupId": "sg-peer"}]
    model = load(tmp_path, config)
    assert any("references security group sg-peer, which is not in the files" in w for w in model.warnings)
    assert model.members_of("sg-peer") == ()


def test_identical_definitions_in_two_files_merge(tmp_path):
    first = write(tmp_path, base_config(), "a.json")
    second = write(tmp_path, {"Subnets": base_config()["Subnets"], "Vpcs": base_config()["Vpcs"]}, "b.json")
    model = load_vpc(first, second)
    assert sorted(model.subnets) == ["subnet-a", "subnet-b"]


def test_folder_is_read_in_sorted_order_and_merged(tmp_path):
    config = base_config()
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "2-subnets.json").write_text(json.dumps({"Subnets": config.pop("Subnets")}))
    (folder / "1-rest.json").write_text(json.dumps(config))
    (folder / "README.md").write_text("ignored")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        model = load_vpc(str(folder))
    assert list(model.subnets) == ["subnet-a", "subnet-b"] and "fn" in model.functions


def test_function_defaults_and_extension_key(tmp_path):
    config = base_config()
    config["Functions"].append({"FunctionName": "plain", "VpcConfig": {"SubnetIds": [], "SecurityGroupIds": []}})
    config["Functions"].append({"FunctionName": "noperm", "HyperplaneRoleCanCreateEnis": False,
                                "VpcConfig": {"SubnetIds": ["subnet-b"], "SecurityGroupIds": ["sg-a"],
                                              "VpcId": "vpc-123abc"}})
    model = load(tmp_path, config)
    fn = model.functions["fn"]
    assert (fn.vpc_id, fn.subnet_ids, fn.security_group_ids, fn.in_vpc, fn.role_can_create_enis) == (
        VPC, ("subnet-a",), ("sg-a",), True, True)
    assert fn.ipv6_allowed_for_dual_stack is False
    assert model.functions["plain"].in_vpc is False and model.functions["plain"].vpc_id is None
    assert model.functions["noperm"].role_can_create_enis is False
    assert model.functions["noperm"].vpc_id == VPC
    assert any("vpc-123abc differs from the VPC of the function's subnets" in w for w in model.warnings)


def test_nat_gateway_interface_has_no_security_groups_and_is_added_when_not_listed(tmp_path):
    config = base_config()
    config["NatGateways"] = [{"NatGatewayId": "nat-1", "VpcId": VPC, "SubnetId": "subnet-a", "State": "available",
                              "NatGatewayAddresses": [{"PrivateIp": "10.0.1.50", "PublicIp": "198.51.100.7",
                                                       "NetworkInterfaceId": "eni-nat"}]}]
    model = load(tmp_path, config)
    eni = model.interface_at("10.0.1.50")
    assert (eni.id, eni.group_ids, eni.interface_type, eni.requester_managed) == ("eni-nat", (), "nat_gateway", True)
    assert model.interface_owner("eni-nat") == "nat-1"
    nat = model.nat_gateways["nat-1"]
    assert (str(nat.private_ip), [str(ip) for ip in nat.public_ips], nat.connectivity) == (
        "10.0.1.50", ["198.51.100.7"], "public")


def test_queries(tmp_path):
    config = base_config()
    config["NetworkInterfaces"] = [
        {"NetworkInterfaceId": "eni-1", "VpcId": VPC, "SubnetId": "subnet-b", "PrivateIpAddress": "10.0.2.10",
         "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.2.10", "Primary": True},
                                {"PrivateIpAddress": "10.0.2.11", "Primary": False}],
         "Groups": [{"GroupId": "sg-a", "GroupName": "a"}]}]
    model = load(tmp_path, config)
    assert model.subnet_of("10.0.2.200").id == "subnet-b"
    assert model.subnet_of("10.0.9.1") is None
    assert str(model.dns_address(VPC)) == "10.0.0.2"
    assert [str(ip) for ip in model.reserved_addresses("subnet-a")] == [
        "10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"]
    assert model.groups_of("eni-1") == ("sg-a",)
    assert [str(ip) for ip in model.members_of("sg-a")] == ["10.0.2.10", "10.0.2.11"]
    assert model.interface_at("10.0.2.11").id == "eni-1"
    assert model.interface_owner("eni-1") is None


def test_hand_written_dual_stack_export(recwarn):
    """YAML + a single get-function-configuration object: IPv6, prefix-list entries inline,
    IcmpTypeCode, interface endpoint, DHCP DNS servers, all route target fields."""
    model = load_vpc(AWS_CLI)
    assert model.warnings == ()
    vpc = model.vpcs["vpc-0d5a11ac0ffee0001"]
    assert [str(c) for c in vpc.cidrs] == ["10.20.0.0/16", "100.64.0.0/20"]
    assert [str(c) for c in vpc.ipv6_cidrs] == ["2600:1f18:4a2:6c00::/56"]
    assert [str(s) for s in vpc.dns_servers] == ["10.20.0.53"]
    assert model.subnet_of("2600:1f18:4a2:6c02::99").id == "subnet-0d5a11ac0ffee0a02"
    assert model.subnet_of("100.64.0.9").id == "subnet-0d5a11ac0ffee0a03"
    assert [str(c) for c in model.prefix_list_cidrs("pl-0c0ffee0c0ffee001")] == ["192.0.2.0/24", "198.51.100.0/25"]
    egress = model.security_groups["sg-0d5a11ac0ffee0b01"].egress
    assert [(r.peer_kind, r.peer) for r in egress] == [
        ("cidr", "::/0"), ("prefix-list", "pl-0c0ffee0c0ffee001"), ("group", "sg-0d5a11ac0ffee0b02"),
        ("cidr", "2600:1f18:4a2:6c00::/56")]
    assert (egress[3].protocol, egress[3].from_port, egress[3].to_port) == (58, -1, -1)
    acl = model.nacl_of("subnet-0d5a11ac0ffee0a03")
    assert [(e.label, e.protocol, e.icmp_type, e.icmp_code) for e in acl.rules(True)][:2] == [
        ("90", 58, 128, 0), ("95", 1, 8, -1)]
    assert [e.rule_number for e in acl.rules(False)] == [100, 101, 32767, 32768]
    kinds = [(r.target_kind, r.state) for r in model.route_table_of("subnet-0d5a11ac0ffee0a01").routes]
    assert kinds[-6:] == [("eigw", "active"), ("tgw", "active"), ("pcx", "active"), ("instance", "active"),
                          ("vgw", "active"), ("eni", "blackhole")]
    endpoint_eni = model.interface_at("10.20.1.50")
    assert (endpoint_eni.interface_type, endpoint_eni.group_ids) == ("vpc_endpoint", ("sg-0d5a11ac0ffee0b02",))
    assert model.interface_owner(endpoint_eni.id) == "vpce-0d5a11ac0ffee1001"
    assert [str(ip) for ip in model.members_of("sg-0d5a11ac0ffee0b01")] == [
        "10.20.2.10", "10.20.2.11", "2600:1f18:4a2:6c02::10"]
    fn = model.functions["ipv6-client"]
    assert (fn.ipv6_allowed_for_dual_stack, fn.role_can_create_enis, fn.vpc_id) == (
        True, False, "vpc-0d5a11ac0ffee0001")
