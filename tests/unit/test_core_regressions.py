"""Regressions of the core backend against the reference, each a sequence that once differed."""
from __future__ import annotations

import os
import sys

import pytest

from hyperplane.engine import available_backends
from hyperplane.testing import engine_for, load_documents

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "property"))
import test_stateful as ts  # noqa: E402  (the configuration-change scenario of the state machine)

pytestmark = pytest.mark.skipif("core" not in available_backends(), reason="the core backend is not built")


def _results(backend: str) -> list[str]:
    """A connection, then a NACL change denying requests, then request/reply exchanges: the
    reply re-teaches the fast path under the new configuration; the request kind it learned
    before the change must not stay valid."""
    engine = engine_for(load_documents(ts.documents()), {"169.254.76.0/24": "fn"}, backend=backend)
    now = [ts.EPOCH]

    def send(data):
        now[0] += 1.0
        return engine.process(data, now[0])

    out_pkt = ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.PSH | ts.ACK, 2, 501, b"select 1")
    reply_pkt = ts.ip_packet(ts.SERVERS[0], ts.SANDBOX, ts.TCP, 5432, 41000, ts.PSH | ts.ACK, 501, 10, b"1")
    seen = [send(ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.SYN, 1))]
    seen.append(send(ts.ip_packet(ts.SERVERS[0], ts.SANDBOX, ts.TCP, 5432, 41000, ts.SYN | ts.ACK, 500, 2)))
    seen.append(send(ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.ACK, 2, 501)))
    seen += [send(out_pkt), send(reply_pkt)]
    engine.update_config(load_documents(ts.documents(server_sg_open=True, deny_requests=True, deny_replies=False)))
    for _ in range(3):
        seen += [send(out_pkt), send(reply_pkt)]
    return [repr(r) for r in seen]


def test_a_configuration_change_voids_every_learned_key_kind_of_a_connection():
    core, reference = _results("core"), _results("reference")
    assert core == reference
    assert reference[-2].startswith("Result(dropped nacl-ingress")


def _note_slow_frames(engine, slow: list) -> None:
    """Append to ``slow`` every frame the core's slow path takes."""
    impl, slow_path = engine._impl, engine._impl._slow_path
    impl._slow_path = lambda frame, ts, lt: slow.append(frame) or slow_path(frame, ts, lt)


def _timer_run(backend: str, slow=None):
    """Flow A (one UDP exchange) expires at t + 30 s while flow B keeps talking every 5 s; then A's
    tuple opens again."""
    import numpy as np

    engine = engine_for(load_documents(ts.documents()), {"169.254.76.0/24": "fn"}, backend=backend)
    if slow is not None:
        _note_slow_frames(engine, slow)
    frames, stamps = [], []

    def add(t, data):
        frames.append(data)
        stamps.append(ts.EPOCH + t)

    server = ts.SERVERS[0]
    add(0.0, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41000, 53, payload=b"a?"))
    add(0.1, ts.ip_packet(server, ts.SANDBOX, ts.UDP, 53, 41000, payload=b"a!"))
    for k in range(20):
        add(0.5 + 5 * k, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41001, 53, payload=b"b" + bytes([k])))
        add(0.6 + 5 * k, ts.ip_packet(server, ts.SANDBOX, ts.UDP, 53, 41001, payload=b"!" + bytes([k])))
    add(101.0, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41000, 53, payload=b"a again"))
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    batch = engine.process_batch(b"".join(frames), offsets, lengths, np.array(stamps))
    if slow is not None:
        slow[:] = [frames.index(f) for f in slow]
    taps = {t: [(i, bytes(d)) for i, d in batch.taps[t]] for t in batch.taps}
    return batch.verdicts.tolist(), batch.reasons.tolist(), taps, engine.summary(), engine


def test_another_connections_timer_costs_the_fast_loop_no_stop_and_changes_nothing():
    """A's expiry falls between B's packets: the fast loop goes on (the slow path fires the timer
    when its clock next moves, with the same results); the slow path takes only A's first packet
    and A's packet after its own expiry (B's first packet, to the destination A's planned, is
    opened from that plan)."""
    slow: list = []
    *core, engine = _timer_run("core", slow)
    *reference, _ = _timer_run("reference")
    assert core == reference
    assert slow == [0, 42]
    assert engine.core_stats()["opened"] == 1
    summary = reference[3]
    assert summary["forwarded"] == summary["packets"] == 43


def test_core_stats_account_for_every_packet_the_slow_path_took():
    """Engine.core_stats: the slow path's packet count is the number of packets punted to it
    (here A's first packet and A's packet after its expiry), ``opened`` the connections opened
    from their plan (B's); the fast loop forwarded the rest; the reference backend has no such
    account."""
    slow: list = []
    *_, summary, engine = _timer_run("core", slow)
    stats = engine.core_stats()
    assert stats["slow_packets"] == len(slow) == 2
    assert stats["opened"] == 1
    assert summary["packets"] - stats["slow_packets"] - stats["opened"] == 40
    assert stats["fast_seconds"] > 0 and stats["slow_seconds"] > 0 and stats["open_seconds"] > 0
    *_, reference = _timer_run("reference")
    assert reference.core_stats() is None


def _first_replies(backend: str, slow=None):
    """TCP handshakes of orders-api (to its database, and to the internet through the NAT
    gateway) and of report-worker (whose subnet's NACL drops the replies), replies in the
    sandbox's view, one batch; a custom v5 format; the second round's replies fall in the next
    flow-log window (60 s)."""
    import ipaddress

    import numpy as np

    from hyperplane.engine import Engine, EngineOptions
    from hyperplane.flowlogs import V5_CUSTOM_FIELDS
    from hyperplane.reference.dataplane import build_packet
    from hyperplane.vpc.loader import load_vpc

    demo = os.path.join(os.path.dirname(__file__), "..", "..", "pcaps", "demo")
    engine = Engine(load_vpc(os.path.join(demo, "vpc")), ["orders-api=169.254.76.0/24", "report-worker=169.254.77.0/24"],
                    EngineOptions(flow_log_interval=60, flow_log_fields=V5_CUSTOM_FIELDS), backend=backend)
    if slow is not None:
        _note_slow_frames(engine, slow)
    ip = lambda text: int(ipaddress.ip_address(text))  # noqa: E731
    peers = [(ip("169.254.76.5"), ip("10.0.3.10"), 5432), (ip("169.254.76.6"), ip("203.0.113.10"), 443),
             (ip("169.254.77.5"), ip("203.0.113.20"), 443)]
    frames, stamps = [], []
    t = 1_793_610_030.0
    for round_ in range(2):
        for k, (sandbox, server, port) in enumerate(peers):
            sport = 40000 + 10 * round_ + k
            frames.append(build_packet(4, sandbox, server, 6, sport, port, 0x02))
            stamps.append(t)
            frames.append(build_packet(4, server, sandbox, 6, port, sport, 0x12))
            stamps.append(t + 35.0)  # round 0: the reply is in the next 60 s window
            frames.append(build_packet(4, sandbox, server, 6, sport, port, 0x10))
            stamps.append(t + 35.5)
            t += 0.25
        t = 1_793_610_125.0  # round 1: in the window [120, 180) s, replies included
    lengths = np.array([len(f) for f in frames], np.int64)
    order = np.argsort(np.array(stamps), kind="stable")
    buffer = b"".join(frames[i] for i in order)
    lengths = lengths[order]
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    batch = engine.process_batch(buffer, offsets, lengths, np.array(stamps)[order])
    if slow is not None:
        slow[:] = sorted(frames.index(f) for f in slow)  # 9 * round + 3 * peer + step
    taps = {name: [(i, bytes(d)) for i, d in batch.taps[name]] for name in batch.taps}
    logs = [r.format(engine.flow_log_fields) for r in engine.flow_logs()]
    return (batch.verdicts.tolist(), batch.reasons.tolist(), taps, logs, engine.summary()), engine


def test_the_first_reply_of_a_new_connection_is_forwarded_by_the_fast_path():
    """The slow path decides a new connection's reply leg when it opens it, so the fast path is
    taught the reply ahead (FlowTable.learn(first=True)); the first reply then costs no slow-path
    packet, and its flow-log records are made from it, as the slow path would (same windows,
    start times, v5 fields, order). A refused reply leg is not taught ahead."""
    slow: list = []
    core, engine = _first_replies("core", slow)
    reference, _ = _first_replies("reference")
    assert core == reference
    verdicts = reference[0]
    assert verdicts.count(0) == 16 and len(verdicts) == 18  # report-worker's replies are dropped
    # slow path: the SYNs of round 0 (step 0) and report-worker's of round 1 (its reply leg keeps
    # the NACL check that refuses it, so its plan is not compiled: core_open), report-worker's
    # refused replies (peer 2, step 1) and, in round 0 only, the replies and ACKs that crossed
    # into the next flow-log window (the reply is taught again there, which voids the ACK's kind
    # learned in the old window); round 1's other SYNs are opened from round 0's plans
    assert slow == [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16], slow
    assert engine.core_stats()["opened"] == 2


def _large_slow_packets(backend: str):
    """New UDP flows with 1,400-byte payloads, one batch: every packet takes the slow path and
    its tap forms outgrow the tap buffers sized for headers (64 bytes a packet)."""
    import numpy as np

    engine = engine_for(load_documents(ts.documents()), {"169.254.76.0/24": "fn"}, backend=backend)
    frames = [ts.ip_packet(ts.SANDBOX, ts.SERVERS[k % len(ts.SERVERS)], ts.UDP, 42000 + k, 53,
                           payload=bytes([k]) * 1400) for k in range(40)]
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    batch = engine.process_batch(b"".join(frames), offsets, lengths, ts.EPOCH + np.arange(40, dtype=np.float64))
    return batch.verdicts.tolist(), batch.reasons.tolist(), {t: [(i, bytes(d)) for i, d in batch.taps[t]]
                                                              for t in batch.taps}


def test_slow_path_results_larger_than_the_tap_buffers_grow_them():
    core, reference = _large_slow_packets("core"), _large_slow_packets("reference")
    assert core == reference
    assert sum(len(v) for v in reference[2].values()) >= 40
    assert all(len(d) > 1400 for v in reference[2].values() for _, d in v)
