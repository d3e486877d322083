"""ENI capacity edges: the last connection an ENI takes and the first that overflows, with
destinations mixed (ports are reused across destinations, never within one)."""
from __future__ import annotations

import gc

import pytest

from builders import standard_vpc
from hyperplane import limits, packet as pk
from hyperplane.reference.dataplane import build_packet

SB_BASE = (169 << 24) | (254 << 16)
DESTS = [(10 << 24) | (2 << 8) | 15, (10 << 24) | (2 << 8) | 16]


def open_connections(engine, count, t=1.0):
    results = []
    for i in range(count):
        src = SB_BASE + 1 + i % 60000
        sport = 1024 + i // 60000
        results.append(engine.process(build_packet(4, src, DESTS[i % 2], 17, sport, 5432, payload=b"x"), t))
    return results


def two_destinations():
    b = standard_vpc()
    b.interface("eni-db2", "subnet-db", "10.0.2.16", groups=["sg-db"])
    return b.build()


@pytest.mark.parametrize("count, enis", [(4, 1), (5, 1), (6, 2)])
def test_capacity_edge_small(make_engine, count, enis):
    engine = make_engine(two_destinations(), {"169.254.0.0/16": "fn"}, eni_capacity=5)
    results = open_connections(engine, count)
    assert all(r.forwarded for r in results)
    used = {r.eni_id for r in results}
    assert len(used) == enis
    assert len(engine.summary()["enis"]) == enis
    vpc_tuples = {(pk.parse(r.taps["eni"]).src, pk.parse(r.taps["eni"]).sport, pk.parse(r.taps["eni"]).dst)
                  for r in results}
    assert len(vpc_tuples) == count


def test_ports_are_reused_across_destinations_but_unique_per_destination(make_engine):
    engine = make_engine(two_destinations(), {"169.254.0.0/16": "fn"}, port_range=(1024, 1027))
    results = open_connections(engine, 8)
    assert {r.eni_id for r in results} == {results[0].eni_id}
    by_dest: dict = {}
    for r in results:
        p = pk.parse(r.taps["eni"])
        by_dest.setdefault(p.dst, set()).add(p.sport)
    assert all(ports == {1024, 1025, 1026, 1027} for ports in by_dest.values())
    ninth = open_connections(engine, 9)[-1]  # the ninth flow finds the pool full: a new ENI
    assert ninth.forwarded and ninth.eni_id != results[0].eni_id


@pytest.mark.slow
def test_capacity_edge_at_the_aws_default(make_engine):
    """64,999 and 65,000 connections fit one ENI; the 65,001st overflows to a new one."""
    engine = make_engine(two_destinations(), {"169.254.0.0/16": "fn"}, timeouts={"udp": 60})
    gc.collect()
    gc.freeze()  # earlier tests' objects need not be scanned 65,000 times over
    try:
        results = open_connections(engine, limits.ENI_CAPACITY + 1)
    finally:
        gc.unfreeze()
    assert all(r.forwarded for r in results)
    first = results[0].eni_id
    assert all(r.eni_id == first for r in results[: limits.ENI_CAPACITY])
    assert results[limits.ENI_CAPACITY].eni_id != first
    enis = {e["id"]: e for e in engine.summary()["enis"]}
    assert enis[first]["peak_connections"] == limits.ENI_CAPACITY
