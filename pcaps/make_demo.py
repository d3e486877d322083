#!/usr/bin/env python3
"""Build the bundled demo scenario of ``hyperplane demo``: a VPC export made with moto and the capture
of two Lambda functions' execution environments made with scapy. See ``pcaps/README.md`` for the story.

    python pcaps/make_demo.py [OUTDIR]        # default: pcaps/demo next to this script

Deterministic: moto's random ids, addresses and clocks are rewritten to stable values, the capture
uses a fixed start time and seeded random numbers; two runs write byte-identical files.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import ipaddress
import json
import math
import os
import random
import re
import struct
import sys
import zipfile
from unittest import mock
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "demo"

# --- the story's constants ---------------------------------------------------------------------
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account id
VPC_CIDR = "10.0.0.0/16"
SUBNETS = {  # name -> (CIDR, availability zone)
    "public-a": ("10.0.0.0/24", "us-east-1a"),
    "app-a": ("10.0.1.0/24", "us-east-1a"),
    "app-b": ("10.0.2.0/24", "us-east-1b"),
    "db-a": ("10.0.3.0/24", "us-east-1a"),
}
AMAZON_DNS = "10.0.0.2"  # VPC base + 2
DB_IP, DB_PORT = "10.0.3.10", 5432
NAT_PRIVATE_IP = "10.0.0.84"  # moto draws an address outside the subnet; see README
NAT_PUBLIC_IP = "198.51.100.10"  # the EIP (moto draws a 127.x address)
S3_PREFIX_CIDRS = ("192.0.2.0/24",)  # stands in for the S3 prefix list's real ranges
PAYMENTS_API = ("api.payments.example", "203.0.113.10")
PARTNER_API = ("api.partner.example", "203.0.113.20")
S3_HOST = ("orders-receipts.s3.us-east-1.amazonaws.com", "192.0.2.40")

ORDERS_SANDBOXES = "169.254.76.0/24"
REPORTS_SANDBOXES = "169.254.77.0/24"
ORDERS_ENVS = [f"169.254.76.{i}" for i in range(11, 19)]  # 8 execution environments
POOL_SIZE = 10  # database connections per orders-api environment: 8 x 10 = 80 concurrent
REPORTS_ENV = "169.254.77.11"

ENI_CAPACITY = 50  # the demo's --eni-capacity; AWS: 65,000
SETUP_TIME = dt.datetime(2026, 10, 26, 14, 0, 0, tzinfo=dt.timezone.utc)  # when the VPC was built
CAPTURE_START = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=dt.timezone.utc)
SEED = 20261102

LINKTYPE_RAW = 101


# =================================================================================================
# Part 1: the VPC export (moto)
# =================================================================================================

def stable_id(prefix: str, mnemonic: str) -> str:
    """``subnet-0appa000000000000``: AWS's shape (prefix, dash, 17 characters), readable."""
    body = ("0" + mnemonic)[:17]
    return f"{prefix}-{body.ljust(17, '0')}"


class IdMap:
    """Random moto id -> stable id. Every id in the output must be known (see ``check``)."""

    ID_RE = re.compile(
        r"\b(?:vpc-cidr-assoc|eni-attach|eipalloc|eipassoc|rtbassoc|aclassoc|subnet|vpce|vpc|sg|acl|rtb"
        r"|igw|nat|eni|pl|i)-[0-9a-f]{8,17}\b"
    )

    def __init__(self) -> None:
        self.map: dict[str, str] = {}

    def name(self, real: str, prefix: str, mnemonic: str) -> str:
        stable = stable_id(prefix, mnemonic)
        if real in self.map and self.map[real] != stable:
            raise ValueError(f"{real} named twice")
        self.map[real] = stable
        return stable

    def apply(self, text: str) -> str:
        text = self.ID_RE.sub(lambda m: self.map.get(m.group(0), m.group(0)), text)
        leftover = [m.group(0) for m in self.ID_RE.finditer(text) if m.group(0) not in self.map.values()]
        if leftover:
            raise ValueError(f"moto ids without a stable name: {sorted(set(leftover))}")
        return text


def _mac(seed: str) -> str:
    """A stable locally administered MAC in the form VPC ENIs have (0e:..)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E,) + tuple(digest[:5]))


def _lambda_zip(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("handler.py", date_time=(2026, 10, 26, 14, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, source)
    return buf.getvalue()


def build_vpc_export() -> dict[str, dict]:
    """Create the account in moto; return {file name: AWS CLI response} with stable ids."""
    # moto never talks to AWS; fake credentials make sure boto3 does not look for real ones. They
    # are set only while moto runs (the test suite calls this in its own process).
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}
    with mock.patch.dict(os.environ, fake):
        return _build_vpc_export()


def _build_vpc_export() -> dict[str, dict]:
    import boto3
    from moto import mock_aws

    ids = IdMap()
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        lam = boto3.client("lambda", region_name=REGION)

        def tag(resource: str, name: str) -> None:
            ec2.create_tags(Resources=[resource], Tags=[{"Key": "Name", "Value": name}])

        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]
        vpc_id = vpc["VpcId"]
        ids.name(vpc_id, "vpc", "demo")
        ids.name(vpc["CidrBlockAssociationSet"][0]["AssociationId"], "vpc-cidr-assoc", "demo")
        tag(vpc_id, "orders-vpc")
        vf = [{"Name": "vpc-id", "Values": [vpc_id]}]
        default_sg = ec2.describe_security_groups(Filters=vf)["SecurityGroups"][0]["GroupId"]
        ids.name(default_sg, "sg", "default")
        default_acl = ec2.describe_network_acls(Filters=vf)["NetworkAcls"][0]["NetworkAclId"]
        ids.name(default_acl, "acl", "default")
        main_rtb = ec2.describe_route_tables(Filters=vf)["RouteTables"][0]
        ids.name(main_rtb["RouteTableId"], "rtb", "main")
        ids.name(main_rtb["Associations"][0]["RouteTableAssociationId"], "rtbassoc", "main")

        subnet: dict[str, str] = {}
        for name, (cidr, az) in SUBNETS.items():
            sid = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
            subnet[name] = sid
            short = name.replace("-", "")
            ids.name(sid, "subnet", short)
            tag(sid, name)
            acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [sid]}])
            for assoc in acl["NetworkAcls"][0]["Associations"]:
                if assoc["SubnetId"] == sid:
                    ids.name(assoc["NetworkAclAssociationId"], "aclassoc", short + "d")  # d: default ACL

        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ids.name(igw, "igw", "demo")
        tag(igw, "orders-igw")
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)

        eip = ec2.allocate_address(Domain="vpc")
        ids.name(eip["AllocationId"], "eipalloc", "nat")
        nat = ec2.create_nat_gateway(SubnetId=subnet["public-a"], AllocationId=eip["AllocationId"])["NatGateway"]
        nat_id = nat["NatGatewayId"]
        ids.name(nat_id, "nat", "publica")
        tag(nat_id, "nat-public-a")

        # Route tables: public-a -> igw; app-a and app-b -> NAT gateway (+ the S3 endpoint's route);
        # db-a stays on the main table (local route only), implicitly associated.
        rtb_public = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
        ids.name(rtb_public, "rtb", "public")
        tag(rtb_public, "public")
        ec2.create_route(RouteTableId=rtb_public, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        assoc = ec2.associate_route_table(RouteTableId=rtb_public, SubnetId=subnet["public-a"])
        ids.name(assoc["AssociationId"], "rtbassoc", "publica")
        rtb_app = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
        ids.name(rtb_app, "rtb", "app")
        tag(rtb_app, "app-private")
        ec2.create_route(RouteTableId=rtb_app, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_id)
        for name in ("app-a", "app-b"):
            assoc = ec2.associate_route_table(RouteTableId=rtb_app, SubnetId=subnet[name])
            ids.name(assoc["AssociationId"], "rtbassoc", name.replace("-", ""))

        vpce = ec2.create_vpc_endpoint(VpcId=vpc_id, ServiceName=f"com.amazonaws.{REGION}.s3",
                                       RouteTableIds=[rtb_app], VpcEndpointType="Gateway")["VpcEndpoint"]
        ids.name(vpce["VpcEndpointId"], "vpce", "s3")
        tag(vpce["VpcEndpointId"], "s3-gateway")
        s3_pl = ec2.describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{REGION}.s3"]}])["PrefixLists"][0]
        ids.name(s3_pl["PrefixListId"], "pl", "s3")

        # Security groups: sg-db admits PostgreSQL from the group sg-orders only (a group reference).
        sg = {}
        for name, desc in (("orders", "orders-api Lambda function"), ("reports", "report-worker Lambda function"),
                           ("db", "orders PostgreSQL database")):
            gid = ec2.create_security_group(GroupName=f"sg-{name}", Description=desc, VpcId=vpc_id)["GroupId"]
            sg[name] = gid
            ids.name(gid, "sg", name)
            tag(gid, f"sg-{name}")
        ec2.authorize_security_group_ingress(GroupId=sg["db"], IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": DB_PORT, "ToPort": DB_PORT,
            "UserIdGroupPairs": [{"GroupId": sg["orders"], "Description": "PostgreSQL from orders-api"}],
        }])

        # NACLs: app-b gets the broken one (inbound only 443 and 5432 from the VPC: no ephemeral ports
        # for replies); db-a gets a correct one; public-a and app-a keep the default (allow all).
        acl_reports = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
        ids.name(acl_reports, "acl", "reports")
        tag(acl_reports, "app-b-reports")
        for rule, egress, proto, cidr, ports in (
            (100, True, "-1", "0.0.0.0/0", None),
            (100, False, "6", VPC_CIDR, (443, 443)),
            (110, False, "6", VPC_CIDR, (DB_PORT, DB_PORT)),
        ):
            kwargs = {"PortRange": {"From": ports[0], "To": ports[1]}} if ports else {}
            ec2.create_network_acl_entry(NetworkAclId=acl_reports, RuleNumber=rule, Protocol=proto,
                                         RuleAction="allow", Egress=egress, CidrBlock=cidr, **kwargs)
        acl_db = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
        ids.name(acl_db, "acl", "db")
        tag(acl_db, "db")
        ec2.create_network_acl_entry(NetworkAclId=acl_db, RuleNumber=100, Protocol="6", RuleAction="allow",
                                     Egress=False, CidrBlock=VPC_CIDR, PortRange={"From": DB_PORT, "To": DB_PORT})
        ec2.create_network_acl_entry(NetworkAclId=acl_db, RuleNumber=100, Protocol="6", RuleAction="allow",
                                     Egress=True, CidrBlock=VPC_CIDR, PortRange={"From": 1024, "To": 65535})
        for name, acl_id in (("app-b", acl_reports), ("db-a", acl_db)):
            current = ec2.describe_network_acls(
                Filters=[{"Name": "association.subnet-id", "Values": [subnet[name]]}])["NetworkAcls"][0]
            old = next(a["NetworkAclAssociationId"] for a in current["Associations"]
                       if a["SubnetId"] == subnet[name])
            new = ec2.replace_network_acl_association(AssociationId=old, NetworkAclId=acl_id)["NewAssociationId"]
            ids.name(new, "aclassoc", name.replace("-", ""))

        # The database: an EC2 instance with PostgreSQL at 10.0.3.10 in db-a, group sg-db.
        inst = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="r6g.large",
                                 SubnetId=subnet["db-a"], PrivateIpAddress=DB_IP,
                                 SecurityGroupIds=[sg["db"]])["Instances"][0]
        ids.name(inst["InstanceId"], "i", "db")
        tag(inst["InstanceId"], "orders-db")
        db_eni = inst["NetworkInterfaces"][0]
        ids.name(db_eni["NetworkInterfaceId"], "eni", "db")
        ids.name(db_eni["Attachment"]["AttachmentId"], "eni-attach", "db")

        # The functions (moto lambda + iam), VpcConfig as the story says.
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        # The permissions of the managed policy AWSLambdaVPCAccessExecutionRole, inline (moto does
        # not load AWS managed policies unless asked to, which is slow).
        vpc_access = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Resource": "*",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                       "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                       "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                       "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]}]})
        functions = (
            ("orders-api", "app-a", "orders", "Order lookups and payments; PostgreSQL pool of 10 per environment",
             {"DB_HOST": DB_IP, "DB_POOL_SIZE": str(POOL_SIZE), "PAYMENTS_URL": f"https://{PAYMENTS_API[0]}/"}),
            ("report-worker", "app-b", "reports", "Partner reports: fetches partner data, stores results in PostgreSQL",
             {"DB_HOST": DB_IP, "PARTNER_URL": f"https://{PARTNER_API[0]}/"}),
        )
        for fname, sub, group, desc, env in functions:
            role = iam.create_role(RoleName=f"{fname}-role", AssumeRolePolicyDocument=trust)["Role"]
            iam.put_role_policy(RoleName=role["RoleName"], PolicyName="vpc-access", PolicyDocument=vpc_access)
            lam.create_function(
                FunctionName=fname, Runtime="python3.12", Role=role["Arn"], Handler="handler.main",
                Code={"ZipFile": _lambda_zip(f"def main(event, context):\n    return {{'function': '{fname}'}}\n")},
                Description=desc, Timeout=30, MemorySize=512, Environment={"Variables": env},
                VpcConfig={"SubnetIds": [subnet[sub]], "SecurityGroupIds": [sg[group]]},
            )

        # --- read everything back as `aws ec2 describe-*` would print it, for this VPC only -------
        def call(method, key, **kw):
            return getattr(ec2, method)(**kw)[key]

        nat_eni_id = None
        out = {
            "vpcs.json": {"Vpcs": call("describe_vpcs", "Vpcs", VpcIds=[vpc_id])},
            "subnets.json": {"Subnets": call("describe_subnets", "Subnets", Filters=vf)},
            "security-groups.json": {"SecurityGroups": call("describe_security_groups", "SecurityGroups", Filters=vf)},
            "network-acls.json": {"NetworkAcls": call("describe_network_acls", "NetworkAcls", Filters=vf)},
            "route-tables.json": {"RouteTables": call("describe_route_tables", "RouteTables", Filters=vf)},
            "internet-gateways.json": {"InternetGateways": call(
                "describe_internet_gateways", "InternetGateways",
                Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])},
            "nat-gateways.json": {"NatGateways": call("describe_nat_gateways", "NatGateways", Filters=vf)},
            "vpc-endpoints.json": {"VpcEndpoints": call("describe_vpc_endpoints", "VpcEndpoints", Filters=vf)},
            "prefix-lists.json": {"PrefixLists": [s3_pl]},
            "network-interfaces.json": {"NetworkInterfaces": call(
                "describe_network_interfaces", "NetworkInterfaces", Filters=vf)},
            "functions.json": {"Functions": lam.list_functions()["Functions"]},
        }
        for addr in out["nat-gateways.json"]["NatGateways"][0]["NatGatewayAddresses"]:
            nat_eni_id, moto_nat_ip = addr["NetworkInterfaceId"], addr["PrivateIp"]
        ids.name(nat_eni_id, "eni", "natpublica")
        eip_assoc = out["nat-gateways.json"]["NatGateways"][0]["NatGatewayAddresses"][0]["AssociationId"]
        ids.name(eip_assoc, "eipassoc", "nat")

    fix_moto_output(out, vpc_id=vpc_id, nat_eni_id=nat_eni_id, eip_public=eip["PublicIp"],
                    subnets=subnet)
    text = {name: ids.apply(json.dumps(doc, indent=4, default=_json_default)) for name, doc in out.items()}
    for name, t in text.items():
        for leftover in (eip["PublicIp"], moto_nat_ip):
            if leftover in t:
                raise AssertionError(f"moto's address {leftover} left in {name}")
    return {name: json.loads(t) for name, t in text.items()}


def _json_default(value):
    if isinstance(value, dt.datetime):
        # Every time stamp of the export is the (fixed) moment the VPC was built.
        return SETUP_TIME.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def fix_moto_output(out: dict, *, vpc_id: str, nat_eni_id: str, eip_public: str, subnets: dict) -> None:
    """The places where moto's responses differ from real AWS (each listed in pcaps/README.md)."""
    # 1. The NAT gateway's interface: moto draws its private address outside the subnet, gives it the
    #    VPC's default security group, and makes it look like a customer interface. AWS creates a
    #    requester-managed interface of type nat_gateway, without security groups, in the subnet.
    nat = out["nat-gateways.json"]["NatGateways"][0]
    nat["ConnectivityType"] = "public"
    public_dns = "ec2-" + NAT_PUBLIC_IP.replace(".", "-") + ".compute-1.amazonaws.com"
    for addr in nat["NatGatewayAddresses"]:
        addr.update({"PrivateIp": NAT_PRIVATE_IP, "PublicIp": NAT_PUBLIC_IP, "IsPrimary": True,
                     "Status": "succeeded"})
    for eni in out["network-interfaces.json"]["NetworkInterfaces"]:
        if eni["NetworkInterfaceId"] == nat_eni_id:
            eni.update({
                "Description": f"Interface for NAT Gateway {nat['NatGatewayId']}",
                "Groups": [], "InterfaceType": "nat_gateway", "RequesterManaged": True,
                "PrivateIpAddress": NAT_PRIVATE_IP,
                "PrivateIpAddresses": [{"Association": {"IpOwnerId": "amazon", "PublicDnsName": public_dns,
                                                        "PublicIp": NAT_PUBLIC_IP},
                                        "Primary": True, "PrivateIpAddress": NAT_PRIVATE_IP}],
                "SourceDestCheck": False, "Status": "in-use",
            })
            eni["Association"].update({"PublicIp": NAT_PUBLIC_IP, "PublicDnsName": public_dns,
                                       "IpOwnerId": "amazon"})
            eni.pop("RequesterId", None)
        else:
            # 2. moto puts its own IAM user id into RequesterId of every interface; AWS sets it
            #    only on interfaces a service created for you.
            eni.pop("RequesterId", None)

    # 3. Subnet free-address counts: AWS reserves 5 addresses per subnet and counts used ones.
    used: dict[str, int] = {}
    for eni in out["network-interfaces.json"]["NetworkInterfaces"]:
        used[eni["SubnetId"]] = used.get(eni["SubnetId"], 0) + 1
    for sn in out["subnets.json"]["Subnets"]:
        size = ipaddress.ip_network(sn["CidrBlock"]).num_addresses
        sn["AvailableIpAddressCount"] = size - 5 - used.get(sn["SubnetId"], 0)

    # 4. The S3 prefix list: moto's entries are real S3 ranges; the demo uses documentation ranges
    #    (RFC 5737) so that no address in the scenario belongs to anyone. AWS-managed lists show
    #    MaxEntries and Version; entries come from get-managed-prefix-list-entries.
    for pl in out["prefix-lists.json"]["PrefixLists"]:
        pl.update({"MaxEntries": len(S3_PREFIX_CIDRS), "Version": 1,
                   "Entries": [{"Cidr": c} for c in S3_PREFIX_CIDRS]})

    # 5. Lambda: moto fills VpcConfig.VpcId with a placeholder ("vpc-123abc") and leaves out
    #    Ipv6AllowedForDualStack; LastModified is the wall clock in moto's own format.
    for fn in out["functions.json"]["Functions"]:
        fn["VpcConfig"]["VpcId"] = vpc_id
        fn["VpcConfig"]["Ipv6AllowedForDualStack"] = False
        fn["LastModified"] = SETUP_TIME.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    out["functions.json"]["Functions"].sort(key=lambda f: f["FunctionName"])

    # 6. moto lists the `*` rules (32767, deny all) only for the default NACL; AWS lists them for
    #    every NACL, in both directions.
    for acl in out["network-acls.json"]["NetworkAcls"]:
        for egress in (False, True):
            if not any(e["Egress"] == egress and e["RuleNumber"] == 32767 for e in acl["Entries"]):
                acl["Entries"].append({"CidrBlock": "0.0.0.0/0", "Egress": egress, "Protocol": "-1",
                                       "RuleAction": "deny", "RuleNumber": 32767})

    # Order every list by a key that does not depend on moto's random ids.
    out["subnets.json"]["Subnets"].sort(key=lambda s: ipaddress.ip_network(s["CidrBlock"]))
    names = {v: k for k, v in subnets.items()}
    for acl in out["network-acls.json"]["NetworkAcls"]:
        acl["Associations"].sort(key=lambda a: ipaddress.ip_network(SUBNETS[names[a["SubnetId"]]][0]))
        acl["Entries"].sort(key=lambda e: (e["Egress"], e["RuleNumber"]))


def _tag_name(obj: dict) -> str:
    for t in obj.get("Tags", []) or obj.get("TagSet", []):
        if t["Key"] == "Name":
            return t["Value"]
    return ""


def canonical_order(docs: dict[str, dict]) -> None:
    """Sort lists of resources by their stable ids (moto's order follows its random ids)."""
    keyed = {"security-groups.json": ("SecurityGroups", "GroupId"),
             "network-acls.json": ("NetworkAcls", "NetworkAclId"),
             "route-tables.json": ("RouteTables", "RouteTableId"),
             "network-interfaces.json": ("NetworkInterfaces", "NetworkInterfaceId")}
    for fname, (key, idkey) in keyed.items():
        docs[fname][key].sort(key=lambda r: r[idkey])
    for eni in docs["network-interfaces.json"]["NetworkInterfaces"]:
        eni["MacAddress"] = _mac(eni["NetworkInterfaceId"])  # moto's MACs are random
    for rt in docs["route-tables.json"]["RouteTables"]:
        rt["Associations"].sort(key=lambda a: a["RouteTableAssociationId"])


# =================================================================================================
# Part 2: the capture (scapy) — the sandboxes' view
# =================================================================================================

@dataclass
class Packet:
    ts_us: int  # microseconds after CAPTURE_START
    pkt: object  # scapy IP packet
    group: str  # which story group it belongs to
    expect: str = "forwarded"  # or a drop reason
    order: int = 0


@dataclass
class Endpoint:
    ip: str
    port: int
    isn: int
    ts_base: int
    ip_id: int
    ttl: int
    window: int  # after the handshake (scaled by 2**7)
    seq: int = 0
    last_ts_seen: int = 0


class Capture:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.packets: list[Packet] = []

    def add(self, ts_us: int, pkt, group: str, expect: str = "forwarded") -> None:
        self.packets.append(Packet(ts_us, pkt, group, expect, len(self.packets)))

    def finish(self) -> list[Packet]:
        """Sort by time; make time stamps strictly increasing (1 µs apart at least)."""
        self.packets.sort(key=lambda p: (p.ts_us, p.order))
        last = -1
        for p in self.packets:
            p.ts_us = max(p.ts_us, last + 1)
            last = p.ts_us
        return self.packets


MSS = 1460
TS_OPT_LEN = 12
SEG = MSS - TS_OPT_LEN  # payload bytes per full segment with the timestamp option


class TcpSession:
    """One TCP connection as the sandbox sees it. ``t`` is the capture time (µs) of the latest
    packet; the client's packets are captured as they leave, the server's as they arrive, so a
    server answer comes ``rtt + think`` after the client packet it answers."""

    def __init__(self, cap: Capture, group: str, client: tuple[str, int], server: tuple[str, int],
                 t_us: int, rtt_us: int, server_ttl: int):
        rng = cap.rng
        self.cap, self.group, self.t, self.rtt = cap, group, t_us, rtt_us
        self.c = Endpoint(client[0], client[1], rng.getrandbits(32), rng.getrandbits(31), rng.randrange(1, 65535),
                          64, 502)
        self.s = Endpoint(server[0], server[1], rng.getrandbits(32), rng.getrandbits(31), rng.randrange(1, 65535),
                          server_ttl, 509)
        self.c.seq, self.s.seq = self.c.isn, self.s.isn
        self.packets = 0

    def _emit(self, src: Endpoint, dst: Endpoint, flags: str, payload: bytes = b"", syn_opts: bool = False,
              ack: bool = True, window: int | None = None, expect: str = "forwarded") -> None:
        from scapy.layers.inet import IP, TCP
        from scapy.packet import Raw

        tsval = (src.ts_base + self.t // 1000) & 0xFFFFFFFF
        # TSecr echoes the latest TSval this side received from the other.
        if syn_opts:
            opts = [("MSS", MSS), ("SAckOK", b""), ("Timestamp", (tsval, src.last_ts_seen if ack else 0)),
                    ("NOP", None), ("WScale", 7)]
        else:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (tsval, src.last_ts_seen))]
        ip = IP(src=src.ip, dst=dst.ip, ttl=src.ttl, id=src.ip_id, flags="DF")
        src.ip_id = (src.ip_id + 1) & 0xFFFF
        tcp = TCP(sport=src.port, dport=dst.port, seq=src.seq & 0xFFFFFFFF,
                  ack=(dst.seq & 0xFFFFFFFF) if ack else 0, flags=flags,
                  window=window if window is not None else src.window, options=opts)
        pkt = ip / tcp / Raw(payload) if payload else ip / tcp
        dst.last_ts_seen = tsval
        src.seq += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
        self.cap.add(self.t, pkt, self.group, expect)
        self.packets += 1

    # --- client side (captured when sent) ---
    def syn(self, after_us: int = 0, expect: str = "forwarded") -> None:
        self.t += after_us
        self.c.seq = self.c.isn
        self._emit(self.c, self.s, "S", syn_opts=True, ack=False, window=64240, expect=expect)

    def synack(self, think_us: int = 60, expect: str = "forwarded") -> None:
        self.t += self.rtt + think_us
        self.s.seq = self.s.isn
        self._emit(self.s, self.c, "SA", syn_opts=True, window=65160, expect=expect)

    def handshake(self) -> None:
        self.syn()
        self.synack()
        self.t += 30
        self._emit(self.c, self.s, "A")

    def send(self, side: str, data: bytes, gap_us: int) -> None:
        """``side`` ("c" or "s") sends ``data`` in MSS-sized segments, PSH on the last."""
        src, dst = (self.c, self.s) if side == "c" else (self.s, self.c)
        self.t += gap_us
        for off in range(0, len(data), SEG):
            chunk = data[off:off + SEG]
            last = off + SEG >= len(data)
            self._emit(src, dst, "PA" if last else "A", chunk)
            self.t += 12  # back-to-back segments
        self.t -= 12

    def client(self, data: bytes, gap_us: int) -> None:
        self.send("c", data, gap_us)

    def server(self, data: bytes, think_us: int) -> None:
        self.send("s", data, self.rtt + think_us)

    def ack(self, side: str, gap_us: int) -> None:
        src, dst = (self.c, self.s) if side == "c" else (self.s, self.c)
        self.t += gap_us
        self._emit(src, dst, "A")

    def close_by_client(self, gap_us: int, server_think_us: int = 80) -> None:
        """Client FIN, server FIN (acking it), client's last ACK."""
        self.t += gap_us
        self._emit(self.c, self.s, "FA")
        self.t += self.rtt + server_think_us
        self._emit(self.s, self.c, "FA")
        self.t += 40
        self._emit(self.c, self.s, "A")


# --- PostgreSQL wire protocol (v3), enough for a real-looking session ---------------------------

def pg_msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def pg_cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def pg_startup(user: str, database: str, app: str) -> bytes:
    body = struct.pack("!I", 196608) + b"".join(
        pg_cstr(k) + pg_cstr(v) for k, v in (("user", user), ("database", database),
                                             ("application_name", app), ("client_encoding", "UTF8"))) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def b64(rng: random.Random, n: int) -> str:
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(n))).decode()


def pg_auth_exchange(rng: random.Random) -> list[tuple[str, bytes]]:
    """SCRAM-SHA-256 authentication: (side, bytes) in order, ending with ReadyForQuery."""
    cnonce = b64(rng, 18)
    snonce = cnonce + b64(rng, 18)
    first = f"n,,n=,r={cnonce}".encode()
    params = [("application_name", "orders-api"), ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
              ("default_transaction_read_only", "off"), ("in_hot_standby", "off"),
              ("integer_datetimes", "on"), ("IntervalStyle", "postgres"), ("is_superuser", "off"),
              ("server_encoding", "UTF8"), ("server_version", "16.4"),
              ("session_authorization", "orders_app"), ("standard_conforming_strings", "on"),
              ("TimeZone", "UTC")]
    final = (pg_msg(b"R", struct.pack("!I", 12) + f"v={b64(rng, 32)}".encode())
             + pg_msg(b"R", struct.pack("!I", 0))
             + b"".join(pg_msg(b"S", pg_cstr(k) + pg_cstr(v)) for k, v in params)
             + pg_msg(b"K", struct.pack("!II", rng.randrange(1000, 60000), rng.getrandbits(32)))
             + pg_msg(b"Z", b"I"))
    return [
        ("s", pg_msg(b"R", struct.pack("!I", 10) + pg_cstr("SCRAM-SHA-256") + b"\0")),
        ("c", pg_msg(b"p", pg_cstr("SCRAM-SHA-256") + struct.pack("!I", len(first)) + first)),
        ("s", pg_msg(b"R", struct.pack("!I", 11) + f"r={snonce},s={b64(rng, 16)},i=4096".encode())),
        ("c", pg_msg(b"p", f"c=biws,r={snonce},p={b64(rng, 32)}".encode())),
        ("s", final),
    ]


PG_TYPES = {"int8": (20, 8), "int4": (23, 4), "text": (25, -1), "timestamptz": (1184, 8)}


def pg_result(columns: list[tuple[str, str]], rows: list[list[str]], tag: str) -> bytes:
    desc = struct.pack("!H", len(columns)) + b"".join(
        pg_cstr(name) + struct.pack("!IhIhih", 16412, i + 1, PG_TYPES[t][0], PG_TYPES[t][1], -1, 0)
        for i, (name, t) in enumerate(columns))
    data = b"".join(pg_msg(b"D", struct.pack("!H", len(r)) + b"".join(
        struct.pack("!I", len(v.encode())) + v.encode() for v in r)) for r in rows)
    return (pg_msg(b"T", desc) if columns else b"") + data + pg_msg(b"C", pg_cstr(tag)) + pg_msg(b"Z", b"I")


def pg_query(rng: random.Random) -> tuple[bytes, bytes, int]:
    """One simple query and its result; returns (request, response, server think time µs)."""
    order_id = rng.randrange(1_000_000, 9_999_999)
    kind = rng.choice(("order", "items", "paid"))
    if kind == "order":
        sql = f"SELECT id, customer_id, status, total_cents, created_at FROM orders WHERE id = {order_id}"
        cols = [("id", "int8"), ("customer_id", "int8"), ("status", "text"), ("total_cents", "int4"),
                ("created_at", "timestamptz")]
        rows = [[str(order_id), str(rng.randrange(10_000, 99_999)), rng.choice(("pending", "paid", "shipped")),
                 str(rng.randrange(500, 90_000)), f"2026-11-0{rng.randrange(1, 3)} 0{rng.randrange(0, 9)}:"
                 f"{rng.randrange(10, 59)}:{rng.randrange(10, 59)}.{rng.randrange(100000, 999999)}+00"]]
        return pg_msg(b"Q", pg_cstr(sql)), pg_result(cols, rows, "SELECT 1"), rng.randrange(300, 900)
    if kind == "items":
        sql = f"SELECT sku, quantity, unit_price_cents FROM order_items WHERE order_id = {order_id} ORDER BY sku"
        n = rng.randrange(1, 9)
        rows = [[f"SKU-{rng.randrange(10000, 99999)}", str(rng.randrange(1, 5)), str(rng.randrange(199, 19999))]
                for _ in range(n)]
        cols = [("sku", "text"), ("quantity", "int4"), ("unit_price_cents", "int4")]
        return pg_msg(b"Q", pg_cstr(sql)), pg_result(cols, rows, f"SELECT {n}"), rng.randrange(400, 1500)
    sql = f"UPDATE orders SET status = 'paid', updated_at = now() WHERE id = {order_id}"
    return pg_msg(b"Q", pg_cstr(sql)), pg_result([], [], "UPDATE 1"), rng.randrange(800, 2500)


PG_TERMINATE = pg_msg(b"X", b"")


# --- TLS 1.3 records (the handshake in clear, everything after it opaque) -----------------------

def tls_record(kind: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", kind, version, len(body)) + body


def tls_ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def tls_client_hello(rng: random.Random, host: str) -> bytes:
    rand = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    name = host.encode()
    suites = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
    exts = b"".join([
        tls_ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),
        tls_ext(10, struct.pack("!HHH", 4, 0x001D, 0x0017)),
        tls_ext(11, b"\x01\x00"),
        tls_ext(13, struct.pack("!H8H", 16, 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)),
        tls_ext(16, struct.pack("!HB", 9, 8) + b"http/1.1"),
        tls_ext(43, b"\x04\x03\x04\x03\x03"),
        tls_ext(45, b"\x01\x01"),
        tls_ext(51, struct.pack("!HHH", 36, 0x001D, 32) + rand(32)),
    ])
    body = (b"\x03\x03" + rand(32) + b"\x20" + rand(32) + struct.pack("!H", 2 * len(suites))
            + struct.pack(f"!{len(suites)}H", *suites) + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return tls_record(22, hs, 0x0301)


def tls_server_flight(rng: random.Random, client_hello: bytes) -> bytes:
    """ServerHello, ChangeCipherSpec and the encrypted rest of the handshake (opaque records)."""
    rand = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    session_id = client_hello[5 + 4 + 2 + 32 + 1: 5 + 4 + 2 + 32 + 1 + 32]
    exts = tls_ext(43, b"\x03\x04") + tls_ext(51, struct.pack("!HH", 0x001D, 32) + rand(32))
    body = b"\x03\x03" + rand(32) + b"\x20" + session_id + b"\x13\x01\x00" + struct.pack("!H", len(exts)) + exts
    hello = tls_record(22, b"\x02" + struct.pack("!I", len(body))[1:] + body)
    encrypted = b"".join(tls_record(23, rand(n)) for n in (
        rng.randrange(40, 60),  # EncryptedExtensions
        rng.randrange(2400, 3400),  # Certificate chain
        rng.randrange(270, 290),  # CertificateVerify
        69,  # Finished
    ))
    return hello + tls_record(20, b"\x01") + encrypted


def tls_opaque(rng: random.Random, *sizes: int) -> bytes:
    return b"".join(tls_record(23, bytes(rng.getrandbits(8) for _ in range(n))) for n in sizes)


def https_session(cap: Capture, group: str, client: tuple[str, int], server: tuple[str, str],
                  t_us: int, rtt_us: int, request: int, response: int) -> TcpSession:
    """A complete HTTPS request: handshake, TLS 1.3, one request and response, FIN teardown."""
    rng = cap.rng
    s = TcpSession(cap, group, client, (server[1], 443), t_us, rtt_us, server_ttl=47)
    s.handshake()
    hello = tls_client_hello(rng, server[0])
    s.client(hello, 20)
    s.server(tls_server_flight(rng, hello), rng.randrange(600, 1500))
    s.ack("c", 40)
    s.client(tls_record(20, b"\x01") + tls_opaque(rng, 53) + tls_opaque(rng, request), 900)
    s.server(tls_opaque(rng, 249, 249) + tls_opaque(rng, response), rng.randrange(3000, 25000))
    s.ack("c", 40)
    s.client(tls_opaque(rng, 19), rng.randrange(2000, 5000))  # close_notify
    s.close_by_client(30)
    return s


def dns_exchange(cap: Capture, group: str, client: str, t_us: int, name: str, answer: str) -> int:
    """A query to the Amazon DNS server and its answer; returns the time after the answer."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP

    rng = cap.rng
    sport, qid = rng.randrange(32768, 61000), rng.getrandbits(16)
    query = IP(src=client, dst=AMAZON_DNS, ttl=64, id=rng.getrandbits(16), flags="DF") / UDP(
        sport=sport, dport=53) / DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype="A"))
    reply = IP(src=AMAZON_DNS, dst=client, ttl=64, id=rng.getrandbits(16)) / UDP(sport=53, dport=sport) / DNS(
        id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"),
        an=DNSRR(rrname=name, type="A", ttl=60, rdata=answer))
    cap.add(t_us, query, group)
    t_us += rng.randrange(400, 1200)
    cap.add(t_us, reply, group)
    return t_us


def ms(x: float) -> int:
    return int(round(x * 1000))


def build_capture(rng_seed: int = SEED) -> tuple[list[Packet], dict]:
    """Return the packets (time-sorted) and the facts the manifest states about them."""
    cap = Capture(rng_seed)
    rng = cap.rng
    facts: dict = {"flows": {}}

    used_ports: set[tuple[str, int]] = set()

    def new_port(env: str) -> int:
        """A free Linux ephemeral port (32768-60999) of this environment."""
        while True:
            port = rng.randrange(32768, 61000)
            if (env, port) not in used_ports:
                used_ports.add((env, port))
                return port

    def flow(group: str, key: tuple, first_us: int, last_us: int) -> None:
        facts["flows"].setdefault(group, []).append((key, first_us, last_us))

    # --- orders-api: 8 environments each open a pool of 10 PostgreSQL connections --------------
    db_group = "orders-api -> database"
    closes = []
    for env_index, env in enumerate(ORDERS_ENVS):
        env_start = ms(40) + env_index * ms(rng.uniform(90, 130))
        for conn in range(POOL_SIZE):
            sess = TcpSession(cap, db_group, (env, new_port(env)), (DB_IP, DB_PORT),
                              env_start + conn * rng.randrange(150, 400), rtt_us=rng.randrange(380, 650),
                              server_ttl=63)
            start = sess.t
            sess.handshake()
            sess.client(pg_startup("orders_app", "orders", "orders-api"), 40)
            for side, data in pg_auth_exchange(rng):
                if side == "c":
                    sess.client(data, rng.randrange(150, 400))
                else:
                    sess.server(data, rng.randrange(200, 3500))
            for _ in range(rng.choice((1, 1, 2))):
                request, response, think = pg_query(rng)
                sess.client(request, rng.randrange(ms(20), ms(400)))
                sess.server(response, think)
            sess.ack("c", 40_000)  # the delayed ACK of the last result while the pool idles
            # The pools are closed at the end of the burst (idle timeout of the pool): 5.5 s on.
            sess.t = max(sess.t, ms(5500) + env_index * ms(60) + conn * rng.randrange(100, 300))
            sess.client(PG_TERMINATE, 0)
            closes.append(sess.t)
            sess.close_by_client(60)
            flow(db_group, (env, sess.c.port, DB_IP, DB_PORT, "tcp"), start, sess.t)

    # --- orders-api: the payments API through the NAT gateway, and S3 through the endpoint ------
    dns_group = "dns"
    env = ORDERS_ENVS[0]
    t = dns_exchange(cap, dns_group, env, ms(620), *PAYMENTS_API)
    s = https_session(cap, "orders-api -> internet (NAT gateway)", (env, new_port(env)), PAYMENTS_API,
                      t + 300, rtt_us=ms(11.8), request=420, response=1180)
    flow(s.group, (env, s.c.port, PAYMENTS_API[1], 443, "tcp"), t + 300, s.t)
    t = dns_exchange(cap, dns_group, env, s.t + ms(35), *S3_HOST)
    sess = TcpSession(cap, "orders-api -> S3 (gateway endpoint)", (env, new_port(env)), (S3_HOST[1], 443),
                      t + 250, rtt_us=ms(1.6), server_ttl=47)
    start = sess.t
    sess.handshake()
    hello = tls_client_hello(rng, S3_HOST[0])
    sess.client(hello, 20)
    sess.server(tls_server_flight(rng, hello), rng.randrange(500, 900))
    sess.ack("c", 40)
    sess.client(tls_record(20, b"\x01") + tls_opaque(rng, 53) + tls_opaque(rng, 760, 6_140), 700)  # PUT receipt
    sess.server(tls_opaque(rng, 249, 249) + tls_opaque(rng, 390), rng.randrange(9000, 16000))
    sess.ack("c", 40)
    sess.client(tls_opaque(rng, 19), 1500)
    sess.close_by_client(30)
    flow(sess.group, (env, sess.c.port, S3_HOST[1], 443, "tcp"), start, sess.t)

    env = ORDERS_ENVS[1]
    t = dns_exchange(cap, dns_group, env, ms(1310), *PAYMENTS_API)
    s = https_session(cap, "orders-api -> internet (NAT gateway)", (env, new_port(env)), PAYMENTS_API,
                      t + 280, rtt_us=ms(12.3), request=436, response=910)
    flow(s.group, (env, s.c.port, PAYMENTS_API[1], 443, "tcp"), t + 280, s.t)

    # --- report-worker: two invocations, each fails twice ----------------------------------------
    # The partner API answers every SYN (the SYN-ACKs are in the capture) but the app-b NACL drops
    # them; the client retransmits its SYN after 1 s and 2 s more and gives up at 5 s. The database
    # never answers: sg-db drops every SYN before it reaches the instance.
    for invocation_start in (ms(2000), ms(15000)):
        t = dns_exchange(cap, dns_group, REPORTS_ENV, invocation_start, *PARTNER_API)
        api = TcpSession(cap, "report-worker -> internet (NACL drops replies)", (REPORTS_ENV, new_port(REPORTS_ENV)),
                         (PARTNER_API[1], 443), t + 250, rtt_us=ms(14.2), server_ttl=47)
        start = api.t
        for backoff in (0, ms(1000) - api.rtt - 60, ms(2000) - api.rtt - 60):
            api.syn(after_us=backoff)
            api.synack(expect="nacl-ingress")
        flow(api.group, (REPORTS_ENV, api.c.port, PARTNER_API[1], 443, "tcp"), start, api.t)
        db = TcpSession(cap, "report-worker -> database (sg-db refuses)", (REPORTS_ENV, new_port(REPORTS_ENV)),
                        (DB_IP, DB_PORT), start + ms(5000) + 900, rtt_us=ms(0.5), server_ttl=63)
        start = db.t
        for backoff in (0, ms(1000), ms(2000)):
            db.syn(after_us=backoff, expect="sg-ingress")
        flow(db.group, (REPORTS_ENV, db.c.port, DB_IP, DB_PORT, "tcp"), start, db.t)

    facts["db_pool_closes_from"] = min(closes)
    return cap.finish(), facts


def write_pcap(path: Path, packets: list[Packet]) -> None:
    from scapy.utils import RawPcapWriter

    start = int(CAPTURE_START.timestamp())
    with RawPcapWriter(str(path), linktype=LINKTYPE_RAW, sync=False) as writer:
        writer.write_header(None)
        for p in packets:
            data = bytes(p.pkt)  # scapy builds the packet: lengths and checksums computed here
            sec, usec = divmod(p.ts_us, 1_000_000)
            writer.write_packet(data, sec=start + sec, usec=usec)


# =================================================================================================
# Part 3: the manifest
# =================================================================================================

def expectations(packets: list[Packet], facts: dict) -> dict:
    groups: dict[str, dict] = {}
    for i, p in enumerate(packets):
        g = groups.setdefault(p.group, {"packets": 0, "dropped": {}})
        g["packets"] += 1
        if p.expect != "forwarded":
            g["dropped"][p.expect] = g["dropped"].get(p.expect, 0) + 1
    drops: dict[str, list[int]] = {}
    for i, p in enumerate(packets):
        if p.expect != "forwarded":
            drops.setdefault(p.expect, []).append(i)

    # Concurrency of orders-api: the largest number of its TCP connections open at one instant
    # (first SYN to last ACK), and the number of all its connections (TCP and DNS flows) in the
    # capture. Whether the emulator frees a slot at FIN or only when the tracked connection
    # expires, the connections it carries at once lie between these two numbers.
    events = []
    total = 0
    for group, flows in facts["flows"].items():
        for key, first, last in flows:
            if ipaddress.ip_address(key[0]) in ipaddress.ip_network(ORDERS_SANDBOXES):
                events += [(first, 1), (last, -1)]
                total += 1
    total += sum(1 for p in packets if p.group == "dns" and p.pkt.dport == 53
                 and p.pkt.src in ORDERS_ENVS)
    peak = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], -e[1])):
        cur += delta
        peak = max(peak, cur)
    orders_enis = math.ceil(peak / ENI_CAPACITY)
    if math.ceil(total / ENI_CAPACITY) != orders_enis:
        raise AssertionError("the ENI count would depend on when the emulator frees a slot")
    db_flows = facts["flows"]["orders-api -> database"]
    last_open = max(first for _, first, _ in db_flows)
    first_close = facts["db_pool_closes_from"]
    if not last_open < first_close:
        raise AssertionError("the database pools must all be open before the first one closes")
    return {"groups": groups, "drops": drops, "orders_peak": peak, "orders_total": total,
            "orders_enis": orders_enis, "db_connections": len(db_flows),
            "db_last_open": last_open, "db_first_close": first_close}


def ids_of(docs: dict) -> dict[str, str]:
    def by_name(items, key):
        return {_tag_name(x): x[key] for x in items}

    out = {}
    out.update(by_name(docs["subnets.json"]["Subnets"], "SubnetId"))
    out.update(by_name(docs["security-groups.json"]["SecurityGroups"], "GroupId"))
    out.update({"acl:" + k: v for k, v in by_name(docs["network-acls.json"]["NetworkAcls"], "NetworkAclId").items()})
    out["nat"] = docs["nat-gateways.json"]["NatGateways"][0]["NatGatewayId"]
    out["vpce"] = docs["vpc-endpoints.json"]["VpcEndpoints"][0]["VpcEndpointId"]
    out["db-eni"] = next(e["NetworkInterfaceId"] for e in docs["network-interfaces.json"]["NetworkInterfaces"]
                         if e["PrivateIpAddress"] == DB_IP)
    return out


def manifest(packets: list[Packet], exp: dict, docs: dict) -> str:
    ids = ids_of(docs)
    g = exp["groups"]
    n = len(packets)
    dropped = sum(len(v) for v in exp["drops"].values())

    def idx(reason):
        return "[" + ", ".join(str(i) for i in exp["drops"][reason]) + "]"

    def grp(name):
        return g[name]["packets"]

    def conns(name):
        return len({tuple(p.pkt.sprintf("%IP.src%:%TCP.sport%").split(":")) for p in packets
                    if p.group == name and p.pkt.src.startswith("169.254.")})

    dns_q = sum(1 for p in packets if p.group == "dns" and p.pkt.dport == 53)
    return f"""\
# The bundled demo of `hyperplane demo` (generated by pcaps/make_demo.py; do not edit by hand).
# Story and files: pcaps/README.md. Every count below is computed by the generator from the
# packets it wrote; the reasoning is in the comments.
name: orders-vpc
description: >-
  orders-api reaches its PostgreSQL database through a security-group reference and the internet
  through a NAT gateway, overflowing one Hyperplane ENI into a second; report-worker is stopped by
  a NACL without an inbound ephemeral-port rule and by a database security group that does not
  reference its group.
capture: capture.pcap          # LINKTYPE_RAW (101), the sandboxes' view, start {CAPTURE_START.isoformat()}
vpc: vpc/                      # aws ec2 describe-* outputs + functions.json (lambda list-functions)
sandboxes:                     # as the CLI's --sandbox takes them
  - orders-api={ORDERS_SANDBOXES}
  - report-worker={REPORTS_SANDBOXES}
options:
  # The real capacity is 65,000 connections per Hyperplane ENI. The demo lowers it to 50 so that
  # orders-api's 80 concurrent database connections overflow the first ENI into a second one with
  # a capture small enough to read.
  eni_capacity: {ENI_CAPACITY}
expect:
  packets: {n}
  forwarded: {n - dropped}
  dropped: {dropped}
  drops:
    # report-worker's SYNs to the partner API leave (app-b's NACL allows all outbound); each of
    # the {len(exp['drops']['nacl-ingress'])} SYN-ACKs (3 SYNs per attempt x 2 attempts, each answered)
    # enters app-b from {PARTNER_API[1]}, matches neither rule 100 (tcp 443 from {VPC_CIDR}) nor
    # rule 110 (tcp 5432 from {VPC_CIDR}) and meets the `*` deny.
    nacl-ingress: {len(exp['drops']['nacl-ingress'])}
    # report-worker's SYNs to {DB_IP}:{DB_PORT} (3 per attempt x 2 attempts, never answered) pass the
    # db-a NACL (tcp 5432 from {VPC_CIDR}) but sg-db admits 5432 only from members of sg-orders.
    sg-ingress: {len(exp['drops']['sg-ingress'])}
  drop_details:
    - reason: nacl-ingress
      component: {ids['acl:app-b-reports']}
      rule: "*"
      explanation_code: SUBNET_ACL_RESTRICTION
      indices: {idx('nacl-ingress')}
    - reason: sg-ingress
      component: {ids['sg-db']}        # the database interface's only group ({ids['db-eni']})
      rule: null
      explanation_code: ENI_SG_RULES_MISMATCH
      indices: {idx('sg-ingress')}
  # One Hyperplane ENI per (subnet, security-group set) is created with the functions: orders-api
  # (app-a, sg-orders) and report-worker (app-b, sg-reports). orders-api carries at most
  # {exp['orders_peak']} TCP connections at once (its {exp['db_connections']} database connections are all open
  # from {exp['db_last_open'] / 1e6:.3f} s, when the last one starts, to {exp['db_first_close'] / 1e6:.3f} s,
  # when the first pool closes) and {exp['orders_total']} flows in all
  # (TCP + DNS); with {ENI_CAPACITY} per ENI both need ceil(n/{ENI_CAPACITY}) = {exp['orders_enis']} ENIs, so the
  # result does not depend on whether a slot is freed at FIN or at expiry. report-worker has
  # fewer than {ENI_CAPACITY} flows: 1 ENI. The first orders-api ENI fills up (peak = capacity).
  enis:
    total: {exp['orders_enis'] + 1}
    by_function:
      orders-api: {exp['orders_enis']}
      report-worker: 1
    first_eni_peak_connections: {ENI_CAPACITY}
  nat_gateways:
    - id: {ids['nat']}
      public_ip: {NAT_PUBLIC_IP}
      error_port_allocation: 0
  # Per group: packets in the capture, connections (distinct sandbox address:port), outcome.
  groups:
    - name: orders-api -> database
      path: app-a -> local route -> db-a ({ids['db-eni']}, sg-db admits sg-orders)
      connections: {conns('orders-api -> database')}
      packets: {grp('orders-api -> database')}
      outcome: succeeds         # handshake, SCRAM auth, queries, FIN teardown; all forwarded
    - name: orders-api -> internet (NAT gateway)
      path: app-a -> 0.0.0.0/0 -> {ids['nat']} ({NAT_PUBLIC_IP}) -> igw -> {PAYMENTS_API[1]}:443
      connections: {conns('orders-api -> internet (NAT gateway)')}
      packets: {grp('orders-api -> internet (NAT gateway)')}
      outcome: succeeds
    - name: orders-api -> S3 (gateway endpoint)
      path: app-a -> prefix-list route -> {ids['vpce']} -> {S3_HOST[1]}:443
      connections: {conns('orders-api -> S3 (gateway endpoint)')}
      packets: {grp('orders-api -> S3 (gateway endpoint)')}
      outcome: succeeds
    - name: report-worker -> internet (NACL drops replies)
      path: app-b -> {ids['nat']} -> {PARTNER_API[1]}:443; replies dropped entering app-b
      connections: {conns('report-worker -> internet (NACL drops replies)')}
      packets: {grp('report-worker -> internet (NACL drops replies)')}
      outcome: fails            # SYNs forwarded, every SYN-ACK dropped (nacl-ingress)
    - name: report-worker -> database (sg-db refuses)
      path: app-b -> local route -> db-a; sg-db has no rule for sg-reports
      connections: {conns('report-worker -> database (sg-db refuses)')}
      packets: {grp('report-worker -> database (sg-db refuses)')}
      outcome: fails            # every SYN dropped (sg-ingress)
    - name: dns
      path: Amazon DNS {AMAZON_DNS}:53/udp, exempt from security groups and NACLs
      queries: {dns_q}
      packets: {grp('dns')}
      outcome: succeeds
"""


# =================================================================================================

def generate(outdir: Path) -> None:
    outdir = Path(outdir)
    vpc_dir = outdir / "vpc"
    vpc_dir.mkdir(parents=True, exist_ok=True)
    docs = build_vpc_export()
    canonical_order(docs)
    for name, doc in docs.items():
        (vpc_dir / name).write_text(json.dumps(doc, indent=4) + "\n")
    packets, facts = build_capture()
    write_pcap(outdir / "capture.pcap", packets)
    exp = expectations(packets, facts)
    (outdir / "demo.yaml").write_text(manifest(packets, exp, docs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    generate(Path(args.outdir))
    print(f"wrote {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
