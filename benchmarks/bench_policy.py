"""SG, NACL and route decisions per second: compiled _core.Policy batches vs the reference Python.

    python -m benchmarks.bench_policy [--quick] [--json] [--seed N]

Realistic sizes: an interface with 5 security groups of 60 rules per direction, a NACL of 20
rules per direction (plus the ``*`` rows), a route table of 50 routes (a few prefix-list routes).
Traffic: random new connections, 80 % aimed at a rule or route (an address inside its prefix,
a port inside its range), 20 % random; the same probes for both backends. Each row is the
median of the runner's samples. The compiled rows call the nogil batch loops
(``sg_allows_batch``, ``nacl_evaluate_batch``, ``route_lookup_batch``); the reference rows call
hyperplane/reference/policy.py's ``sg_match`` / ``nacl_check`` / ``route`` in a Python loop.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys

import numpy as np

from benchmarks.runner import Runner, Suite, print_table
from hyperplane import _core
from hyperplane.reference.policy import Policy as RefPolicy
from hyperplane.vpc.compiled import compile_model
from hyperplane.vpc.model import (
    NaclEntry, NetworkAcl, NetworkInterface, PrefixList, Route, RouteTable, SecurityGroup, SgRule, Subnet, Vpc,
    VpcModel,
)

N = ipaddress.ip_network


def _random_net(rng: random.Random, lo: int = 8, hi: int = 28) -> ipaddress.IPv4Network:
    plen = rng.randint(lo, hi)
    base = rng.choice([10 << 24, 172 << 24 | 16 << 16, rng.getrandbits(32)])
    addr = (base | rng.getrandbits(32 - 8)) if base >> 24 == 10 else rng.getrandbits(32)
    return ipaddress.IPv4Network((addr & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF, plen))


def build_model(rng: random.Random, groups: int = 5, sg_rules: int = 60, nacl_rules: int = 20,
                routes: int = 50) -> VpcModel:
    vpc = Vpc("vpc-1", "111122223333", (N("10.0.0.0/16"),))
    subnet = Subnet("subnet-1", "vpc-1", N("10.0.1.0/24"))
    gids = [f"sg-{i:02d}" for i in range(groups)]
    enis = {f"eni-{k}": NetworkInterface(f"eni-{k}", "vpc-1", "subnet-1", (ipaddress.IPv4Address(0x0A000100 + 10 + k),),
                                         group_ids=(gids[k % groups],)) for k in range(20)}

    def rules(gid, egress):
        out = []
        for i in range(sg_rules):
            proto = rng.choice([6, 6, 6, 6, 17, -1])
            if proto == -1:
                lo = hi = -1
            else:
                lo = rng.choice([22, 80, 443, 1024, 3306, 5432, 6379, 8080, 9000 + i])
                hi = lo if rng.random() < 0.8 else min(65535, lo + rng.randint(1, 2000))
            if rng.random() < 0.1:
                out.append(SgRule(gid, egress, i, proto, lo, hi, "group", rng.choice(gids)))
            else:
                net = _random_net(rng, 16, 32)
                out.append(SgRule(gid, egress, i, proto, lo, hi, "cidr", str(net), net))
        return tuple(out)

    sgs = {g: SecurityGroup(g, "vpc-1", ingress=rules(g, False), egress=rules(g, True)) for g in gids}
    entries = []
    for egress in (False, True):
        for k in range(nacl_rules):
            proto = rng.choice([6, 6, 17, -1])
            lo = rng.choice([0, 22, 80, 443, 1024])
            hi = rng.choice([lo, 1023, 65535]) if proto != -1 else 65535
            entries.append(NaclEntry(100 + 10 * k, egress, rng.random() < 0.7, proto, _random_net(rng, 8, 24), lo, max(lo, hi)))
        entries.append(NaclEntry(32767, egress, False, -1, N("0.0.0.0/0")))
    acl = NetworkAcl("acl-1", "vpc-1", True, tuple(entries))
    pls = {f"pl-{i}": PrefixList(f"pl-{i}", f"pl-{i}", tuple(_random_net(rng, 12, 24) for _ in range(4))) for i in range(3)}
    table = [Route(N("10.0.0.0/16"), None, "local", "local", origin="CreateRouteTable"),
             Route(N("0.0.0.0/0"), None, "nat", "nat-1")]
    for k in range(routes - 2 - len(pls)):
        kind = rng.choice(["tgw", "pcx", "vgw", "igw"])
        table.append(Route(_random_net(rng, 8, 28), None, kind, f"{kind}-{k % 4}",
                           origin="EnableVgwRoutePropagation" if kind == "vgw" else "CreateRoute"))
    table += [Route(None, pid, "vpce", "vpce-1") for pid in pls]
    rtb = RouteTable("rtb-1", "vpc-1", True, (), tuple(table))
    return VpcModel(vpcs={"vpc-1": vpc}, subnets={"subnet-1": subnet}, security_groups=sgs, network_acls={"acl-1": acl},
                    route_tables={"rtb-1": rtb}, prefix_lists=pls, network_interfaces=enis)


def _inside(rng: random.Random, net) -> int:
    return int(net.network_address) + rng.randrange(net.num_addresses)


def probes(rng: random.Random, model: VpcModel, n: int, hit: float = 0.8):
    """n (egress, proto, addr, port): ``hit`` of them aimed inside a rule's / route's prefix."""
    sg_nets = [(r.network, r.protocol, r.from_port, r.to_port) for g in model.security_groups.values()
               for r in g.egress + g.ingress if r.network is not None]
    acl = next(iter(model.network_acls.values()))
    acl_nets = [(e.network, e.protocol, e.port_from, e.port_to) for e in acl.entries if e.rule_number < 32767]
    route_nets = [(r.destination, 6, 0, 65535) for r in next(iter(model.route_tables.values())).routes if r.destination]
    targets = sg_nets + acl_nets + route_nets
    out = []
    for _ in range(n):
        egress = rng.random() < 0.5
        if rng.random() < hit:
            net, proto, lo, hi = rng.choice(targets)
            proto = rng.choice([6, 17]) if proto == -1 else proto
            port = rng.randint(max(lo, 0), max(hi, 0)) if proto in (6, 17) else 0
            out.append((egress, proto, _inside(rng, net), port))
        else:
            out.append((egress, rng.choice([6, 17]), rng.getrandbits(32), rng.randint(1, 65535)))
    return out


def run(quick: bool = False, seed: int = 2024) -> tuple[Suite, dict]:
    rng = random.Random(seed)
    model = build_model(rng)
    compiled = compile_model(model)
    core = _core.Policy(compiled)
    ref = RefPolicy(model)
    groups = tuple(model.security_groups)
    gset = core.group_set(groups)
    n = 20_000 if quick else 200_000
    n_ref = 2_000 if quick else 20_000
    pr = probes(rng, model, n)
    egress = np.array([p[0] for p in pr], dtype=np.uint8)
    proto = np.array([p[1] for p in pr], dtype=np.int16)
    lo = np.array([p[2] for p in pr], dtype=np.uint64)
    hi = np.zeros(n, dtype=np.uint64)
    port = np.array([p[3] for p in pr], dtype=np.int32)
    ver = np.full(n, 4, dtype=np.uint8)
    sets = np.full(n, gset, dtype=np.int32)
    acls = np.zeros(n, dtype=np.int32)
    tables = np.zeros(n, dtype=np.int32)
    acl_id, table_id = compiled.nacls.ids[0], compiled.routes.ids[0]
    sub = pr[:n_ref]

    # sameness on the benchmark's own traffic (cheap insurance that the numbers compare equal work)
    sg_out = core.sg_allows_batch(sets, egress, proto, ver, hi, lo, port)
    nacl_allow, nacl_rule = core.nacl_evaluate_batch(acls, egress, proto, ver, hi, lo, port)
    rows = core.route_lookup_batch(tables, ver, hi, lo)
    for i, (e, p, a, d) in enumerate(sub[:2000]):
        assert core.rule_id(int(sg_out[i])) == ref.sg_match(groups, e, p, 4, a, d)
        assert bool(nacl_allow[i]) == ref.nacl_check(acl_id, e, p, 4, a, d).allow
        hit = ref.route(table_id, 4, a)
        assert (int(rows[i]) < 0) == (hit is None)

    runner = Runner(repeat=5 if quick else 9, warmup=1, min_sample_s=0.02 if quick else 0.1)
    suite = Suite("policy decisions")
    sizes = {"sg_rules_per_direction": 60 * len(groups), "nacl_rules_per_direction": 20, "routes": 50,
             "allowed_fraction_sg": float((sg_out >= 0).mean()), "allowed_fraction_nacl": float(nacl_allow.mean())}

    def ref_sg():
        for e, p, a, d in sub:
            ref.sg_match(groups, e, p, 4, a, d)

    def ref_nacl():
        for e, p, a, d in sub:
            ref.nacl_check(acl_id, e, p, 4, a, d)

    def ref_route():
        for _e, _p, a, _d in sub:
            ref.route(table_id, 4, a)

    suite.add(runner.measure("reference sg_match", ref_sg, items=len(sub), group="security groups (5 x 60 rules)", unit="decisions"))
    suite.add(runner.measure("core sg_allows_batch", lambda: core.sg_allows_batch(sets, egress, proto, ver, hi, lo, port),
                             items=n, group="security groups (5 x 60 rules)", unit="decisions"))
    suite.add(runner.measure("reference nacl_check", ref_nacl, items=len(sub), group="network ACL (20 rules)", unit="decisions"))
    suite.add(runner.measure("core nacl_evaluate_batch",
                             lambda: core.nacl_evaluate_batch(acls, egress, proto, ver, hi, lo, port),
                             items=n, group="network ACL (20 rules)", unit="decisions"))
    suite.add(runner.measure("reference route", ref_route, items=len(sub), group="route table (50 routes)", unit="decisions"))
    suite.add(runner.measure("core route_lookup_batch", lambda: core.route_lookup_batch(tables, ver, hi, lo),
                             items=n, group="route table (50 routes)", unit="decisions"))
    return suite, sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_policy", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches, fewer repetitions")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    suite, sizes = run(quick=args.quick, seed=args.seed)
    if args.json:
        out = suite.to_dict()
        out["data"] = sizes
        print(json.dumps(out, indent=2, default=str))
    else:
        from rich.console import Console

        print_table(suite, console=Console(width=160))
        print(sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
