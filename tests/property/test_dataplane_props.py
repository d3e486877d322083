"""Properties of the dataplane that must hold for any traffic (hypothesis):

- translation is a bijection on live connections, and no VPC-side 5-tuple is shared by two live
  connections;
- reverse translation restores the original packet byte for byte;
- every packet put on a tap has valid checksums;
- every packet gets exactly one verdict, and the counters add up;
- the per-connection rewrite equals :func:`hyperplane.checksum.rewrite_src` / ``rewrite_dst``.
"""
from __future__ import annotations

import os
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))

from builders import standard_vpc  # noqa: E402
from hyperplane import checksum, packet as pk  # noqa: E402
from hyperplane.codes import DropReason, Verdict  # noqa: E402
from hyperplane.engine import Engine, EngineOptions  # noqa: E402
from hyperplane.reference.dataplane import Rewrite, build_packet  # noqa: E402

SANDBOX_BASE = (169 << 24) | (254 << 16) | (76 << 8)
DESTINATIONS = [
    (10 << 24) | (2 << 8) | 15,  # eni-db (TCP/UDP 5432 allowed)
    (10 << 24) | (2 << 8) | 16,  # eni-db2
    (198 << 24) | (51 << 16) | (100 << 8) | 7,  # the internet, through nat-1
    (10 << 24) | (2 << 8) | 99,  # nothing there: unknown-destination
]


def model():
    b = standard_vpc()
    b.interface("eni-db2", "subnet-db", "10.0.2.16", groups=["sg-db"])
    return b.build()


MODEL = model()

flows = st.tuples(
    st.integers(1, 6),  # sandbox host
    st.integers(1024, 1040),  # sandbox port (small: tuples collide on purpose)
    st.integers(0, len(DESTINATIONS) - 1),
    st.sampled_from([5432, 443]),
    st.sampled_from([6, 17]),
)
events = st.lists(
    st.tuples(st.sampled_from(["out", "reply", "vpc-reply", "junk", "time"]), flows,
              st.binary(max_size=40), st.integers(0, 255)),
    min_size=1, max_size=60,
)


def make_engine(**options):
    return Engine(MODEL, {"169.254.76.0/24": "fn"}, EngineOptions(**options), backend="reference")


def outbound(flow, payload, flags):
    host, sport, d, dport, proto = flow
    return build_packet(4, SANDBOX_BASE + host, DESTINATIONS[d], proto, sport, dport, flags=flags | pk.ACK,
                        payload=payload)


def reply(flow, payload):
    host, sport, d, dport, proto = flow
    return build_packet(4, DESTINATIONS[d], SANDBOX_BASE + host, proto, dport, sport, flags=pk.ACK, payload=payload)


def live_tuples(engine):
    conns = engine.connections()
    lam = [(c.proto,) + c.lambda_tuple for c in conns]
    vpc = [(c.proto,) + c.eni_tuple for c in conns]
    return lam, vpc


@settings(deadline=None)
@given(events, st.booleans())
def test_invariants_over_random_traffic(evs, strict):
    engine = make_engine(tcp_strict=strict, port_range=(1024, 1031), eni_capacity=6)
    eni_side: dict = {}
    count = 0
    t = 1.0
    for kind, flow, payload, flags in evs:
        if kind == "time":
            t += 40.0  # lets UDP connections expire
            continue
        if kind == "out":
            data = outbound(flow, payload, flags & ~pk.RST)
        elif kind == "reply":
            data = reply(flow, payload)
        elif kind == "vpc-reply" and flow in eni_side:
            ip, port = eni_side[flow]
            host, sport, d, dport, proto = flow
            data = build_packet(4, DESTINATIONS[d], ip, proto, dport, port, flags=pk.ACK, payload=payload)
        else:
            data = payload
        result = engine.process(data, t)
        count += 1
        # exactly one verdict, a reason exactly when dropped
        assert result.verdict in (Verdict.FORWARDED, Verdict.DROPPED)
        assert (result.reason == DropReason.NONE) == (result.verdict == Verdict.FORWARDED)
        # valid checksums on every tap
        for tap, out in list(result.taps.items()) + list(result.emitted):
            assert checksum.verify(out), (tap, result)
        if result.forwarded and result.direction == "outbound":
            eni = pk.parse(result.taps["eni"])
            eni_side[flow] = (eni.src, eni.sport)
            # reverse translation restores the sandbox's packet byte for byte
            back = bytearray(result.taps["eni"])
            checksum.rewrite_src(back, eni, SANDBOX_BASE + flow[0], flow[1])
            assert bytes(back) == data
        if result.forwarded and result.direction == "reply":
            if kind == "reply":
                assert result.taps["lambda"] == data
            else:  # VPC form in: the sandbox view, translated back, is the VPC form again
                sandbox_view = pk.parse(result.taps["lambda"])
                again = bytearray(result.taps["lambda"])
                checksum.rewrite_dst(again, sandbox_view, *eni_side[flow])
                assert bytes(again) == data
        # bijection on live connections; no VPC-side 5-tuple shared
        lam, vpc = live_tuples(engine)
        assert len(set(lam)) == len(lam)
        assert len(set(vpc)) == len(vpc)
        for conn in engine.connections():
            proto = conn.proto
            ip, port, dst, dport = conn.eni_tuple
            assert engine._impl.table.get((2, proto, dst, dport, ip, port)) is conn
    summary = engine.summary()
    assert summary["packets"] == count == summary["forwarded"] + summary["dropped"]
    assert sum(summary["drops"].values()) == summary["dropped"]


@given(st.binary(max_size=120), st.sampled_from([pk.RAW, pk.ETHERNET, pk.LINUX_SLL, pk.NULL]))
def test_any_bytes_get_exactly_one_verdict(data, linktype):
    engine = make_engine()
    result = engine.process(data, 1.0, linktype)
    assert result.verdict in (Verdict.FORWARDED, Verdict.DROPPED)
    assert engine.summary()["packets"] == 1


addresses = st.integers(0, (1 << 32) - 1)
ports = st.integers(0, 65535)


@given(st.sampled_from([6, 17]), addresses, addresses, ports, ports, addresses, ports, st.binary(max_size=30),
       st.booleans(), st.booleans())
def test_rewrite_equals_the_checksum_module(proto, src, dst, sport, dport, new_addr, new_port, payload, dst_side,
                                            zero_udp_checksum):
    data = bytearray(build_packet(4, src, dst, proto, sport, dport, payload=payload))
    if proto == 17 and zero_udp_checksum:
        data[26:28] = b"\x00\x00"  # "no checksum"
    data = bytes(data)
    p = pk.parse(data)
    old_addr, old_port = (dst, dport) if dst_side else (src, sport)
    expected = bytearray(data)
    (checksum.rewrite_dst if dst_side else checksum.rewrite_src)(expected, p, new_addr, new_port)
    rewrite = Rewrite.make(4, dst_side, old_addr, new_addr, old_port, new_port)
    assert Rewrite.apply(rewrite, data, p) == bytes(expected)


@given(st.sampled_from([6, 17]), st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 128) - 1), ports, ports,
       st.integers(0, (1 << 128) - 1), ports, st.binary(max_size=30))
def test_rewrite_equals_the_checksum_module_ipv6(proto, src, dst, sport, dport, new_addr, new_port, payload):
    data = build_packet(6, src, dst, proto, sport, dport, payload=payload)
    p = pk.parse(data)
    expected = bytearray(data)
    checksum.rewrite_src(expected, p, new_addr, new_port)
    assert Rewrite.apply(Rewrite.make(6, False, src, new_addr, sport, new_port), data, p) == bytes(expected)
