"""The connection table: keys, TCP and UDP state updates, timers read from limits.TIMEOUTS, expiry."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hyperplane import limits
from hyperplane.limits import Timeout
from hyperplane.reference.conntrack import (
    ORIGINAL, REPLY, Conn, ConnTable, ConntrackFull, UdpState,
)
from hyperplane.tcpstate import ACK, FIN, PSH, RST, SYN, TcpState, timeout_key

T = limits.TIMEOUTS
SANDBOX, ENI, DST = 0xA9FE0002, 0x0A000105, 0x0A000210  # 169.254.0.2, 10.0.1.5, 10.0.2.16


def make(table, proto=6, state=None, now=0.0, sport=40000, eni_port=None, keys=None, nbytes=60,
         flags=SYN):
    eni_port = sport % 60000 + 1024 if eni_port is None else eni_port
    if state is None:
        state = ConnTable.initial_state(proto, flags)
    conn = Conn(proto, 4, "fn", "eni-1", state, (SANDBOX, sport, DST, 5432),
                (ENI, eni_port, DST, 5432), now, nbytes=nbytes, tcp_flags=flags if proto == 6 else 0)
    if keys is None:
        keys = [("l", proto, SANDBOX, sport, DST, 5432), ("v", proto, DST, 5432, ENI, eni_port)]
    table.add(conn, keys)
    return conn


def test_add_get_remove_by_every_key():
    table = ConnTable()
    conn = make(table)
    assert len(table) == 1
    assert table.get(conn.keys[0]) is conn and table.get(conn.keys[1]) is conn
    assert conn.alive
    table.remove(conn)
    assert len(table) == 0 and not conn.alive
    assert all(table.get(k) is None for k in [("l", 6, SANDBOX, 40000, DST, 5432)])
    table.remove(conn)  # idempotent


def test_a_key_cannot_belong_to_two_connections():
    table = ConnTable()
    make(table)
    with pytest.raises(ValueError):
        make(table, sport=40001, keys=[("v", 6, DST, 5432, ENI, 40000 % 60000 + 1024)])
    assert len(table) == 1


def test_a_refused_add_changes_nothing():
    """A taken key: ValueError naming its owner, and the keys listed before it are not kept."""
    table = ConnTable()
    first = make(table)
    conn = Conn(6, 4, "fn", "eni-1", TcpState.SYN_SENT, (SANDBOX, 40001, DST, 5432), (ENI, 2000, DST, 5432), 0.0)
    fresh = ("l", 6, SANDBOX, 40001, DST, 5432)
    with pytest.raises(ValueError, match="already belongs to Conn"):
        table.add(conn, [fresh, fresh, first.keys[1], ("x",)])
    assert table.get(fresh) is None and table.get(("x",)) is None and table.get(first.keys[1]) is first
    assert not conn.alive and len(table) == 1 and len(table._by_key) == 2
    table.add(conn, iter([fresh]))  # an iterable of keys is fine
    assert conn.keys == (fresh,) and table.get(fresh) is conn


def test_add_keeps_a_repeated_key_once():
    table = ConnTable()
    a, b = ("l", 6, SANDBOX, 40000, DST, 5432), ("v", 6, DST, 5432, ENI, 2000)
    conn = make(table, keys=(a, b, a, b))
    assert conn.keys == (a, b) and len(table._by_key) == 2
    table.remove(conn)
    assert table.get(a) is None and table.get(b) is None and not table._by_key


def test_add_refuses_what_it_cannot_track():
    table = ConnTable(max_connections=1)
    key = ("l", 6, SANDBOX, 40000, DST, 5432)
    tracked = make(table, keys=[key])
    with pytest.raises(ValueError, match="already tracked"):
        table.add(tracked, [("other",)])
    table = ConnTable(max_connections=1)
    for proto, state, match in ((1, 0, "protocol 1 is not tracked"), (6, TcpState.NONE, "state NONE")):
        conn = Conn(proto, 4, "fn", "eni-1", state, (SANDBOX, 1, DST, 2), (ENI, 3, DST, 2), 0.0)
        with pytest.raises(ValueError, match=match):
            table.add(conn, [key])
    conn = Conn(6, 4, "fn", "eni-1", TcpState.SYN_SENT, (SANDBOX, 1, DST, 2), (ENI, 3, DST, 2), 0.0)
    with pytest.raises(ValueError, match="at least one key"):
        table.add(conn, ())
    assert not table._by_key and len(table) == 0
    table.add(conn, [key])
    with pytest.raises(ConntrackFull):
        table.add(Conn(17, 4, "fn", "eni-1", UdpState.UNREPLIED, (SANDBOX, 1, DST, 2), (ENI, 3, DST, 2), 0.0), [("u",)])
    assert len(table._by_key) == 1


def test_new_connection_timer_comes_from_its_state():
    table = ConnTable()
    syn = make(table, now=100.0)
    assert syn.state == TcpState.SYN_SENT
    assert syn.expires == 100.0 + T[Timeout.TCP_SYN_SENT]
    udp = make(table, proto=17, now=100.0, sport=1)
    assert udp.state == UdpState.UNREPLIED and udp.expires == 100.0 + T[Timeout.UDP]


def test_full_handshake_counts_and_timers():
    table = ConnTable()
    conn = make(table, now=0.0)
    assert table.update(conn, REPLY, SYN | ACK, 1.0, nbytes=60) == (True, TcpState.SYN_RECV)
    assert conn.expires == 1.0 + T[Timeout.TCP_SYN_RECV]
    assert conn.replied
    assert table.update(conn, ORIGINAL, ACK, 2.0, nbytes=52) == (True, TcpState.ESTABLISHED)
    assert conn.expires == 2.0 + T[Timeout.TCP_ESTABLISHED]
    table.update(conn, ORIGINAL, PSH | ACK, 3.0, nbytes=152)
    assert (conn.packets_orig, conn.packets_reply) == (3, 1)
    assert (conn.bytes_orig, conn.bytes_reply) == (60 + 52 + 152, 60)
    assert conn.flags_orig == SYN | ACK | PSH and conn.flags_reply == SYN | ACK
    assert conn.last_seen == 3.0


@pytest.mark.parametrize("state", [s for s in TcpState if s != TcpState.NONE])
def test_timeout_per_state_read_from_the_table(state):
    table = ConnTable()
    conn = make(table, state=state)
    assert conn.expires == T[timeout_key(state)]


def test_configured_timeouts_are_used():
    table = ConnTable(timeouts=limits.timeouts(tcp_established=60, udp=45, udp_stream=90))
    tcp = make(table, state=TcpState.ESTABLISHED, flags=ACK)
    udp = make(table, proto=17, sport=2)
    assert tcp.expires == 60 and udp.expires == 45


def test_invalid_packet_strict_refused_loose_passed_without_change():
    table = ConnTable()
    conn = make(table, now=0.0)  # SYN_SENT
    assert table.update(conn, ORIGINAL, ACK, 5.0, strict=True) == (False, TcpState.SYN_SENT)
    assert conn.packets_orig == 1 and conn.expires == T[Timeout.TCP_SYN_SENT]
    assert table.update(conn, ORIGINAL, ACK, 5.0, strict=False) == (True, TcpState.SYN_SENT)
    assert conn.packets_orig == 2
    assert conn.expires == T[Timeout.TCP_SYN_SENT]  # not refreshed


def test_ignored_packet_passes_without_refresh():
    table = ConnTable()
    conn = make(table, state=TcpState.ESTABLISHED, flags=ACK, now=0.0)
    before = conn.expires
    assert table.update(conn, REPLY, SYN | ACK, 10.0, strict=True) == (True, TcpState.ESTABLISHED)
    assert conn.expires == before


@pytest.mark.parametrize("direction", [ORIGINAL, REPLY])
def test_rst_closes_and_shortens_the_timer(direction):
    table = ConnTable()
    conn = make(table, state=TcpState.ESTABLISHED, flags=ACK, now=0.0)
    assert table.update(conn, direction, RST, 50.0) == (True, TcpState.CLOSE)
    assert conn.expires == 50.0 + T[Timeout.TCP_CLOSE]
    assert table.expire(50.0 + T[Timeout.TCP_CLOSE] - 0.5) == []
    assert table.expire(50.0 + T[Timeout.TCP_CLOSE]) == [conn]
    assert len(table) == 0 and table.get(conn.keys[0] if conn.keys else ("l",)) is None


def test_syn_in_time_wait_reopens_the_same_tuple():
    table = ConnTable()
    conn = make(table, state=TcpState.TIME_WAIT, flags=ACK, now=0.0)
    conn.replied = True
    key = conn.keys[0]
    accepted, state = table.update(conn, ORIGINAL, SYN, 30.0)
    assert accepted and state == TcpState.SYN_SENT
    assert conn.generation == 1 and conn.created == 30.0 and not conn.replied
    assert conn.packets_orig == 1 and conn.packets_reply == 0
    assert table.get(key) is conn
    assert conn.expires == 30.0 + T[Timeout.TCP_SYN_SENT]


def test_expiry_returns_connections_in_order_and_removes_their_keys():
    table = ConnTable()
    a = make(table, proto=17, now=0.0, sport=1)    # expires at 30
    b = make(table, proto=17, now=5.0, sport=2)    # 35
    c = make(table, now=0.0, sport=3)              # 120 (SYN_SENT)
    assert table.expire(29.9) == []
    assert table.expire(35.0) == [a, b]
    assert len(table) == 1
    for conn in (a, b):
        assert not conn.alive
    assert table.get(("l", 17, SANDBOX, 1, DST, 5432)) is None
    assert table.expire(1e9) == [c]
    assert len(table) == 0


def test_refreshed_connection_is_not_expired_early():
    table = ConnTable()
    conn = make(table, proto=17, now=0.0)
    table.update(conn, ORIGINAL, 0, 25.0)
    assert table.expire(30.0) == []
    assert conn.alive and conn.expires == 55.0
    assert table.expire(55.0) == [conn]


def test_removed_connection_is_never_returned_by_expire():
    table = ConnTable()
    conn = make(table, proto=17)
    table.remove(conn)
    assert table.expire(1e9) == []


def test_udp_unreplied_replied_stream():
    table = ConnTable()
    conn = make(table, proto=17, now=0.0)
    assert conn.state == UdpState.UNREPLIED
    table.update(conn, ORIGINAL, 0, 1.0)  # a retry: still one-way
    assert conn.state == UdpState.UNREPLIED and conn.expires == 1.0 + T[Timeout.UDP]
    table.update(conn, REPLY, 0, 2.0)
    assert conn.state == UdpState.REPLIED and conn.expires == 2.0 + T[Timeout.UDP]
    table.update(conn, REPLY, 0, 2.5)  # second packet of the same answer: same exchange
    assert conn.state == UdpState.REPLIED and conn.exchanges == 1
    table.update(conn, ORIGINAL, 0, 3.0)  # a second request alone is not a second exchange
    assert conn.state == UdpState.REPLIED
    table.update(conn, REPLY, 0, 4.0)
    assert conn.state == UdpState.STREAM and conn.expires == 4.0 + T[Timeout.UDP_STREAM]
    table.update(conn, ORIGINAL, 0, 10.0)
    assert conn.state == UdpState.STREAM and conn.expires == 10.0 + T[Timeout.UDP_STREAM]


def test_full_table():
    table = ConnTable(max_connections=2)
    make(table, sport=1)
    assert not table.full
    second = make(table, sport=2)
    assert table.full
    with pytest.raises(ConntrackFull):
        make(table, sport=3)
    table.remove(second)
    assert not table.full
    assert table.peak == 2


def test_pickup_and_refusal_through_initial_state():
    assert ConnTable.initial_state(6, ACK) == TcpState.ESTABLISHED
    assert ConnTable.initial_state(6, ACK, strict=True) is None
    assert ConnTable.initial_state(6, RST) is None
    assert ConnTable.initial_state(6, FIN | ACK) is None
    assert ConnTable.initial_state(17) == UdpState.UNREPLIED
    with pytest.raises(ValueError):
        ConnTable.initial_state(1)


def test_nat_idle():
    table = ConnTable()
    conn = make(table)
    assert not conn.nat_idle(1000.0)
    conn.nat = ("nat-1", 0x03000001, 1024)
    conn.nat_last_seen = 0.0
    assert not conn.nat_idle(limits.NAT_IDLE_TIMEOUT - 1)
    assert conn.nat_idle(limits.NAT_IDLE_TIMEOUT)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 19), st.sampled_from(["udp", "r", "o", "rm"]),
                          st.floats(0, 100)), max_size=60))
def test_expire_matches_a_full_scan(ops):
    """Lazy invalidation never loses nor invents an expiry: compare with a naive scan."""
    table = ConnTable()
    conns = {}
    now = 0.0
    for index, op, dt in ops:
        now += dt
        expired = table.expire(now)
        for conn in expired:
            assert conn.expires <= now
            del conns[conn.lambda_tuple[1]]
        assert all(c.expires > now for c in conns.values())
        conn = conns.get(index)
        if conn is None:
            conns[index] = make(table, proto=17 if op == "udp" else 6, now=now, sport=index,
                                flags=SYN)
        elif op == "rm":
            table.remove(conn)
            del conns[index]
        else:
            table.update(conn, REPLY if op == "r" else ORIGINAL,
                         RST if op == "r" and index % 3 == 0 else ACK, now)
        assert len(table) == len(conns)


def test_expiry_ties_come_in_the_order_the_timers_were_queued():
    """Same time: queue order, not creation nor key order; a timer refreshed to a later time is
    queued again only when its old entry comes due, so it goes after what was queued before."""
    table = ConnTable()
    c = make(table, proto=17, now=0.0, sport=3)    # 30
    a = make(table, proto=17, now=0.0, sport=1)    # 30
    b = make(table, proto=17, now=0.0, sport=2)    # 30
    assert table.expire(30.0) == [c, a, b]

    x = make(table, proto=17, now=100.0, sport=4)  # queued at 130
    table.update(x, ORIGINAL, 0, 110.0)            # expires 140: nothing queued yet
    y = make(table, proto=17, now=110.0, sport=5)  # queued at 140
    assert table.expire(135.0) == []               # x's entry at 130 comes due: x queued at 140, after y
    assert table.expire(140.0) == [y, x]

    x = make(table, proto=17, now=200.0, sport=4)  # queued at 230
    table.update(x, ORIGINAL, 0, 210.0)            # expires 240
    y = make(table, proto=17, now=210.0, sport=5)  # queued at 240
    assert table.expire(240.0) == [x, y]           # x's entry at 230 was due: x expires in its place


def test_a_stale_entry_at_the_live_time_stands_for_the_connection():
    table = ConnTable()
    x = make(table, proto=17, now=70.0, sport=1)   # entry at 100
    x.expires = 50.0
    table.reschedule(x)                            # entry at 50; the one at 100 is stale
    y = make(table, proto=17, now=70.0, sport=2)   # entry at 100, after x's stale one
    x.expires = 100.0                              # refreshed (as the core's fold does): nothing queued
    assert table.expire(60.0) == []                # the entry at 50: x queued again at 100, after y
    assert table.expire(100.0) == [x, y]           # x's first entry at 100 is live again: it goes first


class _TimerModel:
    """ConnTable's documented expiry, written out plainly: a list of (time, queue number, conn)
    entries walked in that order, at most one live entry per connection (lazy invalidation)."""

    def __init__(self):
        self.entries, self.seq, self.queued, self.alive = [], 0, {}, set()

    def queue(self, conn, when):
        self.seq += 1
        self.queued[conn] = when
        self.entries.append((when, self.seq, conn))

    def added(self, conn):
        self.alive.add(conn)
        self.queue(conn, conn.expires)

    def changed(self, conn):
        """After an update or a reschedule: queued when earlier than the live entry."""
        if conn in self.alive and (self.queued[conn] is None or conn.expires < self.queued[conn]):
            self.queue(conn, conn.expires)

    def removed(self, conn):
        self.alive.discard(conn)
        self.queued[conn] = None

    def expire(self, now):
        out = []
        while any(e[0] <= now for e in self.entries):
            entry = min(e for e in self.entries if e[0] <= now)
            self.entries.remove(entry)
            when, _, conn = entry
            if conn not in self.alive or self.queued[conn] != when:
                continue
            if conn.expires > now:
                self.queue(conn, conn.expires)
                continue
            self.removed(conn)
            out.append(conn)
        return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from(["add", "upd", "resched", "rm"]),
                          st.integers(0, 3), st.integers(-3, 4), st.sampled_from([ACK, SYN, FIN, RST])),
                max_size=80),
       st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from([1.0, 2.0, 5.0]))
def test_expire_order_matches_the_documented_walk(ops, short, long):
    """Integer times and short timeouts give many ties: every expire returns exactly what the
    plain (time, queue number) walk returns, in the same order."""
    timeouts = {key: (short if i % 2 else long) for i, key in enumerate(Timeout)}
    table, model = ConnTable(timeouts), _TimerModel()
    conns = {}
    now = 0.0
    for index, op, dt, delta, flags in ops:
        now += dt
        assert table.expire(now) == model.expire(now)
        for gone in [i for i, c in conns.items() if not c.alive]:
            del conns[gone]
        conn = conns.get(index)
        if conn is None:
            conn = conns[index] = make(table, proto=17 if op == "upd" else 6, now=now - dt % 2,
                                       sport=index, flags=SYN)
            model.added(conn)
        elif op == "rm":
            table.remove(conn)
            model.removed(conn)
        elif op == "resched":  # the core folding a timer back (FIN seen in the fast path)
            conn.expires = now + delta
            table.reschedule(conn)
            model.changed(conn)
        else:
            table.update(conn, REPLY if delta % 2 else ORIGINAL, flags, now)
            model.changed(conn)
    assert table.expire(1e9) == model.expire(1e9)
