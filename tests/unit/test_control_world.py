"""A tiny builder of VpcModel objects for the control-plane tests (no loader needed).

Two VPCs: vpc-1 (10.0.0.0/16, dual-stack) and vpc-2 (10.1.0.0/16). Subnets and groups are given
as short specs; every test states what it needs.
"""
from __future__ import annotations

import ipaddress

from hyperplane.vpc.model import Function, NatGateway, NetworkInterface, SecurityGroup, Subnet, Vpc, VpcModel

ACCOUNT = "111122223333"
VPCS = {
    "vpc-1": Vpc("vpc-1", ACCOUNT, (ipaddress.ip_network("10.0.0.0/16"),), (ipaddress.ip_network("2600:1f18:1:2200::/56"),)),
    "vpc-2": Vpc("vpc-2", ACCOUNT, (ipaddress.ip_network("10.1.0.0/16"),)),
}
DEFAULT_SUBNETS = {
    "subnet-a": ("vpc-1", "10.0.1.0/24", None),
    "subnet-b": ("vpc-1", "10.0.2.0/24", None),
    "subnet-small": ("vpc-1", "10.0.3.0/28", None),
    "subnet-v6": ("vpc-1", "10.0.4.0/24", "2600:1f18:1:2204::/64"),
    "subnet-other": ("vpc-2", "10.1.1.0/24", None),
}
DEFAULT_GROUPS = {"sg-1": "vpc-1", "sg-2": "vpc-1", "sg-3": "vpc-1", "sg-other": "vpc-2"}


def fn(name: str, subnets=("subnet-a",), groups=("sg-1",), **kw) -> Function:
    return Function(name=name, subnet_ids=tuple(subnets), security_group_ids=tuple(groups), **kw)


def world(*functions: Function, interfaces=(), nat_gateways=(), subnets=None, groups=None) -> VpcModel:
    subnets = DEFAULT_SUBNETS if subnets is None else subnets
    groups = DEFAULT_GROUPS if groups is None else groups
    return VpcModel(
        vpcs=VPCS,
        subnets={
            sid: Subnet(sid, vpc, ipaddress.ip_network(cidr), ipaddress.ip_network(v6) if v6 else None, "us-east-1a", ACCOUNT)
            for sid, (vpc, cidr, v6) in subnets.items()
        },
        security_groups={gid: SecurityGroup(gid, vpc, name=f"name-of-{gid}") for gid, vpc in groups.items()},
        network_interfaces={i.id: i for i in interfaces},
        nat_gateways={n.id: n for n in nat_gateways},
        functions={f.name: f for f in functions},
    )


def interface(eni_id: str, subnet: str, *ips: str, groups=("sg-1",), kind="interface", ipv6=()) -> NetworkInterface:
    vpc = DEFAULT_SUBNETS[subnet][0]
    return NetworkInterface(
        eni_id, vpc, subnet, tuple(ipaddress.ip_address(i) for i in ips),
        tuple(ipaddress.ip_address(i) for i in ipv6), tuple(groups), interface_type=kind,
    )


def nat_gateway(nat_id: str, subnet: str, ip: str) -> NatGateway:
    return NatGateway(nat_id, DEFAULT_SUBNETS[subnet][0], subnet, ipaddress.ip_address(ip), (ipaddress.ip_address("203.0.113.9"),))
