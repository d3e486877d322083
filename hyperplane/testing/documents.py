"""Hypothesis strategies for AWS-shaped VPC configurations, and their loading.

:func:`vpcs` draws one *document*: a ``dict`` holding AWS API responses under AWS's own
top-level keys and field names, exactly what ``aws ec2 describe-vpcs``, ``describe-subnets``,
``describe-security-groups``, ... and ``aws lambda list-functions`` print, merged into one object
(the loader reads such a file as it is)::

    {"Vpcs": [...], "Subnets": [...], "SecurityGroups": [...], "NetworkAcls": [...],
     "RouteTables": [...], "InternetGateways": [...], "NatGateways": [...],
     "VpcEndpoints": [...], "PrefixLists": [...], "NetworkInterfaces": [...], "Functions": [...]}

Every document is valid: :func:`load_documents` turns it into a
:class:`~hyperplane.vpc.model.VpcModel` without error. :func:`models` draws the loaded model.

What a drawn configuration holds (sizes are knobs):

* one VPC ``10.N.0.0/16`` and subnets ``10.N.i.0/24`` .. ``/28``;
* security groups whose rules use CIDRs, prefix lists and *other groups* (``UserIdGroupPairs``),
  with protocols ``-1``, ``tcp``, ``udp``, ``icmp`` and port ranges;
* the default network ACL (allow all, AWS's rule 100) and custom ACLs with ordered allow/deny
  rules, every subnet associated with exactly one ACL, the ``*`` (32767) rules listed as AWS does;
* a main route table and custom ones, with the ``local`` route and routes to every target kind:
  internet gateway, NAT gateway, gateway VPC endpoint (prefix-list destination), network
  interface, peering connection, transit gateway, and blackhole routes (a deleted NAT gateway);
* an internet gateway, NAT gateways (public in a subnet routed to the internet gateway, private,
  and deleted ones), a gateway endpoint for S3 with its AWS prefix list, an interface endpoint;
* network interfaces ("servers") with addresses inside their subnets and 1-2 groups;
* Lambda functions with ``VpcConfig`` (1-3 subnets, 1-3 groups), sometimes one without.

Example::

    from hypothesis import given
    from hyperplane.testing import vpcs, load_documents

    @given(vpcs(subnets=(2, 3), functions=1))
    def test_every_function_gets_an_eni(document):
        model = load_documents(document)
        ...
"""
from __future__ import annotations

import ipaddress
import json
import warnings
from typing import Any, Mapping, Optional, Union

from hypothesis import strategies as st

__all__ = ["vpcs", "models", "load_documents", "ACCOUNT", "REGION", "INTERNET_HOSTS", "S3_PREFIX_CIDRS"]

ACCOUNT = "123456789012"
REGION = "us-east-1"
#: Addresses used as "the internet" (documentation ranges and well-known public hosts).
INTERNET_HOSTS = ("93.184.216.34", "8.8.8.8", "1.1.1.1", "198.51.100.77", "203.0.113.99")
#: The CIDRs the generated AWS-managed S3 prefix list holds.
S3_PREFIX_CIDRS = ("52.216.0.0/15", "3.5.0.0/19")
#: Peering / transit-gateway destinations of generated routes (outside every generated VPC).
PEER_CIDR, TGW_CIDR, MIDDLEBOX_CIDR = "172.16.0.0/16", "192.168.0.0/16", "100.64.0.0/16"

Size = Union[int, tuple[int, int]]


def _bounds(name: str, value: Size) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else value
    if lo < 0 or hi < lo:
        raise ValueError(f"{name}={value!r}: expected n or (low, high) with 0 <= low <= high")
    return lo, hi


def _id(prefix: str, serial: int, salt: int) -> str:
    """An AWS-looking id: ``subnet-`` + 17 hex digits, unique per (prefix, serial)."""
    return f"{prefix}-{(salt * 0x10001 + serial) & 0xFFFFFFFFFFFFFFFFF:017x}"


def _network(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(cidr)


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------

PORTS = (22, 53, 80, 443, 3306, 5432, 6379, 8080)


@st.composite
def _port_range(draw) -> tuple[int, int]:
    kind = draw(st.sampled_from(["one", "one", "range", "all"]))
    if kind == "all":
        return 0, 65535
    low = draw(st.sampled_from(PORTS) | st.integers(1, 65535))
    if kind == "one":
        return low, low
    return low, draw(st.integers(low, min(65535, low + 2000)))


@st.composite
def _sg_permission(draw, peers: list, group_ids: list, prefix_list_ids: list, permissive: bool) -> dict:
    proto = draw(st.sampled_from(["-1", "tcp", "tcp", "udp", "icmp"] if not permissive else ["-1", "tcp", "udp"]))
    perm: dict[str, Any] = {"IpProtocol": proto, "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
                            "UserIdGroupPairs": []}
    if proto in ("tcp", "udp"):
        low, high = (0, 65535) if permissive and draw(st.booleans()) else draw(_port_range())
        perm["FromPort"], perm["ToPort"] = low, high
    elif proto == "icmp":
        perm["FromPort"], perm["ToPort"] = draw(st.sampled_from([(-1, -1), (8, -1), (0, -1), (3, 4)]))
    kinds = ["cidr"] + (["group"] if group_ids else []) + (["prefix-list"] if prefix_list_ids else [])
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2)):
        if kind == "cidr":
            perm["IpRanges"].append({"CidrIp": draw(st.sampled_from(peers)), "Description": "generated"})
        elif kind == "group":
            perm["UserIdGroupPairs"].append({"GroupId": draw(st.sampled_from(group_ids)), "UserId": ACCOUNT})
        else:
            perm["PrefixListIds"].append({"PrefixListId": draw(st.sampled_from(prefix_list_ids))})
    return perm


@st.composite
def _nacl_entries(draw, peers: list, count: tuple[int, int], permissive: bool) -> list:
    entries = []
    for egress in (False, True):
        n = draw(st.integers(*count))
        numbers = sorted(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n, unique=True)))
        for number in numbers:
            proto = draw(st.sampled_from(["-1", "6", "6", "17"]))
            entry: dict[str, Any] = {
                "CidrBlock": draw(st.sampled_from(peers)), "Egress": egress, "Protocol": proto,
                "RuleAction": "allow" if permissive else draw(st.sampled_from(["allow", "allow", "deny"])),
                "RuleNumber": number * 10,
            }
            if proto in ("6", "17"):
                low, high = draw(_port_range())
                entry["PortRange"] = {"From": low, "To": high}
            entries.append(entry)
        if permissive or draw(st.booleans()):
            entries.append({"CidrBlock": "0.0.0.0/0", "Egress": egress, "Protocol": "-1", "RuleAction": "allow",
                            "RuleNumber": 32000})
        entries.append({"CidrBlock": "0.0.0.0/0", "Egress": egress, "Protocol": "-1", "RuleAction": "deny",
                        "RuleNumber": 32767})
    return entries


def _allow_all_entries() -> list:
    return [{"CidrBlock": "0.0.0.0/0", "Egress": egress, "Protocol": "-1", "RuleAction": action, "RuleNumber": number}
            for egress in (True, False) for number, action in ((100, "allow"), (32767, "deny"))]


def _route(dest: str, **target) -> dict:
    key = "DestinationPrefixListId" if dest.startswith("pl-") else "DestinationCidrBlock"
    route = {key: dest, "Origin": "CreateRoute", "State": "active"}
    route.update(target)
    return route


# --------------------------------------------------------------------------------------------
# the configuration
# --------------------------------------------------------------------------------------------


@st.composite
def vpcs(draw, *, subnets: Size = (1, 4), security_groups: Size = (1, 4), rules: Size = (0, 3),
         interfaces: Size = (0, 4), functions: Size = (1, 3), network_acls: Size = (0, 2),
         nacl_rules: Size = (0, 4), route_tables: Size = (0, 2), nat_gateways: Size = (0, 2),
         prefix_lists: Size = (0, 2), internet_gateway: Optional[bool] = None, endpoints: bool = True,
         permissive: bool = False, lambda_only_functions: bool = True) -> dict:
    """A valid AWS-shaped VPC configuration document (see the module docstring).

    Size knobs take ``n`` or ``(low, high)``: ``subnets``, ``security_groups``, ``rules`` (per
    group and direction), ``interfaces``, ``functions``, ``network_acls`` (custom ACLs besides the
    default one), ``nacl_rules`` (per custom ACL and direction), ``route_tables`` (custom tables
    besides the main one), ``nat_gateways``, ``prefix_lists`` (customer-managed lists).
    ``internet_gateway``: True/False, or None to draw it. ``endpoints``: add a gateway endpoint
    for S3 and an interface endpoint. ``permissive``: rules allow much more (allow-all egress,
    allow-only ACLs), so most generated traffic is forwarded. ``lambda_only_functions``: may add
    a function without ``VpcConfig``.
    """
    salt = draw(st.integers(0, 0xFFFF))
    net = draw(st.integers(0, 255))
    vpc_cidr = f"10.{net}.0.0/16"
    vpc_id = _id("vpc", 0, salt)
    doc: dict[str, list] = {k: [] for k in (
        "Vpcs", "Subnets", "SecurityGroups", "NetworkAcls", "RouteTables", "InternetGateways", "NatGateways",
        "VpcEndpoints", "PrefixLists", "NetworkInterfaces", "Functions")}
    doc["Vpcs"].append({
        "VpcId": vpc_id, "CidrBlock": vpc_cidr, "OwnerId": ACCOUNT, "State": "available", "IsDefault": False,
        "InstanceTenancy": "default", "DhcpOptionsId": _id("dopt", 0, salt),
        "CidrBlockAssociationSet": [{"AssociationId": _id("vpc-cidr-assoc", 0, salt), "CidrBlock": vpc_cidr,
                                     "CidrBlockState": {"State": "associated"}}],
    })

    # subnets: subnet i is 10.net.i.0/len; addresses handed out from the top of each subnet
    n_subnets = draw(st.integers(*_bounds("subnets", subnets)))
    n_subnets = max(1, n_subnets)
    subnet_ids, subnet_nets, free_hosts = [], [], []
    for i in range(n_subnets):
        prefix = draw(st.sampled_from([24, 24, 26, 28]))
        cidr = _network(f"10.{net}.{i}.0/{prefix}")
        subnet_id = _id("subnet", i, salt)
        subnet_ids.append(subnet_id)
        subnet_nets.append(cidr)
        # keep the low addresses (base+4 ...) for the Hyperplane ENIs the control plane creates
        free_hosts.append([cidr.network_address + k for k in range(cidr.num_addresses - 2, 7, -1)])
        doc["Subnets"].append({
            "SubnetId": subnet_id, "VpcId": vpc_id, "CidrBlock": str(cidr), "State": "available",
            "AvailabilityZone": f"{REGION}{'abc'[i % 3]}", "AvailabilityZoneId": f"use1-az{i % 3 + 1}",
            "AvailableIpAddressCount": cidr.num_addresses - 5, "MapPublicIpOnLaunch": False,
            "DefaultForAz": False, "OwnerId": ACCOUNT, "Ipv6CidrBlockAssociationSet": [],
            "SubnetArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/{subnet_id}",
        })

    def take_address(i: int) -> Optional[str]:
        return str(free_hosts[i].pop(0)) if free_hosts[i] else None

    # prefix lists: customer-managed ones with Entries, and AWS's S3 list
    pl_ids = []
    for i in range(draw(st.integers(*_bounds("prefix_lists", prefix_lists)))):
        pl_id = _id("pl", 1 + i, salt)
        cidrs = draw(st.lists(st.sampled_from([vpc_cidr, str(subnet_nets[0]), "8.8.8.0/24", "93.184.216.0/24",
                                                "198.51.100.0/24", "172.16.0.0/16"]),
                              min_size=1, max_size=3, unique=True))
        pl_ids.append(pl_id)
        doc["PrefixLists"].append({
            "PrefixListId": pl_id, "PrefixListName": f"generated-{i}", "AddressFamily": "IPv4", "MaxEntries": 5,
            "State": "create-complete", "OwnerId": ACCOUNT, "Version": 1,
            "Entries": [{"Cidr": c, "Description": "generated"} for c in cidrs],
        })
    s3_pl = _id("pl", 0, salt)
    if endpoints:
        doc["PrefixLists"].append({
            "PrefixListId": s3_pl, "PrefixListName": f"com.amazonaws.{REGION}.s3", "AddressFamily": "IPv4",
            "State": "create-complete", "OwnerId": "AWS", "Entries": [{"Cidr": c} for c in S3_PREFIX_CIDRS],
        })

    # security groups (ids first: rules reference each other)
    n_groups = max(1, draw(st.integers(*_bounds("security_groups", security_groups))))
    group_ids = [_id("sg", i, salt) for i in range(n_groups)]
    peers = ["0.0.0.0/0", vpc_cidr] + [str(c) for c in subnet_nets] + ["93.184.216.0/24", "8.8.8.8/32",
                                                                        "172.16.0.0/16"]
    rule_bounds = _bounds("rules", rules)
    all_pls = pl_ids + ([s3_pl] if endpoints else [])
    for i, group_id in enumerate(group_ids):
        ingress = [draw(_sg_permission(peers, group_ids, all_pls, permissive))
                   for _ in range(draw(st.integers(*rule_bounds)))]
        if permissive or draw(st.booleans()):
            egress = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [],
                       "PrefixListIds": [], "UserIdGroupPairs": []}]  # AWS's default outbound rule
        else:
            egress = []
        egress += [draw(_sg_permission(peers, group_ids, all_pls, permissive))
                   for _ in range(draw(st.integers(*rule_bounds)))]
        doc["SecurityGroups"].append({
            "GroupId": group_id, "GroupName": "default" if i == 0 else f"group-{i}", "VpcId": vpc_id,
            "OwnerId": ACCOUNT, "Description": "generated security group",
            "IpPermissions": ingress, "IpPermissionsEgress": egress,
        })

    # network interfaces ("servers")
    interface_ids = []
    for i in range(draw(st.integers(*_bounds("interfaces", interfaces)))):
        s = draw(st.integers(0, n_subnets - 1))
        address = take_address(s)
        if address is None:
            continue
        eni_id = _id("eni", 100 + i, salt)
        groups = draw(st.lists(st.sampled_from(group_ids), min_size=1, max_size=2, unique=True))
        interface_ids.append(eni_id)
        doc["NetworkInterfaces"].append(_interface(eni_id, subnet_ids[s], vpc_id, address, groups,
                                                   f"server {i}", "interface", s))

    # internet gateway, NAT gateways (public ones in subnet 0, which routes to the gateway)
    igw = draw(st.booleans()) if internet_gateway is None else internet_gateway
    igw_id = _id("igw", 0, salt)
    if igw:
        doc["InternetGateways"].append({"InternetGatewayId": igw_id, "OwnerId": ACCOUNT, "Tags": [],
                                        "Attachments": [{"State": "available", "VpcId": vpc_id}]})
    live_nats, deleted_nats = [], []
    for i in range(draw(st.integers(*_bounds("nat_gateways", nat_gateways)))):
        nat_id = _id("nat", i, salt)
        state = draw(st.sampled_from(["available", "available", "deleted"]))
        connectivity = "public" if igw and draw(st.booleans()) else "private"
        address = take_address(0)
        if address is None:
            continue
        eni_id = _id("eni", 200 + i, salt)
        entry = {"NetworkInterfaceId": eni_id, "PrivateIp": address, "IsPrimary": True,
                 "AllocationId": _id("eipalloc", i, salt), "Status": "succeeded"}
        if connectivity == "public":
            entry["PublicIp"] = f"198.51.100.{10 + i}"
            entry["AssociationId"] = _id("eipassoc", i, salt)
        doc["NatGateways"].append({
            "NatGatewayId": nat_id, "VpcId": vpc_id, "SubnetId": subnet_ids[0], "State": state,
            "ConnectivityType": connectivity, "NatGatewayAddresses": [entry], "CreateTime": "2024-05-01T12:00:00+00:00",
        })
        if state == "available":
            live_nats.append(nat_id)
            doc["NetworkInterfaces"].append(_interface(eni_id, subnet_ids[0], vpc_id, address, [],
                                                       f"Interface for NAT Gateway {nat_id}", "nat_gateway", 0,
                                                       requester_managed=True))
        else:
            deleted_nats.append(nat_id)

    # route tables: the main one and custom ones, each subnet in at most one custom table
    table_ids = [_id("rtb", 0, salt)]
    associations: dict[str, list] = {table_ids[0]: []}
    for i in range(draw(st.integers(*_bounds("route_tables", route_tables)))):
        table_ids.append(_id("rtb", 1 + i, salt))
        associations[table_ids[-1]] = []
    for s, subnet_id in enumerate(subnet_ids):
        if s == 0 and igw and live_nats and len(table_ids) == 1:
            table_ids.append(_id("rtb", 99, salt))  # the public subnet of the NAT gateways
            associations[table_ids[-1]] = []
        if s == 0 and igw and live_nats:
            associations[table_ids[-1]].append(subnet_id)
            continue
        choice = draw(st.sampled_from(table_ids))
        if choice != table_ids[0]:
            associations[choice].append(subnet_id)
    endpoint_id = _id("vpce", 0, salt)
    endpoint_tables = []
    for t, table_id in enumerate(table_ids):
        routes = [{"DestinationCidrBlock": vpc_cidr, "GatewayId": "local", "Origin": "CreateRouteTable",
                   "State": "active"}]
        public_table = igw and live_nats and subnet_ids[0] in associations[table_id]
        defaults = []
        if igw:
            defaults.append(dict(GatewayId=igw_id))
        if live_nats:
            defaults.append(dict(NatGatewayId=draw(st.sampled_from(live_nats))))
        if deleted_nats:
            defaults.append(dict(NatGatewayId=deleted_nats[0], State="blackhole"))
        if public_table:
            routes.append(_route("0.0.0.0/0", GatewayId=igw_id))
        elif defaults and draw(st.booleans() if not permissive else st.just(True)):
            routes.append(_route("0.0.0.0/0", **draw(st.sampled_from(defaults))))
        if draw(st.booleans()):
            routes.append(_route(PEER_CIDR, VpcPeeringConnectionId=_id("pcx", 0, salt)))
        if draw(st.booleans()):
            routes.append(_route(TGW_CIDR, TransitGatewayId=_id("tgw", 0, salt)))
        if interface_ids and draw(st.booleans()):
            routes.append(_route(MIDDLEBOX_CIDR, NetworkInterfaceId=draw(st.sampled_from(interface_ids))))
        if draw(st.booleans()):  # a route whose NAT gateway is gone: AWS shows it as a blackhole
            routes.append(_route("192.0.2.0/24", NatGatewayId=_id("nat", 0xFFF, salt), State="blackhole"))
        if endpoints and draw(st.booleans()):
            routes.append(_route(s3_pl, GatewayId=endpoint_id))
            endpoint_tables.append(table_id)
        assoc = [{"Main": True, "RouteTableId": table_id, "RouteTableAssociationId": _id("rtbassoc", 0, salt),
                  "AssociationState": {"State": "associated"}}] if t == 0 else []
        for k, subnet_id in enumerate(associations[table_id]):
            assoc.append({"Main": False, "RouteTableId": table_id, "SubnetId": subnet_id,
                          "RouteTableAssociationId": _id("rtbassoc", 100 * t + k + 1, salt),
                          "AssociationState": {"State": "associated"}})
        doc["RouteTables"].append({"RouteTableId": table_id, "VpcId": vpc_id, "OwnerId": ACCOUNT,
                                   "Associations": assoc, "Routes": routes, "PropagatingVgws": [], "Tags": []})

    # VPC endpoints: the S3 gateway endpoint of those tables, and an interface endpoint
    if endpoints:
        doc["VpcEndpoints"].append({
            "VpcEndpointId": endpoint_id, "VpcEndpointType": "Gateway", "VpcId": vpc_id,
            "ServiceName": f"com.amazonaws.{REGION}.s3", "State": "available", "RouteTableIds": endpoint_tables,
            "SubnetIds": [], "Groups": [], "NetworkInterfaceIds": [], "PrivateDnsEnabled": False,
            "OwnerId": ACCOUNT, "PolicyDocument": json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*",
                                                                            "Action": "*", "Resource": "*"}]}),
        })
        s = draw(st.integers(0, n_subnets - 1))
        address = take_address(s)
        if address is not None:
            eni_id = _id("eni", 300, salt)
            groups = [draw(st.sampled_from(group_ids))]
            vpce_id = _id("vpce", 1, salt)
            doc["NetworkInterfaces"].append(_interface(eni_id, subnet_ids[s], vpc_id, address, groups,
                                                       f"VPC Endpoint Interface {vpce_id}", "vpc_endpoint", s,
                                                       requester_managed=True))
            doc["VpcEndpoints"].append({
                "VpcEndpointId": vpce_id, "VpcEndpointType": "Interface", "VpcId": vpc_id,
                "ServiceName": f"com.amazonaws.{REGION}.secretsmanager", "State": "available",
                "RouteTableIds": [], "SubnetIds": [subnet_ids[s]], "NetworkInterfaceIds": [eni_id],
                "Groups": [{"GroupId": g, "GroupName": "generated"} for g in groups], "PrivateDnsEnabled": True,
                "OwnerId": ACCOUNT,
            })

    # network ACLs: the default one (allow all) and custom ones; every subnet in exactly one
    acl_ids = [_id("acl", 0, salt)] + [_id("acl", 1 + i, salt)
                                       for i in range(draw(st.integers(*_bounds("network_acls", network_acls))))]
    acl_of = {subnet_id: draw(st.sampled_from(acl_ids)) for subnet_id in subnet_ids}
    acl_peers = ["0.0.0.0/0", vpc_cidr] + [str(c) for c in subnet_nets] + ["93.184.216.0/24", "172.16.0.0/16"]
    for a, acl_id in enumerate(acl_ids):
        entries = _allow_all_entries() if a == 0 else draw(
            _nacl_entries(acl_peers, _bounds("nacl_rules", nacl_rules), permissive))
        assoc = [{"NetworkAclAssociationId": _id("aclassoc", 10 * a + k, salt), "NetworkAclId": acl_id,
                  "SubnetId": subnet_id}
                 for k, subnet_id in enumerate(s for s in subnet_ids if acl_of[s] == acl_id)]
        doc["NetworkAcls"].append({"NetworkAclId": acl_id, "VpcId": vpc_id, "IsDefault": a == 0, "OwnerId": ACCOUNT,
                                   "Associations": assoc, "Entries": entries, "Tags": []})

    # Lambda functions
    n_functions = max(1, draw(st.integers(*_bounds("functions", functions))))
    for i in range(n_functions):
        name = f"fn-{i}"
        function = {
            "FunctionName": name, "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "Runtime": "python3.11", "Role": f"arn:aws:iam::{ACCOUNT}:role/{name}-role", "Handler": "app.handler",
            "CodeSize": 1024, "Timeout": 30, "MemorySize": 256, "Version": "$LATEST", "PackageType": "Zip",
            "State": "Active", "LastUpdateStatus": "Successful", "Architectures": ["x86_64"],
        }
        if not (lambda_only_functions and i > 0 and draw(st.integers(0, 5)) == 0):
            chosen_subnets = draw(st.lists(st.sampled_from(subnet_ids), min_size=1, max_size=min(3, n_subnets),
                                           unique=True))
            chosen_groups = draw(st.lists(st.sampled_from(group_ids), min_size=1, max_size=min(3, n_groups),
                                          unique=True))
            function["VpcConfig"] = {"SubnetIds": chosen_subnets, "SecurityGroupIds": chosen_groups, "VpcId": vpc_id,
                                     "Ipv6AllowedForDualStack": False}
        doc["Functions"].append(function)
    return doc


def _interface(eni_id: str, subnet_id: str, vpc_id: str, address: str, groups: list, description: str,
               interface_type: str, az_index: int, requester_managed: bool = False) -> dict:
    return {
        "NetworkInterfaceId": eni_id, "SubnetId": subnet_id, "VpcId": vpc_id, "OwnerId": ACCOUNT,
        "AvailabilityZone": f"{REGION}{'abc'[az_index % 3]}", "Description": description,
        "Groups": [{"GroupId": g, "GroupName": g} for g in groups], "InterfaceType": interface_type,
        "Ipv6Addresses": [], "MacAddress": "02:00:00:00:00:00", "PrivateIpAddress": address,
        "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": address}],
        "RequesterManaged": requester_managed, "SourceDestCheck": True, "Status": "in-use", "TagSet": [],
    }


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def load_documents(*documents: Mapping, names: Optional[list[str]] = None):
    """Load AWS-shaped documents (dicts, as :func:`vpcs` draws them) with the real loader and
    return the :class:`~hyperplane.vpc.model.VpcModel`; loader warnings are collected in
    ``model.warnings``, not emitted. Errors are the loader's
    :class:`~hyperplane.vpc.errors.ConfigError` (the file names are ``names`` or
    ``<document i>``)."""
    from hyperplane.vpc.loader import load_vpc_documents

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vpc_documents(*documents, names=names)


def models(**knobs):
    """The loaded :class:`~hyperplane.vpc.model.VpcModel` of a :func:`vpcs` document (same knobs)."""
    return vpcs(**knobs).map(load_documents)
