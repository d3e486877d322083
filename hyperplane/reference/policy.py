"""Policy evaluation for the reference dataplane: security groups, network ACLs and route tables.

Everything here is compiled once per :class:`~hyperplane.vpc.model.VpcModel` into plain integers
and tuples (no :mod:`ipaddress` object is touched per packet), and rebuilt when the configuration
changes (``Engine.update_config``). The AWS behaviour each evaluator implements, with its source in
``../shared/spec/AWS-FACTS.md``:

* :meth:`Policy.sg_match` -- security groups are allow-only and the rules of all the groups of an
  interface are aggregated (a union); a rule's peer is a CIDR, a prefix list (its CIDRs) or a
  security group (the private addresses of the network interfaces in that group, which includes
  the Hyperplane ENIs Lambda created for it) [AWS-FACTS 2].
* :meth:`Policy.sg_untracked` -- the documented *untracked* condition: a rule permits the flow for
  all addresses (0.0.0.0/0 or ::/0) and a rule of the other direction permits all response
  traffic for all addresses and all ports [AWS-FACTS 2].
* :meth:`Policy.nacl_check` -- network ACLs are stateless, rules are evaluated lowest number first,
  the first match decides, the ``*`` rule denies what nothing matched; the port range is the
  destination port [AWS-FACTS 3].
* :meth:`Policy.route` -- longest prefix match over CIDR and prefix-list routes; for the same prefix
  length a static CIDR route beats a prefix-list route, which beats a propagated route; between
  prefix lists AWS "randomly chooses" and then sticks to it: we choose the lowest prefix-list id
  (documented choice) [AWS-FACTS 4].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from hyperplane import limits
from hyperplane.vpc.model import PROTO_ALL, VpcModel

__all__ = [
    "Policy", "PrefixMap", "RouteHit", "NaclDecision", "SubnetInfo", "InterfaceInfo",
    "network_to_int", "ip_int",
]

_MAX_BITS = {4: 32, 6: 128}
_FULL = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def ip_int(address) -> tuple[int, int]:
    """An :mod:`ipaddress` address (or text) -> ``(version, integer)``."""
    import ipaddress

    a = ipaddress.ip_address(address)
    return a.version, int(a)


def network_to_int(network) -> tuple[int, int, int]:
    """An :mod:`ipaddress` network -> ``(version, network integer, prefix length)``."""
    return network.version, int(network.network_address), network.prefixlen


def _mask(version: int, plen: int) -> int:
    bits = _MAX_BITS[version]
    return _FULL[version] ^ ((1 << (bits - plen)) - 1)


class PrefixMap:
    """Longest-prefix match over integer addresses of one IP version: one dict per prefix length,
    probed from the longest length present. Insertion keeps the first value given for a prefix
    unless ``replace`` says otherwise (the caller inserts in priority order)."""

    __slots__ = ("version", "_tables", "_probes")

    def __init__(self, version: int) -> None:
        self.version = version
        self._tables: dict[int, dict[int, object]] = {}
        self._probes: tuple[tuple[int, dict], ...] = ()  # (mask, table), longest prefix first

    def add(self, net: int, plen: int, value, replace: bool = False) -> None:
        table = self._tables.setdefault(plen, {})
        key = net & _mask(self.version, plen)
        if replace or key not in table:
            table[key] = value
        self._probes = tuple((_mask(self.version, p), self._tables[p]) for p in sorted(self._tables, reverse=True))

    def lookup(self, address: int):
        """The value of the longest prefix holding ``address``, or None."""
        for mask, table in self._probes:
            value = table.get(address & mask)
            if value is not None:
                return value
        return None

    def range_of(self, address: int) -> Optional[tuple[int, int]]:
        """``(first, last)`` address of the longest prefix holding ``address`` when every address
        in it looks up to that prefix's value (no longer prefix lies inside it), else None (also
        when no prefix holds ``address``)."""
        bits = 32 if self.version == 4 else 128
        full = (1 << bits) - 1
        longer = []
        for mask, table in self._probes:
            net = address & mask
            if table.get(net) is not None:
                if any((key & mask) == net for _, inner in longer for key in inner):
                    return None
                return net, net | (full & ~mask)
            longer.append((mask, table))
        return None

    def lookup_all(self, address: int) -> list:
        """Every value whose prefix holds ``address``, longest prefix first."""
        out = []
        for mask, table in self._probes:
            value = table.get(address & mask)
            if value is not None:
                out.append(value)
        return out

    def __bool__(self) -> bool:
        return bool(self._tables)


# --- compiled records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubnetInfo:
    id: str
    vpc_id: str
    nacl_id: Optional[str]
    route_table_id: Optional[str]
    dual_stack: bool
    router: int  # base + 1, the VPC router of this subnet [AWS-FACTS 7]


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """A network interface of the configuration, as the destination stage needs it."""

    id: str
    subnet_id: str
    group_ids: tuple[str, ...]
    interface_type: str
    primary_ip: int  # flow logs show the primary private IPv4 [AWS-FACTS 8]

    @property
    def has_security_groups(self) -> bool:
        """NAT gateway interfaces carry no security group [AWS-FACTS 5]; a Lambda ENI listed in
        the configuration is a Hyperplane ENI (handled as V2N, never as a destination)."""
        return self.interface_type not in ("nat_gateway", "lambda")


@dataclass(frozen=True, slots=True)
class RouteHit:
    """The route a lookup chose: ``kind`` is the model's target kind (local, igw, nat, ...)."""

    table_id: str
    label: str  # "10.0.0.0/16 -> local", "pl-63a5400a -> vpce-..."
    kind: str
    target_id: str
    blackhole: bool


@dataclass(frozen=True, slots=True)
class NaclDecision:
    allow: bool
    acl_id: str
    rule: str  # "100" or "*"


_NO_NACL = NaclDecision(True, "", "*")


@dataclass(frozen=True, slots=True)
class _SgRule:
    id: str
    protocol: int
    port_from: int
    port_to: int
    kind: str  # "cidr" | "prefix-list" | "group"
    nets: tuple[tuple[int, int, int], ...]  # (version, network, mask) for cidr / prefix-list
    group: str  # the referenced group for kind == "group"
    all_addresses_v: int  # 4 or 6 when the peer is 0.0.0.0/0 or ::/0, else 0

    def covers(self, proto: int, port: int) -> bool:
        if self.protocol == PROTO_ALL:
            return True
        if self.protocol != proto:
            return False
        if proto == 6 or proto == 17:
            return self.port_from <= port <= self.port_to
        return True  # other protocols: all ports [AWS-FACTS 2]

    @property
    def all_ports(self) -> bool:
        return self.protocol == PROTO_ALL or (self.port_from <= 0 and self.port_to >= 65535) or self.protocol not in (6, 17)


@dataclass(frozen=True, slots=True)
class _NaclRule:
    label: str
    allow: bool
    protocol: int
    version: int
    net: int
    mask: int
    port_from: int
    port_to: int


class Policy:
    """The compiled configuration. ``extra_members(group_id)`` returns the integer addresses of
    the Hyperplane ENIs in a group (the control plane's ``members_of``); it is asked again after
    :meth:`invalidate_members` (called when the dataplane sees a new ENI)."""

    def __init__(self, model: VpcModel, extra_members: Optional[Callable[[str], Iterable]] = None) -> None:
        self.model = model
        self._extra_members = extra_members
        self._members_cache: dict[str, frozenset[int]] = {}
        self._static_members: dict[str, frozenset[int]] = {}
        self._compile_addresses(model)
        self._compile_security_groups(model)
        self._compile_nacls(model)
        self._compile_routes(model)

    # --- compilation --------------------------------------------------------------------------
    def _compile_addresses(self, model: VpcModel) -> None:
        self.vpc_map = {4: PrefixMap(4), 6: PrefixMap(6)}
        self.vpc_amazon_dns: dict[str, int] = {}
        self.vpc_account: dict[str, str] = {}
        for vpc in model.vpcs.values():
            for cidr in vpc.cidrs + vpc.ipv6_cidrs:
                v, n, p = network_to_int(cidr)
                self.vpc_map[v].add(n, p, vpc.id)
            self.vpc_amazon_dns[vpc.id] = int(vpc.amazon_dns)
            self.vpc_account[vpc.id] = vpc.owner_id
        self.subnet_map = {4: PrefixMap(4), 6: PrefixMap(6)}
        self.subnets: dict[str, SubnetInfo] = {}
        routers: set[int] = set()
        for subnet in model.subnets.values():
            acl = model.nacl_of(subnet.id)
            rtb = model.route_table_of(subnet.id)
            info = SubnetInfo(
                id=subnet.id, vpc_id=subnet.vpc_id, nacl_id=acl.id if acl else None,
                route_table_id=rtb.id if rtb else None, dual_stack=subnet.dual_stack,
                router=int(subnet.router),
            )
            self.subnets[subnet.id] = info
            v, n, p = network_to_int(subnet.cidr)
            self.subnet_map[v].add(n, p, subnet.id)
            if subnet.ipv6_cidr is not None:
                v, n, p = network_to_int(subnet.ipv6_cidr)
                self.subnet_map[v].add(n, p, subnet.id)
            routers.add(int(subnet.router))
        self.interfaces: dict[tuple[int, int], InterfaceInfo] = {}
        for eni in model.network_interfaces.values():
            info = InterfaceInfo(
                id=eni.id, subnet_id=eni.subnet_id, group_ids=tuple(eni.group_ids),
                interface_type=eni.interface_type, primary_ip=int(eni.primary_ip),
            )
            for address in eni.private_ips + eni.ipv6_addresses:
                self.interfaces[ip_int(address)] = info
        # Not filtered by SGs or NACLs, not flow-logged [AWS-FACTS 2, 3, 7, 8].
        link_local = {
            ip_int(limits.AMAZON_DNS_LINK_LOCAL), ip_int(limits.INSTANCE_METADATA), ip_int(limits.TIME_SYNC),
            ip_int(limits.AMAZON_DNS_IPV6),
        }
        self.exempt_addresses: frozenset[tuple[int, int]] = frozenset(
            link_local | {(4, a) for a in self.vpc_amazon_dns.values()} | {(4, r) for r in routers}
        )
        self.nat_gateways = dict(model.nat_gateways)
        self.nat_by_private_ip = {
            (4, int(n.private_ip)): n.id for n in model.nat_gateways.values() if n.private_ip is not None
        }

    def _compile_security_groups(self, model: VpcModel) -> None:
        self._sg_rules: dict[tuple[str, bool], tuple[_SgRule, ...]] = {}
        for group in model.security_groups.values():
            for egress in (False, True):
                compiled = []
                for rule in group.rules(egress):
                    nets: tuple[tuple[int, int, int], ...] = ()
                    all_v = 0
                    if rule.peer_kind == "cidr" and rule.network is not None:
                        v, n, p = network_to_int(rule.network)
                        nets = ((v, n, _mask(v, p)),)
                        all_v = v if p == 0 else 0
                    elif rule.peer_kind == "prefix-list":
                        nets = tuple(
                            (v, n, _mask(v, p)) for v, n, p in map(network_to_int, model.prefix_list_cidrs(rule.peer))
                        )
                    compiled.append(
                        _SgRule(
                            id=rule.id, protocol=rule.protocol, port_from=rule.from_port, port_to=rule.to_port,
                            kind=rule.peer_kind, nets=nets, group=rule.peer if rule.peer_kind == "group" else "",
                            all_addresses_v=all_v,
                        )
                    )
                self._sg_rules[(group.id, egress)] = tuple(compiled)
        for group_id in model.security_groups:
            self._static_members[group_id] = frozenset(ip_int(a)[1] for a in model.members_of(group_id))

    def _compile_nacls(self, model: VpcModel) -> None:
        # (acl, egress) -> ((rule, its decision), ...) by rule number; (acl, egress, "*") -> the
        # final deny (decisions are made once: a new connection checks several NACLs)
        self._nacl_rules: dict[tuple, object] = {}
        for acl in model.network_acls.values():
            for egress in (False, True):
                rules = []
                for entry in sorted(acl.rules(egress), key=lambda e: e.rule_number):
                    v, n, p = network_to_int(entry.network)
                    rules.append(
                        _NaclRule(
                            label=entry.label, allow=entry.allow, protocol=entry.protocol, version=v,
                            net=n, mask=_mask(v, p), port_from=entry.port_from, port_to=entry.port_to,
                        )
                    )
                self._nacl_rules[(acl.id, egress)] = tuple(
                    (rule, NaclDecision(rule.allow, acl.id, rule.label)) for rule in rules)
                self._nacl_rules[(acl.id, egress, "*")] = NaclDecision(False, acl.id, "*")

    def _compile_routes(self, model: VpcModel) -> None:
        """One PrefixMap per (table, version). Routes are inserted in priority order so that for an
        identical prefix the first one stays [AWS-FACTS 4]."""
        self._routes: dict[str, dict[int, PrefixMap]] = {}
        for table in model.route_tables.values():
            candidates = []  # (rank, tiebreak, version, net, plen, RouteHit)
            for route in table.routes:
                hit = RouteHit(
                    table_id=table.id, label=route.label, kind=route.target_kind, target_id=route.target_id,
                    blackhole=route.state == "blackhole",
                )
                propagated = route.origin == "EnableVgwRoutePropagation"
                if route.destination is not None:
                    v, n, p = network_to_int(route.destination)
                    rank = 2 if propagated else 0
                    candidates.append((rank, "", v, n, p, hit))
                else:
                    for cidr in model.prefix_list_cidrs(route.prefix_list_id or ""):
                        v, n, p = network_to_int(cidr)
                        candidates.append((1, route.prefix_list_id or "", v, n, p, hit))
            maps = {4: PrefixMap(4), 6: PrefixMap(6)}
            for _rank, _tie, v, n, p, hit in sorted(candidates, key=lambda c: (c[0], c[1])):
                maps[v].add(n, p, hit)
            self._routes[table.id] = maps

    # --- addresses ----------------------------------------------------------------------------
    def vpc_of(self, version: int, address: int) -> Optional[str]:
        return self.vpc_map[version].lookup(address)

    def subnet_of(self, version: int, address: int) -> Optional[str]:
        return self.subnet_map[version].lookup(address)

    def interface_at(self, version: int, address: int) -> Optional[InterfaceInfo]:
        return self.interfaces.get((version, address))

    def is_exempt(self, version: int, address: int, proto: int, dport: int) -> bool:
        """Amazon DNS (VPC base + 2, 169.254.169.253, fd00:ec2::253), instance metadata, Time
        Sync, the VPC router and DHCP (UDP 67/68): not filtered by security groups or network
        ACLs and never flow-logged [AWS-FACTS 2, 3, 7, 8]."""
        if (version, address) in self.exempt_addresses:
            return True
        return proto == 17 and (dport == 67 or dport == 68)

    # --- security groups ----------------------------------------------------------------------
    def invalidate_members(self) -> None:
        """Forget cached group memberships (a Hyperplane ENI was created or removed)."""
        self._members_cache.clear()

    def members(self, group_id: str) -> frozenset[int]:
        """Integer addresses of every interface in ``group_id``: the configuration's network
        interfaces plus the Hyperplane ENIs the control plane created for the group."""
        cached = self._members_cache.get(group_id)
        if cached is None:
            out = set(self._static_members.get(group_id, ()))
            if self._extra_members is not None:
                out.update(a if isinstance(a, int) else ip_int(a)[1] for a in self._extra_members(group_id))
            cached = self._members_cache[group_id] = frozenset(out)
        return cached

    def _peer_matches(self, rule: _SgRule, version: int, address: int) -> bool:
        if rule.kind == "group":
            return address in self.members(rule.group)
        for v, net, mask in rule.nets:
            if v == version and address & mask == net:
                return True
        return False

    def sg_match(self, group_ids, egress: bool, proto: int, version: int, peer: int, port: int) -> Optional[str]:
        """The id of the first rule (in group order, then rule order) of the union of
        ``group_ids`` that allows the packet, or None. ``peer`` is the destination for egress and
        the source for ingress; ``port`` is the destination port."""
        for group_id in group_ids:
            for rule in self._sg_rules.get((group_id, egress), ()):
                if rule.covers(proto, port) and self._peer_matches(rule, version, peer):
                    return rule.id
        return None

    def sg_untracked(self, group_ids, initiated_egress: bool, proto: int, version: int, port: int) -> bool:
        """The documented untracked condition [AWS-FACTS 2]: "If a security group rule permits TCP
        or UDP flows for all traffic (0.0.0.0/0 or ::/0) and there is a corresponding rule in the
        other direction that permits all response traffic (0.0.0.0/0 or ::/0) for all ports
        (0-65535), then that flow of traffic is not tracked". ``initiated_egress`` says which
        direction opened the flow; ``port`` is the flow's destination port."""
        opened = reply = False
        for group_id in group_ids:
            for rule in self._sg_rules.get((group_id, initiated_egress), ()):
                if rule.all_addresses_v == version and rule.covers(proto, port):
                    opened = True
            for rule in self._sg_rules.get((group_id, not initiated_egress), ()):
                if rule.all_addresses_v == version and rule.all_ports and rule.covers(proto, 0):
                    reply = True
        return opened and reply

    def group_rules(self, group_id: str, egress: bool) -> tuple[_SgRule, ...]:
        return self._sg_rules.get((group_id, egress), ())

    # --- network ACLs -------------------------------------------------------------------------
    def nacl_check(self, acl_id: Optional[str], egress: bool, proto: int, version: int, peer: int, port: int) -> NaclDecision:
        """First matching rule by rule number; the ``*`` rule denies the rest [AWS-FACTS 3].
        ``peer`` is the destination for egress, the source for ingress; ``port`` the destination
        port. A subnet without a NACL (an incomplete model) allows everything, like a default NACL."""
        return self.nacl_ports(acl_id, egress, proto, version, peer, port, port)

    def nacl_ports(self, acl_id: Optional[str], egress: bool, proto: int, version: int, peer: int, lo: int,
                   hi: int) -> Optional[NaclDecision]:
        """The decision :meth:`nacl_check` gives for every port from ``lo`` to ``hi``, or None when
        the port within that range can matter: a rule whose port range holds some of those ports
        but not all would be consulted before the deciding one (a rule holding none of them is
        passed over by every port of the range; one holding all of them decides for each)."""
        if acl_id is None:
            return _NO_NACL
        for rule, decision in self._nacl_rules.get((acl_id, egress), ()):
            if rule.version != version or peer & rule.mask != rule.net:
                continue
            if rule.protocol != PROTO_ALL:
                if rule.protocol != proto:
                    continue
                if proto == 6 or proto == 17:
                    if rule.port_to < lo or rule.port_from > hi:
                        continue  # no port of the range
                    if not (rule.port_from <= lo and rule.port_to >= hi):
                        return None
            return decision
        return self._nacl_rules.get((acl_id, egress, "*")) or NaclDecision(False, acl_id, "*")

    # --- routes -------------------------------------------------------------------------------
    def route(self, table_id: Optional[str], version: int, address: int) -> Optional[RouteHit]:
        """The route the table uses for ``address`` (longest prefix match with AWS's priority
        rules, see the module docstring), or None when nothing matches."""
        if table_id is None:
            return None
        maps = self._routes.get(table_id)
        if maps is None:
            return None
        return maps[version].lookup(address)

    def subnet(self, subnet_id: str) -> SubnetInfo:
        return self.subnets[subnet_id]
