"""The Linux kernel as a reference peer (issue 8; ../shared/spec/LINUX-PEER.md).

Real TCP sessions (python sockets in network namespaces) cross an nftables SNAT with conntrack;
``conntrack -E`` records the kernel's TCP states, tcpdump records the client side (the sandbox's
view). The same packets then go through our Engine configured with a matching VPC (the function's
Hyperplane ENI gets the router's SNAT address, 10.0.1.4, and the same port range), and we
compare:

* the sequence of TCP conntrack states of every connection: handshake, client close,
  half-close, server close, RST, a refused SYN, TIME_WAIT reuse, three parallel connections, a
  retransmitted SYN (the server's namespace drops the first SYN to port 5434);
* one NAT mapping per connection on both sides, every port inside the range;
* no post-NAT tuple shared by two live connections, on either side.

Ports are compared up to renaming (the kernel starts its port search at a random point).
Deliberate differences, each an AWS or design rule, are named where they are checked.

Runs only as root with ``ip netns``, ``nft``, ``conntrack`` and ``tcpdump`` present; skipped
otherwise with the reason. The namespaces are deleted afterwards, also on failure.
"""
from __future__ import annotations

import ipaddress
import json
from collections import defaultdict

import pytest

from . import lab as L

REASON = L.missing_requirements()
pytestmark = [pytest.mark.peer,
              pytest.mark.skipif(REASON is not None, reason=f"kernel peer lab unavailable: {REASON}")]


def vpc_document() -> dict:
    """The VPC matching the lab: the function in 10.0.1.0/24 (its ENI takes 10.0.1.4), the
    server at 10.0.2.10 admitting the function's group on TCP 5432-5434 and UDP 7000-7002
    (test_kernel_peer_udp), default ACL."""
    return {
        "Vpcs": [{"VpcId": "vpc-peer", "CidrBlock": "10.0.0.0/16", "OwnerId": "123456789012"}],
        "Subnets": [{"SubnetId": "subnet-fn", "VpcId": "vpc-peer", "CidrBlock": "10.0.1.0/24"},
                    {"SubnetId": "subnet-srv", "VpcId": "vpc-peer", "CidrBlock": "10.0.2.0/24"}],
        "SecurityGroups": [
            {"GroupId": "sg-fn", "VpcId": "vpc-peer", "IpPermissions": [],
             "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]},
            {"GroupId": "sg-srv", "VpcId": "vpc-peer", "IpPermissionsEgress": [],
             "IpPermissions": [{"IpProtocol": "tcp", "FromPort": L.SERVER_PORT, "ToPort": L.RETRANS_PORT,
                                "UserIdGroupPairs": [{"GroupId": "sg-fn"}]},
                               {"IpProtocol": "udp", "FromPort": L.UDP_PORT, "ToPort": L.PROBE_PORT,
                                "UserIdGroupPairs": [{"GroupId": "sg-fn"}]}]},
        ],
        "NetworkInterfaces": [{"NetworkInterfaceId": "eni-srv", "VpcId": "vpc-peer", "SubnetId": "subnet-srv",
                               "PrivateIpAddress": L.SERVER_IP, "Groups": [{"GroupId": "sg-srv"}]}],
        "Functions": [{"FunctionName": "peer-fn",
                       "VpcConfig": {"SubnetIds": ["subnet-fn"], "SecurityGroupIds": ["sg-fn"]}}],
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    lab = L.Lab()
    try:
        lab.build()
        sessions = L.run_sessions(lab, str(tmp_path_factory.mktemp("peer")))
    finally:
        lab.close()
    return sessions


@pytest.fixture(scope="module")
def ours(recorded):
    """Replay the client-side capture through the Engine: per connection (client port, server
    port), the states after each of its packets, the VPC-side ports used, and the live tuples."""
    from hyperplane.io import iter_packets
    from hyperplane.packet import parse
    from hyperplane.testing import engine_for, load_documents

    engine = engine_for(load_documents(vpc_document()), {"169.254.76.0/24": "peer-fn"}, port_range=L.PORTS)
    states, ports, clashes, verdicts = defaultdict(list), defaultdict(set), [], []
    packets, generations = defaultdict(list), defaultdict(set)
    for _index, frame, ts, linktype in iter_packets(recorded.capture):
        p = parse(frame, linktype)
        result = engine.process(frame, ts, linktype)
        verdicts.append(result)
        key = (p.sport, p.dport) if p.src == int(ipaddress.ip_address(L.CLIENT_IP)) else (p.dport, p.sport)
        conn = next((c for c in engine.connections() if (c.lambda_tuple[1], c.lambda_tuple[3]) == key), None)
        states[key].append(conn.state_name() if conn is not None else "NONE")
        packets[key].append((ts, p.tcp_flags, p.src == int(ipaddress.ip_address(L.CLIENT_IP))))
        if conn is not None:
            ports[key].add(conn.eni_tuple[1])
            generations[key].add(conn.generation)
        live = [(c.eni_id, c.proto, c.eni_tuple) for c in engine.connections()]
        if len(live) != len(set(live)):
            clashes.append(live)
    return {"states": states, "ports": ports, "clashes": clashes, "results": verdicts, "packets": packets,
            "generations": generations}


def collapse(seq):
    out = []
    for item in seq:
        if not out or out[-1] != item:
            out.append(item)
    return out


def kernel_states(events) -> dict:
    """Per (client port, server port): the kernel's state sequence, NEW/UPDATE/DESTROY in order."""
    out = defaultdict(list)
    for e in events:
        if e["state"]:
            out[(e["sport"], e["dport"])].append(e["state"])
    return {k: collapse(v) for k, v in out.items()}


def test_the_sessions_really_ran(recorded):
    answers = json.loads(recorded.client_output.strip().splitlines()[-1])
    assert answers["close:40001"] == "answer" and answers["half-close:40002"] == "late answer"
    assert answers["refused:40005"] == "refused" and len([k for k in answers if k.startswith("parallel")]) == 3
    assert answers["close:40020"] == "answer"
    assert recorded.events, "conntrack -E recorded nothing"


def test_every_packet_the_kernel_forwarded_we_forward_too(ours):
    dropped = [r for r in ours["results"] if r.dropped]
    assert not dropped, dropped[:3]


EXPECTED = {
    (40001, 5432): ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT"],  # client closes
    (40002, 5432): ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT"],
    (40004, 5432): ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "CLOSE"],  # RST
    # TIME_WAIT reuse: the second SYN on the same tuple reopens it
    (40003, 5432): ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT",
                    "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT"],
    (40005, 5433): ["SYN_SENT", "CLOSE"],  # refused: SYN answered by RST
    # retransmitted SYN: the second SYN leaves the connection in SYN_SENT on both sides
    (40020, L.RETRANS_PORT): ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT"],
}


@pytest.mark.parametrize("key", sorted(EXPECTED) + [(40010, 5432), (40011, 5432), (40012, 5432)])
def test_tcp_state_sequences_match_the_kernel(recorded, ours, key):
    kernel = kernel_states(recorded.events)
    assert key in kernel, f"the kernel recorded no events for {key}"
    assert collapse(ours["states"][key]) == kernel[key]
    if key in EXPECTED:
        assert kernel[key] == EXPECTED[key]


def test_one_mapping_per_connection_inside_the_range(recorded, ours):
    """Both NATs keep one mapping per connection. Kernel: one reply tuple per conntrack entry
    (NEW..DESTROY). Ours: one VPC-side port per connection — also across a TIME_WAIT reuse, where
    the kernel destroys the entry and maps the new one afresh while we reopen the same
    connection on its tuple (our design: DESIGN §6, conntrack reopen keeps the connection)."""
    lo, hi = L.PORTS
    entries = defaultdict(set)
    generation = defaultdict(int)
    for e in recorded.events:
        key = (e["sport"], e["dport"])
        if e["kind"] == "NEW":
            generation[key] += 1
        entries[(key, generation[key])].add((e["rsrc"], e["rsport"], e["rdst"], e["rdport"]))
        assert e["rdst"] == L.NAT_IP and lo <= e["rdport"] <= hi, e
    assert all(len(mappings) == 1 for mappings in entries.values()), entries
    for key, ports in ours["ports"].items():
        assert len(ports) == 1 and lo <= min(ports) <= hi, (key, ports)


def test_no_post_nat_tuple_is_shared_by_live_connections(recorded, ours):
    live, seen_clash = {}, []
    for e in recorded.events:
        tup = (e["rsrc"], e["rsport"], e["rdst"], e["rdport"])
        owner = (e["sport"], e["dport"])
        if e["kind"] == "NEW":
            if tup in live and live[tup] != owner:
                seen_clash.append((tup, live[tup], owner))
            live[tup] = owner
        elif e["kind"] == "DESTROY":
            live.pop(tup, None)
    assert not seen_clash
    assert not ours["clashes"]
    parallel = [ours["ports"][(40010 + i, 5432)] for i in range(3)]
    assert len(set().union(*parallel)) == 3, "three live connections to one destination need three ports"


SYN, ACK = 0x02, 0x10


def test_a_retransmitted_syn_keeps_one_connection_in_syn_sent(recorded, ours):
    """The server's namespace drops the first SYN to 5434; the client's kernel sends it again
    after its 1 s initial RTO. The kernel keeps the entry the first SYN created (one NEW, no
    event for the retransmission: SYN in SYN_SENT stays SYN_SENT, nf_conntrack_proto_tcp.c,
    AWS-FACTS 10); so do we: one connection, generation 0, one VPC-side port, SYN_SENT after
    both SYNs (docs/conntrack.md, ORIGINAL SYN row)."""
    key = (40020, L.RETRANS_PORT)
    syns = [i for i, (_ts, flags, outbound) in enumerate(ours["packets"][key]) if outbound and flags & (SYN | ACK) == SYN]
    assert len(syns) == 2, f"expected the SYN and one retransmission in the capture, saw {len(syns)}"
    first_ts, second_ts = ours["packets"][key][syns[0]][0], ours["packets"][key][syns[1]][0]
    assert second_ts - first_ts >= 0.5, "the second SYN is a retransmission after the RTO"
    assert syns == [0, 1], "nothing of this connection came between the two SYNs"

    events = [e for e in recorded.events if (e["sport"], e["dport"]) == key]
    assert [e["kind"] for e in events].count("NEW") == 1
    assert events[0]["kind"] == "NEW" and events[0]["state"] == "SYN_SENT"
    assert events[0]["ts"] < second_ts, "the kernel's entry dates from the first SYN"
    assert events[1]["state"] == "SYN_RECV", "no event between NEW SYN_SENT and the SYN-ACK"
    assert len({(e["rdst"], e["rdport"]) for e in events}) == 1

    assert ours["states"][key][:2] == ["SYN_SENT", "SYN_SENT"]
    assert ours["generations"][key] == {0}, "the retransmitted SYN must not reopen the connection"
    assert len(ours["ports"][key]) == 1
