"""The bundled demo data (pcaps/demo, made by pcaps/make_demo.py) is complete, consistent with its
manifest, and reproducible."""
from __future__ import annotations

import filecmp
import importlib.util
import ipaddress
import json
import os
import sys

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DEMO = os.path.join(ROOT, "pcaps", "demo")
VPC_DIR = os.path.join(DEMO, "vpc")
CAPTURE = os.path.join(DEMO, "capture.pcap")

EXPECTED_FILES = {
    "vpcs.json": "Vpcs", "subnets.json": "Subnets", "security-groups.json": "SecurityGroups",
    "network-acls.json": "NetworkAcls", "route-tables.json": "RouteTables",
    "internet-gateways.json": "InternetGateways", "nat-gateways.json": "NatGateways",
    "vpc-endpoints.json": "VpcEndpoints", "prefix-lists.json": "PrefixLists",
    "network-interfaces.json": "NetworkInterfaces", "functions.json": "Functions",
}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_demo", os.path.join(ROOT, "pcaps", "make_demo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(DEMO, "demo.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def export():
    docs = {}
    for name in EXPECTED_FILES:
        with open(os.path.join(VPC_DIR, name)) as f:
            docs[name] = json.load(f)
    return docs


@pytest.fixture(scope="module")
def packets():
    from scapy.all import PcapReader  # scapy.all registers IP for LINKTYPE_RAW

    with PcapReader(CAPTURE) as reader:
        assert reader.linktype == 101  # LINKTYPE_RAW
        return list(reader)


def test_every_export_file_has_its_aws_top_level_key(export):
    assert sorted(os.listdir(VPC_DIR)) == sorted(EXPECTED_FILES)
    for name, key in EXPECTED_FILES.items():
        assert list(export[name]) == [key], name
        assert export[name][key], f"{name} is empty"


def test_export_is_one_vpc_with_the_story_resources(export):
    (vpc,) = export["vpcs.json"]["Vpcs"]
    cidr = ipaddress.ip_network(vpc["CidrBlock"])
    subnets = {next(t["Value"] for t in s["Tags"] if t["Key"] == "Name"): s for s in export["subnets.json"]["Subnets"]}
    assert sorted(subnets) == ["app-a", "app-b", "db-a", "public-a"]
    for s in subnets.values():
        assert s["VpcId"] == vpc["VpcId"] and ipaddress.ip_network(s["CidrBlock"]).subnet_of(cidr)
    groups = {g["GroupName"]: g for g in export["security-groups.json"]["SecurityGroups"]}
    (db_rule,) = groups["sg-db"]["IpPermissions"]
    assert db_rule["FromPort"] == db_rule["ToPort"] == 5432
    assert [p["GroupId"] for p in db_rule["UserIdGroupPairs"]] == [groups["sg-orders"]["GroupId"]]
    functions = {f["FunctionName"]: f["VpcConfig"] for f in export["functions.json"]["Functions"]}
    assert functions["orders-api"]["SubnetIds"] == [subnets["app-a"]["SubnetId"]]
    assert functions["report-worker"]["SubnetIds"] == [subnets["app-b"]["SubnetId"]]
    assert all(c["VpcId"] == vpc["VpcId"] for c in functions.values())


def test_every_interface_address_lies_in_its_subnet(export):
    subnets = {s["SubnetId"]: ipaddress.ip_network(s["CidrBlock"]) for s in export["subnets.json"]["Subnets"]}
    for eni in export["network-interfaces.json"]["NetworkInterfaces"]:
        assert ipaddress.ip_address(eni["PrivateIpAddress"]) in subnets[eni["SubnetId"]]
    nat = export["nat-gateways.json"]["NatGateways"][0]
    for addr in nat["NatGatewayAddresses"]:
        assert ipaddress.ip_address(addr["PrivateIp"]) in subnets[nat["SubnetId"]]


def test_public_addresses_are_documentation_ranges(export, manifest, packets):
    doc = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]

    def check(ip):
        ip = ipaddress.ip_address(ip)
        assert ip.is_private or any(ip in n for n in doc), ip

    for pl in export["prefix-lists.json"]["PrefixLists"]:
        for entry in pl["Entries"]:
            assert any(ipaddress.ip_network(entry["Cidr"]).subnet_of(n) for n in doc)
    for nat in export["nat-gateways.json"]["NatGateways"]:
        for addr in nat["NatGatewayAddresses"]:
            check(addr["PublicIp"])
    for p in packets:
        check(p.src)
        check(p.dst)


def test_manifest_names_existing_components(export, manifest):
    text = json.dumps(export)
    for detail in manifest["expect"]["drop_details"]:
        assert f'"{detail["component"]}"' in text
    for spec in manifest["sandboxes"]:
        function, cidr = spec.split("=")
        assert function in {f["FunctionName"] for f in export["functions.json"]["Functions"]}
        ipaddress.ip_network(cidr)


def test_capture_matches_manifest_counts(manifest, packets):
    expect = manifest["expect"]
    assert len(packets) == expect["packets"] == expect["forwarded"] + expect["dropped"]
    assert sum(expect["drops"].values()) == expect["dropped"]
    assert sum(g["packets"] for g in expect["groups"]) == expect["packets"]
    for detail in expect["drop_details"]:
        assert len(detail["indices"]) == expect["drops"][detail["reason"]]


def test_dropped_packets_are_the_ones_the_story_says(manifest, packets):
    details = {d["reason"]: d["indices"] for d in manifest["expect"]["drop_details"]}
    replies = [packets[i] for i in details["nacl-ingress"]]  # SYN-ACKs from the partner API
    assert all(p.src == "203.0.113.20" and p.dst.startswith("169.254.77.") and p["TCP"].flags == "SA"
               for p in replies)
    syns = [packets[i] for i in details["sg-ingress"]]  # report-worker's SYNs to the database
    assert all(p.src.startswith("169.254.77.") and p.dst == "10.0.3.10" and p["TCP"].dport == 5432
               and p["TCP"].flags == "S" for p in syns)
    # The database never answered report-worker; every one of its SYN-ACKs went to orders-api.
    assert not any(p.src == "10.0.3.10" and p.dst.startswith("169.254.77.") for p in packets)


def test_orders_api_overflows_one_eni(manifest, packets):
    """At one instant more than eni_capacity and at most two ENIs' worth of connections are open."""
    capacity = manifest["options"]["eni_capacity"]
    opened, closed, first_close = set(), set(), None
    peak = 0
    for p in packets:
        if "TCP" not in p or not p.src.startswith("169.254.76."):
            continue
        key = (p.src, p["TCP"].sport, p.dst, p["TCP"].dport)
        if p["TCP"].flags == "S":
            opened.add(key)
        elif p["TCP"].flags & 0x01:  # FIN
            closed.add(key)
        peak = max(peak, len(opened - closed))
    assert capacity < peak <= 2 * capacity
    assert manifest["expect"]["enis"]["by_function"]["orders-api"] == 2
    assert manifest["expect"]["enis"]["total"] == 3


def test_capture_is_well_formed(packets):
    """Checksums as scapy computes them, strictly increasing time stamps, sane sizes."""
    times = [p.time for p in packets]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert len(packets) < 2000
    for p in packets:
        rebuilt = p.__class__(bytes(p))
        del rebuilt.chksum, rebuilt.len  # IP
        del rebuilt.payload.chksum  # TCP / UDP: recomputed by scapy on build
        assert bytes(rebuilt) == bytes(p)


def test_export_loads_into_the_model(manifest):
    loader = pytest.importorskip("hyperplane.vpc.loader")
    model = loader.load_vpc(VPC_DIR)
    assert set(model.functions) == {"orders-api", "report-worker"}
    assert model.warnings == ()
    app_b = next(s for s in model.subnets.values() if str(s.cidr) == "10.0.2.0/24")
    acl = model.nacl_of(app_b.id)
    assert acl.id == manifest["expect"]["drop_details"][0]["component"]
    assert [e.label for e in acl.rules(egress=False)] == ["100", "110", "*"]


def test_regeneration_is_byte_identical(tmp_path):
    """Running the generator again writes the same bytes (about 10 s: moto, then scapy)."""
    gen = _load_generator()
    gen.generate(tmp_path)
    files = ["capture.pcap", "demo.yaml"] + [os.path.join("vpc", n) for n in EXPECTED_FILES]
    match, mismatch, errors = filecmp.cmpfiles(DEMO, str(tmp_path), files, shallow=False)
    assert mismatch == [] and errors == [], (mismatch, errors)
    assert sorted(match) == sorted(files)
