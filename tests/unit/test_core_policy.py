"""_core.Policy (ext/hp_policy.h) decides exactly what the reference dataplane's policy decides.

Differential: hypothesis generates configurations (the loader-built ``hyperplane.testing.models()``
and, for what those never produce -- IPv6, propagated routes, overlapping prefix lists, duplicate
prefixes, protocols other than TCP/UDP -- models built directly here) and probes, and every SG,
NACL and route decision of the compiled Policy is compared with hyperplane/reference/policy.py.
"""
from __future__ import annotations

import ipaddress
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperplane.reference.policy import Policy as RefPolicy
from hyperplane.testing import models
from hyperplane.vpc.compiled import ROUTE_BLACKHOLE, compile_model
from hyperplane.vpc.model import (
    ROUTE_TARGET_KINDS, NaclEntry, NetworkAcl, NetworkInterface, PrefixList, Route, RouteTable, SecurityGroup,
    SgRule, Subnet, Vpc, VpcModel,
)

_core = pytest.importorskip("hyperplane._core")

N = ipaddress.ip_network
A = ipaddress.ip_address
PROTOS = [6, 17, 1, 58, 47, 50]


# --- the comparison ----------------------------------------------------------------------------

class Pair:
    """The compiled Policy and the reference Policy of one model, and the comparisons."""

    def __init__(self, model: VpcModel, extra: dict | None = None):
        extra = extra or {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.compiled = compile_model(model, extra_members=extra)
        self.model = model
        self.core = _core.Policy(self.compiled)
        self.ref = RefPolicy(model, lambda gid: extra.get(gid, ()))

    def group_sets(self, extra_sets=()):
        sets = [tuple(f.security_group_ids) for f in self.model.functions.values()]
        sets += [tuple(e.group_ids) for e in self.model.network_interfaces.values()]
        sets += [(g,) for g in self.model.security_groups]
        sets += [tuple(s) for s in extra_sets]
        return list(dict.fromkeys(sets))

    def check_sg(self, groups, egress, proto, ip, port):
        got = self.core.sg_allows(list(groups), egress, proto, ip.version, int(ip), port)
        want = self.ref.sg_match(groups, egress, proto, ip.version, int(ip), port)
        assert self.core.rule_id(got) == want, (groups, egress, proto, str(ip), port)
        return got

    def check_nacl(self, acl_index, egress, proto, ip, port):
        allow, number = self.core.nacl_evaluate(acl_index, egress, proto, ip.version, int(ip), port)
        acl_id = self.compiled.nacls.ids[acl_index] if acl_index >= 0 else None
        want = self.ref.nacl_check(acl_id, egress, proto, ip.version, int(ip), port)
        label = "*" if number >= 32767 else str(number)
        assert (allow, label) == (want.allow, want.rule), (acl_id, egress, proto, str(ip), port)
        return allow, number

    def check_route(self, table_index, ip):
        table_id = self.compiled.routes.ids[table_index]
        got = self.core.route_lookup(table_index, ip.version, int(ip))
        want = self.ref.route(table_id, ip.version, int(ip))
        if want is None:
            assert got is None, (table_id, str(ip))
            return -1
        assert got is not None, (table_id, str(ip), want)
        row, kind, target, state = got
        routes = self.compiled.routes
        route = self.model.route_tables[table_id].routes[int(routes.route[row])]
        assert (route.label, ROUTE_TARGET_KINDS[kind], routes.targets[target], state == ROUTE_BLACKHOLE) == (
            want.label, want.kind, want.target_id, want.blackhole), (table_id, str(ip))
        return row

    def check_all(self, probes, extra_sets=()):
        """probes: (ip, proto, port). Every group set x direction, every NACL (and none) x
        direction, every route table, plus the batch forms on the same probes."""
        sets = self.group_sets(extra_sets)
        for ip, proto, port in probes:
            assert self.core.is_exempt(ip.version, int(ip), proto, port) == self.ref.is_exempt(
                ip.version, int(ip), proto, port)
            for egress in (False, True):
                for groups in sets:
                    self.check_sg(groups, egress, proto, ip, port)
                for acl in range(-1, len(self.compiled.nacls.ids)):
                    self.check_nacl(acl, egress, proto, ip, port)
            for table in range(len(self.compiled.routes.ids)):
                self.check_route(table, ip)
        self.check_batches(probes, sets)

    def check_batches(self, probes, sets):
        if not probes:
            return
        ver = np.array([ip.version for ip, _, _ in probes], dtype=np.uint8)
        hi = np.array([int(ip) >> 64 for ip, _, _ in probes], dtype=np.uint64)
        lo = np.array([int(ip) & (2**64 - 1) for ip, _, _ in probes], dtype=np.uint64)
        proto = np.array([p for _, p, _ in probes], dtype=np.int16)
        port = np.array([p for _, _, p in probes], dtype=np.int32)
        for egress in (0, 1):
            for groups in sets:
                s = self.core.group_set(groups)
                out = self.core.sg_allows_batch(s, egress, proto, ver, hi, lo, port)
                assert [int(x) for x in out] == [
                    self.core.sg_allows(s, egress, int(proto[i]), int(ver[i]), int(probes[i][0]), int(port[i]))
                    for i in range(len(probes))]
            for acl in range(-1, len(self.compiled.nacls.ids)):
                allow, rule = self.core.nacl_evaluate_batch(acl, egress, proto, ver, hi, lo, port)
                assert [(bool(a), int(r)) for a, r in zip(allow, rule)] == [
                    self.core.nacl_evaluate(acl, egress, int(proto[i]), int(ver[i]), int(probes[i][0]), int(port[i]))
                    for i in range(len(probes))]
        for table in range(len(self.compiled.routes.ids)):
            rows = self.core.route_lookup_batch(table, ver, hi, lo)
            assert [int(r) for r in rows] == [
                self.core.route_row(table, int(ver[i]), int(probes[i][0])) for i in range(len(probes))]


def interesting_addresses(model: VpcModel, extra: dict) -> list:
    """Edges of every prefix the model mentions, its interfaces, and a few others."""
    nets = set()
    for vpc in model.vpcs.values():
        nets.update(vpc.cidrs + vpc.ipv6_cidrs)
    for s in model.subnets.values():
        nets.add(s.cidr)
        if s.ipv6_cidr is not None:
            nets.add(s.ipv6_cidr)
    for pl in model.prefix_lists.values():
        nets.update(pl.cidrs)
    for t in model.route_tables.values():
        nets.update(r.destination for r in t.routes if r.destination is not None)
    for acl in model.network_acls.values():
        nets.update(e.network for e in acl.entries)
    for g in model.security_groups.values():
        nets.update(r.network for r in g.ingress + g.egress if r.network is not None)
    out = set()
    for n in nets:
        out.add(n.network_address)
        out.add(n.broadcast_address)
        if n.num_addresses > 2:
            out.add(n.network_address + 1)
            out.add(n.network_address + 2)
        top = (1 << n.max_prefixlen) - 1
        if int(n.broadcast_address) < top:
            out.add(n.broadcast_address + 1)
        if int(n.network_address) > 0:
            out.add(n.network_address - 1)
    for e in model.network_interfaces.values():
        out.update(e.private_ips + e.ipv6_addresses)
    for ips in extra.values():
        out.update(A(i) for i in ips)
    out.update(A(a) for a in ("8.8.8.8", "169.254.169.254", "169.254.169.253", "fd00:ec2::253", "2001:db8::1"))
    return sorted(out, key=lambda a: (a.version, int(a)))


def interesting_ports(model: VpcModel) -> list:
    ports = {0, 22, 53, 67, 68, 80, 443, 1024, 5432, 65535}
    for g in model.security_groups.values():
        for r in g.ingress + g.egress:
            ports.update(p for p in (r.from_port - 1, r.from_port, r.to_port, r.to_port + 1) if 0 <= p <= 65535)
    for acl in model.network_acls.values():
        for e in acl.entries:
            ports.update(p for p in (e.port_from - 1, e.port_from, e.port_to, e.port_to + 1) if 0 <= p <= 65535)
    return sorted(ports)


@st.composite
def probes_for(draw, model: VpcModel, extra: dict, count=(10, 40)):
    addrs = interesting_addresses(model, extra)
    ports = interesting_ports(model)
    known = st.sampled_from(addrs)
    addr = st.one_of(known, known, known, st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
    return draw(st.lists(st.tuples(addr, st.sampled_from(PROTOS), st.sampled_from(ports)),
                         min_size=count[0], max_size=count[1]))


# --- generated loader models (hyperplane.testing) ------------------------------------------------

@st.composite
def loaded_case(draw):
    model = draw(models(rules=(0, 5), nacl_rules=(0, 6), route_tables=(0, 2), prefix_lists=(0, 2),
                        interfaces=(0, 4), security_groups=(1, 4)))
    vpc = next(iter(model.vpcs.values()))
    base = int(vpc.cidrs[0].network_address)
    extra = {}
    for gid in draw(st.lists(st.sampled_from(sorted(model.security_groups)), max_size=3, unique=True)):
        extra[gid] = [str(ipaddress.IPv4Address(base + draw(st.integers(4, 1200)))) for _ in range(draw(st.integers(1, 3)))]
    probes = draw(probes_for(model, extra))
    sets = draw(st.lists(st.lists(st.sampled_from(sorted(model.security_groups)), min_size=0, max_size=4), max_size=3))
    return model, extra, probes, sets


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(loaded_case())
def test_generated_configurations_agree_with_the_reference(case):
    model, extra, probes, sets = case
    Pair(model, extra).check_all(probes, sets)


# --- models built directly: IPv6, priorities, overlaps ------------------------------------------

V4_POOL = ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16", "10.0.1.0/24", "10.0.1.128/25", "10.0.1.7/32",
           "192.0.2.0/24", "192.0.2.0/25", "198.51.100.0/24", "169.254.169.254/32"]
V6_POOL = ["::/0", "2600:1f18::/56", "2600:1f18:0:1::/64", "2001:db8::/32", "2001:db8::/48",
           "2001:db8::1/128"]
POOL = [N(c) for c in V4_POOL + V6_POOL]
SUBNET_ENIS = {"subnet-a": ("10.0.1.10", "10.0.1.130", "2600:1f18:0:1::10"), "subnet-b": ("10.0.2.10", "2600:1f18:0:2::10")}


@st.composite
def port_range(draw, proto):
    if proto in (6, 17):
        lo = draw(st.sampled_from([0, 22, 53, 80, 443, 1024, 5000]))
        return lo, draw(st.sampled_from([lo, lo + 1, 1023, 65535]))
    if proto in (1, 58):
        return draw(st.sampled_from([(-1, -1), (8, 0), (128, -1)]))
    return 0, 65535 if draw(st.booleans()) else -1


@st.composite
def built_case(draw):
    vpc = Vpc(id="vpc-1", owner_id="111122223333", cidrs=(N("10.0.0.0/16"),), ipv6_cidrs=(N("2600:1f18::/56"),))
    subnets = {
        "subnet-a": Subnet("subnet-a", "vpc-1", N("10.0.1.0/24"), N("2600:1f18:0:1::/64")),
        "subnet-b": Subnet("subnet-b", "vpc-1", N("10.0.2.0/24"), N("2600:1f18:0:2::/64")),
    }
    n_pl = draw(st.integers(0, 3))
    pls = {}
    for i in range(n_pl):
        pid = f"pl-{draw(st.sampled_from(['0a', '0b', '1c', '2d', '3e']))}{i}"
        pls[pid] = PrefixList(pid, pid, tuple(draw(st.lists(st.sampled_from(POOL), min_size=0, max_size=3, unique=True))))
    pl_ids = sorted(pls)
    group_ids = [f"sg-{i}" for i in range(draw(st.integers(1, 4)))]

    def sg_rules(gid, egress):
        rules = []
        for index in range(draw(st.integers(0, 6))):
            proto = draw(st.sampled_from([-1, 6, 6, 17, 1, 58, 47]))
            lo, hi = draw(port_range(proto)) if proto != -1 else (-1, -1)
            kind = draw(st.sampled_from(["cidr", "cidr", "prefix-list", "group"] if pl_ids else ["cidr", "group"]))
            if kind == "cidr":
                net = draw(st.sampled_from(POOL))
                rules.append(SgRule(gid, egress, index, proto, lo, hi, "cidr", str(net), net))
            elif kind == "prefix-list":
                rules.append(SgRule(gid, egress, index, proto, lo, hi, "prefix-list",
                                    draw(st.sampled_from(pl_ids + ["pl-missing"]))))
            else:
                rules.append(SgRule(gid, egress, index, proto, lo, hi, "group", draw(st.sampled_from(group_ids))))
        return tuple(rules)

    groups = {g: SecurityGroup(g, "vpc-1", ingress=sg_rules(g, False), egress=sg_rules(g, True)) for g in group_ids}

    acls = {}
    for a in range(draw(st.integers(1, 2))):
        entries = []
        for egress in (False, True):
            numbers = draw(st.lists(st.integers(1, 200), max_size=7, unique=True))
            for number in sorted(numbers):
                proto = draw(st.sampled_from([-1, 6, 17, 1, 58, 47]))
                lo, hi = draw(port_range(proto)) if proto in (6, 17) else (0, 65535)
                entries.append(NaclEntry(number, egress, draw(st.booleans()), proto, draw(st.sampled_from(POOL)),
                                         lo, hi))
            if draw(st.integers(0, 9)):  # usually the loader's `*` rows; sometimes none (no-match path)
                entries.append(NaclEntry(32767, egress, False, -1, N("0.0.0.0/0")))
                entries.append(NaclEntry(32768, egress, False, -1, N("::/0")))
        acl_id = f"acl-{a}"
        acls[acl_id] = NetworkAcl(acl_id, "vpc-1", a == 0, tuple(entries), () if a == 0 else ("subnet-b",))

    tables = {}
    for t in range(draw(st.integers(1, 3))):
        routes = []
        for _ in range(draw(st.integers(0, 9))):
            kind = draw(st.sampled_from(ROUTE_TARGET_KINDS))
            target = "local" if kind == "local" else f"{kind}-{draw(st.integers(0, 2))}"
            state = draw(st.sampled_from(["active", "active", "blackhole"]))
            origin = draw(st.sampled_from(["CreateRoute", "CreateRouteTable", "EnableVgwRoutePropagation"]))
            if pl_ids and draw(st.integers(0, 3)) == 0:
                routes.append(Route(None, draw(st.sampled_from(pl_ids)), kind, target, state, origin))
            else:
                routes.append(Route(draw(st.sampled_from(POOL)), None, kind, target, state, origin))
        tid = f"rtb-{t}"
        tables[tid] = RouteTable(tid, "vpc-1", t == 0, () if t == 0 else ("subnet-a",), tuple(routes))

    enis = {}
    for sid, addrs in SUBNET_ENIS.items():
        for k, addr in enumerate(addrs):
            if draw(st.booleans()):
                a = A(addr)
                gs = tuple(draw(st.lists(st.sampled_from(group_ids), max_size=3, unique=True)))
                eid = f"eni-{sid}-{k}"
                enis[eid] = NetworkInterface(eid, "vpc-1", sid, (a,) if a.version == 4 else (A("10.0.3.1"),),
                                             (a,) if a.version == 6 else (), gs)
    model = VpcModel(vpcs={"vpc-1": vpc}, subnets=subnets, security_groups=groups, network_acls=acls,
                     route_tables=tables, prefix_lists=pls, network_interfaces=enis)
    extra = {}
    for gid in draw(st.lists(st.sampled_from(group_ids), max_size=2, unique=True)):
        extra[gid] = draw(st.lists(st.sampled_from(["10.0.1.200", "10.0.2.77", "2600:1f18:0:1::99", "192.0.2.5"]),
                                   min_size=1, max_size=3, unique=True))
    probes = draw(probes_for(model, extra))
    probes += draw(st.lists(st.tuples(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address), st.sampled_from(PROTOS),
                                      st.sampled_from([0, 80, 443])), max_size=3))
    sets = draw(st.lists(st.lists(st.sampled_from(group_ids + ["sg-unknown"]), max_size=4), max_size=3))
    return model, extra, probes, sets


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(built_case())
def test_built_configurations_agree_with_the_reference(case):
    model, extra, probes, sets = case
    Pair(model, extra).check_all(probes, sets)


# --- examples ------------------------------------------------------------------------------------

def _model(routes=(), pls=None, groups=None, acl_entries=None, enis=None):
    vpc = Vpc(id="vpc-1", owner_id="1", cidrs=(N("10.0.0.0/16"),), ipv6_cidrs=(N("2600:1f18::/56"),))
    subnet = Subnet("subnet-a", "vpc-1", N("10.0.1.0/24"))
    acls = {"acl-1": NetworkAcl("acl-1", "vpc-1", True, tuple(acl_entries or ()))}
    return VpcModel(vpcs={"vpc-1": vpc}, subnets={"subnet-a": subnet}, security_groups=groups or {},
                    network_acls=acls, route_tables={"rtb-1": RouteTable("rtb-1", "vpc-1", True, (), tuple(routes))},
                    prefix_lists=pls or {}, network_interfaces=enis or {})


def test_route_priority_static_then_prefix_list_then_propagated():
    pls = {"pl-b": PrefixList("pl-b", "b", (N("192.0.2.0/24"),)), "pl-a": PrefixList("pl-a", "a", (N("192.0.2.0/24"),))}
    routes = [
        Route(N("192.0.2.0/24"), None, "vgw", "vgw-1", origin="EnableVgwRoutePropagation"),
        Route(None, "pl-b", "vpce", "vpce-b"),
        Route(None, "pl-a", "vpce", "vpce-a"),
        Route(N("192.0.0.0/16"), None, "igw", "igw-1"),
    ]
    pair = Pair(_model(routes, pls))
    row, kind, target, _ = pair.core.route_lookup(0, 4, "192.0.2.9")
    assert pair.compiled.routes.targets[target] == "vpce-a"  # lowest prefix-list id, over propagated
    assert pair.check_route(0, A("192.0.2.9")) == row
    static = _model(routes + [Route(N("192.0.2.0/24"), None, "nat", "nat-1", state="blackhole")], pls)
    pair = Pair(static)
    _, kind, target, state = pair.core.route_lookup(0, 4, "192.0.2.9")
    assert (ROUTE_TARGET_KINDS[kind], pair.compiled.routes.targets[target], state) == ("nat", "nat-1", ROUTE_BLACKHOLE)
    assert ROUTE_TARGET_KINDS[pair.core.route_lookup(0, 4, "192.0.3.1")[1]] == "igw"  # shorter prefix still used
    assert pair.core.route_lookup(0, 4, "8.8.8.8") is None
    assert pair.core.route_lookup(0, 6, "2001:db8::1") is None


def test_sg_union_rule_ids_and_group_references():
    a_rules = (SgRule("sg-a", True, 0, 6, 443, 443, "cidr", "0.0.0.0/0", N("0.0.0.0/0")),)
    b_rules = (SgRule("sg-b", True, 0, 17, 53, 53, "cidr", "10.0.0.0/16", N("10.0.0.0/16")),
               SgRule("sg-b", True, 1, -1, -1, -1, "group", "sg-a"))
    groups = {"sg-a": SecurityGroup("sg-a", "vpc-1", egress=a_rules), "sg-b": SecurityGroup("sg-b", "vpc-1", egress=b_rules)}
    pair = Pair(_model(groups=groups), extra={"sg-a": ["10.0.1.50"]})
    core = pair.core
    s = core.group_set(["sg-a", "sg-b"])
    assert core.group_set(("sg-a", "sg-b")) == s
    assert core.rule_id(core.sg_allows(s, True, 6, 4, "8.8.8.8", 443)) == "sg-a:egress:0"
    assert core.sg_allows(s, True, 6, 4, "8.8.8.8", 444) == -1
    assert core.rule_id(core.sg_allows(s, True, 17, 4, "10.0.9.9", 53)) == "sg-b:egress:0"
    assert core.rule_id(core.sg_allows(s, True, 47, 4, "10.0.1.50", 0)) == "sg-b:egress:1"  # member of sg-a
    assert core.sg_allows(s, False, 6, 4, "8.8.8.8", 443) == -1  # no ingress rules
    assert core.sg_allows(["sg-nope"], True, 6, 4, "8.8.8.8", 443) == -1
    with pytest.raises(IndexError):
        core.sg_allows(99, True, 6, 4, "8.8.8.8", 443)


def test_nacl_first_match_and_star():
    entries = [NaclEntry(100, False, False, 6, N("10.0.0.0/8"), 22, 22), NaclEntry(110, False, True, -1, N("0.0.0.0/0")),
               NaclEntry(32767, False, False, -1, N("0.0.0.0/0")), NaclEntry(32768, False, False, -1, N("::/0")),
               NaclEntry(32767, True, False, -1, N("0.0.0.0/0"))]
    pair = Pair(_model(acl_entries=entries))
    core = pair.core
    assert core.nacl_evaluate(0, False, 6, 4, "10.1.1.1", 22) == (False, 100)
    assert core.nacl_evaluate(0, False, 6, 4, "10.1.1.1", 23) == (True, 110)
    assert core.nacl_evaluate(0, False, 6, 6, "2001:db8::1", 23) == (False, 32768)
    assert core.nacl_evaluate(0, True, 6, 6, "2001:db8::1", 23) == (False, 32768)  # nothing matched: `*`
    assert core.nacl_evaluate(-1, True, 6, 4, "10.1.1.1", 23) == (True, 32767)  # no ACL: allowed
    with pytest.raises(IndexError):
        core.nacl_evaluate(5, True, 6, 4, "10.1.1.1", 23)


def test_exempt_addresses():
    pair = Pair(_model())
    for ip, proto, port, want in [("10.0.0.2", 6, 53, True), ("10.0.1.1", 6, 80, True), ("169.254.169.254", 6, 80, True),
                                  ("169.254.169.253", 17, 53, True), ("fd00:ec2::253", 17, 53, True),
                                  ("10.0.1.2", 6, 53, False), ("8.8.8.8", 17, 67, True), ("8.8.8.8", 6, 67, False)]:
        assert pair.core.is_exempt(A(ip).version, ip, proto, port) is want
        assert pair.ref.is_exempt(A(ip).version, int(A(ip)), proto, port) is want


def test_batch_broadcasts_scalars_and_checks_indexes():
    pair = Pair(_model(routes=[Route(N("0.0.0.0/0"), None, "igw", "igw-1")]))
    rows = pair.core.route_lookup_batch(0, 4, 0, np.array([1, 2, 3], dtype=np.uint64))
    assert rows.tolist() == [pair.core.route_row(0, 4, 1)] * 3
    assert pair.core.route_lookup_batch(np.array([-1, 7, 0], dtype=np.int32), 4, 0, 5).tolist() == [-1, -1, rows[0]]
    assert pair.core.sg_allows_batch(-1, 1, 6, 4, 0, 5, 443).tolist() == [-1]


# --- the port index (hp_sg_index_build): many rules per TCP/UDP list ----------------------------

SG_PORTS = [0, 1, 21, 22, 23, 53, 80, 443, 1023, 1024, 8080, 65534, 65535]


@st.composite
def ported_case(draw):
    """Groups with enough rules that their TCP and UDP lists are indexed by port: exact ports,
    overlapping and nested ranges, "all" rows, empty ranges, group references."""
    group_ids = [f"sg-{i}" for i in range(draw(st.integers(1, 3)))]

    def rules(gid, egress):
        out = []
        for index in range(draw(st.integers(0, 30))):
            proto = draw(st.sampled_from([-1, 6, 6, 6, 17, 17, 1, 47]))
            if proto in (6, 17):
                lo = draw(st.sampled_from(SG_PORTS))
                hi = draw(st.sampled_from([lo, lo, lo, lo + 1, lo - 1, 1023, 65535] + SG_PORTS))
            elif proto == -1:
                lo = hi = -1
            else:
                lo, hi = 0, 65535
            if draw(st.integers(0, 9)) == 0:
                out.append(SgRule(gid, egress, index, proto, lo, hi, "group", draw(st.sampled_from(group_ids))))
            else:
                net = draw(st.sampled_from(POOL))
                out.append(SgRule(gid, egress, index, proto, lo, hi, "cidr", str(net), net))
        return tuple(out)

    groups = {g: SecurityGroup(g, "vpc-1", ingress=rules(g, False), egress=rules(g, True)) for g in group_ids}
    extra = {}
    for gid in draw(st.lists(st.sampled_from(group_ids), max_size=2, unique=True)):
        extra[gid] = draw(st.lists(st.sampled_from(["10.0.1.200", "10.0.1.7", "2001:db8::1", "192.0.2.5"]),
                                   min_size=1, max_size=3, unique=True))
    sets = draw(st.lists(st.lists(st.sampled_from(group_ids), min_size=1, max_size=3), min_size=1, max_size=3))
    return _model(groups=groups), extra, sets


def _ported_probes(model, extra):
    ports = {-1, 65536, 70000}
    for p in SG_PORTS:
        ports.update((p - 1, p, p + 1))
    addrs = interesting_addresses(model, extra)
    return [(ip, proto, port) for ip in addrs for proto in (6, 17, 1) for port in sorted(ports)
            if proto in (6, 17) or port == 0]


def _check_sg_only(pair, sets, probes):
    sets = [tuple(s) for s in sets] + [(g,) for g in pair.model.security_groups]
    for groups in dict.fromkeys(sets):
        s = pair.core.group_set(groups)
        for egress in (False, True):
            got = []
            for ip, proto, port in probes:
                got.append(pair.check_sg(groups, egress, proto, ip, port))
            ver = np.array([ip.version for ip, _, _ in probes], dtype=np.uint8)
            hi = np.array([int(ip) >> 64 for ip, _, _ in probes], dtype=np.uint64)
            lo = np.array([int(ip) & (2**64 - 1) for ip, _, _ in probes], dtype=np.uint64)
            proto = np.array([p for _, p, _ in probes], dtype=np.int16)
            port = np.array([p for _, _, p in probes], dtype=np.int32)
            assert pair.core.sg_allows_batch(s, int(egress), proto, ver, hi, lo, port).tolist() == got


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(ported_case())
def test_port_indexed_groups_agree_with_the_reference(case):
    model, extra, sets = case
    pair = Pair(model, extra)
    _check_sg_only(pair, sets, _ported_probes(model, extra))


def test_port_index_first_rule_and_nested_ranges():
    net = N("0.0.0.0/0")
    # an exact port after a covering range, an "all" row between them, a wide range last
    rules = [SgRule("sg-a", False, 0, 6, 1000, 2000, "cidr", "10.0.0.0/16", N("10.0.0.0/16")),
             SgRule("sg-a", False, 1, -1, -1, -1, "cidr", "192.0.2.0/24", N("192.0.2.0/24")),
             SgRule("sg-a", False, 2, 6, 1500, 1500, "cidr", "0.0.0.0/0", net)]
    rules += [SgRule("sg-a", False, 3 + i, 6, 22 + i, 22 + i, "cidr", "198.51.100.0/24", N("198.51.100.0/24"))
              for i in range(10)]
    rules.append(SgRule("sg-a", False, 13, 6, 0, 65535, "cidr", "0.0.0.0/0", net))
    # nested ranges: too many interval entries, so that list is scanned instead (same answers)
    nested = tuple(SgRule("sg-n", False, i, 17, i, 65535 - i, "cidr", f"10.{i % 256}.0.0/16", N(f"10.{i % 256}.0.0/16"))
                   for i in range(300))
    groups = {"sg-a": SecurityGroup("sg-a", "vpc-1", ingress=tuple(rules)),
              "sg-n": SecurityGroup("sg-n", "vpc-1", ingress=nested)}
    pair = Pair(_model(groups=groups))
    core = pair.core
    assert core._port_indexed(core.group_set(["sg-a"]), False, 6) == (True, 17)
    assert not core._port_indexed(core.group_set(["sg-a"]), False, 17)[0]  # one row: scanned
    assert not core._port_indexed(core.group_set(["sg-n"]), False, 17)[0]  # scanned
    assert core.rule_id(core.sg_allows(["sg-a"], False, 6, 4, "10.0.1.1", 1500)) == "sg-a:ingress:0"
    assert core.rule_id(core.sg_allows(["sg-a"], False, 6, 4, "192.0.2.1", 1500)) == "sg-a:ingress:1"
    assert core.rule_id(core.sg_allows(["sg-a"], False, 6, 4, "8.8.8.8", 1500)) == "sg-a:ingress:2"
    assert core.rule_id(core.sg_allows(["sg-a"], False, 6, 4, "8.8.8.8", 1501)) == "sg-a:ingress:13"
    assert core.rule_id(core.sg_allows(["sg-a"], False, 6, 4, "198.51.100.9", 25)) == "sg-a:ingress:6"
    assert core.sg_allows(["sg-a"], False, 6, 4, "8.8.8.8", 65536) == -1
    assert core.rule_id(core.sg_allows(["sg-n", "sg-a"], False, 17, 4, "10.5.0.1", 100)) == "sg-n:ingress:5"
    assert core.rule_id(core.sg_allows(["sg-n", "sg-a"], False, 17, 4, "10.5.0.1", 65535 - 5)) == "sg-n:ingress:5"
    assert core.sg_allows(["sg-n", "sg-a"], False, 17, 4, "10.5.0.1", 65535 - 4) == -1
    assert core.rule_id(core.sg_allows(["sg-n", "sg-a"], False, 17, 4, "10.4.0.1", 65535 - 4)) == "sg-n:ingress:4"
    probes = [(A(a), p, port) for a in ("10.5.0.1", "10.44.3.3", "192.0.2.1", "8.8.8.8", "198.51.100.9")
              for p in (6, 17) for port in (0, 4, 5, 6, 22, 31, 32, 299, 300, 1500, 65230, 65535, 65536)]
    _check_sg_only(pair, [["sg-n", "sg-a"], ["sg-a", "sg-n"]], probes)
