"""The validated, immutable VPC model.

Objects here are built by :mod:`hyperplane.vpc.loader` from AWS API responses; field names follow
AWS's meaning but are snake_case, addresses are :mod:`ipaddress` objects, and every collection is a
tuple or a read-only mapping. Defaults are already applied by the loader (main route table, default
NACL, ``*`` deny rules, protocol ``-1``), so the dataplane never re-derives them.

Protocol numbers: ``-1`` all, 1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6, any other IANA number.
Port ranges are inclusive; "all ports" is ``(0, 65535)``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

ALL_PORTS = (0, 65535)
PROTO_ALL = -1
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58


@dataclass(frozen=True)
class Vpc:
    id: str
    owner_id: str
    cidrs: tuple[ipaddress.IPv4Network, ...]  # primary first
    ipv6_cidrs: tuple[ipaddress.IPv6Network, ...] = ()
    #: DNS servers from the VPC's DHCP options; empty = AmazonProvidedDNS only.
    dns_servers: tuple[IPAddress, ...] = ()
    is_default: bool = False

    @property
    def amazon_dns(self) -> ipaddress.IPv4Address:
        """The Amazon DNS server: the primary CIDR's base + 2."""
        return self.cidrs[0].network_address + 2


@dataclass(frozen=True)
class Subnet:
    id: str
    vpc_id: str
    cidr: ipaddress.IPv4Network
    ipv6_cidr: Optional[ipaddress.IPv6Network] = None
    availability_zone: Optional[str] = None
    owner_id: Optional[str] = None

    @property
    def reserved_addresses(self) -> tuple[ipaddress.IPv4Address, ...]:
        """Base, +1 (router), +2 (DNS), +3 (future), last (broadcast)."""
        base = self.cidr.network_address
        return (base, base + 1, base + 2, base + 3, self.cidr.broadcast_address)

    @property
    def router(self) -> ipaddress.IPv4Address:
        return self.cidr.network_address + 1

    @property
    def dual_stack(self) -> bool:
        return self.ipv6_cidr is not None


@dataclass(frozen=True)
class SgRule:
    """One permission of a security group for one peer (an ``IpPermissions`` entry with three
    ``IpRanges`` becomes three rules). ``id`` names it in drop records: ``sg-1:egress:0``."""

    group_id: str
    egress: bool
    index: int  # position among this group's rules of this direction, after flattening
    protocol: int  # -1 all
    from_port: int  # port range start, or ICMP type (-1 all)
    to_port: int  # port range end, or ICMP code (-1 all)
    peer_kind: str  # "cidr" | "prefix-list" | "group"
    peer: str  # CIDR text, pl-… or sg-…
    network: Optional[IPNetwork] = None  # parsed CIDR when peer_kind == "cidr"
    description: Optional[str] = None

    @property
    def id(self) -> str:
        return f"{self.group_id}:{'egress' if self.egress else 'ingress'}:{self.index}"


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    vpc_id: str
    name: str = ""
    owner_id: Optional[str] = None
    ingress: tuple[SgRule, ...] = ()
    egress: tuple[SgRule, ...] = ()

    def rules(self, egress: bool) -> tuple[SgRule, ...]:
        return self.egress if egress else self.ingress


@dataclass(frozen=True)
class NaclEntry:
    rule_number: int  # 1..32766 user rules; 32767 (IPv4 *) and 32768 (IPv6 *) defaults
    egress: bool
    allow: bool
    protocol: int  # -1 all
    network: IPNetwork
    port_from: int = 0  # for TCP/UDP; (0, 65535) when not restricted
    port_to: int = 65535
    icmp_type: int = -1  # for ICMP/ICMPv6; -1 all
    icmp_code: int = -1

    @property
    def is_default_deny(self) -> bool:
        return self.rule_number >= 32767

    @property
    def label(self) -> str:
        """Rule number as AWS shows it: ``100`` or ``*``."""
        return "*" if self.is_default_deny else str(self.rule_number)


@dataclass(frozen=True)
class NetworkAcl:
    id: str
    vpc_id: str
    is_default: bool
    #: Every entry, both directions, sorted by (egress, rule_number); includes the ``*`` denies.
    entries: tuple[NaclEntry, ...]
    subnet_ids: tuple[str, ...] = ()  # explicit associations

    def rules(self, egress: bool) -> tuple[NaclEntry, ...]:
        """The entries of one direction in evaluation order (lowest rule number first)."""
        return tuple(e for e in self.entries if e.egress == egress)


ROUTE_TARGET_KINDS = ("local", "igw", "eigw", "nat", "vpce", "eni", "instance", "pcx", "tgw", "vgw", "other")


@dataclass(frozen=True)
class Route:
    #: CIDR destination, or None when the destination is a prefix list.
    destination: Optional[IPNetwork]
    prefix_list_id: Optional[str]
    target_kind: str  # one of ROUTE_TARGET_KINDS
    target_id: str  # "local", igw-…, nat-…, vpce-…, eni-…, pcx-…, tgw-…
    state: str = "active"  # "active" | "blackhole"
    origin: str = "CreateRoute"  # CreateRouteTable | CreateRoute | EnableVgwRoutePropagation

    @property
    def label(self) -> str:
        dest = self.prefix_list_id if self.destination is None else str(self.destination)
        return f"{dest} -> {self.target_id}"


@dataclass(frozen=True)
class RouteTable:
    id: str
    vpc_id: str
    main: bool
    subnet_ids: tuple[str, ...]  # explicit associations
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class InternetGateway:
    id: str
    vpc_ids: tuple[str, ...]
    egress_only: bool = False


@dataclass(frozen=True)
class NatGateway:
    id: str
    vpc_id: str
    subnet_id: str
    private_ip: Optional[ipaddress.IPv4Address]
    public_ips: tuple[ipaddress.IPv4Address, ...]  # empty for a private NAT gateway
    connectivity: str = "public"  # "public" | "private"
    state: str = "available"
    network_interface_id: Optional[str] = None


@dataclass(frozen=True)
class VpcEndpoint:
    id: str
    vpc_id: str
    endpoint_type: str  # "Gateway" | "Interface" | "GatewayLoadBalancer"
    service_name: str
    route_table_ids: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()
    network_interface_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    state: str = "available"


@dataclass(frozen=True)
class PrefixList:
    id: str
    name: str
    cidrs: tuple[IPNetwork, ...]
    max_entries: Optional[int] = None


@dataclass(frozen=True)
class NetworkInterface:
    id: str
    vpc_id: str
    subnet_id: str
    private_ips: tuple[ipaddress.IPv4Address, ...]  # primary first
    ipv6_addresses: tuple[ipaddress.IPv6Address, ...] = ()
    group_ids: tuple[str, ...] = ()
    interface_type: str = "interface"
    description: str = ""
    requester_managed: bool = False

    @property
    def primary_ip(self) -> ipaddress.IPv4Address:
        return self.private_ips[0]


@dataclass(frozen=True)
class Function:
    name: str
    arn: Optional[str] = None
    vpc_id: Optional[str] = None  # None: no VpcConfig (runs only in the Lambda-owned VPC)
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    ipv6_allowed_for_dual_stack: bool = False
    role: Optional[str] = None
    #: False when the execution role lacks ec2:CreateNetworkInterface (emulator extension key
    #: ``HyperplaneRoleCanCreateEnis`` in the function object; default True).
    role_can_create_enis: bool = True

    @property
    def in_vpc(self) -> bool:
        return bool(self.subnet_ids)


def _ro(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class VpcModel:
    """Everything loaded, keyed by id. Use the query methods rather than walking the maps."""

    vpcs: Mapping[str, Vpc] = field(default_factory=dict)
    subnets: Mapping[str, Subnet] = field(default_factory=dict)
    security_groups: Mapping[str, SecurityGroup] = field(default_factory=dict)
    network_acls: Mapping[str, NetworkAcl] = field(default_factory=dict)
    route_tables: Mapping[str, RouteTable] = field(default_factory=dict)
    internet_gateways: Mapping[str, InternetGateway] = field(default_factory=dict)
    nat_gateways: Mapping[str, NatGateway] = field(default_factory=dict)
    vpc_endpoints: Mapping[str, VpcEndpoint] = field(default_factory=dict)
    prefix_lists: Mapping[str, PrefixList] = field(default_factory=dict)
    network_interfaces: Mapping[str, NetworkInterface] = field(default_factory=dict)
    functions: Mapping[str, Function] = field(default_factory=dict)
    #: Non-fatal findings of the loader (unknown top-level keys, dangling route targets...).
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "vpcs", "subnets", "security_groups", "network_acls", "route_tables", "internet_gateways",
            "nat_gateways", "vpc_endpoints", "prefix_lists", "network_interfaces", "functions",
        ):
            object.__setattr__(self, name, _ro(getattr(self, name)))
        by_ip: dict[IPAddress, NetworkInterface] = {}
        for eni in self.network_interfaces.values():
            for ip in eni.private_ips + eni.ipv6_addresses:
                by_ip[ip] = eni
        object.__setattr__(self, "_interface_by_ip", by_ip)

    # --- queries the dataplane needs ---------------------------------------------------------
    def vpc_of_address(self, ip: IPAddress | str) -> Optional[Vpc]:
        ip = ipaddress.ip_address(ip)
        for vpc in self.vpcs.values():
            if any(ip in c for c in (vpc.cidrs if ip.version == 4 else vpc.ipv6_cidrs)):
                return vpc
        return None

    def subnet_of(self, ip: IPAddress | str) -> Optional[Subnet]:
        """The subnet whose IPv4 or IPv6 CIDR holds ``ip``."""
        ip = ipaddress.ip_address(ip)
        for subnet in self.subnets.values():
            net = subnet.cidr if ip.version == 4 else subnet.ipv6_cidr
            if net is not None and ip in net:
                return subnet
        return None

    def route_table_of(self, subnet_id: str) -> Optional[RouteTable]:
        """The explicitly associated table, else the main table of the subnet's VPC."""
        subnet = self.subnets[subnet_id]
        main = None
        for table in self.route_tables.values():
            if subnet_id in table.subnet_ids:
                return table
            if table.main and table.vpc_id == subnet.vpc_id:
                main = table
        return main

    def nacl_of(self, subnet_id: str) -> Optional[NetworkAcl]:
        """The explicitly associated NACL, else the VPC's default NACL."""
        subnet = self.subnets[subnet_id]
        default = None
        for acl in self.network_acls.values():
            if subnet_id in acl.subnet_ids:
                return acl
            if acl.is_default and acl.vpc_id == subnet.vpc_id:
                default = acl
        return default

    def interface_at(self, ip: IPAddress | str) -> Optional[NetworkInterface]:
        return self._interface_by_ip.get(ipaddress.ip_address(ip))  # type: ignore[attr-defined]

    def interface_owner(self, interface_id: str) -> Optional[str]:
        """The NAT gateway (``nat-…``) or VPC endpoint (``vpce-…``) a network interface belongs
        to, or None for an ordinary interface. (NAT gateway interfaces have no security groups;
        interface endpoint interfaces carry the endpoint's groups.)"""
        for nat in self.nat_gateways.values():
            if nat.network_interface_id == interface_id:
                return nat.id
        for endpoint in self.vpc_endpoints.values():
            if interface_id in endpoint.network_interface_ids:
                return endpoint.id
        return None

    def subnets_of(self, vpc_id: str) -> tuple[Subnet, ...]:
        return tuple(s for s in self.subnets.values() if s.vpc_id == vpc_id)

    def groups_of(self, interface_id: str) -> tuple[str, ...]:
        return self.network_interfaces[interface_id].group_ids

    def members_of(self, group_id: str) -> tuple[IPAddress, ...]:
        """Private addresses of the configuration's network interfaces in ``group_id``. (The
        dataplane adds the Hyperplane ENIs it created, which the configuration does not list.)"""
        out: list[IPAddress] = []
        for eni in self.network_interfaces.values():
            if group_id in eni.group_ids:
                out.extend(eni.private_ips)
                out.extend(eni.ipv6_addresses)
        return tuple(out)

    def prefix_list_cidrs(self, prefix_list_id: str) -> tuple[IPNetwork, ...]:
        pl = self.prefix_lists.get(prefix_list_id)
        return pl.cidrs if pl else ()

    def dns_address(self, vpc_id: str) -> ipaddress.IPv4Address:
        return self.vpcs[vpc_id].amazon_dns

    def reserved_addresses(self, subnet_id: str) -> tuple[ipaddress.IPv4Address, ...]:
        return self.subnets[subnet_id].reserved_addresses

    def account_id(self) -> str:
        """The account of the configuration (first VPC's OwnerId), for flow logs."""
        for vpc in self.vpcs.values():
            if vpc.owner_id:
                return vpc.owner_id
        return "123456789012"
