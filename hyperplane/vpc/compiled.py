"""Flat numeric tables compiled from a :class:`VpcModel`, for the Cython core.

Everything is a numpy array (one column per field), so the core reads them through typed
memoryviews without touching a Python object per packet. Strings (ids) stay in Python tuples
that the arrays index into.

Addresses
    Every prefix is stored in six columns: ``family`` (uint8, 4 or 6), ``net_hi``/``net_lo``
    (uint64: the network address as a 128-bit number split in two; IPv4 uses ``net_lo`` only,
    ``net_hi`` = 0), ``mask_hi``/``mask_lo`` (uint64, the netmask split the same way) and
    ``prefixlen`` (uint8). An address ``a`` (int) of family ``f`` matches a row when
    ``family == f and (a >> 64) & mask_hi == net_hi and a & 0xFFFF_FFFF_FFFF_FFFF & mask_lo == net_lo``.

Blocks
    Each table holds the rows of many owners (route tables, ACL directions, group directions)
    back to back; ``start`` (int64) gives the owner ``k``'s rows as ``start[k]:start[k + 1]``.
    For NACLs and security groups the owner ``k`` of object ``i`` in direction ``d`` is
    ``2 * i + d`` with ``d`` = 0 ingress, 1 egress.

:class:`RouteTables` (owner = route table, ``ids[i]``)
    prefix columns + ``kind`` (uint8, index in :data:`ROUTE_TARGET_KINDS`), ``target`` (int32,
    index in ``targets``, the tuple of target ids), ``state`` (uint8: 0 active, 1 blackhole),
    ``route`` (int32, index in ``RouteTable.routes``). A prefix-list route becomes one row per CIDR
    of the list. Rows are in decision order: IPv4 before IPv6, longest prefix first, and on an
    equal prefix a static CIDR route, then a prefix-list route (lowest prefix-list id first), then
    a propagated route (AWS: "static CIDR beats static prefix-list route beats propagated"), then
    the table's own order. The first matching row is the route AWS uses.

``CompiledModel.exempt`` (prefix columns, all host routes)
    The addresses no security group or NACL filters [AWS-FACTS 2, 3, 7]: Amazon DNS (each VPC's
    base + 2, 169.254.169.253, fd00:ec2::253), instance metadata, Time Sync and every subnet's
    router (base + 1). (DHCP, UDP ports 67/68, is exempt too: a port test, not an address.)

:class:`NaclTables` (owner = ``2 * acl + egress``)
    ``rule`` (int32 rule number), ``allow`` (uint8), ``proto`` (int16, -1 all), prefix columns,
    ``port_lo``/``port_hi`` (int32, inclusive; checked for TCP and UDP only), ``icmp_type`` /
    ``icmp_code`` (int16, -1 all; checked for ICMP/ICMPv6 rows). Rows are in evaluation order
    (lowest rule number first, the ``*`` denies last); the first matching row decides.

:class:`SgTables` (owner = ``2 * group + egress``)
    ``rule`` (int32, ``SgRule.index``), ``proto`` (int16, -1 all), ``port_lo``/``port_hi`` (int32:
    the port range for TCP/UDP; ICMP type and code for ICMP/ICMPv6, -1 all), prefix columns.
    Peers are resolved: a CIDR is one row, a prefix list one row per CIDR of the list, a
    referenced group one /32 or /128 row per private address of its members (the model's network
    interfaces, plus ``extra_members`` — the Hyperplane ENIs the control plane creates). Rules
    only allow, so any matching row of any of an interface's groups allows.

:class:`SubnetTable` (row = subnet ``ids[i]``)
    prefix columns of the IPv4 CIDR, ``route_table`` and ``nacl`` (int32 indexes in the route
    and NACL tables, -1 none).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from hyperplane.vpc.model import (
    PROTO_ALL,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    ROUTE_TARGET_KINDS,
    IPAddress,
    IPNetwork,
    VpcModel,
)

__all__ = ["compile_model", "CompiledModel", "RouteTables", "NaclTables", "SgTables", "SubnetTable",
           "TARGET_KIND_CODES", "ROUTE_ACTIVE", "ROUTE_BLACKHOLE", "INGRESS", "EGRESS"]

TARGET_KIND_CODES = {kind: code for code, kind in enumerate(ROUTE_TARGET_KINDS)}
ROUTE_ACTIVE = 0
ROUTE_BLACKHOLE = 1
INGRESS = 0
EGRESS = 1

_LOW64 = (1 << 64) - 1
_PREFIX_DTYPES = {"family": np.uint8, "net_hi": np.uint64, "net_lo": np.uint64, "mask_hi": np.uint64,
                  "mask_lo": np.uint64, "prefixlen": np.uint8}


def _prefix_row(net: IPNetwork) -> dict:
    net_int, mask_int = int(net.network_address), int(net.netmask)
    return {"family": net.version, "net_hi": net_int >> 64, "net_lo": net_int & _LOW64,
            "mask_hi": mask_int >> 64, "mask_lo": mask_int & _LOW64, "prefixlen": net.prefixlen}


def _columns(rows: list[dict], dtypes: Mapping[str, type]) -> dict[str, np.ndarray]:
    return {name: np.array([row[name] for row in rows], dtype=dtype) for name, dtype in dtypes.items()}


def _address_mask(cols: Mapping[str, np.ndarray], ip: IPAddress, rows: slice) -> np.ndarray:
    """Which rows of the slice hold a prefix containing ``ip``."""
    value = int(ip)
    hi, lo = np.uint64(value >> 64), np.uint64(value & _LOW64)
    return ((cols["family"][rows] == ip.version)
            & ((cols["mask_hi"][rows] & hi) == cols["net_hi"][rows])
            & ((cols["mask_lo"][rows] & lo) == cols["net_lo"][rows]))


class _Blocks:
    """Rows of many owners back to back, with the ``start`` offsets and the column arrays."""

    DTYPES: Mapping[str, type] = {}

    def __init__(self, ids: Sequence[str], start: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self.ids = tuple(ids)
        self.index = {ident: i for i, ident in enumerate(self.ids)}
        self.start = start
        self.columns = columns

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return int(self.start[-1])

    def rows(self, owner: int) -> slice:
        return slice(int(self.start[owner]), int(self.start[owner + 1]))

    @classmethod
    def build(cls, ids: Sequence[str], blocks: Iterable[list[dict]]) -> "_Blocks":
        all_rows: list[dict] = []
        start = [0]
        for rows in blocks:
            all_rows.extend(rows)
            start.append(len(all_rows))
        return cls(ids, np.array(start, dtype=np.int64), _columns(all_rows, cls.DTYPES))


class RouteTables(_Blocks):
    DTYPES = {**_PREFIX_DTYPES, "kind": np.uint8, "target": np.int32, "state": np.uint8, "route": np.int32}

    def __init__(self, ids, start, columns, targets: Sequence[str] = ()) -> None:
        super().__init__(ids, start, columns)
        self.targets = tuple(targets)

    def lookup(self, table_id: str, ip: IPAddress | str) -> int:
        """The row of the route AWS uses for ``ip`` in ``table_id`` (longest prefix), or -1."""
        ip = ipaddress.ip_address(ip)
        rows = self.rows(self.index[table_id])
        hits = np.flatnonzero(_address_mask(self.columns, ip, rows))
        return int(rows.start + hits[0]) if hits.size else -1


class NaclTables(_Blocks):
    DTYPES = {"rule": np.int32, "allow": np.uint8, "proto": np.int16, **_PREFIX_DTYPES, "port_lo": np.int32,
              "port_hi": np.int32, "icmp_type": np.int16, "icmp_code": np.int16}

    def evaluate(self, acl_id: str, egress: bool, proto: int, ip: IPAddress | str, port: int = 0,
                 icmp_type: int = -1, icmp_code: int = -1) -> int:
        """The row of the first entry matching a packet (``ip`` = the remote address: source for
        ingress, destination for egress), or -1 when none matches (then the packet is denied)."""
        ip = ipaddress.ip_address(ip)
        rows = self.rows(2 * self.index[acl_id] + (EGRESS if egress else INGRESS))
        c = self.columns
        match = _address_mask(c, ip, rows) & ((c["proto"][rows] == PROTO_ALL) | (c["proto"][rows] == proto))
        if proto in (PROTO_TCP, PROTO_UDP):
            match &= (c["proto"][rows] == PROTO_ALL) | ((c["port_lo"][rows] <= port) & (port <= c["port_hi"][rows]))
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            match &= (c["icmp_type"][rows] == -1) | (c["icmp_type"][rows] == icmp_type)
            match &= (c["icmp_code"][rows] == -1) | (c["icmp_code"][rows] == icmp_code)
        hits = np.flatnonzero(match)
        return int(rows.start + hits[0]) if hits.size else -1


class SgTables(_Blocks):
    DTYPES = {"rule": np.int32, "proto": np.int16, "port_lo": np.int32, "port_hi": np.int32, **_PREFIX_DTYPES}

    def matching_rows(self, group_id: str, egress: bool, proto: int, ip: IPAddress | str, port: int = 0,
                      icmp_type: int = -1, icmp_code: int = -1) -> np.ndarray:
        """Rows of ``group_id``'s rules of one direction that allow the packet (``ip`` = the
        peer: source for ingress, destination for egress; ``port`` = the local-service port)."""
        ip = ipaddress.ip_address(ip)
        rows = self.rows(2 * self.index[group_id] + (EGRESS if egress else INGRESS))
        c = self.columns
        match = _address_mask(c, ip, rows) & ((c["proto"][rows] == PROTO_ALL) | (c["proto"][rows] == proto))
        if proto in (PROTO_TCP, PROTO_UDP):
            match &= (c["proto"][rows] == PROTO_ALL) | ((c["port_lo"][rows] <= port) & (port <= c["port_hi"][rows]))
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            specific = c["proto"][rows] != PROTO_ALL
            match &= ~specific | (c["port_lo"][rows] == -1) | (c["port_lo"][rows] == icmp_type)
            match &= ~specific | (c["port_hi"][rows] == -1) | (c["port_hi"][rows] == icmp_code)
        return rows.start + np.flatnonzero(match)

    def allows(self, group_ids: Iterable[str], egress: bool, proto: int, ip: IPAddress | str, port: int = 0,
               icmp_type: int = -1, icmp_code: int = -1) -> Optional[tuple[str, int]]:
        """(group id, rule index) of the first rule of the groups allowing the packet, or None.
        Security groups are a union: any allowing rule of any group allows."""
        for group_id in group_ids:
            hits = self.matching_rows(group_id, egress, proto, ip, port, icmp_type, icmp_code)
            if hits.size:
                return group_id, int(self.columns["rule"][hits[0]])
        return None


class SubnetTable:
    def __init__(self, ids: Sequence[str], columns: dict[str, np.ndarray]) -> None:
        self.ids = tuple(ids)
        self.index = {ident: i for i, ident in enumerate(self.ids)}
        self.columns = columns

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def lookup(self, ip: IPAddress | str) -> int:
        """The row of the subnet holding ``ip`` (IPv4), or -1."""
        ip = ipaddress.ip_address(ip)
        hits = np.flatnonzero(_address_mask(self.columns, ip, slice(0, len(self.ids))))
        return int(hits[0]) if hits.size else -1


@dataclass(frozen=True)
class CompiledModel:
    """The tables of one model. ``generation`` lets per-connection caches notice a recompile."""

    routes: RouteTables
    nacls: NaclTables
    security_groups: SgTables
    subnets: SubnetTable
    generation: int = 0
    exempt: Optional[dict] = None  # prefix columns of the exempt host addresses (see above)


def compile_model(model: VpcModel, extra_members: Optional[Mapping[str, Iterable[IPAddress | str]]] = None,
                  generation: int = 0) -> CompiledModel:
    """Compile ``model`` into flat tables. ``extra_members`` maps a security group id to more
    member addresses (the Hyperplane ENIs the control plane created), which rules referencing
    that group then match too."""
    extra = {gid: tuple(ipaddress.ip_address(ip) for ip in ips) for gid, ips in (extra_members or {}).items()}
    routes = _compile_routes(model)
    nacls = _compile_nacls(model)
    groups = _compile_groups(model, extra)
    subnets = _compile_subnets(model, routes, nacls)
    return CompiledModel(routes=routes, nacls=nacls, security_groups=groups, subnets=subnets, generation=generation,
                         exempt=_compile_exempt(model))


def _compile_exempt(model: VpcModel) -> dict:
    from hyperplane import limits

    addresses = {ipaddress.ip_address(a) for a in (limits.AMAZON_DNS_LINK_LOCAL, limits.INSTANCE_METADATA,
                                                   limits.TIME_SYNC, limits.AMAZON_DNS_IPV6)}
    addresses.update(vpc.amazon_dns for vpc in model.vpcs.values())
    addresses.update(subnet.router for subnet in model.subnets.values())
    rows = [_prefix_row(ipaddress.ip_network(a)) for a in sorted(addresses, key=lambda a: (a.version, int(a)))]
    return _columns(rows, _PREFIX_DTYPES)


def _compile_routes(model: VpcModel) -> RouteTables:
    targets: dict[str, int] = {}
    blocks = []
    for table in model.route_tables.values():
        rows = []
        for position, route in enumerate(table.routes):
            nets = (route.destination,) if route.destination is not None else model.prefix_list_cidrs(route.prefix_list_id)
            for net in nets:
                row = _prefix_row(net)
                row.update(kind=TARGET_KIND_CODES[route.target_kind],
                           target=targets.setdefault(route.target_id, len(targets)),
                           state=ROUTE_BLACKHOLE if route.state == "blackhole" else ROUTE_ACTIVE, route=position,
                           _order=(net.version, -net.prefixlen, *_route_rank(route), position))
                rows.append(row)
        rows.sort(key=lambda r: r["_order"])
        blocks.append(rows)
    compiled = RouteTables.build(tuple(model.route_tables), blocks)
    compiled.targets = tuple(targets)
    return compiled


def _route_rank(route) -> tuple[int, str]:
    """AWS priority among routes of the same prefix [AWS-FACTS 4], as the reference applies it: a
    static CIDR route (0) beats a prefix-list route (1), which beats a propagated route (2); between
    prefix lists the lowest prefix-list id wins (AWS "randomly chooses"; documented choice)."""
    if route.destination is None:
        return 1, route.prefix_list_id or ""
    return (2 if route.origin == "EnableVgwRoutePropagation" else 0), ""


def _compile_nacls(model: VpcModel) -> NaclTables:
    blocks = []
    for acl in model.network_acls.values():
        for egress in (False, True):
            rows = []
            for entry in acl.rules(egress):
                row = _prefix_row(entry.network)
                row.update(rule=entry.rule_number, allow=int(entry.allow), proto=entry.protocol,
                           port_lo=entry.port_from, port_hi=entry.port_to, icmp_type=entry.icmp_type,
                           icmp_code=entry.icmp_code)
                rows.append(row)
            blocks.append(rows)
    return NaclTables.build(tuple(model.network_acls), blocks)


def _peer_networks(model: VpcModel, rule, extra: Mapping[str, tuple]) -> list[IPNetwork]:
    if rule.peer_kind == "cidr":
        return [rule.network]
    if rule.peer_kind == "prefix-list":
        return list(model.prefix_list_cidrs(rule.peer))
    members = dict.fromkeys(model.members_of(rule.peer) + extra.get(rule.peer, ()))
    return [ipaddress.ip_network(ip) for ip in members]


def _compile_groups(model: VpcModel, extra: Mapping[str, tuple]) -> SgTables:
    blocks = []
    for group in model.security_groups.values():
        for egress in (False, True):
            rows = []
            for rule in group.rules(egress):
                for net in _peer_networks(model, rule, extra):
                    row = _prefix_row(net)
                    row.update(rule=rule.index, proto=rule.protocol, port_lo=rule.from_port, port_hi=rule.to_port)
                    rows.append(row)
            blocks.append(rows)
    return SgTables.build(tuple(model.security_groups), blocks)


def _compile_subnets(model: VpcModel, routes: RouteTables, nacls: NaclTables) -> SubnetTable:
    rows = []
    for subnet in model.subnets.values():
        row = _prefix_row(subnet.cidr)
        table = model.route_table_of(subnet.id)
        acl = model.nacl_of(subnet.id)
        row.update(route_table=routes.index[table.id] if table else -1, nacl=nacls.index[acl.id] if acl else -1)
        rows.append(row)
    return SubnetTable(tuple(model.subnets), _columns(rows, {**_PREFIX_DTYPES, "route_table": np.int32,
                                                              "nacl": np.int32}))
