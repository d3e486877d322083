"""A small builder of :class:`~hyperplane.vpc.model.VpcModel` objects for the scenario tests.

It applies the same defaults the loader applies (a main route table with the local route, a
default NACL allowing everything with its ``*`` denies), so scenarios read like the AWS console:

    b = VpcBuilder()
    b.subnet("subnet-a", "10.0.1.0/24")
    b.sg("sg-fn", egress=[rule(-1, cidr="0.0.0.0/0")])
    b.function("fn", ["subnet-a"], ["sg-fn"])
    model = b.build()
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence

from hyperplane.vpc.model import (
    Function, InternetGateway, NaclEntry, NatGateway, NetworkAcl, NetworkInterface, PrefixList,
    Route, RouteTable, SecurityGroup, SgRule, Subnet, Vpc, VpcEndpoint, VpcModel,
)

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "all": -1, -1: -1, 6: 6, 17: 17, 1: 1}


@dataclass(frozen=True)
class R:
    """A security-group rule before flattening: protocol, port range, one peer."""

    protocol: int
    ports: tuple[int, int]
    cidr: Optional[str] = None
    group: Optional[str] = None
    prefix_list: Optional[str] = None


def rule(protocol="all", ports=None, cidr=None, group=None, prefix_list=None) -> R:
    """``rule("tcp", 5432, group="sg-fn")``, ``rule("all", cidr="0.0.0.0/0")``."""
    proto = PROTOS[protocol]
    if ports is None:
        ports = (0, 65535) if proto in (6, 17, -1) else (-1, -1)
    elif isinstance(ports, int):
        ports = (ports, ports)
    return R(proto, tuple(ports), cidr, group, prefix_list)


def acl(number, action, protocol="all", cidr="0.0.0.0/0", ports=(0, 65535)) -> tuple:
    """A NACL entry: ``acl(100, "allow", "tcp", "0.0.0.0/0", (1024, 65535))``."""
    if isinstance(ports, int):
        ports = (ports, ports)
    return (number, action == "allow", PROTOS[protocol], cidr, tuple(ports))


def _target_kind(target: str) -> str:
    if target == "local":
        return "local"
    prefix = target.split("-", 1)[0]
    return {"igw": "igw", "eigw": "eigw", "nat": "nat", "vpce": "vpce", "eni": "eni", "i": "instance",
            "pcx": "pcx", "tgw": "tgw", "vgw": "vgw"}.get(prefix, "other")


class VpcBuilder:
    def __init__(self, cidr: str = "10.0.0.0/16", vpc_id: str = "vpc-1", owner: str = "111122223333",
                 ipv6_cidr: Optional[str] = None, dns_servers: Sequence[str] = ()):
        self.vpc = Vpc(
            id=vpc_id, owner_id=owner, cidrs=(ipaddress.ip_network(cidr),),
            ipv6_cidrs=(ipaddress.ip_network(ipv6_cidr),) if ipv6_cidr else (),
            dns_servers=tuple(ipaddress.ip_address(d) for d in dns_servers),
        )
        self.subnets: dict = {}
        self.sgs: dict = {}
        self.nacls: dict = {}
        self.tables: dict = {}
        self.igws: dict = {}
        self.nats: dict = {}
        self.endpoints: dict = {}
        self.prefix_lists: dict = {}
        self.interfaces: dict = {}
        self.functions: dict = {}
        self.route_table("rtb-main", main=True)
        allow = [acl(100, "allow")] + ([acl(101, "allow", "all", "::/0")] if ipv6_cidr else [])
        self.nacl("acl-default", default=True, ingress=allow, egress=allow)

    # --- resources ----------------------------------------------------------------------------
    def subnet(self, subnet_id: str, cidr: str, ipv6_cidr: Optional[str] = None, az: str = "us-east-1a") -> str:
        self.subnets[subnet_id] = Subnet(
            id=subnet_id, vpc_id=self.vpc.id, cidr=ipaddress.ip_network(cidr),
            ipv6_cidr=ipaddress.ip_network(ipv6_cidr) if ipv6_cidr else None, availability_zone=az,
        )
        return subnet_id

    def sg(self, group_id: str, ingress: Sequence[R] = (), egress: Sequence[R] = ()) -> str:
        def flatten(rules, is_egress):
            out = []
            for i, r in enumerate(rules):
                if r.group:
                    kind, peer, net = "group", r.group, None
                elif r.prefix_list:
                    kind, peer, net = "prefix-list", r.prefix_list, None
                else:
                    kind, peer, net = "cidr", r.cidr, ipaddress.ip_network(r.cidr)
                out.append(SgRule(group_id=group_id, egress=is_egress, index=i, protocol=r.protocol,
                                  from_port=r.ports[0], to_port=r.ports[1], peer_kind=kind, peer=peer, network=net))
            return tuple(out)

        self.sgs[group_id] = SecurityGroup(id=group_id, vpc_id=self.vpc.id, name=group_id,
                                           ingress=flatten(ingress, False), egress=flatten(egress, True))
        return group_id

    def nacl(self, acl_id: str, subnets: Sequence[str] = (), ingress=(), egress=(), default: bool = False) -> str:
        entries = []
        for is_egress, rules in ((False, ingress), (True, egress)):
            for number, allow, proto, cidr, ports in rules:
                entries.append(NaclEntry(rule_number=number, egress=is_egress, allow=allow, protocol=proto,
                                         network=ipaddress.ip_network(cidr), port_from=ports[0], port_to=ports[1]))
            entries.append(NaclEntry(rule_number=32767, egress=is_egress, allow=False, protocol=-1,
                                     network=ipaddress.ip_network("0.0.0.0/0")))
            entries.append(NaclEntry(rule_number=32768, egress=is_egress, allow=False, protocol=-1,
                                     network=ipaddress.ip_network("::/0")))
        entries.sort(key=lambda e: (e.egress, e.rule_number))
        self.nacls[acl_id] = NetworkAcl(id=acl_id, vpc_id=self.vpc.id, is_default=default, entries=tuple(entries),
                                        subnet_ids=tuple(subnets))
        return acl_id

    def route_table(self, table_id: str, subnets: Sequence[str] = (), routes: Sequence[tuple] = (),
                    main: bool = False) -> str:
        """``routes``: ``(destination, target)`` or ``(destination, target, state)``; a destination
        starting with ``pl-`` is a prefix-list route; ``("propagated", dest, target)`` too."""
        out = [Route(destination=c, prefix_list_id=None, target_kind="local", target_id="local",
                     origin="CreateRouteTable") for c in self.vpc.cidrs + self.vpc.ipv6_cidrs]
        for spec in routes:
            origin = "CreateRoute"
            if spec[0] == "propagated":
                origin, spec = "EnableVgwRoutePropagation", spec[1:]
            dest, target = spec[0], spec[1]
            state = spec[2] if len(spec) > 2 else "active"
            if dest.startswith("pl-"):
                route = Route(None, dest, _target_kind(target), target, state, origin)
            else:
                route = Route(ipaddress.ip_network(dest), None, _target_kind(target), target, state, origin)
            out.append(route)
        self.tables[table_id] = RouteTable(id=table_id, vpc_id=self.vpc.id, main=main, subnet_ids=tuple(subnets),
                                           routes=tuple(out))
        return table_id

    def igw(self, igw_id: str = "igw-1") -> str:
        self.igws[igw_id] = InternetGateway(id=igw_id, vpc_ids=(self.vpc.id,))
        return igw_id

    def nat(self, nat_id: str, subnet_id: str, private_ip: str, public_ips: Sequence[str] = ("203.0.113.10",),
            connectivity: str = "public", eni_id: Optional[str] = None) -> str:
        eni_id = eni_id or "eni-" + nat_id.split("-", 1)[1]
        self.nats[nat_id] = NatGateway(
            id=nat_id, vpc_id=self.vpc.id, subnet_id=subnet_id, private_ip=ipaddress.ip_address(private_ip),
            public_ips=tuple(ipaddress.ip_address(p) for p in public_ips) if connectivity == "public" else (),
            connectivity=connectivity, network_interface_id=eni_id,
        )
        self.interface(eni_id, subnet_id, private_ip, groups=(), interface_type="nat_gateway")
        return nat_id

    def prefix_list(self, pl_id: str, cidrs: Sequence[str], name: str = "") -> str:
        self.prefix_lists[pl_id] = PrefixList(id=pl_id, name=name or pl_id,
                                              cidrs=tuple(ipaddress.ip_network(c) for c in cidrs))
        return pl_id

    def gateway_endpoint(self, vpce_id: str, service: str, prefix_list: str, tables: Sequence[str]) -> str:
        self.endpoints[vpce_id] = VpcEndpoint(id=vpce_id, vpc_id=self.vpc.id, endpoint_type="Gateway",
                                              service_name=service, route_table_ids=tuple(tables))
        for table_id in tables:
            t = self.tables[table_id]
            self.tables[table_id] = RouteTable(
                id=t.id, vpc_id=t.vpc_id, main=t.main, subnet_ids=t.subnet_ids,
                routes=t.routes + (Route(None, prefix_list, "vpce", vpce_id),),
            )
        return vpce_id

    def interface(self, eni_id: str, subnet_id: str, ip: str, groups: Sequence[str] = (),
                  interface_type: str = "interface", ipv6: Sequence[str] = ()) -> str:
        self.interfaces[eni_id] = NetworkInterface(
            id=eni_id, vpc_id=self.vpc.id, subnet_id=subnet_id, private_ips=(ipaddress.ip_address(ip),),
            ipv6_addresses=tuple(ipaddress.ip_address(a) for a in ipv6), group_ids=tuple(groups),
            interface_type=interface_type,
        )
        return eni_id

    def function(self, name: str, subnets: Sequence[str] = (), groups: Sequence[str] = (), ipv6: bool = False,
                 role_can_create_enis: bool = True) -> str:
        self.functions[name] = Function(
            name=name, arn=f"arn:aws:lambda:us-east-1:{self.vpc.owner_id}:function:{name}",
            vpc_id=self.vpc.id if subnets else None, subnet_ids=tuple(subnets), security_group_ids=tuple(groups),
            ipv6_allowed_for_dual_stack=ipv6, role_can_create_enis=role_can_create_enis,
        )
        return name

    def build(self) -> VpcModel:
        return VpcModel(
            vpcs={self.vpc.id: self.vpc}, subnets=self.subnets, security_groups=self.sgs, network_acls=self.nacls,
            route_tables=self.tables, internet_gateways=self.igws, nat_gateways=self.nats,
            vpc_endpoints=self.endpoints, prefix_lists=self.prefix_lists, network_interfaces=self.interfaces,
            functions=self.functions,
        )


def standard_vpc(**changes) -> VpcBuilder:
    """The VPC most scenarios start from:

    - 10.0.0.0/16; subnets ``subnet-app`` 10.0.1.0/24 (the function, private), ``subnet-db``
      10.0.2.0/24, ``subnet-pub`` 10.0.0.0/24 (public: route to igw-1, NAT gateway nat-1 at
      10.0.0.10 with public IP 203.0.113.10);
    - ``rtb-app`` (subnet-app, subnet-db): 0.0.0.0/0 -> nat-1; ``rtb-pub`` (subnet-pub): 0.0.0.0/0
      -> igw-1; default NACL allows everything;
    - ``sg-fn`` (the function): egress all, no ingress; ``sg-db``: TCP and UDP 5432 from sg-fn;
    - ``eni-db`` 10.0.2.15 in subnet-db with sg-db; function ``fn`` in subnet-app with sg-fn.
    """
    b = VpcBuilder()
    b.subnet("subnet-app", "10.0.1.0/24")
    b.subnet("subnet-db", "10.0.2.0/24")
    b.subnet("subnet-pub", "10.0.0.0/24")
    b.igw("igw-1")
    b.nat("nat-1", "subnet-pub", "10.0.0.10")
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "nat-1")])
    b.route_table("rtb-pub", ["subnet-pub"], [("0.0.0.0/0", "igw-1")])
    b.sg("sg-fn", egress=[rule("all", cidr="0.0.0.0/0")])
    b.sg("sg-db", ingress=[rule("tcp", 5432, group="sg-fn"), rule("udp", 5432, group="sg-fn")],
         egress=[rule("all", cidr="0.0.0.0/0")])
    b.interface("eni-db", "subnet-db", "10.0.2.15", groups=["sg-db"])
    b.function("fn", ["subnet-app"], ["sg-fn"])
    return b
