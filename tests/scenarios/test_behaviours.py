"""Behaviours that take a sequence of steps with state in between: conntrack expiry and reuse,
configuration changes, flow logs, fragments, counters, the facade's contract."""
from __future__ import annotations

import dataclasses

import pytest
from scapy.layers.inet import IP, UDP

from builders import acl, rule, standard_vpc
from result_checks import check_result
from hyperplane import packet as pk
from hyperplane.codes import DropReason, Verdict
from hyperplane.engine import Engine, EngineOptions, Sandbox
from table import DB, ENI_IP, NET, SB, tcp, udp


def eni_endpoint(result):
    p = pk.parse(result.taps["eni"])
    return p.src_ip, p.sport


# --- conntrack ------------------------------------------------------------------------------------


def test_udp_expiry_frees_the_port_and_the_eni_slot(make_engine):
    engine = make_engine(standard_vpc().build())
    first = engine.process(udp(SB, DB, 40000, 5432), 1.0)
    eni = engine.control.get_eni(first.eni_id)
    assert eni.connections == 1
    assert engine.process(udp(SB, DB, 40000, 5432), 20.0).forwarded  # refreshes the 30 s timer
    engine.process(udp(SB, "10.0.2.16", 1, 1), 49.0)  # time passes: 29 s idle, still alive
    assert eni.connections == 1 and len(engine.connections()) == 1
    engine.process(udp(SB, "10.0.2.16", 1, 1), 50.5)  # 30.5 s idle: expired
    assert eni.connections == 0 and engine.connections() == []
    assert engine.process(udp(DB, SB, 5432, 40000), 51.0).reason == DropReason.UNSOLICITED_INBOUND
    again = engine.process(udp(SB, DB, 40000, 5432), 52.0)
    assert again.forwarded and engine.summary()["connections"] == 2


def test_udp_stream_timeout_after_two_exchanges(make_engine):
    engine = make_engine(standard_vpc().build())
    for t in (1.0, 3.0):
        engine.process(udp(SB, DB, 40000, 5432), t)
        engine.process(udp(DB, SB, 5432, 40000), t + 0.5)
    engine.process(udp(SB, "10.0.2.16", 1, 1), 100.0)  # 96.5 s idle: a stream lives 180 s
    assert engine.process(udp(DB, SB, 5432, 40000), 101.0).forwarded


def test_time_wait_is_reused_by_a_new_syn_with_the_same_eni_port(make_engine):
    engine = make_engine(standard_vpc().build())
    steps = [(SB, DB, "S"), (DB, SB, "SA"), (SB, DB, "A"), (SB, DB, "FA"), (DB, SB, "FA"), (SB, DB, "A")]
    first = None
    for i, (src, dst, flags) in enumerate(steps):
        sport, dport = (40000, 5432) if src == SB else (5432, 40000)
        result = engine.process(tcp(src, dst, sport, dport, flags, seq=i, ack=i), 1.0 + i / 10)
        assert result.forwarded, result
        first = first or eni_endpoint(result)
    assert engine.connections()[0].state_name() == "TIME_WAIT"
    reopened = engine.process(tcp(SB, DB, 40000, 5432, "S", seq=99), 5.0)
    assert reopened.forwarded and eni_endpoint(reopened) == first
    assert engine.connections()[0].state_name() == "SYN_SENT"


def test_rst_closes_and_the_close_timeout_frees_the_connection(make_engine):
    engine = make_engine(standard_vpc().build())
    engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    engine.process(tcp(DB, SB, 5432, 40000, "R"), 1.1)
    assert engine.connections()[0].state_name() == "CLOSE"
    engine.process(udp(SB, "10.0.2.16", 1, 1), 11.2)  # CLOSE lasts 10 s
    assert [c for c in engine.connections() if c.proto == 6] == []


def test_conntrack_timeouts_come_from_the_options(make_engine):
    engine = make_engine(standard_vpc().build(), timeouts={"udp": 45})
    engine.process(udp(SB, DB, 40000, 5432), 1.0)
    engine.process(udp(SB, "10.0.2.16", 1, 1), 40.0)
    assert engine.process(udp(DB, SB, 5432, 40000), 41.0).forwarded


# --- configuration changes -------------------------------------------------------------------------


def test_sg_change_keeps_tracked_connections_and_applies_to_new_ones(make_engine):
    b = standard_vpc()
    engine = make_engine(b.build())
    assert engine.process(tcp(SB, DB, 40000, 5432), 1.0).forwarded
    b.sg("sg-db", ingress=[])
    engine.update_config(b.build())
    assert engine.process(tcp(SB, DB, 40000, 5432, "A", seq=1001), 2.0).forwarded
    assert engine.process(tcp(DB, SB, 5432, 40000, "A", ack=1001), 2.1).forwarded
    refused = engine.process(tcp(SB, DB, 40001, 5432), 2.2)
    assert (refused.reason, refused.component) == (DropReason.SG_INGRESS, "sg-db")


def test_untracked_flow_is_interrupted_when_its_rule_goes():
    """sg-fn allows all egress and all ingress from 0.0.0.0/0: the flow is untracked (AWS-FACTS 2),
    so removing the egress rule stops the live connection at its next packet."""
    b = standard_vpc()
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "pcx-1")])
    b.sg("sg-fn", ingress=[rule("all", cidr="0.0.0.0/0")], egress=[rule("all", cidr="0.0.0.0/0")])
    engine = Engine(b.build(), {"169.254.76.0/24": "fn"})
    assert engine.process(tcp(SB, NET, 40000, 443), 1.0).forwarded
    assert engine.connections()[0].untracked
    b.sg("sg-fn", ingress=[rule("all", cidr="0.0.0.0/0")], egress=[rule("tcp", 5432, cidr="10.0.0.0/16")])
    engine.update_config(b.build())
    result = engine.process(tcp(SB, NET, 40000, 443, "A", seq=1001), 2.0)
    assert (result.reason, result.component) == (DropReason.SG_EGRESS, "sg-fn")


def test_nacl_change_applies_to_the_next_packet_of_a_live_connection(make_engine):
    b = standard_vpc()
    engine = make_engine(b.build())
    assert engine.process(tcp(SB, DB, 40000, 5432), 1.0).forwarded
    b.nacl("acl-app", ["subnet-app"], ingress=[acl(100, "allow")], egress=[acl(50, "deny", "tcp", "10.0.2.0/24", 5432),
                                                                           acl(100, "allow")])
    engine.update_config(b.build())
    result = engine.process(tcp(SB, DB, 40000, 5432, "A", seq=1001), 2.0)
    assert (result.reason, result.component, result.rule) == (DropReason.NACL_EGRESS, "acl-app", "50")


def test_route_turned_blackhole_stops_a_live_connection(make_engine):
    b = standard_vpc()
    engine = make_engine(b.build())
    assert engine.process(tcp(SB, NET, 40000, 443), 1.0).forwarded
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "nat-1", "blackhole")])
    engine.update_config(b.build())
    assert engine.process(tcp(SB, NET, 40000, 443, "A"), 2.0).reason == DropReason.BLACKHOLE_ROUTE


def test_a_new_connection_is_planned_under_the_configuration_of_its_time(make_engine):
    """Connections to one destination share their plan (route, steps) until the configuration
    changes: the next new connection to it takes the new route."""
    b = standard_vpc()
    engine = make_engine(b.build())
    first = engine.process(tcp(SB, NET, 40000, 443), 1.0)
    second = engine.process(tcp(SB, NET, 40001, 443), 1.5)
    assert first.forwarded and second.forwarded and eni_endpoint(first) != eni_endpoint(second)
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "nat-1", "blackhole")])
    engine.update_config(b.build())
    assert engine.process(tcp(SB, NET, 40002, 443), 2.0).reason == DropReason.BLACKHOLE_ROUTE
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "nat-1")])
    engine.update_config(b.build())
    assert engine.process(tcp(SB, NET, 40003, 443), 3.0).forwarded


def test_a_new_configuration_decides_new_connections_to_known_destinations_afresh(make_engine):
    """What opening a connection keeps per destination under one configuration (the function's
    SG egress decision, ``Dataplane._egress``; the NACL checks a plan leaves out because they
    allow every port, ``Dataplane._at_creation``) is dropped with it: the next new connection to
    a destination already decided meets the new rules, on both legs."""
    b = standard_vpc()
    engine = make_engine(b.build())
    assert engine.process(tcp(SB, DB, 40000, 5432), 1.0).forwarded
    assert engine.process(tcp(SB, NET, 40000, 443), 1.0).forwarded
    b.sg("sg-fn", egress=[rule("tcp", 443, cidr="0.0.0.0/0")])
    engine.update_config(b.build())
    refused = engine.process(tcp(SB, DB, 40001, 5432), 2.0)
    assert (refused.reason, refused.component) == (DropReason.SG_EGRESS, "sg-fn")
    b.sg("sg-fn", egress=[rule("all", cidr="0.0.0.0/0")])
    b.nacl("acl-app", ["subnet-app"], ingress=[acl(50, "deny", "tcp", "10.0.2.0/24"), acl(100, "allow")],
           egress=[acl(50, "deny", "tcp", "0.0.0.0/0", 443), acl(100, "allow")])
    engine.update_config(b.build())
    refused = engine.process(tcp(SB, NET, 40002, 443), 3.0)
    assert (refused.reason, refused.component, refused.rule) == (DropReason.NACL_EGRESS, "acl-app", "50")
    opened = engine.process(tcp(SB, DB, 40003, 5432), 3.0)
    assert opened.forwarded
    _, port = eni_endpoint(opened)
    reply = engine.process(tcp(DB, ENI_IP, 5432, port, "SA", ack=1001), 3.5)
    assert (reply.reason, reply.component, reply.rule) == (DropReason.NACL_INGRESS, "acl-app", "50")
    # the destination's SG (decided when the plan was made: only log points come before it)
    b.sg("sg-db", ingress=[rule("tcp", 5433, group="sg-fn")], egress=[rule("all", cidr="0.0.0.0/0")])
    engine.update_config(b.build())
    refused = engine.process(tcp(SB, DB, 40004, 5432), 4.0)
    assert (refused.reason, refused.component) == (DropReason.SG_INGRESS, "sg-db")


def test_planning_reads_no_group_membership_the_opening_walk_would_not(make_engine):
    """A plan decides the destination's security-group check of the opening walk in advance
    only when nothing can stop that walk before it (log points only): here the destination
    subnet's NACL refuses the connection first, so sg-db's reference to sg-fn (the group whose
    membership includes the Hyperplane ENIs) is never read, as the walk alone would not read it;
    once the NACL lets the connection through, it is read."""
    b = standard_vpc()
    b.nacl("acl-db", ["subnet-db"], ingress=[acl(50, "deny", "tcp", "10.0.1.0/24", 5432), acl(100, "allow")],
           egress=[acl(100, "allow")])
    engine = make_engine(b.build())
    refused = engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    assert (refused.reason, refused.component, refused.rule) == (DropReason.NACL_INGRESS, "acl-db", "50")
    dp = getattr(engine._impl, "dp", engine._impl)  # the core backend's slow path, or the reference
    assert "sg-fn" not in dp.policy._members_cache
    b.nacl("acl-db", ["subnet-db"], ingress=[acl(100, "allow")], egress=[acl(100, "allow")])
    engine.update_config(b.build())
    assert engine.process(tcp(SB, DB, 40001, 5432), 2.0).forwarded
    assert "sg-fn" in dp.policy._members_cache


def test_a_new_hyperplane_eni_decides_the_function_egress_afresh(make_engine):
    """The function's SG egress decision kept per destination (``Dataplane._egress``) depends on
    group membership, which the Hyperplane ENIs are part of: a new (overflow) ENI drops it. Here
    sg-fn allows port 80 to sg-fn's members only; the overflow ENI's address becomes one."""
    b = standard_vpc()
    b.sg("sg-fn", egress=[rule("tcp", 5432, group="sg-db"), rule("tcp", 80, group="sg-fn")])
    engine = make_engine(b.build(), eni_capacity=1)
    overflow_ip = "10.0.1.5"  # the next free address of subnet-app, after ENI_IP
    refused = engine.process(tcp(SB, overflow_ip, 40000, 80), 1.0)
    assert (refused.reason, refused.component) == (DropReason.SG_EGRESS, "sg-fn")
    first = engine.process(tcp(SB, DB, 40001, 5432), 2.0)
    second = engine.process(tcp(SB, DB, 40002, 5432), 3.0)  # the first ENI is full: an overflow ENI
    assert first.forwarded and second.forwarded and second.eni_id != first.eni_id
    assert str(engine.control.get_eni(second.eni_id).private_ip) == overflow_ip
    # a member now: the egress rule allows it, and V2N carries nothing into a Hyperplane ENI
    again = engine.process(tcp(SB, overflow_ip, 40003, 80), 4.0)
    assert (again.reason, again.component) == (DropReason.UNSOLICITED_INBOUND, second.eni_id)


def test_what_opening_keeps_per_destination_stays_bounded(make_engine, monkeypatch):
    """Plans and the function's egress decisions start over past PLAN_CACHE_SIZE destinations (a
    scan of the address space must not grow them without bound)."""
    from hyperplane.reference import dataplane

    monkeypatch.setattr(dataplane, "PLAN_CACHE_SIZE", 4)
    engine = make_engine(standard_vpc().build())
    for k in range(10):
        assert engine.process(tcp(SB, f"198.51.100.{k + 1}", 40000 + k, 443), 1.0).forwarded
    dp = getattr(engine._impl, "dp", engine._impl)  # the core backend's slow path, or the reference
    assert 0 < len(dp._plans) <= 4 and 0 < len(dp._egress) <= 4


def test_shared_plans_change_nothing_a_replay_shows():
    """The demo (a NAT gateway, a security-group reference, NACL- and SG-refused connections, an
    overflow ENI) replayed with plans shared per destination and with every connection planned
    afresh: the same results packet by packet, the same v5 flow logs and summary."""
    import os

    from hyperplane.commands.common import load_model, parse_sandboxes
    from hyperplane.commands.demo import load_manifest
    from hyperplane.flowlogs import V5_CUSTOM_FIELDS
    from hyperplane.io import open_capture

    class Forgetful(dict):  # a plan cache that keeps nothing
        def __setitem__(self, key, value):
            pass

    folder = os.path.join(os.path.dirname(__file__), "..", "..", "pcaps", "demo")
    manifest = load_manifest(folder)
    model = load_model([os.path.join(folder, manifest["vpc"])])
    options = EngineOptions(eni_capacity=manifest["options"]["eni_capacity"], flow_log_fields=V5_CUSTOM_FIELDS)
    shared, afresh = (Engine(model, parse_sandboxes(manifest["sandboxes"]), options, backend="reference")
                      for _ in range(2))
    with open_capture(os.path.join(folder, manifest["capture"])) as reader:
        for batch in reader:
            for off, n, ts in zip(batch.offsets, batch.lengths, batch.timestamps):
                frame = bytes(batch.buffer[off : off + n])
                afresh._impl._plans = Forgetful()  # (a new ENI or configuration empties the cache: a new dict)
                a, b = shared.process(frame, float(ts)), afresh.process(frame, float(ts))
                assert (a.verdict, a.reason, a.component, a.rule, a.taps, a.eni_id) == \
                       (b.verdict, b.reason, b.component, b.rule, b.taps, b.eni_id)
    assert len(shared._impl._plans) > 1 and not afresh._impl._plans
    assert [r.format(V5_CUSTOM_FIELDS) for r in shared.flow_logs()] == \
           [r.format(V5_CUSTOM_FIELDS) for r in afresh.flow_logs()]
    assert shared.summary() == afresh.summary()


# --- the VPC-side form of replies, fragments ------------------------------------------------------


def test_a_reply_in_its_vpc_form_is_translated_back_to_the_sandbox(make_engine):
    engine = make_engine(standard_vpc().build())
    out = engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    eni_ip, eni_port = eni_endpoint(out)
    vpc_reply = bytes(tcp(DB, eni_ip, 5432, eni_port, "SA", ack=1001))
    result = engine.process(vpc_reply, 1.1)
    check_result(result)
    assert result.forwarded and result.taps["eni"] == vpc_reply
    p = pk.parse(result.taps["lambda"])
    assert (p.src_ip, p.sport, p.dst_ip, p.dport) == (DB, 5432, SB, 40000)


def test_udp_fragments_follow_their_first_fragment(make_engine):
    engine = make_engine(standard_vpc().build())
    datagram = IP(src=SB, dst=DB, id=777) / UDP(sport=40000, dport=5432) / (b"z" * 64)
    first, second = datagram.fragment(40)
    r1 = engine.process(first, 1.0)
    r2 = engine.process(second, 1.0)
    assert r1.forwarded and r2.forwarded
    assert pk.parse(r2.taps["eni"]).src_ip == ENI_IP
    orphan = IP(src=SB, dst=DB, id=778, frag=5) / (b"z" * 16)
    assert engine.process(orphan, 1.0).reason == DropReason.UNSUPPORTED_PROTOCOL


# --- flow logs ------------------------------------------------------------------------------------


def _records(engine):
    return [(r.interface_id, r.srcaddr, r.dstaddr, r.dstport, r.action) for r in engine.flow_logs()]


def test_sg_reject_is_logged_once_on_the_destination(make_engine):
    b = standard_vpc()
    b.sg("sg-db", ingress=[])
    engine = make_engine(b.build())
    result = engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    records = _records(engine)
    assert [r for r in records if r[4] == "REJECT"] == [("eni-db", ENI_IP, DB, 5432, "REJECT")]
    assert (result.eni_id, ENI_IP, DB, 5432, "ACCEPT") in records


def test_nacl_reject_of_the_reply_is_a_reject_beside_the_accept(make_engine):
    b = standard_vpc()
    b.nacl("acl-app", ["subnet-app"], ingress=[acl(100, "allow", "tcp", "0.0.0.0/0", 443)], egress=[acl(100, "allow")])
    engine = make_engine(b.build())
    out = engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    engine.process(tcp(DB, SB, 5432, 40000, "SA"), 1.1)
    _, port = eni_endpoint(out)
    records = _records(engine)
    assert (out.eni_id, ENI_IP, DB, 5432, "ACCEPT") in records
    assert (out.eni_id, DB, ENI_IP, port, "REJECT") in records


def test_amazon_dns_is_not_flow_logged(make_engine):
    engine = make_engine(standard_vpc().build())
    engine.process(udp(SB, "10.0.0.2", 40000, 53), 1.0)
    engine.process(udp("10.0.0.2", SB, 53, 40000), 1.1)
    assert engine.flow_logs() == []


def test_flow_log_account_is_the_owner_of_the_vpc(make_engine):
    engine = make_engine(standard_vpc().build())
    engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    records = engine.flow_logs()
    assert records and {r.account_id for r in records} == {"111122223333"}


@pytest.mark.parametrize("other_packet", [False, True])
def test_timers_fire_in_time_order_whatever_the_packets_between(make_engine, other_packet):
    """A NAT mapping idle since D is forgotten at D (IdleTimeoutCount + 1) even when the
    connection's own timer also runs out before the next packet: the timers fire in their time
    order, so the counters do not depend on whether some unrelated packet came in between."""
    engine = make_engine(standard_vpc().build(), timeouts={"tcp_established": 600})
    engine.process(tcp(SB, NET, 40000, 443), 1.0)
    engine.process(tcp(NET, SB, 443, 40000, "SA"), 1.1)
    engine.process(tcp(SB, NET, 40000, 443, "A"), 1.2)  # NAT idle at 351.2, conntrack expiry at 601.2
    if other_packet:  # moves the clock past the NAT deadline only
        engine.process(udp(SB, "10.0.2.16", 1, 1), 400.0)
    engine.process(udp(SB, "10.0.2.16", 2, 2), 700.0)  # both timers are past
    nat = engine.counters["nat_gateways"]["nat-1"]
    assert nat["idle_timeout_count"] == 1 and nat["connections"] == 0
    assert not [c for c in engine.connections() if c.proto == 6]

# --- counters and summary ---------------------------------------------------------------------------


def test_nat_counters_error_port_allocation_and_idle_timeouts(make_engine):
    engine = make_engine(standard_vpc().build(), nat_connections_per_destination=1)
    engine.process(tcp(SB, NET, 40000, 443), 1.0)
    engine.process(tcp(NET, SB, 443, 40000, "SA"), 1.1)
    engine.process(tcp(SB, NET, 40000, 443, "A"), 1.2)  # established: it outlives the NAT's 350 s
    assert engine.process(tcp(SB, NET, 40001, 443), 1.0).reason == DropReason.NAT_PORT_EXHAUSTION
    engine.process(tcp(SB, "10.0.2.16", 1, 1), 500.0)  # time passes: the first flow idles out
    nat = engine.counters["nat_gateways"]["nat-1"]
    assert nat["error_port_allocation"] == 1 and nat["idle_timeout_count"] == 1
    assert engine.summary()["nat_gateways"] == [
        {"id": "nat-1", "public_ip": "203.0.113.10", "peak_connections": 1, "error_port_allocation": 1}]
    assert engine.process(tcp(SB, NET, 40002, 443), 501.0).forwarded  # the port is free again


def test_summary_shape_and_accounting(make_engine):
    engine = make_engine(standard_vpc().build())
    engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    engine.process(tcp(SB, "10.0.2.99", 40001, 5432), 1.0)
    engine.process(b"junk", 1.0)
    s = engine.summary()
    assert set(s) == {"packets", "forwarded", "dropped", "drops", "connections", "enis", "nat_gateways"}
    assert (s["packets"], s["forwarded"], s["dropped"]) == (3, 1, 2)
    assert s["drops"] == {"unknown-destination": 1, "malformed": 1}
    assert [e["id"] for e in s["enis"]] == [e.id for e in engine.control.enis()]
    assert s["enis"][0]["subnet_id"] == "subnet-app" and s["enis"][0]["functions"] == ["fn"]


def test_enis_exist_before_the_first_packet(make_engine):
    engine = make_engine(standard_vpc().build())
    s = engine.summary()
    assert len(s["enis"]) == 1 and s["enis"][0]["private_ip"] == ENI_IP and s["packets"] == 0


def test_process_batch_matches_process(make_engine):
    import numpy as np

    packets = [bytes(tcp(SB, DB, 40000, 5432)), b"\x00", bytes(tcp(DB, SB, 5432, 40000, "SA"))]
    buffer = b"".join(packets)
    offsets = np.cumsum([0] + [len(p) for p in packets[:-1]])
    engine = make_engine(standard_vpc().build())
    batch = engine.process_batch(buffer, offsets, [len(p) for p in packets], [1.0, 1.0, 1.1])
    assert batch.verdicts.tolist() == [Verdict.FORWARDED, Verdict.DROPPED, Verdict.FORWARDED]
    assert batch.reasons.tolist() == [0, DropReason.MALFORMED, 0]
    assert [i for i, _ in batch.taps["eni"]] == [0, 2]
    assert batch.drop_records(10) == [{"index": 11, "reason": "malformed", "component": None, "rule": batch.rules[1],
                                       "explanation_code": None}]


def test_process_batch_pauses_the_collector_and_restores_it(make_engine, monkeypatch):
    """The collector is off while a batch runs (speed), on again afterwards, also after an error
    in the batch, and left off when the caller had turned it off."""
    import gc

    import numpy as np

    seen = []
    engine = make_engine(standard_vpc().build())
    impl = engine._impl
    process = impl.dp.process if hasattr(impl, "dp") else impl.process

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return process(*args, **kwargs)

    monkeypatch.setattr(impl.dp if hasattr(impl, "dp") else impl, "process", spy)
    syn = bytes(tcp(SB, DB, 40000, 5432))
    assert gc.isenabled()
    engine.process_batch(syn, [0], [len(syn)], [1.0])
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ValueError):
        engine.process_batch(syn, [0], [len(syn), 1], [1.0])
    assert gc.isenabled()
    gc.disable()
    try:
        engine.process_batch(syn, np.array([0]), [len(syn)], [2.0])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_replay_parks_what_each_batch_leaves_alive_out_of_the_collectors_sight():
    """survivors_frozen (run_replay's batches): the automatic collector is off inside; each tick
    freezes what lives on (no collection walks it again), objects still die by reference
    counting, and after the run the collector is back and frees a cycle made during it."""
    import gc
    import weakref

    from hyperplane.engine import survivors_frozen

    class Node:
        pass

    gc.collect()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with survivors_frozen() as tick:
        assert not gc.isenabled()
        kept, dropped = Node(), Node()
        cycle = Node()
        cycle.self = cycle  # only the collector frees it
        refs = weakref.ref(kept), weakref.ref(dropped), weakref.ref(cycle)
        del cycle
        tick()
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # no generation holds it
        del dropped
        assert refs[1]() is None  # reference counting still frees frozen objects
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert refs[2]() is not None
    gc.collect()
    assert refs[2]() is None and refs[0]() is kept
    gc.disable()
    try:
        with survivors_frozen() as tick:
            tick()
            assert gc.get_freeze_count() == 0
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("backend", ["reference", "core"])
def test_a_replay_makes_no_garbage_cycles(backend, tmp_path):
    """What survivors_frozen relies on: replaying the demo (new connections, replies, drops, NAT,
    an overflow ENI, flow logs, all taps) leaves no garbage for the collector; every object it
    made is freed by reference counting (the first run may fill lazy caches; the second must
    leave nothing). The summary file, written once after the run, is left out: json's indenting
    encoder is a cycle of closures."""
    import gc
    import os

    from hyperplane.commands.common import load_model, parse_sandboxes
    from hyperplane.commands.demo import load_manifest
    from hyperplane.engine import available_backends
    from hyperplane.replay import ReplayConfig, run_replay

    if backend not in available_backends():
        pytest.skip("the core is not built")
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "pcaps", "demo")  # the checkout's
    manifest = load_manifest(folder)

    def replay(n: int) -> dict:
        out = tmp_path / str(n)
        out.mkdir()
        return run_replay(ReplayConfig(
            capture=os.path.join(folder, manifest["capture"]), model=load_model([os.path.join(folder, manifest["vpc"])]),
            sandboxes=parse_sandboxes(manifest["sandboxes"]),
            taps={tap: str(out / f"{tap}.pcap") for tap in ("lambda", "eni", "internet")},
            drops_path=str(out / "drops.jsonl"), flow_logs_path=str(out / "flow-logs.log"), eni_capacity=manifest["options"]["eni_capacity"],
            backend=backend))

    replay(1)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        summary = replay(2)
        assert gc.collect() == 0, [type(o).__name__ for o in gc.garbage[:20]]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert summary["dropped"] > 0 and summary["forwarded"] > 0 and len(summary["enis"]) > 1


def test_a_finished_engine_is_freed_at_once_with_its_connections(make_engine):
    """No reference cycles: dropping the last reference frees the engine and every connection it
    tracked right away, without waiting for a full garbage collection (many replays in one
    process keep a flat memory profile)."""
    import gc
    import weakref

    gc.disable()
    try:
        engine = make_engine(standard_vpc().build())
        engine.process(bytes(tcp(SB, DB, 40000, 5432)), 1.0)
        engine.process(bytes(tcp(DB, SB, 5432, 40000, "SA")), 1.1)
        engine.explain("fn", DB, 5432, "tcp")
        assert len(engine.connections()) == 1
        conn_type = type(engine.connections()[0])
        live = sum(type(o) is conn_type for o in gc.get_objects())
        ref = weakref.ref(engine._impl)
        del engine
        assert ref() is None
        assert sum(type(o) is conn_type for o in gc.get_objects()) == live - 1
    finally:
        gc.enable()


# --- the facade -------------------------------------------------------------------------------------


def test_sandbox_parse():
    s = Sandbox.parse("api=169.254.76.0/24@subnet-0a1")
    assert (s.function, str(s.network), s.subnet_id) == ("api", "169.254.76.0/24", "subnet-0a1")
    assert Sandbox.parse("api=169.254.76.9").network.prefixlen == 32
    for bad in ("api", "=1.2.3.4", "api=not-an-ip", "api=1.2.3.0/24@sg-1"):
        with pytest.raises(ValueError):
            Sandbox.parse(bad)


def test_backends():
    model = standard_vpc().build()
    assert Engine(model, {"169.254.76.0/24": ("fn", "subnet-app")}).backend in ("reference", "core")
    assert Engine(model, ["fn=169.254.76.0/24"], backend="reference").backend == "reference"
    from hyperplane.engine import available_backends

    if "core" not in available_backends():
        with pytest.raises(RuntimeError, match="not available"):
            Engine(model, [], backend="core")
    with pytest.raises(ValueError, match="unknown backend"):
        Engine(model, [], backend="gpu")


def test_unknown_sandbox_function_or_subnet_is_a_clear_error():
    model = standard_vpc().build()
    with pytest.raises(ValueError, match="unknown function 'nope'"):
        Engine(model, {"169.254.76.0/24": "nope"})
    with pytest.raises(ValueError, match="subnet-db is not in function 'fn'"):
        Engine(model, {"169.254.76.0/24": ("fn", "subnet-db")})


def test_options_validate_timeouts_against_aws_ranges():
    with pytest.raises(ValueError, match="outside AWS's range"):
        EngineOptions(timeouts={"udp": 5})
    assert dataclasses.replace(EngineOptions(), seed=3).timeouts == EngineOptions().timeouts


def test_pinned_subnet_is_used():
    b = standard_vpc()
    b.function("fn", ["subnet-app", "subnet-db"], ["sg-fn"])
    engine = Engine(b.build(), {"169.254.76.0/24": ("fn", "subnet-db")})
    result = engine.process(tcp(SB, NET, 40000, 443), 1.0)
    assert engine.control.get_eni(result.eni_id).subnet_id == "subnet-db"
