"""Plain, independent evaluators of the AWS rules over a :class:`~hyperplane.vpc.model.VpcModel`.

They restate AWS's documented semantics (``spec/AWS-FACTS.md`` §2-4) in the most direct way,
sharing no code with the dataplane, so property tests can check the engine against them:

* :func:`sg_allows` — security groups are allow-only; a packet passes when *any* rule of *any*
  of the groups matches its protocol, port and peer (CIDR, prefix list, or membership of a
  referenced group);
* :func:`nacl_decision` — network ACLs are evaluated lowest rule number first, the first
  matching rule decides, the ``*`` rule denies the rest;
* :func:`route_for` — longest prefix match over CIDR and prefix-list routes (a CIDR route wins
  over a prefix-list route of the same length);
* :func:`is_exempt` — Amazon DNS, metadata, Time Sync and DHCP are filtered by neither.
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Iterable, NamedTuple, Optional

__all__ = ["sg_allows", "nacl_decision", "nacl_allows", "route_for", "is_exempt", "NaclDecision"]

LINK_LOCAL_SERVICES = tuple(ipaddress.ip_address(a) for a in ("169.254.169.253", "169.254.169.254",
                                                             "169.254.169.123", "fd00:ec2::253"))


def _ip(value):
    if isinstance(value, int):
        return ipaddress.ip_address(value) if value < 2**32 else ipaddress.IPv6Address(value)
    return ipaddress.ip_address(str(value))


def _port_matches(protocol: int, low: int, high: int, proto: int, port: int) -> bool:
    if protocol == -1 or proto not in (6, 17):
        return True
    return low <= port <= high


def sg_allows(model, group_ids: Iterable[str], egress: bool, proto: int, peer, port: int,
              members: Optional[Callable[[str], Iterable]] = None) -> Optional[str]:
    """The id of a rule of ``group_ids`` allowing ``proto``/``port`` to (egress) or from
    (ingress) ``peer``, or None when no rule does. ``members(group_id)`` adds addresses that
    belong to a group beyond the configuration's interfaces (the engine's Hyperplane ENIs:
    ``engine.control.members_of``)."""
    peer = _ip(peer)
    for group_id in group_ids:
        group = model.security_groups.get(group_id)
        if group is None:
            continue
        for rule in group.egress if egress else group.ingress:
            if rule.protocol != -1 and rule.protocol != proto:
                continue
            if not _port_matches(rule.protocol, rule.from_port, rule.to_port, proto, port):
                continue
            if rule.peer_kind == "cidr":
                ok = rule.network is not None and rule.network.version == peer.version and peer in rule.network
            elif rule.peer_kind == "prefix-list":
                pl = model.prefix_lists.get(rule.peer)
                ok = pl is not None and any(c.version == peer.version and peer in c for c in pl.cidrs)
            else:
                addresses = set(model.members_of(rule.peer))
                if members is not None and rule.peer in model.security_groups:
                    addresses.update(_ip(a) for a in members(rule.peer))
                ok = peer in addresses
            if ok:
                return rule.id
    return None


class NaclDecision(NamedTuple):
    allow: bool
    rule: str  # "100" or "*"
    acl_id: str


def nacl_decision(model, subnet_id: str, egress: bool, proto: int, peer, port: int) -> NaclDecision:
    """The decision of the network ACL of ``subnet_id`` for a packet leaving (``egress``) or
    entering the subnet: ``peer`` is the address on the other side (the destination leaving,
    the source entering) and ``port`` the packet's destination port, which is what an AWS NACL
    rule's port range matches."""
    acl = model.nacl_of(subnet_id)
    peer = _ip(peer)
    entries = sorted((e for e in acl.entries if e.egress == egress), key=lambda e: e.rule_number)
    for entry in entries:
        if entry.network.version != peer.version or peer not in entry.network:
            continue
        if entry.protocol != -1 and entry.protocol != proto:
            continue
        if not _port_matches(entry.protocol, entry.port_from, entry.port_to, proto, port):
            continue
        return NaclDecision(entry.allow, entry.label, acl.id)
    return NaclDecision(False, "*", acl.id)


def nacl_allows(model, subnet_id: str, egress: bool, proto: int, peer, port: int) -> bool:
    return nacl_decision(model, subnet_id, egress, proto, peer, port).allow


def route_for(model, subnet_id: str, destination):
    """The route of ``subnet_id``'s route table that carries ``destination`` (longest prefix;
    prefix-list routes count with the length of their matching entry), or None."""
    table = model.route_table_of(subnet_id)
    dst = _ip(destination)
    best, best_key = None, None
    for route in table.routes if table else ():
        if route.destination is not None:
            nets = [route.destination]
        else:
            nets = list(model.prefix_list_cidrs(route.prefix_list_id))
        for net in nets:
            if net.version == dst.version and dst in net:
                key = (net.prefixlen, route.destination is not None)
                if best_key is None or key > best_key:
                    best, best_key = route, key
    return best


def is_exempt(model, address, proto: int = 6, port: int = 0) -> bool:
    """Traffic to ``address`` that AWS filters with neither SGs nor NACLs and never logs: the
    Amazon DNS (VPC base + 2, 169.254.169.253), metadata, Time Sync, subnet routers, DHCP."""
    ip = _ip(address)
    if ip in LINK_LOCAL_SERVICES or (proto == 17 and port in (67, 68)):
        return True
    for vpc in model.vpcs.values():
        if ip == vpc.amazon_dns:
            return True
    for subnet in model.subnets.values():
        if ip.version == 4 and ip == subnet.router:
            return True
    return False
