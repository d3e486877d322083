"""The core backend's planned opens (hyperplane/core_open.py): a new connection to a destination
already planned from the same ENI is opened without the slow path, with the results the slow path
(the reference's Dataplane._open) gives; every other first packet is left to the slow path."""
import ipaddress
import os

import numpy as np
import pytest

from hyperplane.codes import DropReason
from hyperplane.engine import Engine, EngineOptions
from hyperplane.reference.dataplane import build_packet
from hyperplane.vpc.loader import load_vpc

pytest.importorskip("hyperplane._core")

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "pcaps", "demo", "vpc")
T0 = 1_793_610_030.0
SANDBOXES = ["orders-api=169.254.76.0/24", "report-worker=169.254.77.0/24"]


def _ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


DB = (_ip("10.0.3.10"), 5432)  # through a security-group reference
WEB = (_ip("203.0.113.10"), 443)  # through the NAT gateway
ORDERS, REPORTS = _ip("169.254.76.5"), _ip("169.254.77.5")  # report-worker's NACL refuses its replies


def _handshakes(flows, gap: float = 0.01):
    """Each flow ``(sandbox, (server, port), sport)``: SYN, SYN-ACK, ACK, in flow order."""
    packets, t = [], T0
    for sandbox, (server, port), sport in flows:
        for src, dst, sp, dp, flags in ((sandbox, server, sport, port, 0x02), (server, sandbox, port, sport, 0x12),
                                        (sandbox, server, sport, port, 0x10)):
            packets.append((t, build_packet(4, src, dst, 6, sp, dp, flags)))
            t += gap
    return packets


def _run(backend: str, packets, **options):
    engine = Engine(load_vpc(DEMO), SANDBOXES, EngineOptions(**options), backend=backend)
    frames = [f for _, f in packets]
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    batch = engine.process_batch(b"".join(frames), offsets, lengths, np.array([t for t, _ in packets]))
    conns = sorted((c.function, c.eni_id, int(c.state), c.lambda_tuple, c.eni_tuple, c.packets_orig, c.packets_reply,
                    c.expires, c.nat) for c in engine.connections())
    seen = (batch.verdicts.tolist(), batch.reasons.tolist(), batch.components, batch.rules,
            {t: [(i, bytes(d)) for i, d in batch.taps[t]] for t in batch.taps}, conns, engine.summary(),
            [r.format(engine.flow_log_fields) for r in engine.flow_logs()])
    return seen, engine


def _both(packets, **options):
    core, engine = _run("core", packets, **options)
    reference, _ = _run("reference", packets, **options)
    assert core == reference
    return reference, engine.core_stats()


def test_connections_to_planned_destinations_open_without_the_slow_path():
    flows = [(ORDERS + k, dest, 40000 + k) for k in range(6) for dest in (DB, WEB)]
    seen, stats = _both(_handshakes(flows))
    assert seen[0] == [0] * 36  # every packet forwarded
    assert stats["opened"] == 10  # all but the first connection to each destination
    assert stats["slow_packets"] == 2


def test_a_plan_that_keeps_a_check_on_a_leg_is_left_to_the_slow_path():
    """report-worker's reply leg keeps the NACL check that refuses its replies: its connections
    all take the slow path (and its replies are dropped there)."""
    flows = [(REPORTS + k, WEB, 40000 + k) for k in range(4)]
    seen, stats = _both(_handshakes(flows))
    assert seen[0].count(1) == 4  # each SYN-ACK dropped
    assert stats["opened"] == 0


def test_a_full_eni_is_left_to_the_slow_path_which_makes_the_next_one():
    """With 3 connections an ENI, the fourth needs an overflow ENI: the slow path creates it (a
    new ENI drops the kept decisions, so the fifth decides the function's egress again on the
    slow path, from the plan the fourth made); the sixth is opened on the new ENI."""
    flows = [(ORDERS + k, DB, 40000 + k) for k in range(6)]
    seen, stats = _both(_handshakes(flows), eni_capacity=3)
    assert seen[0] == [0] * 18
    assert len({c[1] for c in seen[5]}) == 2  # two ENIs carry the connections
    assert stats["opened"] == 3 and stats["slow_packets"] == 3


def test_a_nat_gateway_out_of_ports_is_left_to_the_slow_path():
    """Two NAT ports for one destination: the third connection is refused by the slow path
    (nat-port-exhaustion), with the same flow-log records and counters as the reference."""
    flows = [(ORDERS + k, WEB, 40000 + k) for k in range(3)]
    seen, stats = _both(_handshakes(flows), nat_port_range=(5000, 5001))
    assert seen[0][6:] == [1, 1, 1]  # SYN refused; the rest of that flow has no connection
    assert stats["opened"] == 1


def test_an_inactive_function_is_left_to_the_slow_path():
    """A control-plane timer due (here the function's idle reclaim after its last use) is the
    slow path's: the opener declines, and the slow path fires it and refuses the connection."""
    flows = [(ORDERS, DB, 40000), (ORDERS + 1, DB, 40001)]
    packets = _handshakes(flows)
    t, frame = packets[3]
    packets[3:] = [(t + 30 * 86400.0, f) for _, f in packets[3:]]  # the second flow, 30 days later
    seen, stats = _both(packets)
    assert stats["opened"] == 0
    assert seen[1][3] != 0  # refused (function-not-active)


def test_packets_given_one_at_a_time_are_opened_from_plans_too():
    """Engine.process (one packet): an opened connection's first packet is forwarded by the fast
    loop run again on it, with the result, taps and records of the slow path."""
    flows = [(ORDERS + k, dest, 40000 + k) for k in range(3) for dest in (DB, WEB)] + [(REPORTS, WEB, 41000)]
    packets = _handshakes(flows)
    seen = {}
    for backend in ("core", "reference"):
        engine = Engine(load_vpc(DEMO), SANDBOXES, EngineOptions(), backend=backend)
        results = [engine.process(frame, t) for t, frame in packets]
        seen[backend] = ([(int(r.verdict), int(r.reason), r.component, r.taps, r.eni_id, r.direction, r.function)
                          for r in results], engine.summary(),
                         [x.format(engine.flow_log_fields) for x in engine.flow_logs()])
        if backend == "core":
            assert engine.core_stats()["opened"] == 4
    assert seen["core"] == seen["reference"]


def _exchange(sandbox, dest, sport, t, gap=0.01):
    """A whole TCP connection: handshake, FIN both ways, last ACK."""
    server, port = dest
    steps = ((sandbox, server, sport, port, 0x02), (server, sandbox, port, sport, 0x12),
             (sandbox, server, sport, port, 0x10), (sandbox, server, sport, port, 0x11),
             (server, sandbox, port, sport, 0x11), (sandbox, server, sport, port, 0x10))
    return [(t + k * gap, build_packet(4, src, dst, 6, sp, dp, flags))
            for k, (src, dst, sp, dp, flags) in enumerate(steps)]


def _compare(packets, in_loop=True, **options):
    """Both backends over ``packets`` (one batch); everything compared, counters and emitted
    packets included. Returns the core's stats taken right after the batch (before anything
    adopts its connections) and after the comparison. ``in_loop`` False: the core makes its
    planned opens in Python only (no template is armed in the fast loop)."""
    seen, before, after = {}, None, None
    for backend in ("core", "reference"):
        engine = Engine(load_vpc(DEMO), SANDBOXES, EngineOptions(**options), backend=backend)
        if backend == "core":
            engine._impl.open_in_loop = in_loop
        frames = [f for _, f in packets]
        lengths = np.array([len(f) for f in frames], np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
        batch = engine.process_batch(b"".join(frames), offsets, lengths, np.array([t for t, _ in packets]))
        if backend == "core":
            before = engine.core_stats()
        seen[backend] = (batch.verdicts.tolist(), batch.reasons.tolist(),
                         {t: [(i, bytes(d)) for i, d in batch.taps[t]] for t in batch.taps}, batch.emitted,
                         [r.format(engine.flow_log_fields) for r in engine.flow_logs(flush=False)],
                         engine.counters, engine.summary(),  # (these adopt nothing)
                         [(c.lambda_tuple, c.eni_tuple, int(c.state), c.expires, c.packets_orig, c.bytes_reply)
                          for c in engine.connections()],
                         [r.format(engine.flow_log_fields) for r in engine.flow_logs()])
        if backend == "core":
            after = engine.core_stats()
    assert seen["core"] == seen["reference"]
    return before, after, seen["reference"]


def test_unadopted_connections_expire_in_the_c_table():
    """Connections planned opens made stay with the C table until Python needs them: those whose
    timer runs out (TIME_WAIT, 120 s) are released there (source port, ENI slot) when the next
    connection opens, as the slow path releases an expired one; the results are the reference's
    (peak and live connection counts included)."""
    first = [p for k in range(8) for p in _exchange(ORDERS + k, DB, 40000 + k, T0 + k)]
    later = [p for k in range(8) for p in _exchange(ORDERS + k, DB, 41000 + k, T0 + 300 + k)]
    before, after, seen = _compare(first + later)
    assert seen[0] == [0] * 96
    assert before["opened"] == 15 and before["slow_packets"] == 1
    assert before["timed"] == 8 and before["entries"] == 8  # the first 8 expired and left the C table
    assert after["timed"] == 0  # reading the connections adopted the rest
    assert seen[5]["connections_peak"] == 8 and seen[5]["connections_live"] == 8


def test_a_nat_mapping_idle_on_an_unadopted_connection_is_the_slow_paths():
    """A connection through the NAT gateway, idle past 350 s while unadopted: when the next
    connection opens, the slow path takes the connections over and its NAT idle timer fires
    (IdleTimeoutCount); the idle connection's next packet gets the gateway's RST, as in the
    reference."""
    idle = _handshakes([(ORDERS, WEB, 40000), (ORDERS + 1, WEB, 40001)])
    t = idle[-1][0] + 400.0
    later = [(t, build_packet(4, ORDERS + 2, WEB[0], 6, 40002, WEB[1], 0x02)),
             (t + 1, build_packet(4, ORDERS + 1, WEB[0], 6, 40001, WEB[1], 0x18, payload=b"late"))]
    before, _, seen = _compare(idle + later)
    assert before["opened"] == 2  # the second of the first two, and the later one
    assert seen[1][-1] == DropReason.NAT_IDLE_TIMEOUT and len(seen[3]["lambda"]) == 1  # the gateway's RST
    assert seen[5]["nat_gateways"]["nat-0publica000000000"]["idle_timeout_count"] == 2


def test_unadopted_connections_are_adopted_in_the_order_they_opened():
    """A NAT mapping going idle hands every unadopted connection to the slow path; they are
    listed in the order they opened (the idle one first here), as the reference lists them."""
    first = _handshakes([(ORDERS, WEB, 40000), (ORDERS + 1, DB, 40001), (ORDERS + 2, WEB, 40002),
                         (ORDERS + 3, DB, 40003)])  # the first two plan; the last two wait, the NAT one first
    t = first[-1][0] + 400.0  # the NAT mappings are idle; the database connections are not due
    later = [(t, build_packet(4, ORDERS + 4, DB[0], 6, 40004, DB[1], 0x02))]
    before, after, seen = _compare(first + later)
    assert before["opened"] == 3 and after["timed"] == 0
    assert [c[0][0] for c in seen[7]] == [ORDERS + k for k in range(5)]


from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DESTS = (DB, WEB, (_ip("203.0.113.20"), 443))
# a flow's packets in order (from the sandbox?, TCP flags); UDP flows alternate the directions
_SESSION = ((True, 0x02), (False, 0x12), (True, 0x10), (True, 0x18), (False, 0x18), (True, 0x11), (False, 0x11),
            (True, 0x10))
_events = st.lists(st.one_of(
    st.tuples(st.just("flow"), st.integers(0, 11), st.integers(0, 2), st.booleans(), st.integers(1, len(_SESSION))),
    st.tuples(st.just("wait"), st.sampled_from((0.5, 31.0, 61.0, 125.0, 351.0, 700.0, 30 * 86400.0)), st.just(0),
              st.just(False),
              st.just(0)),
), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(_events, st.booleans())
# a connection the slow path owns moves to LAST_ACK (30 s) in the fast loop, so its timer in the
# slow path's heap (SYN_SENT, 120 s) is late until folded; the next first packet, 31 s later,
# must not move the slow path's clock past that expiry without firing it
@example([("flow", 0, 0, False, 7), ("wait", 31.0, 0, False, 0), ("flow", 0, 1, False, 1)], False)
@example([("flow", 0, 0, False, 7), ("wait", 31.0, 0, False, 0), ("flow", 0, 1, False, 1)], True)
def test_planned_opens_and_their_timers_agree_with_the_reference(events, in_loop):
    """Many sandboxes to a few destinations (so most connections are planned opens), TCP and
    UDP, with waits long enough for connections to expire and NAT mappings to go idle while the
    slow path has not adopted them, and for the function's idle reclaim (its ENIs deleted, the
    function inactive: the templates must not open on them): every packet, tap, emitted packet,
    flow-log record, counter and connection is the reference's, whether the fast loop opens them
    from templates (``in_loop``) or Python does."""
    packets, t = [], T0
    for kind, a, b, udp, steps in events:
        if kind == "wait":
            t += a
            continue
        server, port = _DESTS[b]
        sandbox, sport = ORDERS + a, 40000 + a
        for k, (out, flags) in enumerate(_SESSION[:steps]):
            t += 0.25
            if udp:
                out, flags = k % 2 == 0, 0
            src, dst, sp, dp = (sandbox, server, sport, port) if out else (server, sandbox, port, sport)
            packets.append((t, build_packet(4, src, dst, 17 if udp else 6, sp, dp, flags, payload=b"x")))
    if packets:
        _compare(packets, in_loop)


def test_a_configuration_change_adopts_the_unadopted_connections_first():
    """A configuration change re-checks the connections the slow path tracks: the ones planned
    opens made are adopted before it, and their next packets go as in the reference."""
    first = _handshakes([(ORDERS + k, dest, 40000 + k) for k in range(4) for dest in (DB, WEB)])
    t = first[-1][0] + 1.0
    later = [(t + k, build_packet(4, ORDERS + k, DB[0], 6, 40000 + k, DB[1], 0x18, payload=b"q")) for k in range(4)]
    seen = {}
    for backend in ("core", "reference"):
        engine = Engine(load_vpc(DEMO), SANDBOXES, EngineOptions(), backend=backend)
        out = []
        for n, batch in enumerate((first, later)):
            if n == 1:
                before = engine.core_stats()
                engine.update_config(load_vpc(DEMO))
                if backend == "core":
                    assert before["timed"] > 0 and engine.core_stats()["timed"] == 0
            frames = [f for _, f in batch]
            lengths = np.array([len(f) for f in frames], np.int64)
            offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
            result = engine.process_batch(b"".join(frames), offsets, lengths, np.array([x for x, _ in batch]))
            out.append((result.verdicts.tolist(), {k: [(i, bytes(d)) for i, d in v] for k, v in result.taps.items()}))
        seen[backend] = (out, engine.counters, [(c.lambda_tuple, c.packets_orig) for c in engine.connections()],
                         [r.format(engine.flow_log_fields) for r in engine.flow_logs()])
    assert seen["core"] == seen["reference"]


def test_explain_sees_the_unadopted_connections():
    """explain works on a copy of the slow path: the connections planned opens made are adopted
    first, so the trace and everything after it are the reference's."""
    packets = _handshakes([(ORDERS + k, WEB, 40000 + k) for k in range(4)])
    seen = {}
    for backend in ("core", "reference"):
        engine = Engine(load_vpc(DEMO), SANDBOXES, EngineOptions(), backend=backend)
        frames = [f for _, f in packets]
        lengths = np.array([len(f) for f in frames], np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
        engine.process_batch(b"".join(frames), offsets, lengths, np.array([x for x, _ in packets]))
        if backend == "core":
            assert engine.core_stats()["timed"] == 3
        trace = engine.explain("orders-api", "203.0.113.10", 443, "tcp")
        seen[backend] = (str(trace), engine.counters, [c.eni_tuple for c in engine.connections()])
    assert seen["core"] == seen["reference"]


def test_the_fast_loop_opens_planned_connections_from_templates():
    """After the slow path opened a destination's first connection, the next first packets to
    it from the same sandbox and subnet are opened inside the fast loop (a template,
    ext/hp_open.h): one slow-path packet per destination, the rest never leave the loop but for a
    timer or a first reply Python must see first; everything else is the reference's, through
    expiry (TIME_WAIT, 120 s) and adoption."""
    first = [p for k in range(40) for p in _exchange(ORDERS + k, DB, 40000 + k, T0 + k * 0.5)]
    later = [p for k in range(40) for p in _exchange(ORDERS + k, WEB, 42000 + k, T0 + 300 + k * 0.5)]
    before, after, seen = _compare(first + later)
    assert before["slow_packets"] == 2 and before["opened"] == 78
    assert before["opened_in_loop"] == 78  # the slow path's open armed each destination's template
    declines = before["open_declines"]  # the fast loop stopped for Python only a few times:
    assert declines.get("no-template", 0) + declines.get("other", 0) == 2  # each destination's first
    assert before["stops"]["miss"] == sum(declines.values()) <= 6  # and a timer or first reply due
    # the first 40 expired and left the table (39 of them released in C); the slow path owns its own
    assert before["timed"] == 39 and before["entries"] == 40
    assert after["timed"] == 0


def test_a_template_follows_the_enis_filling_up():
    """With room for 3 connections an ENI, the template's ENI fills and the slow path makes the
    next one (its connections then open on the new ENI): the same ENIs, ports and peaks as the
    reference."""
    packets = _handshakes([(ORDERS + k, DB, 40000 + k) for k in range(10)])
    before, _, seen = _compare(packets, eni_capacity=3)
    assert before["opened_in_loop"] > 0
    assert [e["peak_connections"] for e in seen[6]["enis"] if e["peak_connections"]] == [3, 3, 3, 1]


def test_a_sandbox_prefix_holding_another_is_no_template_range():
    """A template covers the addresses of one sandbox prefix (PrefixMap.range_of): the whole
    prefix when no longer prefix lies inside it, else none (its addresses look up to two
    sandboxes)."""
    from hyperplane.reference.policy import PrefixMap

    sandboxes = PrefixMap(4)
    sandboxes.add(_ip("10.1.0.0"), 16, "wide")
    sandboxes.add(_ip("10.1.2.0"), 24, "narrow")
    sandboxes.add(_ip("10.2.0.0"), 24, "alone")
    assert sandboxes.range_of(_ip("10.2.0.9")) == (_ip("10.2.0.0"), _ip("10.2.0.255"))
    assert sandboxes.range_of(_ip("10.1.2.9")) == (_ip("10.1.2.0"), _ip("10.1.2.255"))
    assert sandboxes.range_of(_ip("10.1.9.9")) is None  # 10.1.0.0/16 holds 10.1.2.0/24
    assert sandboxes.range_of(_ip("10.3.0.1")) is None
