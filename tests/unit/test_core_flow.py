"""Unit tests of the C flow table (ext/hp_flow.h via hyperplane._core.FlowTable)."""
from __future__ import annotations

import ipaddress
import types

import numpy as np
import pytest

from hyperplane import checksum, tcpstate
from hyperplane.flowlogs import AWS_TCP_FLAGS
from hyperplane.reference.dataplane import build_packet

_core = pytest.importorskip("hyperplane._core")
if not hasattr(_core, "FlowTable"):
    pytest.skip("this build of hyperplane._core has no FlowTable", allow_module_level=True)

SANDBOX = int(ipaddress.ip_address("169.254.76.5"))
REMOTE = int(ipaddress.ip_address("10.0.2.15"))
ENI = int(ipaddress.ip_address("10.0.1.4"))
NAT = int(ipaddress.ip_address("203.0.113.10"))
OUT, REPLY, VPC = _core.FLOW_KIND_OUT, _core.FLOW_KIND_REPLY, _core.FLOW_KIND_VPC
ES = tcpstate.TcpState.ESTABLISHED


def table(expected=16, strict=False, interval=600):
    return _core.FlowTable(expected=expected, interval=interval, strict=strict, nat_idle=350.0,
                           tcp_table=tcpstate.table_as_array(), flag_class=list(tcpstate.FLAG_CLASS),
                           aws_flags=list(AWS_TCP_FLAGS),
                           tcp_timeouts=[0, 120, 60, 432000, 120, 60, 30, 120, 10, 120],
                           udp_timeouts=[30, 30, 180])


def entry(ft, sandbox_port=40000, remote=REMOTE, state=ES, expires=1000.0, last_seen=0.0, proto=6, nat=False):
    idx = ft.alloc(proto)
    ft.set(idx, state, expires, last_seen, (SANDBOX, remote, ENI, NAT if nat else 0),
           (sandbox_port, 5432, 2000 + sandbox_port % 1000, 6000 if nat else 0), False, nat, ft.gen)
    return idx


def run(ft, frames, stamps):
    """ft.run over the frames; out["taps"][t] = the packets of tap t (bytes, in row order)."""
    n = len(frames)
    cap = sum(len(f) for f in frames)
    out = {"verdicts": np.zeros(n, np.uint8), "reasons": np.zeros(n, np.uint8),
           "bufs": [np.zeros(cap, np.uint8) for _ in range(3)],
           "idx": [np.zeros(n, np.int64) for _ in range(3)], "off": [np.zeros(n, np.int64) for _ in range(3)],
           "src": [np.zeros(n, np.int64) for _ in range(3)], "head": [np.zeros(n, np.int32) for _ in range(3)],
           "len": [np.zeros(n, np.int32) for _ in range(3)], "state": np.zeros(6, np.int64)}
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    buffer = b"".join(frames)
    stop, why = ft.run(buffer, offsets, np.array([len(f) for f in frames], np.int64),
                       np.array(stamps, np.float64), 101, 0, out["verdicts"], out["reasons"], out["bufs"],
                       out["idx"], out["off"], out["src"], out["head"], out["len"], out["state"])
    out["taps"] = []
    for t in range(3):
        rows = int(out["state"][3 + t])
        joined, offs = _core.flow_gather(out["bufs"][t], buffer, out["idx"][t][:rows], out["off"][t][:rows],
                                         out["src"][t][:rows], out["head"][t][:rows], out["len"][t][:rows])
        lens = out["len"][t][:rows]
        out["taps"].append([joined[o : o + n].tobytes() for o, n in zip(offs.tolist(), lens.tolist())])
    return stop, why, out


def fold(ft, n=16):
    """ft.fold_into with stand-ins for the core's entries (entry i counts kind k into record
    ``(k, i)``): the folded connections by index, in fold order, and the ``count`` calls."""
    counted, folded = [], []

    class Records:
        @staticmethod
        def count(ids, packets, nbytes, end, aws):
            counted.append((ids, packets, nbytes, end, aws))

    conns = [types.SimpleNamespace(packets_orig=0, bytes_orig=0, flags_orig=0, packets_reply=0, bytes_reply=0,
                                   flags_reply=0, exchanges=0, replied=False) for _ in range(n)]
    entries = [types.SimpleNamespace(conn=conns[i], records=[((k, i),) for k in range(3)]) for i in range(n)]
    ft.fold_into(entries, folded.append, Records(), 600, "orig", "reply")
    return {conns.index(c): c for c in folded}, counted


def out_pkt(flags=0x10, sport=40000, payload=b"data"):
    return build_packet(4, SANDBOX, REMOTE, 6, sport, 5432, flags, payload=payload)


def test_lookup_under_each_learned_key_and_remove():
    ft = table()
    idx = entry(ft)
    assert ft.lookup(SANDBOX, REMOTE, 40000, 5432, 6) is None  # nothing learned: no key yet
    ft.learn(idx, OUT, _core.FLOW_K_ENI, 0)
    ft.learn(idx, REPLY, _core.FLOW_K_ENI, 0)
    ft.learn(idx, VPC, _core.FLOW_K_ENI, 0)
    assert ft.lookup(SANDBOX, REMOTE, 40000, 5432, 6) == (idx, OUT)
    assert ft.lookup(REMOTE, SANDBOX, 5432, 40000, 6) == (idx, REPLY)
    assert ft.lookup(REMOTE, ENI, 5432, 2000, 6) == (idx, VPC)
    assert ft.lookup(REMOTE, ENI, 5432, 2000, 17) is None  # protocol is part of the key
    assert ft.keys == 3 and len(ft) == 1
    ft.release(idx)
    assert ft.lookup(SANDBOX, REMOTE, 40000, 5432, 6) is None
    assert ft.keys == 0 and len(ft) == 0
    with pytest.raises(KeyError):
        ft.get(idx)


def test_growth_keeps_every_key_and_removal_keeps_the_rest_reachable():
    # 60k entries: the entry array and the index grow past 2 MiB, where their blocks are mapped
    # apart, offered to huge pages and moved, not copied, when they grow (ext/hp_mem.h)
    ft = table(expected=16)
    slots0 = ft.slots
    ids = []
    for i in range(60_000):
        idx = ft.alloc(17)
        ft.set(idx, 0, 1e9, 0.0, (SANDBOX, REMOTE + i, ENI, 0), (1000 + i % 60000, 53, 7000 + i % 50000, 0),
               False, False, 0)
        ft.learn(idx, OUT, 0, 0)
        ft.learn(idx, VPC, 0, 0)
        ids.append(idx)
    assert ft.slots > slots0 and ft.rehashes > 0 and ft.capacity >= 60_000
    assert ft.capacity * _core.FLOW_ENTRY_BYTES > 2 << 20 and ft.slots * _core.FLOW_SLOT_BYTES >= 2 << 20
    assert ft.keys <= ft.slots * 3 // 4
    for idx in ids[::2]:
        ft.release(idx)
    for i, idx in enumerate(ids):
        hit = ft.lookup(SANDBOX, REMOTE + i, 1000 + i % 60000, 53, 17)
        vpc = ft.lookup(REMOTE + i, ENI, 53, 7000 + i % 50000, 17)
        if i % 2 == 0:
            assert hit is None and vpc is None
        else:
            assert hit == (idx, OUT) and vpc == (idx, VPC)
    again = ft.alloc(6)  # a freed entry is reused
    assert again in ids[::2]
    assert ft.memory_bytes >= ft.capacity * _core.FLOW_ENTRY_BYTES + ft.slots * _core.FLOW_SLOT_BYTES


def test_fast_path_forwards_a_learned_kind_rewrites_and_counts():
    ft = table()
    idx = entry(ft, nat=True)
    ft.learn(idx, OUT, _core.FLOW_K_ENI | _core.FLOW_K_INET | _core.FLOW_K_NATRW, 0)
    pkt = out_pkt(0x18)
    stop, why, out = run(ft, [pkt, pkt], [10.0, 11.5])
    assert (stop, why) == (2, "end")
    lam, eni, inet = (out["taps"][t][0] for t in range(3))
    assert out["taps"][0] == [pkt, pkt] and out["head"][0][0] == 0  # the input itself: not copied
    want_eni = bytearray(pkt)
    checksum.rewrite_src(want_eni, checksum._packet.parse(pkt), ENI, 2000)
    assert eni == bytes(want_eni) and checksum.verify(eni)
    want_inet = bytearray(want_eni)
    checksum.rewrite_src(want_inet, checksum._packet.parse(bytes(want_eni)), NAT, 6000)
    assert inet == bytes(want_inet) and checksum.verify(inet)
    assert out["taps"][1] == [eni, eni] and out["taps"][2] == [inet, inet]
    assert list(out["state"]) == [0, 2 * 40, 2 * 40, 2, 2, 2]  # headers only (IPv4 20 + TCP 20)
    got = ft.get(idx)
    assert got["packets"] == (2, 0) and got["bytes"] == (2 * len(pkt), 0) and got["tcp_flags"] == (0x18, 0)
    assert got["expires"] == 11.5 + 432000 and got["last_seen"] == 11.5
    conns, counted = fold(ft)
    conn = conns[idx]
    assert list(conns) == [idx] and (conn.packets_orig, conn.bytes_orig, conn.flags_orig) == (2, 2 * len(pkt), 0x18)
    assert (conn.expires, conn.last_seen, conn.nat_last_seen, conn.packets_reply) == (11.5 + 432000, 11.5, 11.5, 0)
    assert counted == [(((OUT, idx),), 2, 2 * len(pkt), 11, AWS_TCP_FLAGS[0x18])]
    assert ft.get(idx)["packets"] == (0, 0) and fold(ft) == ({}, [])
    assert ft.take_fast_packets() == 2


def test_a_kind_learned_ahead_reports_its_first_packet_once():
    """learn(first=True): the kind's first packet is forwarded and reported by take_events (entry,
    kind, time) exactly once; a packet that stops before changing anything reports nothing."""
    ft = table()
    idx = entry(ft)
    ft.learn(idx, OUT, 0, 0)
    ft.learn(idx, REPLY, _core.FLOW_K_ENI, 0, first=True)
    assert ft.get(idx)["kinds"][REPLY] & _core.FLOW_K_FIRST
    reply = build_packet(4, REMOTE, SANDBOX, 6, 5432, 40000, 0x10, payload=b"ok")
    stop, why, _ = run(ft, [reply], [2000.0])  # past the entry's expiry: stops, nothing reported
    assert (stop, why) == (0, "expired") and ft.take_events() == []
    stop, why, out = run(ft, [out_pkt(), reply, reply], [10.0, 11.25, 12.0])
    assert (stop, why) == (3, "end") and len(out["taps"][1]) == 2
    assert ft.take_events() == [(idx, REPLY, 11.25)] and ft.take_events() == []
    assert not ft.get(idx)["kinds"][REPLY] & _core.FLOW_K_FIRST
    assert ft.get(idx)["packets"] == (1, 2)  # the first packet is counted like any other


@pytest.mark.parametrize("ahead", [True, False])
def test_open_is_alloc_set_and_learning_in_one_call(ahead):
    """FlowTable.open (the core's planned open): the entry alloc + set + learn (+ learn ahead)
    make, with the same flags, window, keys and NAT endpoint."""
    flags = _core.FLOW_K_ENI | _core.FLOW_K_INET | _core.FLOW_K_NATRW
    opened, taught = table(), table()
    idx = opened.open(6, tcpstate.TcpState.SYN_SENT, 130.0, 10.0, (SANDBOX, REMOTE, ENI, NAT), (40000, 443, 2000, 6000),
                      True, 3, 7, flags, ahead)
    assert taught.alloc(6) == idx
    taught.set(idx, tcpstate.TcpState.SYN_SENT, 130.0, 10.0, (SANDBOX, REMOTE, ENI, NAT), (40000, 443, 2000, 6000),
               False, True, 3)
    taught.learn(idx, OUT, flags, 7)
    if ahead:
        taught.learn(idx, REPLY, flags, 7, first=True)
    assert opened.get(idx) == taught.get(idx)
    assert opened.lookup(SANDBOX, REMOTE, 40000, 443, 6) == (idx, OUT)
    assert (opened.lookup(REMOTE, SANDBOX, 443, 40000, 6) is not None) == ahead


@pytest.mark.parametrize("case", ["expired", "window", "generation", "unlearned", "backwards", "nat-idle",
                                  "reopen", "strict", "malformed", "miss"])
def test_fast_path_stops_where_the_slow_path_must_decide(case):
    ft = table(strict=case == "strict")
    state = {"reopen": tcpstate.TcpState.TIME_WAIT, "strict": tcpstate.TcpState.SYN_SENT}.get(case, ES)
    idx = entry(ft, state=state, expires=100.0 if case == "expired" else 1000.0, last_seen=5.0, nat=case == "nat-idle")
    ft.learn(idx, OUT, 0, 0)
    ts, flags, pkt = 50.0, 0x10, None
    if case == "expired":
        ts = 100.0
    elif case == "window":
        ts = 600.0  # the next 600 s flow-log window
    elif case == "generation":
        ft.gen = 1
    elif case == "unlearned":
        ft.forget(idx)
    elif case == "backwards":
        ft.now = 60.0
    elif case == "nat-idle":
        ts = 355.0
    elif case == "reopen":
        flags = 0x02
    elif case == "strict":
        flags = 0x10  # ACK in SYN_SENT: invalid
    elif case == "malformed":
        pkt = out_pkt()[:30]
    elif case == "miss":
        pkt = out_pkt(sport=40001)
    stop, why, out = run(ft, [pkt or out_pkt(flags)], [ts])
    assert stop == 0, why
    expected = {"generation": "generation", "malformed": "parse", "backwards": "time", "strict": "tcp",
                "reopen": "tcp"}.get(case, case)
    assert why == expected
    assert ft.get(idx)["packets"] == (0, 0) and ft.dirty == 0  # nothing changed


def test_a_timer_moved_earlier_is_folded_back_and_the_entry_stops_at_it():
    """A FIN moves ESTABLISHED (432000 s) to FIN_WAIT (120 s): forwarded; the entry's own packet
    after the new expiry stops (the slow path expires it), and fold() hands the new expiry back."""
    ft = table()
    idx = entry(ft, expires=1000.0, last_seen=5.0)
    ft.learn(idx, OUT, 0, 0)
    stop, why, _ = run(ft, [out_pkt(0x11), out_pkt(0x10)], [50.0, 200.0])
    assert (stop, why) == (1, "expired")  # 200 >= 50 + 120
    assert ft.get(idx)["expires"] == 170.0
    assert {i: c.expires for i, c in fold(ft)[0].items()} == {idx: 170.0}


def test_reply_counters_belong_to_one_reply_kind_at_a_time():
    ft = table()
    idx = entry(ft)
    ft.learn(idx, REPLY, 0, 0)
    ft.learn(idx, VPC, _core.FLOW_K_ENI, 0)  # the VPC form now owns the REPLY counters
    sandbox_view = build_packet(4, REMOTE, SANDBOX, 6, 5432, 40000, 0x10)
    vpc_view = build_packet(4, REMOTE, ENI, 6, 5432, 2000, 0x10)
    stop, why, out = run(ft, [vpc_view, sandbox_view], [1.0, 2.0])
    assert (stop, why) == (1, "unlearned")
    lam = out["taps"][0][0]
    want = bytearray(vpc_view)
    checksum.rewrite_dst(want, checksum._packet.parse(vpc_view), SANDBOX, 40000)
    assert lam == bytes(want)


def test_learning_in_a_new_window_forgets_the_other_kinds():
    ft = table()
    idx = entry(ft)
    ft.learn(idx, OUT, 0, 0)
    ft.learn(idx, REPLY, 0, 1)
    kinds = ft.get(idx)["kinds"]
    assert kinds[OUT] & _core.FLOW_K_LEARNED == 0 and kinds[REPLY] & _core.FLOW_K_LEARNED
    assert run(ft, [out_pkt()], [700.0])[:2] == (0, "unlearned")
    ft.learn(idx, OUT, 0, 1)
    assert run(ft, [out_pkt()], [700.0])[:2] == (1, "end")
    with pytest.raises(ValueError):
        ft.learn(idx, REPLY, 0, 1)  # fast packets counted but not folded: refused


def test_timed_entries_are_reported_when_due_in_time_order():
    """set_timed / take_due: the table reports a timed entry once its timer is due, in due-time
    order: an entry refreshed since it was queued is reported at its new time, an entry whose
    expiry the fast path moved earlier (FIN: 432000 s -> 120 s) at that earlier time; entries not
    timed (or no longer) and released ones are never reported."""
    ft = table()
    a = entry(ft, sandbox_port=40000, expires=1000.0)
    b = entry(ft, sandbox_port=40001, expires=50.0)
    c = entry(ft, sandbox_port=40002, expires=70.0)
    d = entry(ft, sandbox_port=40003, expires=60.0)
    gone = entry(ft, sandbox_port=40004, expires=20.0)
    untimed = entry(ft, sandbox_port=40005, expires=10.0)
    for idx in (a, b, c, d, gone):
        ft.set_timed(idx, True)
        ft.learn(idx, OUT, 0, 0)
    ft.release(gone)
    with pytest.raises(ValueError):  # a timed entry's state is the table's
        ft.set(a, ES, 5.0, 0.0, (SANDBOX, REMOTE, ENI, 0), (40000, 5432, 2000, 0), False, False, ft.gen)
    assert ft.take_due(5.0) == []
    # b refreshed (ACK in ESTABLISHED: 432000 s); a's FIN moves it to FIN_WAIT (120 s): due at 130
    assert run(ft, [out_pkt(0x10, sport=40001), out_pkt(0x11, sport=40000)], [8.0, 10.0])[:2] == (2, "end")
    assert ft.take_due(65.0) == [(d, True)]  # b's old time (50) passed: queued again at its new one
    ft.set_timed(c, False)
    assert ft.take_due(129.0) == [] and ft.take_due(130.0) == [(a, True)]  # before its old time, 1000
    assert ft.take_due(432007.0) == [] and ft.take_due(432008.0) == [(b, True)]
    assert ft.take_due(1e9) == [] and untimed is not None


def test_an_expiry_moved_earlier_on_an_entry_not_timed_here_is_counted_until_folded():
    """``earlier``: packets that moved the expiry of an entry the table does not time earlier
    (the caller's timer for it may be late until it folds); a timed entry's goes in the heap."""
    ft = table()
    plain = entry(ft, sandbox_port=40000, expires=1000.0)
    timed = entry(ft, sandbox_port=40001, expires=1000.0)
    ft.set_timed(timed, True)
    for idx in (plain, timed):
        ft.learn(idx, OUT, 0, 0)
    assert run(ft, [out_pkt(0x10, sport=40000)], [5.0])[:2] == (1, "end") and ft.earlier == 0  # later
    assert run(ft, [out_pkt(0x11, sport=40001)], [6.0])[:2] == (1, "end") and ft.earlier == 0  # timed
    assert run(ft, [out_pkt(0x11, sport=40000)], [7.0])[:2] == (1, "end") and ft.earlier == 1
    fold(ft)
    assert ft.earlier == 0
    assert ft.take_due(126.0) == [(timed, True)]


def test_a_timed_entry_whose_nat_mapping_goes_idle_first_is_reported_as_not_expired():
    """With a NAT mapping, a timed entry is due at the earlier of its expiry and its last packet +
    the NAT idle timeout (350 s); ``expired`` says which came first (the conntrack timer on a tie)."""
    ft = table()
    idle = entry(ft, sandbox_port=40000, expires=1000.0, last_seen=0.0, nat=True)
    tie = entry(ft, sandbox_port=40001, expires=350.0, last_seen=0.0, nat=True)
    early = entry(ft, sandbox_port=40002, expires=200.0, last_seen=0.0, nat=True)
    for idx in (idle, tie, early):
        ft.set_timed(idx, True)
    assert ft.take_due(349.0) == [(early, True)]
    assert sorted(ft.take_due(350.0)) == sorted([(idle, False), (tie, True)])
    assert ft.take_due(1e9) == []  # each reported once: no longer timed


def test_udp_exchanges_and_stream_state():
    ft = table()
    idx = ft.alloc(17)
    ft.set(idx, 0, 40.0, 10.0, (SANDBOX, REMOTE, ENI, 0), (5000, 53, 7000, 0), False, False, 0)
    ft.learn(idx, OUT, 0, 0)
    ft.learn(idx, REPLY, 0, 0)
    q = build_packet(4, SANDBOX, REMOTE, 17, 5000, 53, payload=b"q")
    a = build_packet(4, REMOTE, SANDBOX, 17, 53, 5000, payload=b"a")
    stop, why, _ = run(ft, [a, a, q, a], [11, 12, 13, 14])
    assert (stop, why) == (4, "end")
    got = ft.get(idx)
    assert got["state"] == 2 and got["exchanges"] == 2 and got["last_reply"]
    assert got["expires"] == 14 + 180


@pytest.mark.parametrize("stop_case", ["miss", "malformed", "expired", "unlearned", "none"])
@pytest.mark.parametrize("at", [0, 1, 3, 7, 8, 15, 16, 31, 32, 33, 60, 99])
def test_pipelined_loop_stops_at_the_first_punt_and_touches_nothing_after_it(stop_case, at):
    """hp_flow_run looks packets ahead (parse, hash, prefetch): a stop at packet `at` must leave
    every later packet's entry as it was, whatever those packets are."""
    ft = table(expected=64)
    flows = 40
    ids = [entry(ft, sandbox_port=41000 + f, expires=5.0 if f == 7 else 1000.0) for f in range(flows)]
    for f, idx in enumerate(ids):
        ft.learn(idx, OUT, _core.FLOW_K_ENI, 0)
        ft.learn(idx, REPLY, _core.FLOW_K_ENI, 0)
    ft.forget(ids[5], REPLY)  # keyed, not learned
    frames, stamps, who = [], [], []
    for i in range(100):
        f = (i * 7) % flows
        if f in (5, 7):
            f += 1  # those flows carry only the stop packet
        if i % 2:
            frames.append(build_packet(4, REMOTE, SANDBOX, 6, 5432, 41000 + f, 0x10, payload=bytes(i)))
        else:
            frames.append(build_packet(4, SANDBOX, REMOTE, 6, 41000 + f, 5432, 0x18, payload=bytes(i)))
        stamps.append(10.0 + i / 8)
        who.append((f, i % 2))
    if stop_case != "none":
        frames[at] = {"miss": out_pkt(sport=39999), "malformed": out_pkt()[:30],
                      "expired": out_pkt(sport=41007),
                      "unlearned": build_packet(4, REMOTE, SANDBOX, 6, 5432, 41005, 0x10)}[stop_case]
        who[at] = None
    stop, why, out = run(ft, frames, stamps)
    want_stop = 100 if stop_case == "none" else at
    assert (stop, why) == (want_stop, "end" if stop_case == "none" else
                           {"malformed": "parse"}.get(stop_case, stop_case))
    assert list(out["state"][3:]) == [want_stop, want_stop, 0]
    counts = {}
    for w, frame in zip(who[:want_stop], frames[:want_stop]):
        c = counts.setdefault(w[0], [0, 0, 0, 0])
        c[w[1]] += 1
        c[2 + w[1]] += len(frame)
    for f, idx in enumerate(ids):
        got = ft.get(idx)
        c = counts.get(f, [0, 0, 0, 0])
        assert got["packets"] == (c[0], c[1]) and got["bytes"] == (c[2], c[3]), f
        assert got["dirty"] == (f in counts)
    assert ft.take_fast_packets() == want_stop


def test_frames_outside_the_buffer_are_refused():
    ft = table()
    with pytest.raises(ValueError):
        n = 1
        ft.run(b"abc", np.array([2], np.int64), np.array([5], np.int64), np.zeros(1), 101, 0,
               np.zeros(n, np.uint8), np.zeros(n, np.uint8), [np.zeros(8, np.uint8)] * 3,
               [np.zeros(n, np.int64)] * 3, [np.zeros(n, np.int64)] * 3, [np.zeros(n, np.int64)] * 3,
               [np.zeros(n, np.int32)] * 3, [np.zeros(n, np.int32)] * 3, np.zeros(6, np.int64))


# --- the fast path's own parser and rewrite: the same results as the general ones ----------------
from hypothesis import given, settings, strategies as st  # noqa: E402

_PARSED_FIELDS = (6, 7, 8, 10, 11, 12, 3, 9, 4)  # _core.parse tuple: src dst proto sport dport flags l3 l4 ip_len


def _frames():
    tcp = build_packet(4, SANDBOX, REMOTE, 6, 40000, 5432, 0x18, payload=b"x" * 30)
    udp = build_packet(4, SANDBOX, REMOTE, 17, 5000, 53, payload=b"q" * 12)
    ether = bytes(12) + b"\x08\x00"
    return st.sampled_from([(tcp, 101), (udp, 101), (tcp, 228), (ether + tcp, 1), (ether + udp, 1),
                            (udp, 113), (tcp, 229)])


@settings(max_examples=400, deadline=None)
@given(frame=_frames(), edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 90))
def test_fast_parser_accepts_only_what_the_parser_accepts_with_the_same_fields(frame, edits, cut):
    data, lt = frame
    buf = bytearray(data)
    for at, value in edits:
        if at < len(buf):
            buf[at] = value
    buf = bytes(buf[: len(buf) - cut if cut < len(buf) else len(buf)])
    fast = _core.flow_parse4(buf, lt)
    full = _core.parse(buf, lt)
    takes = full[0] and full[5] == 4 and not full[13] and full[9] >= 0 and full[8] in (6, 17)
    if fast is None:
        # only frames the fast path could not take anyway, or link types it leaves to the parser
        assert not takes or lt not in (1, 101, 228)
    else:
        assert takes and fast == tuple(full[k] for k in _PARSED_FIELDS)


@settings(max_examples=400, deadline=None)
@given(proto=st.sampled_from([6, 17]), kind=st.sampled_from([OUT, REPLY, VPC]), nat=st.booleans(),
       taps=st.integers(0, 3), port=st.integers(0, 65535), addr=st.integers(0, 2**32 - 1),
       zero_udp_sum=st.booleans(), payload=st.binary(max_size=40),
       flip=st.tuples(st.integers(0, 2), st.integers(-1, 200)), drop=st.sampled_from([None, 1, 2]), extra=st.sampled_from([None, 1, 2]))
def test_the_learning_check_accepts_exactly_the_reference_rewrites(proto, kind, nat, taps, port, addr, zero_udp_sum,
                                                                   payload, flip, drop, extra):
    """FlowTable.reproduces (the check before a kind is learned) accepts the forms the general
    rewrites (hyperplane.checksum) make of the packet on the taps the kind emits, and nothing
    else: a changed byte, a tap the kind emits but the slow path did not, or one it does not
    emit, fail."""
    ft = table()
    idx = ft.alloc(proto)
    ft.set(idx, 0, 1e9, 0.0, (SANDBOX, REMOTE, addr, NAT if nat else 0), (port, 5432, (port * 7) % 65536,
           6000 if nat else 0), False, nat, 0)
    ft.learn(idx, kind, (_core.FLOW_K_ENI if taps & 1 else 0) | (_core.FLOW_K_INET if taps & 2 else 0)
             | (_core.FLOW_K_NATRW if nat else 0), 0)
    if kind == OUT:
        pkt = build_packet(4, SANDBOX, REMOTE, proto, port, 5432, 0x10, payload=payload)
    elif kind == REPLY:
        pkt = build_packet(4, REMOTE, SANDBOX, proto, 5432, port, 0x10, payload=payload)
    else:
        pkt = build_packet(4, REMOTE, addr, proto, 5432, (port * 7) % 65536, 0x10, payload=payload)
    if proto == 17 and zero_udp_sum:
        pkt = pkt[:26] + b"\0\0" + pkt[28:]

    def rw(data, dst, ip, p):
        buf = bytearray(data)
        (checksum.rewrite_dst if dst else checksum.rewrite_src)(buf, checksum._packet.parse(bytes(data)), ip, p)
        return bytes(buf)

    if kind == VPC:
        want = [rw(pkt, True, SANDBOX, port), pkt, rw(pkt, True, NAT, 6000) if nat else pkt]
    else:
        e = rw(pkt, kind == REPLY, addr, (port * 7) % 65536)
        want = [pkt, e, rw(e, kind == REPLY, NAT, 6000) if nat else e]
    want = [want[0], want[1] if taps & 1 else None, want[2] if taps & 2 else None]
    assert ft.reproduces(idx, kind, pkt, 20, *want)
    expect = True
    tap, at = flip
    if want[tap] is not None and 0 <= at < len(want[tap]):
        want[tap] = want[tap][:at] + bytes([want[tap][at] ^ 1]) + want[tap][at + 1:]
        expect = False
    if drop is not None and want[drop] is not None:
        want[drop] = None
        expect = False
    if extra is not None and extra != drop and want[extra] is None:
        want[extra] = pkt
        expect = False
    assert ft.reproduces(idx, kind, pkt, 20, *want) is expect


def _bound_batch(frames, tap_bytes, linktypes=101):
    """A FlowBatch over ``frames`` with ``tap_bytes`` of room in each tap buffer."""
    n = len(frames)
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    arrays = {
        "verdicts": np.zeros(n, np.uint8), "reasons": np.zeros(n, np.uint8),
        "bufs": [np.zeros(tap_bytes, np.uint8) for _ in range(3)],
        "idx": [np.zeros(n, np.int64) for _ in range(3)], "off": [np.zeros(n, np.int64) for _ in range(3)],
        "src": [np.zeros(n, np.int64) for _ in range(3)], "head": [np.zeros(n, np.int32) for _ in range(3)],
        "len": [np.zeros(n, np.int32) for _ in range(3)], "state": np.zeros(6, np.int64),
    }
    batch = _core.FlowBatch(b"".join(frames), offsets, lengths, np.arange(n, dtype=np.float64) + 0.5, linktypes,
                            arrays["verdicts"], arrays["reasons"], arrays["bufs"], arrays["idx"], arrays["off"],
                            arrays["src"], arrays["head"], arrays["len"], arrays["state"])
    return batch, arrays


def test_a_slow_path_result_is_put_whole_or_not_at_all():
    """FlowBatch.put writes packet i's verdict, reason and every tap form as rows of the taps'
    own bytes; when one tap lacks room it names that tap and writes nothing (the engine grows
    the buffer and puts again)."""
    frames = [b"first packet", b"second", b"third"]
    batch, a = _bound_batch(frames, 16)
    assert batch.put(1, 2, 7, {"lambda": b"abc", "internet": b"defgh"}) == -1
    assert a["verdicts"].tolist() == [0, 2, 0] and a["reasons"].tolist() == [0, 7, 0]
    assert a["state"].tolist() == [3, 0, 5, 1, 0, 1]  # bytes used per tap, then rows per tap
    assert (a["idx"][0][0], a["off"][0][0], a["head"][0][0], a["len"][0][0]) == (1, 0, 3, 3)
    assert bytes(a["bufs"][2][:5]) == b"defgh" and a["src"][2][0] == 0
    before = (a["state"].copy(), a["verdicts"].copy(), [bytes(b) for b in a["bufs"]])
    assert batch.put(2, 1, 0, {"lambda": b"x", "eni": b"y" * 17}) == 1  # the eni tap lacks room
    assert (a["state"] == before[0]).all() and (a["verdicts"] == before[1]).all()
    assert [bytes(b) for b in a["bufs"]] == before[2]
    assert batch.put(2, 1, 0, {"lambda": b"", "eni": b"y" * 16}) == -1  # an empty form is a row too
    assert a["state"].tolist() == [3, 16, 5, 2, 1, 1]
    with pytest.raises(ValueError):
        batch.put(0, 1, 0, {"wire": b"x"})
    with pytest.raises(TypeError):
        batch.put(0, 1, 0, {"lambda": bytearray(b"x")})
    with pytest.raises(ValueError):
        batch.put(3, 1, 0, {})


def test_a_batch_gives_its_packets_back_with_time_and_link_type():
    frames = [b"a", b"", b"ccc"]
    batch, _ = _bound_batch(frames, 8)
    assert [batch.packet(i) for i in range(3)] == [(b"a", 0.5, 101), (b"", 1.5, 101), (b"ccc", 2.5, 101)]
    batch, _ = _bound_batch(frames, 8, np.array([1, 113, 101], np.int32))
    assert [batch.packet(i)[2] for i in range(3)] == [1, 113, 101]
    with pytest.raises(ValueError):
        batch.packet(3)
