"""Proof of sameness: the core backend (C fast path + reference slow path) and the reference
backend give identical results, packet by packet, on generated traffic over several VPCs.

Compared per packet: verdict, reason, component, rule, the bytes at every tap (and the emitted
packets); after each batch: the live connections (state, timer, counters, ENI and ports); at
the end: summary, counters and flow logs. Traffic: new and established TCP sessions (handshake,
data, close, reset), UDP exchanges, replies in the sandbox's and in the VPC's form, unsolicited
inbound packets, malformed packets, time jumps past the timeouts, more connections than a small
ENI holds; configurations change mid-run.
"""
from __future__ import annotations

import ipaddress
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))

from builders import acl, rule, standard_vpc  # noqa: E402

from hyperplane.engine import EngineOptions, Sandbox  # noqa: E402
from hyperplane.reference.dataplane import K_OUT, Dataplane, build_packet  # noqa: E402

core = pytest.importorskip("hyperplane.core")

SANDBOX_NET = "169.254.76.0/28"
SANDBOXES = [int(ipaddress.ip_address("169.254.76.1")) + i for i in range(4)]
DB = int(ipaddress.ip_address("10.0.2.15"))
NOWHERE = int(ipaddress.ip_address("10.0.2.99"))
WEB = int(ipaddress.ip_address("93.184.216.34"))
DNS = int(ipaddress.ip_address("10.0.0.2"))  # Amazon DNS: exempt from SGs, NACLs, flow logs
DESTINATIONS = [(DB, 5432, 6), (WEB, 443, 6), (WEB, 53, 17), (DB, 5432, 17), (NOWHERE, 80, 6), (DNS, 53, 17)]
FLAGS = {"syn": 0x02, "synack": 0x12, "ack": 0x10, "psh": 0x18, "fin": 0x11, "rst": 0x04, "none": 0x00}


def _model(variant: int):
    b = standard_vpc()
    if variant == 1:  # replies refused by a stateless NACL on the function's subnet
        b.nacl("acl-app", ["subnet-app"], ingress=[acl(100, "allow", "tcp", "0.0.0.0/0", (5432, 5432))],
               egress=[acl(100, "allow")])
    elif variant == 2:  # the database takes UDP too; the function may only reach the VPC
        b.sg("sg-db", ingress=[rule("all", group="sg-fn")], egress=[rule("all", cidr="0.0.0.0/0")])
        b.sg("sg-fn", egress=[rule("all", cidr="10.0.0.0/16")])
    elif variant == 3:  # untracked flows: all-open rules both ways
        b.sg("sg-fn", ingress=[rule("all", cidr="0.0.0.0/0")], egress=[rule("all", cidr="0.0.0.0/0")])
    return b.build()


SCENARIOS = [
    (0, EngineOptions()),
    (1, EngineOptions(tcp_strict=True, flow_log_interval=60)),
    (2, EngineOptions(eni_capacity=2, port_range=(2000, 2003))),
    (3, EngineOptions(timeouts={"udp": 30, "udp_stream": 60}, flow_log_interval=60)),
]

event = st.one_of(
    st.tuples(st.just("out"), st.integers(0, 3), st.integers(0, 5), st.sampled_from(sorted(FLAGS)),
              st.integers(0, 40)),
    st.tuples(st.just("reply"), st.integers(0, 3), st.integers(0, 5), st.sampled_from(sorted(FLAGS)),
              st.integers(0, 40)),
    st.tuples(st.just("vpc"), st.integers(0, 3), st.integers(0, 5), st.sampled_from(sorted(FLAGS)),
              st.integers(0, 40)),
    st.tuples(st.just("unsolicited"), st.integers(0, 3), st.integers(0, 5), st.just("syn"), st.just(0)),
    st.tuples(st.just("malformed"), st.integers(0, 3), st.integers(0, 5), st.just("ack"), st.integers(1, 30)),
    st.tuples(st.just("wait"), st.sampled_from([0.001, 1.0, 29.5, 31.0, 61.0, 125.0, 351.0, 700.0, 500000.0]),
              st.just(0), st.just("none"), st.just(0)),
)


def _packets(events, ref: Dataplane, t: float):
    """Frames and timestamps for one batch; VPC-form replies use the reference's current ENI
    tuple of the flow (both engines hold the same one)."""
    frames, stamps = [], []
    for kind, a, b, flag, size in events:
        if kind == "wait":
            t += a
            continue
        t += 0.25
        sip, sport = SANDBOXES[a], 40000 + a
        dst, dport, proto = DESTINATIONS[b]
        flags = FLAGS[flag] if proto == 6 else 0
        payload = bytes(range(size))
        if kind == "out":
            data = build_packet(4, sip, dst, proto, sport, dport, flags, seq=7, payload=payload)
        elif kind == "reply":
            data = build_packet(4, dst, sip, proto, dport, sport, flags, seq=9, ack=8, payload=payload)
        elif kind == "vpc":
            conn = ref.table.get((K_OUT, proto, sip, sport, dst, dport))
            if conn is None:
                continue
            eni_ip, eni_port = conn.eni_tuple[0], conn.eni_tuple[1]
            data = build_packet(4, dst, eni_ip, proto, dport, eni_port, flags, seq=9, payload=payload)
        elif kind == "unsolicited":
            data = build_packet(4, dst, sip, proto, dport, 9999, flags)
        else:  # malformed: a truncated copy of a valid packet
            data = build_packet(4, sip, dst, proto, sport, dport, flags, payload=b"z" * 8)[:size]
        frames.append(data)
        stamps.append(t)
    return frames, stamps, t


def _conn_view(engine) -> list:
    return [(c.proto, c.function, c.eni_id, int(c.state), c.expires, c.last_seen, c.lambda_tuple, c.eni_tuple,
             c.packets_orig, c.packets_reply, c.bytes_orig, c.bytes_reply, c.flags_orig, c.flags_reply,
             c.exchanges, c.replied, c.generation, c.nat_last_seen) for c in engine.connections()]


def _run_both(variant: int, options: EngineOptions, batches, change_at):
    model = _model(variant)
    sandboxes = [Sandbox("fn", ipaddress.ip_network(SANDBOX_NET))]
    ref = Dataplane(model, sandboxes, options)
    fast = core.CoreEngine(model, sandboxes, options, expected_connections=16)
    t = 1_000.0
    for n, events in enumerate(batches):
        if n == change_at:
            changed = _model((variant + 1) % 4)
            ref.update_config(changed)
            fast.update_config(changed)
        frames, stamps, t = _packets(events, ref, t)
        if not frames:
            continue
        offsets = np.cumsum([0] + [len(f) for f in frames[:-1]])
        args = (b"".join(frames), offsets, [len(f) for f in frames], stamps)
        expected = [ref.process(f, s) for f, s in zip(frames, stamps)]
        got = fast.process_batch(*args)
        for i, r in enumerate(expected):
            assert (int(got.verdicts[i]), int(got.reasons[i])) == (int(r.verdict), int(r.reason)), i
            if r.reason:
                assert (got.components[i], got.rules[i]) == (r.component, r.rule), i
        for tap in ("lambda", "eni", "internet"):
            want = [(i, r.taps[tap]) for i, r in enumerate(expected) if tap in r.taps]
            assert list(got.taps[tap]) == want, tap
            assert [(i, d) for i, r in enumerate(expected) for tp, d in r.emitted if tp == tap] == got.emitted[tap]
        assert _conn_view(fast) == _conn_view(ref)
    assert fast.summary() == ref.summary()
    assert fast.counters() == ref.counters()
    assert [r.format(ref.flow_log_fields) for r in fast.flow_logs()] == \
           [r.format(ref.flow_log_fields) for r in ref.flow_logs()]
    return fast


@settings(max_examples=60, deadline=None)
@given(scenario=st.integers(0, len(SCENARIOS) - 1),
       batches=st.lists(st.lists(event, min_size=1, max_size=25), min_size=1, max_size=6),
       change_at=st.integers(0, 8))
def test_core_and_reference_agree(scenario, batches, change_at):
    variant, options = SCENARIOS[scenario]
    _run_both(variant, options, batches, change_at)


def _session(a: int, b: int, data_packets: int):
    events = [("out", a, b, "syn", 0), ("reply", a, b, "synack", 0), ("out", a, b, "ack", 0)]
    for k in range(data_packets):
        events += [("out", a, b, "psh", k % 40), ("reply", a, b, "ack", 0), ("vpc", a, b, "psh", 3)]
    return events + [("out", a, b, "fin", 0), ("reply", a, b, "fin", 0), ("out", a, b, "ack", 0)]


@pytest.mark.parametrize("variant,options", SCENARIOS)
def test_established_sessions_take_the_fast_path(variant, options):
    """Whole sessions through each configuration; most of their packets must have been
    forwarded by the C loop (else this differential test would prove nothing about it)."""
    batches = [_session(a, b, 20) for a in range(2) for b in (0, 1, 2)]
    batches.append([("wait", 400.0, 0, "none", 0)] + _session(2, 1, 5))
    fast = _run_both(variant, options, batches, change_at=99)
    stats = fast.core_stats()
    assert stats["learned"] > 0
    if variant == 0:
        assert stats["stops"].get("end", 0) > 0
        assert fast.dp.packets > 0


def test_fast_path_share_is_high_on_established_traffic():
    batches = [_session(0, 1, 50)]
    fast = _run_both(0, EngineOptions(), batches, change_at=99)
    stops = fast.core_stats()["stops"]
    slow = sum(v for k, v in stops.items() if k != "end")
    total = 3 + 150 + 3
    assert slow < total // 5, stops


def test_tap_buffers_replaced_mid_batch_are_rebound(monkeypatch):
    """Tap buffers start nearly empty: the fast loop runs out of room ("space": they grow) and the
    slow path's appends replace them too, mid-batch; the loop, bound to the batch's arrays once,
    must follow every replacement (same bytes as the reference)."""
    monkeypatch.setattr(core, "_HEAD_BYTES", 0)
    batches = [[e for a in range(3) for e in _session(a, b, 12)] for b in (0, 1)]
    fast = _run_both(0, EngineOptions(), batches, change_at=99)
    stops = fast.core_stats()["stops"]
    assert stops.get("space", 0) > 0
    slow = sum(v for k, v in stops.items() if k != "end")
    assert slow < sum(len(b) for b in batches) // 4, stops  # after a growth, the loop goes on fast


def test_tap_outputs_stay_valid_while_held_and_do_not_follow_a_writable_input():
    """Tap outputs refer to reused arrays and to the input buffer: a result still held is never
    overwritten by later batches, and changing a writable input afterwards changes nothing."""
    model = _model(0)
    sandboxes = [Sandbox("fn", ipaddress.ip_network(SANDBOX_NET))]
    ref = Dataplane(model, sandboxes, EngineOptions())
    fast = core.CoreEngine(model, sandboxes, EngineOptions(), expected_connections=16)
    held, t = [], 1_000.0
    for n in range(6):
        events = _session(n % 2, 0, 4) if n < 2 else [("out", n % 2, 0, "psh", 7 + n), ("reply", n % 2, 0, "ack", n)]
        frames, stamps, t = _packets(events, ref, t)
        expected = [ref.process(f, s) for f, s in zip(frames, stamps)]
        buf = bytearray(b"".join(frames))
        got = fast.process_batch(buf, np.cumsum([0] + [len(f) for f in frames[:-1]]), [len(f) for f in frames],
                                 stamps)
        buf[:] = bytes(len(buf))  # the caller reuses its buffer
        want = {tap: [(i, r.taps[tap]) for i, r in enumerate(expected) if tap in r.taps] for tap in got.taps}
        assert {tap: list(v) for tap, v in got.taps.items()} == want
        for tap, v in got.taps.items():  # the joined form agrees with the items
            joined = [(int(i), v.buffer[o : o + n].tobytes()) for i, o, n in zip(v.index, v.offsets, v.lengths)]
            assert joined == want[tap]
        held.append((got, want))
        if n == 3:
            held = held[-1:]  # dropping results lets their arrays be reused
    assert fast.core_stats()["stops"].get("end", 0) > 0
    for got, want in held:
        assert {tap: list(v) for tap, v in got.taps.items()} == want


class _Afresh(Dataplane):
    """The reference deciding every new connection from scratch: its per-destination caches (the
    plans with their opening legs, ``_plans``, and the function's egress decisions, ``_egress``)
    are emptied before each one. Those caches live in the executable specification itself, where
    the core/reference comparison above cannot see them (both backends share them)."""

    def _open(self, *args):
        self._plans = {}
        self._egress = {}
        return super()._open(*args)


@settings(max_examples=40, deadline=None)
@given(scenario=st.integers(0, len(SCENARIOS) - 1),
       batches=st.lists(st.lists(event, min_size=1, max_size=25), min_size=1, max_size=6),
       change_at=st.integers(0, 6))
def test_the_reference_caches_decide_as_deciding_afresh(scenario, batches, change_at):
    """Every result (verdict, reason, component, rule, taps), the connections, the summary, the
    flow logs and explain's traces are the same with the caches as without them. Every
    destination is opened first, so the caches hold a decision for each before the configuration
    changes (in every example) and the traffic and explain probes after the change use them."""
    variant, options = SCENARIOS[scenario]
    model = _model(variant)
    sandboxes = [Sandbox("fn", ipaddress.ip_network(SANDBOX_NET))]
    cached, afresh = Dataplane(model, sandboxes, options), _Afresh(model, sandboxes, options)
    warm_up = [("out", 3, b, "syn", 0) for b in range(len(DESTINATIONS))]
    change_at = 1 + min(change_at, len(batches))
    t = 1_000.0
    for n, events in enumerate([warm_up] + batches + [[]]):
        if n == change_at:
            changed = _model((variant + 1) % 4)
            cached.update_config(changed)
            afresh.update_config(changed)
        frames, stamps, t = _packets(events, cached, t)
        for f, s in zip(frames, stamps):
            a, b = cached.process(f, s), afresh.process(f, s)
            assert (a.verdict, a.reason, a.component, a.rule, a.taps, a.emitted, a.eni_id, a.direction) == \
                   (b.verdict, b.reason, b.component, b.rule, b.taps, b.emitted, b.eni_id, b.direction)
        assert _conn_view(cached) == _conn_view(afresh)
    assert cached.summary() == afresh.summary()
    assert [r.format(cached.flow_log_fields) for r in cached.flow_logs()] == \
           [r.format(afresh.flow_log_fields) for r in afresh.flow_logs()]
    for dst, dport, proto in DESTINATIONS:
        a = cached.explain("fn", ipaddress.ip_address(dst), dport, proto)
        b = afresh.explain("fn", ipaddress.ip_address(dst), dport, proto)
        assert (a.verdict, a.reason, a.component, a.rule, a.hint, a.hops) == \
               (b.verdict, b.reason, b.component, b.rule, b.hint, b.hops)
