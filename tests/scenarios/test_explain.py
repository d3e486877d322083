"""``engine.explain``: the classic questions, answered hop by hop with a one-line fix."""
from __future__ import annotations

from builders import acl, rule, standard_vpc
from hyperplane.codes import DropReason


def kinds(trace):
    return [(h.leg, h.kind, h.component, h.decision) for h in trace.hops]


def test_reachable_database(make_engine):
    engine = make_engine(standard_vpc().build())
    trace = engine.explain("fn", "10.0.2.15", 5432, "tcp")
    assert trace.reachable and trace.hint is None
    hops = kinds(trace)
    assert ("request", "security-group", "sg-fn", "allow") in hops
    assert any(k == "hyperplane-eni" and d == "translate" for _, k, _, d in hops)
    assert ("request", "route-table", "rtb-app", "forward") in hops
    assert ("request", "security-group", "sg-db", "allow") in hops
    assert ("reply", "security-group", "sg-fn", "stateful") in hops
    assert hops[-1] == ("reply", "verdict", "-", "forward")
    assert engine.summary()["packets"] == 0 and engine.connections() == []  # a throwaway copy


def test_function_in_a_public_subnet_cannot_reach_the_internet(make_engine):
    b = standard_vpc()
    b.function("fn", ["subnet-pub"], ["sg-fn"])
    trace = make_engine(b.build()).explain("fn", "93.184.216.34", 443, "tcp")
    assert not trace.reachable
    assert trace.reason == DropReason.NO_PUBLIC_IP and trace.rule == "0.0.0.0/0 -> igw-1"
    assert trace.explanation_code == "IGW_PUBLIC_IP_ASSOCIATION"
    assert "NAT gateway" in trace.hint and "public" in trace.hint


def test_nacl_blocks_return_traffic(make_engine):
    b = standard_vpc()
    b.nacl("acl-app", ["subnet-app"], ingress=[acl(100, "allow", "tcp", "0.0.0.0/0", 443)],
           egress=[acl(100, "allow")])
    trace = make_engine(b.build()).explain("fn", "93.184.216.34", 443, "tcp")
    assert trace.request.forwarded and not trace.reachable
    assert (trace.reason, trace.component, trace.rule) == (DropReason.NACL_INGRESS, "acl-app", "*")
    assert trace.hint == "add an inbound rule to acl-app allowing TCP 1024-65535 from 0.0.0.0/0"
    assert ("reply", "network-acl", "acl-app", "deny") in kinds(trace)


def test_database_sg_does_not_reference_the_function_group(make_engine):
    b = standard_vpc()
    b.sg("sg-db", ingress=[rule("tcp", 5432, cidr="10.0.9.0/24")])
    trace = make_engine(b.build()).explain("fn", "10.0.2.15", 5432, "tcp")
    assert (trace.reason, trace.component) == (DropReason.SG_INGRESS, "sg-db")
    assert trace.hint == "add an inbound rule to sg-db allowing TCP 5432 from sg-fn (the function's security group)"
    assert ("request", "security-group", "sg-db", "deny") in kinds(trace)
    assert "sg-ingress" in str(trace) and "fix:" in str(trace)


def test_udp_and_missing_route(make_engine):
    b = standard_vpc()
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [])
    trace = make_engine(b.build()).explain("fn", "8.8.8.8", 53, "udp")
    assert (trace.reason, trace.component) == (DropReason.NO_ROUTE, "rtb-app")
    assert trace.hint == "add a route to 8.8.8.8 in rtb-app"
    assert trace.as_dict()["protocol"] == "udp"


def test_explain_after_traffic_keeps_the_engine_state(make_engine):
    from table import DB, NET, SB, tcp

    engine = make_engine(standard_vpc().build())
    engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    engine.process(tcp(SB, NET, 40001, 443), 1.1)  # through the NAT gateway: its port pool exists too
    before = (engine.summary(), len(engine.connections()))
    assert engine.explain("fn", DB, 5432, "tcp").reachable
    assert engine.explain("fn", NET, 443, "tcp").reachable
    assert (engine.summary(), len(engine.connections())) == before
