"""The dataplane's invariants, as hypothesis properties over generated AWS configurations and
generated traffic (issue 8): security, NAT, accounting, determinism. Plus the two user examples
of docs/testing.md.

Each test draws a configuration with :func:`hyperplane.testing.models` (sometimes permissive, so
that most traffic is forwarded and the properties about forwarded packets have material) and
traffic for it with :func:`hyperplane.testing.traffic`, replays it through an Engine, and checks
the results against :mod:`hyperplane.testing.oracle`, a plain restatement of AWS's rules that
shares no code with the dataplane.
"""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperplane import checksum
from hyperplane.codes import DropReason, Verdict
from hyperplane.testing import (
    can_reach, engine_for, inbound_decision, load_documents, models, oracle, session_succeeds, traffic,
)
from hyperplane.testing.wire import ACK, SYN, TCP, UDP, five_tuple, ip_packet

R = DropReason

CONFIGS = st.one_of(models(), models(permissive=True), models(permissive=True, subnets=(2, 4), interfaces=(2, 5)))

#: Engine options that make ports and ENI slots scarce (overflow ENIs, port reuse, exhaustion).
SCARCE = st.sampled_from([
    {},
    {"port_range": (1024, 1026)},
    {"port_range": (40000, 40001), "eni_capacity": 2},
    {"eni_capacity": 1},
])


def _ip(value) -> ipaddress._BaseAddress:
    if isinstance(value, int):
        return ipaddress.IPv4Address(value) if value < 2**32 else ipaddress.IPv6Address(value)
    return ipaddress.ip_address(str(value))


class Run:
    """Replays traffic packet by packet, keeping what the properties need."""

    def __init__(self, model, drawn, **options):
        self.model = model
        self.traffic = drawn
        self.options = options
        self.engine = engine_for(model, drawn.sandboxes, **options)
        self.steps = []  # (Packet, Result, live connections after it)
        for packet in drawn.packets:
            result = self.engine.process(packet.data, packet.ts)
            self.steps.append((packet, result, list(self.engine.connections())))

    def eni_subnet(self, eni_id):
        return self.engine.control.get_eni(eni_id).subnet_id

    def members(self, group_id):
        return self.engine.control.members_of(group_id)


def _run(data, model, **options):
    drawn = data.draw(traffic(model), label="traffic")
    return Run(model, drawn, **options)


# ------------------------------------------------------------------------------------------------
# security
# ------------------------------------------------------------------------------------------------


@given(CONFIGS, st.data())
def test_vpc_destinations_receive_only_what_security_groups_allow(model, data):
    """No packet is delivered to a VPC interface unless the function's SG egress and the
    interface's SG ingress allow it (the configuration is static, so every packet of a
    connection the destination accepted is allowed by the same rules)."""
    run = _run(data, model)
    for packet, result, _ in run.steps:
        if not (result.forwarded and result.direction == "outbound" and "eni" in result.taps):
            continue
        proto, src, _sport, dst, dport = five_tuple(result.taps["eni"])
        if oracle.is_exempt(model, dst, proto, dport):
            continue
        fn = model.functions[result.function]
        assert oracle.sg_allows(model, fn.security_group_ids, True, proto, dst, dport, run.members), (
            f"{result.function}'s security groups do not allow {proto}/{dst}:{dport}, yet it was forwarded")
        iface = model.interface_at(dst)
        if iface is not None and iface.group_ids:
            assert oracle.sg_allows(model, iface.group_ids, False, proto, src, dport, run.members), (
                f"{iface.id} ({', '.join(iface.group_ids)}) does not allow {proto} {src} -> :{dport}, yet it got it")


@given(CONFIGS, st.data())
def test_nothing_opens_a_connection_toward_a_sandbox(model, data):
    """V2N is one-way [AWS-FACTS 1]: every packet forwarded toward a sandbox answers a
    connection that sandbox opened earlier; nothing else reaches a sandbox."""
    run = _run(data, model)
    opened = set()
    for packet, result, _ in run.steps:
        if not result.forwarded:
            continue
        assert result.direction in ("outbound", "reply"), result
        proto, src, sport, dst, dport = five_tuple(result.taps["lambda"])
        if result.direction == "outbound":
            opened.add((proto, src, sport, dst, dport))
        else:
            assert (proto, dst, dport, src, sport) in opened, f"{src}:{sport} reached sandbox {dst}:{dport} unasked"
    for conn in run.engine.connections():
        sandbox = _ip(conn.lambda_tuple[0])
        assert any(sandbox in ipaddress.ip_network(c) for c in run.traffic.sandboxes), conn


@given(CONFIGS, st.data())
def test_every_subnet_crossing_is_checked_against_the_subnet_nacl(model, data):
    """Every forwarded packet leaving the Hyperplane ENI's subnet passed that subnet's NACL
    (egress going out, ingress coming back), and the destination interface's subnet NACL."""
    run = _run(data, model)
    for packet, result, _ in run.steps:
        if not result.forwarded or not result.eni_id or "eni" not in result.taps:
            continue
        proto, src, sport, dst, dport = five_tuple(result.taps["eni"])
        home = run.eni_subnet(result.eni_id)
        outbound = result.direction == "outbound"
        remote, remote_port = (dst, dport) if outbound else (src, sport)
        if oracle.is_exempt(model, remote, proto, remote_port):
            continue
        iface = model.interface_at(remote)
        remote_subnet = iface.subnet_id if iface is not None else (
            model.subnet_of(remote).id if model.subnet_of(remote) else None)
        if remote_subnet == home:
            continue
        eni_ip = src if outbound else dst
        if outbound:
            assert oracle.nacl_allows(model, home, True, proto, remote, dport), (home, "egress", packet)
            if iface is not None:
                assert oracle.nacl_allows(model, remote_subnet, False, proto, eni_ip, dport), (remote_subnet, packet)
            route = oracle.route_for(model, home, remote)
            if route is not None and route.target_kind == "nat" and "internet" in result.taps:
                nat = model.nat_gateways[route.target_id]
                assert oracle.nacl_allows(model, nat.subnet_id, True, proto, remote, dport), (nat.subnet_id, packet)
        else:
            assert oracle.nacl_allows(model, home, False, proto, remote, dport), (home, "ingress", packet)
            if iface is not None:
                assert oracle.nacl_allows(model, remote_subnet, True, proto, eni_ip, dport), (remote_subnet, packet)


# ------------------------------------------------------------------------------------------------
# NAT
# ------------------------------------------------------------------------------------------------


@given(CONFIGS, SCARCE, st.data())
def test_translation_is_a_bijection_on_live_connections(model, options, data):
    """After every packet: sandbox-side and VPC-side tuples of the live connections are in
    one-to-one correspondence, no VPC-side 5-tuple is shared on an ENI or a NAT gateway, a tuple
    is taken again only after its holder ended, ports stay in the configured range and no ENI
    carries more connections than its capacity."""
    run = _run(data, model, **options)
    lo, hi = options.get("port_range", (1024, 65535))
    capacity = options.get("eni_capacity", 65000)
    holder = {}
    for packet, result, live in run.steps:
        sandbox_side, vpc_side, nat_side = set(), set(), set()
        per_eni = Counter()
        for conn in live:
            key = (conn.proto, conn.lambda_tuple)
            assert key not in sandbox_side, f"two live connections for {key}"
            sandbox_side.add(key)
            vkey = (conn.eni_id, conn.proto, conn.eni_tuple)
            assert vkey not in vpc_side, f"VPC-side tuple {vkey} shared by two live connections"
            vpc_side.add(vkey)
            previous = holder.get(vkey)
            assert previous is None or previous is conn or not previous.alive, (
                f"{vkey} reused while its connection {previous} is alive")
            holder[vkey] = conn
            if conn.eni_id:
                assert lo <= conn.eni_tuple[1] <= hi, f"port {conn.eni_tuple[1]} outside {lo}-{hi}"
                per_eni[conn.eni_id] += 1
            path = getattr(conn, "path", None)
            if path is not None and getattr(path, "nat_pool", None) is not None and not path.nat_expired:
                nkey = (path.nat_id, conn.proto, path.nat_addr, path.nat_port, conn.eni_tuple[2], conn.eni_tuple[3])
                assert nkey not in nat_side, f"NAT gateway tuple {nkey} shared by two live connections"
                nat_side.add(nkey)
                assert 1024 <= path.nat_port <= 65535
        for eni_id, count in per_eni.items():
            assert count <= capacity, f"{eni_id} carries {count} > {capacity} connections"
    for eni in run.engine.control.enis():
        assert eni.connections <= capacity and eni.peak_connections <= capacity, eni


@given(CONFIGS, st.data())
def test_reverse_translation_restores_the_original_bytes(model, data):
    """The reply to a translated packet, as the VPC sends it back to the Hyperplane ENI, reaches
    the sandbox byte for byte as if the sandbox had talked to the destination directly; every
    tap carries valid checksums, and V2N changes only the source address and port."""
    drawn = data.draw(traffic(model, unsolicited=False, gaps=False, tcp_kinds=("open", "unanswered")), label="traffic")
    engine = engine_for(model, drawn.sandboxes)
    seen = set()
    for packet in drawn.packets:
        if packet.direction != "out":
            continue
        result = engine.process(packet.data, packet.ts)
        for tap, data_ in result.taps.items():
            assert checksum.verify(data_), f"bad checksum at the {tap} tap: {data_.hex()}"
        if not result.forwarded or "eni" not in result.taps:
            continue
        original, translated = packet.data, result.taps["eni"]
        proto, src, sport, dst, dport = five_tuple(original)
        tproto, tsrc, tsport, tdst, tdport = five_tuple(translated)
        assert (tproto, tdst, tdport) == (proto, dst, dport)
        hlen = 20 if original[0] >> 4 == 4 else 40
        unchanged = [i for i in range(len(original))
                     if not (10 <= i < 16 or hlen + 0 <= i < hlen + 2 or i in _l4_checksum(original, hlen))]
        assert [original[i] for i in unchanged] == [translated[i] for i in unchanged], "V2N changed more than it should"
        if (proto, src, sport, dst, dport) in seen or "internet" in result.taps:
            continue
        seen.add((proto, src, sport, dst, dport))
        flags = SYN | ACK if proto == TCP else 0
        vpc_reply = ip_packet(dst, tsrc, proto, dport, tsport, flags, 777, 1, b"" if proto == TCP else b"answer")
        reply = engine.process(vpc_reply, packet.ts + 0.0001)
        if reply.forwarded:
            expected = ip_packet(dst, src, proto, dport, sport, flags, 777, 1, b"" if proto == TCP else b"answer")
            assert reply.taps["lambda"] == expected


def _l4_checksum(packet: bytes, hlen: int) -> tuple[int, int]:
    at = hlen + (16 if packet[9 if packet[0] >> 4 == 4 else 6] == TCP else 6)
    return at, at + 1


# ------------------------------------------------------------------------------------------------
# accounting
# ------------------------------------------------------------------------------------------------


@given(CONFIGS, SCARCE, st.data())
def test_every_packet_gets_one_verdict_and_the_counters_add_up(model, options, data):
    """One Result per packet; ``forwarded + dropped == packets``; the summary's counts, drops by
    reason and connections equal what the per-packet results and connection table showed."""
    run = _run(data, model, **options)
    verdicts = Counter()
    reasons = Counter()
    conns = set()
    for packet, result, live in run.steps:
        assert result.verdict in (Verdict.FORWARDED, Verdict.DROPPED)
        assert (result.reason == R.NONE) == result.forwarded, result
        verdicts[result.verdict] += 1
        if result.dropped:
            reasons[result.reason.label] += 1
        conns.update(id(c) for c in live)
    summary = run.engine.summary()
    assert summary["packets"] == len(run.steps) == summary["forwarded"] + summary["dropped"]
    assert summary["forwarded"] == verdicts[Verdict.FORWARDED]
    assert summary["dropped"] == verdicts[Verdict.DROPPED]
    assert summary["drops"] == dict(reasons)
    assert summary["connections"] == len(conns)
    ids = [e["id"] for e in summary["enis"]]
    assert len(ids) == len(set(ids))
    capacity = options.get("eni_capacity", 65000)
    assert all(e["peak_connections"] <= capacity for e in summary["enis"])


#: Outbound drops decided after the packet left the Hyperplane ENI: it is an ACCEPT there.
DOWNSTREAM = {R.NO_ROUTE, R.BLACKHOLE_ROUTE, R.NO_PUBLIC_IP, R.UNKNOWN_DESTINATION, R.UNSOLICITED_INBOUND,
              R.NACL_INGRESS, R.SG_INGRESS, R.NAT_PORT_EXHAUSTION}


@given(CONFIGS, st.data())
def test_flow_log_totals_equal_the_packets_they_cover(model, data):
    """On every Hyperplane ENI, the ACCEPT records' packet and byte totals per 5-tuple equal the
    packets of that tuple that crossed the ENI (forwarded, or dropped further down the path);
    REJECT records never count more packets than were dropped there."""
    run = _run(data, model)
    expected_accept = Counter()
    expected_bytes = Counter()
    rejectable = 0  # dropped packets not counted as ACCEPT anywhere on a Hyperplane ENI
    for packet, result, _ in run.steps:
        eni_form = result.taps.get("eni")
        if not result.eni_id or eni_form is None:
            rejectable += result.dropped
            continue
        proto, src, sport, dst, dport = five_tuple(eni_form)
        outbound = result.direction == "outbound"
        remote, rport = (dst, dport) if outbound else (src, sport)
        if oracle.is_exempt(model, remote, proto, rport):
            continue
        own_acl = model.nacl_of(run.eni_subnet(result.eni_id)).id
        downstream = outbound and (result.reason in DOWNSTREAM or (
            result.reason == R.NACL_EGRESS and result.component != own_acl))
        if result.forwarded or downstream:
            key = (result.eni_id, src, dst, sport, dport, proto)
            expected_accept[key] += 1
            expected_bytes[key] += len(eni_form)
        else:
            rejectable += 1
    hyperplane = {e.id for e in run.engine.control.enis()}
    accept, accept_bytes = Counter(), Counter()
    rejected = 0
    for record in run.engine.flow_logs():
        if record.interface_id not in hyperplane:
            continue
        key = (record.interface_id, str(_ip(record.srcaddr)), str(_ip(record.dstaddr)), int(record.srcport),
               int(record.dstport), int(record.protocol))
        if record.action == "ACCEPT":
            accept[key] += record.packets
            accept_bytes[key] += record.bytes
        else:
            assert record.action == "REJECT", record.action
            rejected += record.packets
    assert accept == expected_accept
    assert accept_bytes == expected_bytes
    assert rejected <= rejectable


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------


@given(CONFIGS, st.integers(0, 2**32 - 1), st.data())
def test_same_input_and_seed_give_byte_identical_outputs(model, seed, data):
    drawn = data.draw(traffic(model), label="traffic")

    def outputs():
        engine = engine_for(model, drawn.sandboxes, seed=seed)
        results = [engine.process(d, ts) for d, ts in drawn]
        per_packet = [(r.verdict, r.reason, r.component, r.rule, r.eni_id, r.direction, sorted(r.taps.items()),
                       tuple(r.emitted)) for r in results]
        logs = [record.format() for record in engine.flow_logs()]
        return per_packet, engine.summary(), logs

    assert outputs() == outputs()


# ------------------------------------------------------------------------------------------------
# the user examples of docs/testing.md
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_model():
    """The bundled example VPC: orders-api and report-worker, a database at 10.0.3.10:5432."""
    import warnings
    from importlib.resources import files

    from hyperplane import load_vpc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vpc(str(files("hyperplane") / "data" / "example-vpc"))


DATABASE = ("10.0.3.10", 5432)


@given(st.sampled_from(["orders-api", "report-worker"]), st.integers(2, 250))
def test_example_my_functions_can_always_reach_my_database(example_model, function, host):
    """docs/testing.md: "assert that my function can always reach my database" — from any
    sandbox address, through explain and through a replayed session."""
    trace = can_reach(example_model, function, *DATABASE)
    assert trace.reachable, str(trace)
    assert session_succeeds(example_model, function, *DATABASE)


@given(st.ip_addresses(v=4).filter(lambda a: a.is_global), st.integers(1, 65535))
def test_example_nothing_from_the_internet_reaches_my_database(example_model, source, port):
    """docs/testing.md: "assert that nothing from the internet reaches my database"."""
    decision = inbound_decision(example_model, source, DATABASE[0], port)
    assert not decision.allowed, decision


def test_inbound_decision_sees_an_exposed_interface():
    """The helper above can fail: a public subnet with an open SG and NACL is exposed."""
    doc = {
        "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16", "OwnerId": "123456789012"}],
        "Subnets": [{"SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24"}],
        "InternetGateways": [{"InternetGatewayId": "igw-1", "Attachments": [{"VpcId": "vpc-1", "State": "available"}]}],
        "RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": True}],
                         "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"}]}],
        "SecurityGroups": [{"GroupId": "sg-db", "VpcId": "vpc-1", "IpPermissionsEgress": [],
                            "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                                               "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}],
        "NetworkInterfaces": [{"NetworkInterfaceId": "eni-db", "VpcId": "vpc-1", "SubnetId": "subnet-1",
                               "PrivateIpAddress": "10.0.1.10", "Groups": [{"GroupId": "sg-db"}]}],
    }
    model = load_documents(doc)
    assert inbound_decision(model, "8.8.8.8", "10.0.1.10", 5432).allowed
    blocked = inbound_decision(model, "8.8.8.8", "10.0.1.10", 22)
    assert not blocked.allowed and blocked.component == "sg-db"
