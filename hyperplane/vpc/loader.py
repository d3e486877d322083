"""Load a VPC configuration from AWS API responses (JSON or YAML) into a validated :class:`VpcModel`.

Input: files, or folders of ``*.json`` / ``*.yaml`` / ``*.yml`` files (read in sorted order), each
an object holding AWS responses under their own top-level keys, exactly as ``aws ec2 describe-*``
and ``aws lambda list-functions`` print them: ``Vpcs``, ``Subnets``, ``SecurityGroups``,
``NetworkAcls``, ``RouteTables``, ``InternetGateways``, ``EgressOnlyInternetGateways``,
``NatGateways``, ``VpcEndpoints``, ``PrefixLists`` (optionally with ``Entries`` inline, as
``get-managed-prefix-list-entries`` returns them, or ``Cidrs`` as ``describe-prefix-lists`` does),
``NetworkInterfaces``, ``DhcpOptions`` and ``Functions``. A file may also be one
``get-function-configuration`` object (or ``get-function`` output with ``Configuration``).
Several files merge: the same id twice is fine when both definitions are identical, an error
when they differ.

Defaults applied as AWS applies them (so the dataplane never re-derives them):

* every route table gets the VPC's ``local`` route for each VPC CIDR when the export lacks it
  (AWS always returns it; it cannot be deleted) [AWS-FACTS 4];
* a VPC with no main route table in the files gets one holding only the local routes, and a VPC
  with no default network ACL gets AWS's default ACL (allow all in and out); both with a warning;
* NACL ``*`` rules: ``32767`` (deny all IPv4) is appended to both directions of every ACL when
  absent; ``32768`` (deny all IPv6) when the ACL's VPC has an IPv6 CIDR or the ACL has IPv6
  entries, which is when AWS shows it [AWS-FACTS 3];
* protocol ``-1`` / ``all`` is all protocols and all ports; ``tcp``, ``udp``, ``icmp``,
  ``icmpv6`` and numbers (also as strings) are accepted in SG and NACL rules; a protocol other
  than TCP/UDP/ICMP/ICMPv6 allows all ports whatever range is given (ports become ``(0, 65535)``);
  ICMPv6 without a range means all types and codes [AWS-FACTS 2, 3];
* security group permissions are flattened to one :class:`SgRule` per peer (``IpRanges``,
  ``Ipv6Ranges``, ``PrefixListIds``, ``UserIdGroupPairs`` in that order), indexed in order;
* a route's target kind comes from its field (``NatGatewayId`` -> nat, ``NetworkInterfaceId`` ->
  eni, ``InstanceId`` -> instance, ``VpcPeeringConnectionId`` -> pcx, ``TransitGatewayId`` ->
  tgw, ``EgressOnlyInternetGatewayId`` -> eigw) or, for ``GatewayId``, from the id prefix
  (``local``, ``igw-``, ``vpce-``, ``vgw-``); a route to a NAT gateway, internet gateway, VPC
  endpoint or network interface that is not in the files (or is deleted / detached) is a
  ``blackhole`` route, as AWS shows it, with a warning;
* the network interfaces of NAT gateways are ``nat_gateway`` interfaces without security groups
  (AWS: "No SG on NAT GW" [AWS-FACTS 5]) and are added from ``NatGatewayAddresses`` when
  ``NetworkInterfaces`` does not list them; those of interface endpoints are ``vpc_endpoint``
  interfaces carrying the endpoint's security groups.

Choices where AWS allows what the files cannot describe (documented, warnings not errors): a
security group rule referencing a group that is not in the files (a group of a peered VPC or
another account) or a prefix list that is not in the files matches no address; objects (other
than subnets) of a VPC that is not in the files are skipped. A subnet of an unknown VPC, a
function naming an unknown subnet or security group, and every malformed value are errors
(:class:`ConfigError`, ``file: JSON.path: message``).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml

from hyperplane import limits
from hyperplane.vpc.errors import ConfigError, ConfigWarning, Node, describe
from hyperplane.vpc.model import (
    ALL_PORTS,
    PROTO_ALL,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Function,
    InternetGateway,
    IPNetwork,
    NaclEntry,
    NatGateway,
    NetworkAcl,
    NetworkInterface,
    PrefixList,
    Route,
    RouteTable,
    SecurityGroup,
    SgRule,
    Subnet,
    Vpc,
    VpcEndpoint,
    VpcModel,
)

__all__ = ["load_vpc", "parse_protocol", "ConfigError", "ConfigWarning"]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")

#: Top-level keys we read, with the field that identifies an object of that kind.
ID_FIELDS = {
    "DhcpOptions": "DhcpOptionsId",
    "Vpcs": "VpcId",
    "Subnets": "SubnetId",
    "PrefixLists": "PrefixListId",
    "SecurityGroups": "GroupId",
    "NetworkInterfaces": "NetworkInterfaceId",
    "InternetGateways": "InternetGatewayId",
    "EgressOnlyInternetGateways": "EgressOnlyInternetGatewayId",
    "NatGateways": "NatGatewayId",
    "VpcEndpoints": "VpcEndpointId",
    "RouteTables": "RouteTableId",
    "NetworkAcls": "NetworkAclId",
    "Functions": "FunctionName",
}
#: Keys of AWS CLI output that carry no configuration.
SILENT_KEYS = ("ResponseMetadata",)

PROTOCOL_NAMES = {"-1": PROTO_ALL, "all": PROTO_ALL, "tcp": PROTO_TCP, "udp": PROTO_UDP,
                  "icmp": PROTO_ICMP, "icmpv6": PROTO_ICMPV6}

#: Route target fields in the order they decide the kind (an instance route also names its ENI).
ROUTE_TARGET_FIELDS = (
    ("NatGatewayId", "nat"),
    ("EgressOnlyInternetGatewayId", "eigw"),
    ("TransitGatewayId", "tgw"),
    ("VpcPeeringConnectionId", "pcx"),
    ("InstanceId", "instance"),
    ("NetworkInterfaceId", "eni"),
    ("GatewayId", None),  # by id prefix
    ("LocalGatewayId", "other"),
    ("CarrierGatewayId", "other"),
    ("CoreNetworkArn", "other"),
)
GATEWAY_PREFIXES = (("igw-", "igw"), ("vpce-", "vpce"), ("vgw-", "vgw"))
ROUTE_DESTINATION_FIELDS = ("DestinationCidrBlock", "DestinationIpv6CidrBlock", "DestinationPrefixListId")

NAT_GONE_STATES = ("deleting", "deleted", "failed")
IPV4_ANY = ipaddress.ip_network("0.0.0.0/0")
IPV6_ANY = ipaddress.ip_network("::/0")


def load_vpc(*paths: str | os.PathLike) -> VpcModel:
    """Read, merge and validate AWS API responses from files or folders; return the model.

    Raises :class:`ConfigError` for the first mistake found; warnings are collected in
    ``model.warnings`` and also emitted with :func:`warnings.warn` (:class:`ConfigWarning`).
    """
    if not paths:
        raise ConfigError("", "", "no VPC configuration given (a JSON/YAML file or folder is needed)")
    documents = [_read_document(file) for file in _expand_paths(paths)]
    model = _Builder(documents).build()
    for message in model.warnings:
        warnings.warn(message, ConfigWarning, stacklevel=2)
    return model


def load_vpc_documents(*documents: Mapping, names: Optional[Sequence[str]] = None) -> VpcModel:
    """:func:`load_vpc` for documents already in memory: dicts holding AWS API responses under
    their top-level keys (what ``json.load`` of an ``aws ec2 describe-*`` output gives). Errors
    name the document as ``<document N>`` (or the given ``names``) and the JSON path."""
    if not documents:
        raise ConfigError("", "", "no VPC configuration given (at least one document is needed)")
    if names is not None and len(names) != len(documents):
        raise ValueError("names must give one name per document")
    nodes = []
    for i, doc in enumerate(documents):
        name = names[i] if names is not None else f"<document {i}>"
        if not isinstance(doc, Mapping):
            raise ConfigError(name, "", f"expected an object of AWS responses (Vpcs, Subnets, ...), got {describe(doc)}")
        nodes.append(Node(dict(doc), name))
    model = _Builder(nodes).build()
    for message in model.warnings:
        warnings.warn(message, ConfigWarning, stacklevel=2)
    return model


def parse_protocol(node: Node, key: str) -> int:
    """An SG ``IpProtocol`` or NACL ``Protocol``: ``-1``/``all``, a name, or a number 0-255."""
    raw = node.value.get(key) if isinstance(node.value, dict) else None
    if raw is None:
        raise node.error("required field is missing", key)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise node.error(f"expected a protocol, got {describe(raw)}", key)
    text = str(raw).strip().lower()
    if text in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text)
    raise node.error(f"{describe(raw)} is not a protocol (use -1, tcp, udp, icmp, icmpv6 or a number 0-255)", key)


# --- files ----------------------------------------------------------------------------------------
def _expand_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    files: list[str] = []
    for given in paths:
        name = os.fspath(given)
        path = Path(name)
        if path.is_dir():
            found = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES)
            if not found:
                raise ConfigError(name, "", "folder holds no .json, .yaml or .yml file")
            files.extend(os.path.join(name, f) for f in found)
        elif path.is_file():
            files.append(name)
        else:
            raise ConfigError(name, "", "no such file or folder")
    return files


def _read_document(file: str) -> Node:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot be read: {exc.strerror or exc}") from None
    if file.lower().endswith((".yaml", ".yml")):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(file, "", f"malformed YAML{where}: {problem}") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(file, "", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if value is None:
        raise ConfigError(file, "", "the file is empty")
    if not isinstance(value, dict):
        raise ConfigError(file, "", f"expected an object of AWS responses (Vpcs, Subnets, ...), got {describe(value)}")
    return Node(value, file)


# --- building -------------------------------------------------------------------------------------
class _Builder:
    """Merges the documents and builds the model one kind at a time, in dependency order."""

    def __init__(self, documents: list[Node]) -> None:
        self.warnings: list[str] = []
        self.raw: dict[str, dict[str, Node]] = {kind: {} for kind in ID_FIELDS}
        for doc in documents:
            self._collect(doc)
        self.dhcp_servers: dict[str, tuple] = {}
        self.vpcs: dict[str, Vpc] = {}
        self.subnets: dict[str, Subnet] = {}
        self.prefix_lists: dict[str, PrefixList] = {}
        self.groups: dict[str, SecurityGroup] = {}
        self.interfaces: dict[str, NetworkInterface] = {}
        self.address_owner: dict[Any, str] = {}  # private address -> interface id
        self.igws: dict[str, InternetGateway] = {}
        self.nats: dict[str, NatGateway] = {}
        self.endpoints: dict[str, VpcEndpoint] = {}
        self.route_tables: dict[str, RouteTable] = {}
        self.nacls: dict[str, NetworkAcl] = {}
        self.functions: dict[str, Function] = {}

    def warn(self, node: Node, message: str, key: str | int | None = None) -> None:
        self.warnings.append(f"{node.where(key)}: {message}")

    # merging
    def _collect(self, doc: Node) -> None:
        if doc.has("Configuration") and isinstance(doc.value["Configuration"], dict):
            doc = doc.child("Configuration")  # get-function output
        if doc.has("FunctionName"):  # one get-function-configuration object
            self._add("Functions", doc)
            return
        for key in doc.value:
            if key in ID_FIELDS:
                for item in doc.list(key):
                    self._add(key, item)
            elif key == "NextToken" or key == "NextMarker":
                self.warn(doc, "the output was paginated: objects on later pages are missing", key)
            elif key not in SILENT_KEYS:
                self.warn(doc, f"unknown top-level key {key!r} ignored (known: {', '.join(ID_FIELDS)})", str(key))

    def _add(self, kind: str, item: Node) -> None:
        item.expect(dict)
        ident = item.str(ID_FIELDS[kind])
        seen = self.raw[kind].get(ident)
        if seen is None:
            self.raw[kind][ident] = item
        elif seen.value != item.value:
            raise item.error(f"{ident} conflicts with its other definition at {seen.where()}")

    def nodes(self, kind: str) -> list[Node]:
        return list(self.raw[kind].values())

    # the whole model
    def build(self) -> VpcModel:
        for node in self.nodes("DhcpOptions"):
            self._dhcp(node)
        for node in self.nodes("Vpcs"):
            self._vpc(node)
        for node in self.nodes("Subnets"):
            self._subnet(node)
        self._check_subnet_overlaps()
        for node in self.nodes("PrefixLists"):
            self._prefix_list(node)
        for node in self.nodes("SecurityGroups"):
            self._security_group(node)
        self._check_group_references()
        for node in self.nodes("NetworkInterfaces"):
            self._interface(node)
        for kind in ("InternetGateways", "EgressOnlyInternetGateways"):
            for node in self.nodes(kind):
                self._internet_gateway(node, egress_only=kind.startswith("Egress"))
        for node in self.nodes("NatGateways"):
            self._nat_gateway(node)
        for node in self.nodes("VpcEndpoints"):
            self._endpoint(node)
        for node in self.nodes("RouteTables"):
            self._route_table(node)
        self._complete_route_tables()
        for node in self.nodes("NetworkAcls"):
            self._nacl(node)
        self._complete_nacls()
        for node in self.nodes("Functions"):
            self._function(node)
        return VpcModel(
            vpcs=self.vpcs, subnets=self.subnets, security_groups=self.groups, network_acls=self.nacls,
            route_tables=self.route_tables, internet_gateways=self.igws, nat_gateways=self.nats,
            vpc_endpoints=self.endpoints, prefix_lists=self.prefix_lists,
            network_interfaces=self.interfaces, functions=self.functions, warnings=tuple(self.warnings),
        )

    def _known_vpc(self, node: Node, what: str) -> Optional[str]:
        """The object's VpcId when that VPC is in the files; else None (warned: object skipped)."""
        vpc_id = node.str("VpcId")
        if vpc_id not in self.vpcs:
            self.warn(node, f"{what} skipped: its VPC {vpc_id} is not in the files")
            return None
        return vpc_id

    # --- DHCP options, VPCs, subnets ---------------------------------------------------------
    def _dhcp(self, node: Node) -> None:
        servers = []
        for conf in node.list("DhcpConfigurations"):
            if conf.str("Key") != "domain-name-servers":
                continue
            for value in conf.list("Values"):
                if value.str("Value") != "AmazonProvidedDNS":
                    servers.append(value.address("Value"))
        self.dhcp_servers[node.str("DhcpOptionsId")] = tuple(servers)

    def _vpc(self, node: Node) -> None:
        vpc_id = node.str("VpcId")
        cidrs = [node.network("CidrBlock", 4)] if node.has("CidrBlock") else []
        for assoc in node.list("CidrBlockAssociationSet"):
            if _association_live(assoc, "CidrBlockState"):
                net = assoc.network("CidrBlock", 4)
                if net not in cidrs:
                    cidrs.append(net)
        if not cidrs:
            raise node.error("a VPC needs an IPv4 CidrBlock", "CidrBlock")
        ipv6 = []
        for assoc in node.list("Ipv6CidrBlockAssociationSet"):
            if _association_live(assoc, "Ipv6CidrBlockState") and assoc.has("Ipv6CidrBlock"):
                ipv6.append(assoc.network("Ipv6CidrBlock", 6))
        self.vpcs[vpc_id] = Vpc(
            id=vpc_id, owner_id=node.str("OwnerId", ""), cidrs=tuple(cidrs), ipv6_cidrs=tuple(ipv6),
            dns_servers=self.dhcp_servers.get(node.str("DhcpOptionsId", ""), ()),
            is_default=node.bool("IsDefault", False),
        )

    def _subnet(self, node: Node) -> None:
        subnet_id = node.str("SubnetId")
        vpc_id = node.str("VpcId")
        vpc = self.vpcs.get(vpc_id)
        if vpc is None:
            raise node.error(f"{vpc_id} is not in the files (no such entry in Vpcs)", "VpcId")
        cidr = node.network("CidrBlock", 4)
        if not 16 <= cidr.prefixlen <= 28:
            raise node.error(f"{cidr} is not a valid subnet size (/16 to /28)", "CidrBlock")
        if not any(cidr.subnet_of(c) for c in vpc.cidrs):
            raise node.error(f"{cidr} is outside the CIDRs of {vpc_id} ({', '.join(map(str, vpc.cidrs))})", "CidrBlock")
        ipv6 = None
        for assoc in node.list("Ipv6CidrBlockAssociationSet"):
            if _association_live(assoc, "Ipv6CidrBlockState") and assoc.has("Ipv6CidrBlock"):
                ipv6 = assoc.network("Ipv6CidrBlock", 6)
                if not any(ipv6.subnet_of(c) for c in vpc.ipv6_cidrs):
                    raise assoc.error(f"{ipv6} is outside the IPv6 CIDRs of {vpc_id}", "Ipv6CidrBlock")
        self.subnets[subnet_id] = Subnet(
            id=subnet_id, vpc_id=vpc_id, cidr=cidr, ipv6_cidr=ipv6,
            availability_zone=node.str("AvailabilityZone", None), owner_id=node.str("OwnerId", None),
        )

    def _check_subnet_overlaps(self) -> None:
        by_vpc: dict[tuple[str, int], list[tuple[IPNetwork, str]]] = {}
        for subnet in self.subnets.values():
            by_vpc.setdefault((subnet.vpc_id, 4), []).append((subnet.cidr, subnet.id))
            if subnet.ipv6_cidr is not None:
                by_vpc.setdefault((subnet.vpc_id, 6), []).append((subnet.ipv6_cidr, subnet.id))
        for (_, version), nets in by_vpc.items():
            nets.sort(key=lambda pair: (pair[0].network_address, pair[0].prefixlen))
            for (net_a, id_a), (net_b, id_b) in zip(nets, nets[1:]):
                if net_a.overlaps(net_b):
                    node = self.raw["Subnets"][id_b]
                    key = "CidrBlock" if version == 4 else "Ipv6CidrBlockAssociationSet"
                    raise node.error(f"{net_b} overlaps subnet {id_a} ({net_a})", key)

    # --- prefix lists and security groups ----------------------------------------------------
    def _prefix_list(self, node: Node) -> None:
        pl_id = node.str("PrefixListId")
        cidrs: list[IPNetwork] = []
        for entry in node.list("Entries"):
            cidrs.append(entry.network("Cidr"))
        if node.has("Cidrs"):  # describe-prefix-lists shape
            cidrs_node = node.child("Cidrs")
            cidrs_node.expect(list)
            for item in cidrs_node.items():
                item.expect(str)
                cidrs.append(Node({"Cidr": item.value}, item.file, item.path).network("Cidr"))
        max_entries = node.int("MaxEntries", None)
        self.prefix_lists[pl_id] = PrefixList(
            id=pl_id, name=node.str("PrefixListName", ""), cidrs=tuple(dict.fromkeys(cidrs)), max_entries=max_entries,
        )

    def _security_group(self, node: Node) -> None:
        group_id = node.str("GroupId")
        vpc_id = self._known_vpc(node, f"security group {group_id}")
        if vpc_id is None:
            return
        self.groups[group_id] = SecurityGroup(
            id=group_id, vpc_id=vpc_id, name=node.str("GroupName", ""), owner_id=node.str("OwnerId", None),
            ingress=self._sg_rules(node, group_id, egress=False),
            egress=self._sg_rules(node, group_id, egress=True),
        )

    def _sg_rules(self, group: Node, group_id: str, egress: bool) -> tuple[SgRule, ...]:
        rules: list[SgRule] = []
        for perm in group.list("IpPermissionsEgress" if egress else "IpPermissions"):
            protocol = parse_protocol(perm, "IpProtocol")
            from_port, to_port = _sg_ports(perm, protocol)
            base = dict(group_id=group_id, egress=egress, protocol=protocol, from_port=from_port, to_port=to_port)
            for peer in perm.list("IpRanges"):
                net = peer.network("CidrIp", 4)
                rules.append(SgRule(index=len(rules), peer_kind="cidr", peer=str(net), network=net,
                                    description=peer.str("Description", None), **base))
            for peer in perm.list("Ipv6Ranges"):
                net = peer.network("CidrIpv6", 6)
                rules.append(SgRule(index=len(rules), peer_kind="cidr", peer=str(net), network=net,
                                    description=peer.str("Description", None), **base))
            for peer in perm.list("PrefixListIds"):
                rules.append(SgRule(index=len(rules), peer_kind="prefix-list", peer=peer.str("PrefixListId"),
                                    description=peer.str("Description", None), **base))
            for peer in perm.list("UserIdGroupPairs"):
                rules.append(SgRule(index=len(rules), peer_kind="group", peer=peer.str("GroupId"),
                                    description=peer.str("Description", None), **base))
        return tuple(rules)

    def _check_group_references(self) -> None:
        """A rule naming a group or prefix list that is not in the files matches no address: AWS
        allows references to groups of peered VPCs and other accounts, which an export of one
        VPC cannot describe. Warned, not an error."""
        for group in self.groups.values():
            node = self.raw["SecurityGroups"][group.id]
            for rule in group.ingress + group.egress:
                if rule.peer_kind == "group" and rule.peer not in self.groups:
                    self.warn(node, f"rule {rule.id} references security group {rule.peer}, which is not in the "
                                    "files: it matches no address")
                elif rule.peer_kind == "prefix-list":
                    self._check_prefix_list_reference(node, rule.peer, f"rule {rule.id}")

    def _check_prefix_list_reference(self, node: Node, pl_id: str, what: str) -> None:
        pl = self.prefix_lists.get(pl_id)
        if pl is None:
            self.warn(node, f"{what} references prefix list {pl_id}, which is not in the files: it matches no address")
        elif not pl.cidrs:
            self.warn(node, f"{what} references prefix list {pl_id}, which has no Entries in the files: "
                            "it matches no address")

    # --- network interfaces, gateways, endpoints ---------------------------------------------
    def _interface(self, node: Node) -> None:
        eni_id = node.str("NetworkInterfaceId")
        vpc_id = self._known_vpc(node, f"network interface {eni_id}")
        if vpc_id is None:
            return
        subnet = self._subnet_ref(node, "SubnetId", vpc_id)
        ips = []
        if node.has("PrivateIpAddress"):
            ips.append((node.address("PrivateIpAddress", 4), node, "PrivateIpAddress"))
        for item in node.list("PrivateIpAddresses"):
            ip = item.address("PrivateIpAddress", 4)
            if item.bool("Primary", False):
                ips.insert(0, (ip, item, "PrivateIpAddress"))
            else:
                ips.append((ip, item, "PrivateIpAddress"))
        if not ips:
            raise node.error("required field is missing", "PrivateIpAddress")
        v6 = [(item.address("Ipv6Address", 6), item, "Ipv6Address") for item in node.list("Ipv6Addresses")]
        unique_v4 = list(dict.fromkeys(ip for ip, _, _ in ips))
        unique_v6 = list(dict.fromkeys(ip for ip, _, _ in v6))
        for ip, where, key in ips + v6:
            self._check_interface_address(where, key, ip, subnet, eni_id)
        groups = tuple(g.str("GroupId") for g in node.list("Groups"))
        for gid in groups:
            if gid not in self.groups:
                self.warn(node, f"security group {gid} of {eni_id} is not in the files", "Groups")
        self.interfaces[eni_id] = NetworkInterface(
            id=eni_id, vpc_id=vpc_id, subnet_id=subnet.id, private_ips=tuple(unique_v4),
            ipv6_addresses=tuple(unique_v6), group_ids=groups,
            interface_type=node.str("InterfaceType", "interface"), description=node.str("Description", ""),
            requester_managed=node.bool("RequesterManaged", False),
        )

    def _check_interface_address(self, node: Node, key: str, ip, subnet: Subnet, eni_id: str) -> None:
        net = subnet.cidr if ip.version == 4 else subnet.ipv6_cidr
        if net is None or ip not in net:
            raise node.error(f"{ip} is outside subnet {subnet.id} ({net or 'no IPv6 CIDR'})", key)
        if ip.version == 4 and ip in subnet.reserved_addresses:
            raise node.error(f"{ip} is a reserved address of subnet {subnet.id}", key)
        owner = self.address_owner.setdefault(ip, eni_id)
        if owner != eni_id:
            raise node.error(f"{ip} is also the address of {owner}", key)

    def _subnet_ref(self, node: Node, key: str, vpc_id: str) -> Subnet:
        subnet_id = node.str(key)
        subnet = self.subnets.get(subnet_id)
        if subnet is None:
            raise node.error(f"{subnet_id} is not in the files (no such entry in Subnets)", key)
        if subnet.vpc_id != vpc_id:
            raise node.error(f"{subnet_id} is in {subnet.vpc_id}, not in {vpc_id}", key)
        return subnet

    def _internet_gateway(self, node: Node, egress_only: bool) -> None:
        key = "EgressOnlyInternetGatewayId" if egress_only else "InternetGatewayId"
        gw_id = node.str(key)
        attached = tuple(a.str("VpcId") for a in node.list("Attachments")
                         if a.str("State", "available") in ("available", "attached", "attaching"))
        self.igws[gw_id] = InternetGateway(id=gw_id, vpc_ids=attached, egress_only=egress_only)

    def _nat_gateway(self, node: Node) -> None:
        nat_id = node.str("NatGatewayId")
        vpc_id = self._known_vpc(node, f"NAT gateway {nat_id}")
        if vpc_id is None:
            return
        subnet = self._subnet_ref(node, "SubnetId", vpc_id)
        state = node.str("State", "available")
        connectivity = node.str("ConnectivityType", "public")
        if connectivity not in ("public", "private"):
            raise node.error(f"{describe(connectivity)} is not a NAT gateway connectivity type (public or private)",
                             "ConnectivityType")
        private_ip, eni_id, publics = None, None, []
        for addr in node.list("NatGatewayAddresses"):
            primary = addr.bool("IsPrimary", private_ip is None)
            if addr.has("PublicIp"):
                publics.append(addr.address("PublicIp", 4))
            if addr.has("PrivateIp") and primary and private_ip is None:
                private_ip = addr.address("PrivateIp", 4)
                eni_id = addr.str("NetworkInterfaceId", None)
                if private_ip not in subnet.cidr:
                    raise addr.error(f"{private_ip} is outside subnet {subnet.id} ({subnet.cidr})", "PrivateIp")
        nat = NatGateway(id=nat_id, vpc_id=vpc_id, subnet_id=subnet.id, private_ip=private_ip,
                         public_ips=tuple(publics), connectivity=connectivity, state=state,
                         network_interface_id=eni_id)
        self.nats[nat_id] = nat
        if state in NAT_GONE_STATES:
            if eni_id in self.interfaces:
                del self.interfaces[eni_id]
            return
        if private_ip is None:
            return
        eni_id = eni_id or f"eni-of-{nat_id}"
        nat_eni = NetworkInterface(
            id=eni_id, vpc_id=vpc_id, subnet_id=subnet.id, private_ips=(private_ip,), group_ids=(),
            interface_type="nat_gateway", description=f"Interface for NAT Gateway {nat_id}", requester_managed=True,
        )
        listed = self.interfaces.get(eni_id)
        if listed is not None:
            nat_eni = dataclasses.replace(listed, group_ids=(), interface_type="nat_gateway", requester_managed=True,
                                          description=listed.description or nat_eni.description)
        self.interfaces[eni_id] = nat_eni
        if private_ip is not None and nat_eni.primary_ip != private_ip:
            raise node.error(f"its address {private_ip} differs from {eni_id}'s ({nat_eni.primary_ip})",
                             "NatGatewayAddresses")

    def _endpoint(self, node: Node) -> None:
        vpce_id = node.str("VpcEndpointId")
        vpc_id = self._known_vpc(node, f"VPC endpoint {vpce_id}")
        if vpc_id is None:
            return
        kind = node.str("VpcEndpointType", "Gateway")
        if kind not in ("Gateway", "Interface", "GatewayLoadBalancer"):
            raise node.error(f"{describe(kind)} is not an endpoint type (Gateway, Interface or GatewayLoadBalancer)",
                             "VpcEndpointType")
        groups = tuple(g.str("GroupId") for g in node.list("Groups"))
        subnet_ids = tuple(_strings(node, "SubnetIds"))
        for i, subnet_id in enumerate(subnet_ids):
            subnet = self.subnets.get(subnet_id)
            if subnet is None or subnet.vpc_id != vpc_id:
                raise node.child("SubnetIds").error(f"{subnet_id} is not a subnet of {vpc_id} in the files", i)
        eni_ids = tuple(_strings(node, "NetworkInterfaceIds"))
        for eni_id in eni_ids:
            listed = self.interfaces.get(eni_id)
            if listed is None:
                self.warn(node, f"network interface {eni_id} of {vpce_id} is not in the files", "NetworkInterfaceIds")
                continue
            self.interfaces[eni_id] = dataclasses.replace(
                listed, interface_type="vpc_endpoint", requester_managed=True, group_ids=listed.group_ids or groups)
        self.endpoints[vpce_id] = VpcEndpoint(
            id=vpce_id, vpc_id=vpc_id, endpoint_type=kind, service_name=node.str("ServiceName", ""),
            route_table_ids=tuple(_strings(node, "RouteTableIds")), subnet_ids=subnet_ids,
            network_interface_ids=eni_ids, group_ids=groups, state=node.str("State", "available"),
        )

    # --- route tables ------------------------------------------------------------------------
    def _route_table(self, node: Node) -> None:
        rtb_id = node.str("RouteTableId")
        vpc_id = self._known_vpc(node, f"route table {rtb_id}")
        if vpc_id is None:
            return
        main, subnet_ids = False, []
        for assoc in node.list("Associations"):
            if not _association_live(assoc, "AssociationState"):
                continue
            if assoc.bool("Main", False):
                main = True
            elif assoc.has("SubnetId"):
                subnet_id = assoc.str("SubnetId")
                if subnet_id not in self.subnets:
                    self.warn(assoc, f"association with {subnet_id} ignored: the subnet is not in the files")
                    continue
                self._check_single_association(assoc, subnet_id, "route table", self.route_tables)
                subnet_ids.append(subnet_id)
        routes: list[Route] = []
        seen: dict[str, Node] = {}
        for item in node.list("Routes"):
            route = self._route(item, vpc_id)
            dest = route.prefix_list_id if route.destination is None else str(route.destination)
            if dest in seen:
                raise item.error(f"destination {dest} appears twice in {rtb_id} (also at {seen[dest].path})")
            seen[dest] = item
            routes.append(route)
        routes = self._with_local_routes(vpc_id, routes)
        if main:
            for other in self.route_tables.values():
                if other.main and other.vpc_id == vpc_id:
                    raise node.error(f"{vpc_id} has two main route tables ({other.id} and {rtb_id})", "Associations")
        self.route_tables[rtb_id] = RouteTable(id=rtb_id, vpc_id=vpc_id, main=main, subnet_ids=tuple(subnet_ids),
                                               routes=tuple(routes))

    def _check_single_association(self, assoc: Node, subnet_id: str, what: str, tables: dict) -> None:
        for other in tables.values():
            if subnet_id in other.subnet_ids:
                raise assoc.error(f"{subnet_id} is associated with two {what}s ({other.id} and this one)", "SubnetId")

    def _route(self, node: Node, vpc_id: str) -> Route:
        present = [key for key in ROUTE_DESTINATION_FIELDS if node.has(key)]
        if len(present) != 1:
            raise node.error("a route needs exactly one of " + ", ".join(ROUTE_DESTINATION_FIELDS))
        key = present[0]
        destination, pl_id = None, None
        if key == "DestinationPrefixListId":
            pl_id = node.str(key)
            self._check_prefix_list_reference(node, pl_id, "route")
        else:
            destination = node.network(key, 4 if key == "DestinationCidrBlock" else 6)
        kind, target = None, None
        for field, field_kind in ROUTE_TARGET_FIELDS:
            if node.has(field):
                target = node.str(field)
                kind = field_kind or _gateway_kind(target)
                break
        if target is None:
            raise node.error("a route needs a target (GatewayId, NatGatewayId, NetworkInterfaceId, ...)")
        state = node.str("State", "active")
        if state not in ("active", "blackhole"):
            raise node.error(f"{describe(state)} is not a route state (active or blackhole)", "State")
        missing = self._missing_target(kind, target, vpc_id)
        if missing and state != "blackhole":
            self.warn(node, f"target {target} {missing}: the route is a blackhole, as AWS shows it")
            state = "blackhole"
        return Route(destination=destination, prefix_list_id=pl_id, target_kind=kind, target_id=target,
                     state=state, origin=node.str("Origin", "CreateRoute"))

    def _missing_target(self, kind: str, target: str, vpc_id: str) -> Optional[str]:
        """Why the route's target is unavailable (AWS then shows the route as blackhole), or None."""
        if kind == "nat":
            nat = self.nats.get(target)
            if nat is None:
                return "is not in the files (NatGateways)"
            if nat.state in NAT_GONE_STATES:
                return f"is {nat.state}"
        elif kind in ("igw", "eigw"):
            gw = self.igws.get(target)
            if gw is None or gw.egress_only != (kind == "eigw"):
                return "is not in the files (" + ("EgressOnlyInternetGateways" if kind == "eigw" else "InternetGateways") + ")"
            if vpc_id not in gw.vpc_ids:
                return f"is not attached to {vpc_id}"
        elif kind == "vpce":
            if target not in self.endpoints:
                return "is not in the files (VpcEndpoints)"
        elif kind == "eni":
            if target not in self.interfaces:
                return "is not in the files (NetworkInterfaces)"
        return None

    def _with_local_routes(self, vpc_id: str, routes: list[Route]) -> list[Route]:
        """AWS always returns a ``local`` route per VPC CIDR; add those the export lacks."""
        vpc = self.vpcs[vpc_id]
        have = {r.destination for r in routes if r.target_kind == "local"}
        local = [Route(destination=net, prefix_list_id=None, target_kind="local", target_id="local",
                       origin="CreateRouteTable")
                 for net in vpc.cidrs + vpc.ipv6_cidrs if net not in have]
        return local + routes

    def _complete_route_tables(self) -> None:
        for vpc_id in self.vpcs:
            if not any(t.main and t.vpc_id == vpc_id for t in self.route_tables.values()):
                rtb_id = f"rtb-main-{vpc_id}"
                self.warnings.append(f"{vpc_id} has no main route table in the files: using {rtb_id} "
                                     "with only the local routes")
                self.route_tables[rtb_id] = RouteTable(id=rtb_id, vpc_id=vpc_id, main=True, subnet_ids=(),
                                                       routes=tuple(self._with_local_routes(vpc_id, [])))

    # --- network ACLs ------------------------------------------------------------------------
    def _nacl(self, node: Node) -> None:
        acl_id = node.str("NetworkAclId")
        vpc_id = self._known_vpc(node, f"network ACL {acl_id}")
        if vpc_id is None:
            return
        is_default = node.bool("IsDefault", False)
        if is_default:
            for other in self.nacls.values():
                if other.is_default and other.vpc_id == vpc_id:
                    raise node.error(f"{vpc_id} has two default network ACLs ({other.id} and {acl_id})", "IsDefault")
        subnet_ids = []
        for assoc in node.list("Associations"):
            subnet_id = assoc.str("SubnetId")
            if subnet_id not in self.subnets:
                self.warn(assoc, f"association with {subnet_id} ignored: the subnet is not in the files")
                continue
            self._check_single_association(assoc, subnet_id, "network ACL", self.nacls)
            subnet_ids.append(subnet_id)
        entries: list[NaclEntry] = []
        numbers: dict[tuple[bool, int], str] = {}
        for item in node.list("Entries"):
            entry = _nacl_entry(item)
            slot = (entry.egress, entry.rule_number)
            if slot in numbers:
                raise item.error(f"rule number {entry.rule_number} is used twice for "
                                 f"{'egress' if entry.egress else 'ingress'} (also at {numbers[slot]})", "RuleNumber")
            numbers[slot] = item.path
            entries.append(entry)
        self.nacls[acl_id] = NetworkAcl(id=acl_id, vpc_id=vpc_id, is_default=is_default,
                                        entries=self._with_star_rules(vpc_id, entries), subnet_ids=tuple(subnet_ids))

    def _with_star_rules(self, vpc_id: str, entries: list[NaclEntry]) -> tuple[NaclEntry, ...]:
        """Append the ``*`` denies AWS shows: IPv4 (32767) always, IPv6 (32768) when the VPC has an
        IPv6 CIDR or the ACL has IPv6 entries."""
        want_v6 = bool(self.vpcs[vpc_id].ipv6_cidrs) or any(e.network.version == 6 for e in entries)
        have = {(e.egress, e.rule_number) for e in entries}
        for egress in (False, True):
            if (egress, limits.NACL_DEFAULT_DENY_IPV4) not in have:
                entries.append(NaclEntry(limits.NACL_DEFAULT_DENY_IPV4, egress, False, PROTO_ALL, IPV4_ANY))
            if want_v6 and (egress, limits.NACL_DEFAULT_DENY_IPV6) not in have:
                entries.append(NaclEntry(limits.NACL_DEFAULT_DENY_IPV6, egress, False, PROTO_ALL, IPV6_ANY))
        return tuple(sorted(entries, key=lambda e: (e.egress, e.rule_number)))

    def _complete_nacls(self) -> None:
        """AWS creates every VPC with a default ACL allowing all traffic (rule 100 IPv4, 101
        IPv6); a VPC whose default ACL is not in the files gets that one."""
        for vpc_id, vpc in self.vpcs.items():
            if any(a.is_default and a.vpc_id == vpc_id for a in self.nacls.values()):
                continue
            acl_id = f"acl-default-{vpc_id}"
            self.warnings.append(f"{vpc_id} has no default network ACL in the files: using {acl_id}, "
                                 "which allows all traffic as AWS's default ACL does")
            entries = []
            for egress in (False, True):
                entries.append(NaclEntry(100, egress, True, PROTO_ALL, IPV4_ANY))
                if vpc.ipv6_cidrs:
                    entries.append(NaclEntry(101, egress, True, PROTO_ALL, IPV6_ANY))
            self.nacls[acl_id] = NetworkAcl(id=acl_id, vpc_id=vpc_id, is_default=True,
                                            entries=self._with_star_rules(vpc_id, entries))

    # --- Lambda functions --------------------------------------------------------------------
    def _function(self, node: Node) -> None:
        name = node.str("FunctionName")
        can_create = node.bool("HyperplaneRoleCanCreateEnis", True)
        common = dict(name=name, arn=node.str("FunctionArn", None), role=node.str("Role", None),
                      role_can_create_enis=can_create)
        if not node.has("VpcConfig"):
            self.functions[name] = Function(**common)
            return
        config = node.child("VpcConfig")
        subnet_ids = list(_strings(config, "SubnetIds"))
        group_ids = list(_strings(config, "SecurityGroupIds"))
        dual = config.bool("Ipv6AllowedForDualStack", False)
        if not subnet_ids and not group_ids:
            self.functions[name] = Function(ipv6_allowed_for_dual_stack=dual, **common)
            return
        if len(subnet_ids) > limits.VPC_CONFIG_MAX_SUBNETS:
            raise config.error(f"{len(subnet_ids)} subnets; Lambda allows at most {limits.VPC_CONFIG_MAX_SUBNETS}",
                               "SubnetIds")
        if len(group_ids) > limits.VPC_CONFIG_MAX_SECURITY_GROUPS:
            raise config.error(f"{len(group_ids)} security groups; Lambda allows at most "
                               f"{limits.VPC_CONFIG_MAX_SECURITY_GROUPS}", "SecurityGroupIds")
        if not subnet_ids:
            raise config.error("security groups without subnets: a VPC function needs at least one subnet", "SubnetIds")
        if not group_ids:
            raise config.error("subnets without security groups: a VPC function needs at least one security group",
                               "SecurityGroupIds")
        vpc_id = None
        for i, subnet_id in enumerate(subnet_ids):
            subnet = self.subnets.get(subnet_id)
            where = config.child("SubnetIds")
            if subnet is None:
                raise where.error(f"{subnet_id} is not in the files (no such entry in Subnets)", i)
            if vpc_id is not None and subnet.vpc_id != vpc_id:
                raise where.error(f"{subnet_id} is in {subnet.vpc_id}, but the function's first subnet is in {vpc_id}", i)
            vpc_id = subnet.vpc_id
        for i, group_id in enumerate(group_ids):
            group = self.groups.get(group_id)
            where = config.child("SecurityGroupIds")
            if group is None:
                raise where.error(f"{group_id} is not in the files (no such entry in SecurityGroups)", i)
            if group.vpc_id != vpc_id:
                raise where.error(f"{group_id} is in {group.vpc_id}, but the function's subnets are in {vpc_id}", i)
        stated = config.str("VpcId", None)
        if stated and stated != vpc_id:
            self.warn(config, f"{stated} differs from the VPC of the function's subnets; using {vpc_id}", "VpcId")
        self.functions[name] = Function(vpc_id=vpc_id, subnet_ids=tuple(dict.fromkeys(subnet_ids)),
                                        security_group_ids=tuple(dict.fromkeys(group_ids)),
                                        ipv6_allowed_for_dual_stack=dual, **common)


# --- small value parsers --------------------------------------------------------------------------
def _association_live(node: Node, state_key: str) -> bool:
    """False for an association AWS reports as disassociated / failed."""
    if not node.has(state_key):
        return True
    state = node.child(state_key).str("State", "associated")
    return state in ("associated", "associating")


def _strings(node: Node, key: str) -> Iterable[str]:
    for item in node.list(key):
        item.expect(str)
        yield item.value


def _gateway_kind(target: str) -> str:
    if target == "local":
        return "local"
    for prefix, kind in GATEWAY_PREFIXES:
        if target.startswith(prefix):
            return kind
    return "other"


def _port(node: Node, key: str) -> int:
    value = node.int(key)
    if not 0 <= value <= 65535:
        raise node.error(f"{value} is not a port", key)
    return value


def _icmp_value(node: Node, key: str, what: str) -> int:
    value = node.int(key)
    if not -1 <= value <= 255:
        raise node.error(f"{value} is not an ICMP {what} (-1 for all, or 0-255)", key)
    return value


def _sg_ports(perm: Node, protocol: int) -> tuple[int, int]:
    """FromPort/ToPort of an SG permission: a port range for TCP/UDP, ICMP type/code for
    ICMP/ICMPv6 (-1 = all; all types requires all codes), all ports for anything else."""
    if protocol in (PROTO_TCP, PROTO_UDP):
        low, high = _port(perm, "FromPort"), _port(perm, "ToPort")
        if low > high:
            raise perm.error(f"{high} is below FromPort {low}", "ToPort")
        return low, high
    if protocol in (PROTO_ICMP, PROTO_ICMPV6):
        if protocol == PROTO_ICMPV6 and not perm.has("FromPort") and not perm.has("ToPort"):
            return -1, -1
        icmp_type, icmp_code = _icmp_value(perm, "FromPort", "type"), _icmp_value(perm, "ToPort", "code")
        if icmp_type == -1 and icmp_code != -1:
            raise perm.error(f"{icmp_code}: all ICMP types (FromPort -1) requires all codes (-1)", "ToPort")
        return icmp_type, icmp_code
    return ALL_PORTS


def _nacl_entry(node: Node) -> NaclEntry:
    number = node.int("RuleNumber")
    egress = node.bool("Egress")
    action = node.str("RuleAction").lower()
    if action not in ("allow", "deny"):
        raise node.error(f"{describe(node.value['RuleAction'])} is not a rule action (allow or deny)", "RuleAction")
    protocol = parse_protocol(node, "Protocol")
    has_v4, has_v6 = node.has("CidrBlock"), node.has("Ipv6CidrBlock")
    if has_v4 == has_v6:
        raise node.error("a network ACL entry needs exactly one of CidrBlock and Ipv6CidrBlock")
    network = node.network("CidrBlock", 4) if has_v4 else node.network("Ipv6CidrBlock", 6)
    star = {limits.NACL_DEFAULT_DENY_IPV4: (IPV4_ANY, "IPv4"), limits.NACL_DEFAULT_DENY_IPV6: (IPV6_ANY, "IPv6")}
    low_rule, high_rule = limits.NACL_USER_RULE_RANGE
    if number in star:
        any_net, family = star[number]
        if network != any_net or action != "deny" or protocol != PROTO_ALL:
            raise node.error(f"{number} is reserved for the * rule that denies all {family} traffic", "RuleNumber")
    elif not low_rule <= number <= high_rule:
        raise node.error(f"{number} is outside {low_rule}-{high_rule}", "RuleNumber")
    port_from, port_to = ALL_PORTS
    icmp_type = icmp_code = -1
    if protocol in (PROTO_TCP, PROTO_UDP) and node.has("PortRange"):
        ports = node.child("PortRange")
        port_from, port_to = _port(ports, "From"), _port(ports, "To")
        if port_from > port_to:
            raise ports.error(f"{port_to} is below From {port_from}", "To")
    elif protocol == PROTO_ICMP or (protocol == PROTO_ICMPV6 and network.version == 6):
        if node.has("IcmpTypeCode"):
            icmp = node.child("IcmpTypeCode")
            icmp_type, icmp_code = _icmp_value(icmp, "Type", "type"), _icmp_value(icmp, "Code", "code")
    return NaclEntry(rule_number=number, egress=egress, allow=action == "allow", protocol=protocol, network=network,
                     port_from=port_from, port_to=port_to, icmp_type=icmp_type, icmp_code=icmp_code)
