"""The core backend's flow-log store (``_core.FlowLogTable``) against the reference aggregator
(``hyperplane.flowlogs.FlowLogAggregator``), driven in lockstep: the same records (every field,
extra fields included), the same flush order, the same default-format lines."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperplane.engine import available_backends
from hyperplane.flowlogs import AWS_TCP_FLAGS, EXTRA_FIELDS, V5_CUSTOM_FIELDS, FlowLogAggregator, _v2_lines

pytestmark = pytest.mark.skipif("core" not in available_backends(), reason="the core is not built")

ACCOUNT = "123456789012"
IFACES = ("eni-0a", "eni-0b", "eni-71578f0d93a3b3fd0")
ADDRS = ("10.0.1.4", "10.0.3.10", "203.0.113.7", 0x0A000205, 0xCB007108, "2001:db8::1", 2**128 - 5)
EXTRAS = (None, None, {"vpc_id": "vpc-1", "subnet_id": "subnet-1", "flow_direction": "egress", "traffic_path": 2},
          {"vpc_id": "vpc-1", "flow_direction": "ingress"}, {"type": "IPv6"})

log_points = st.tuples(st.sampled_from(IFACES), st.sampled_from(ADDRS), st.sampled_from(ADDRS),
                       st.sampled_from((443, 5432, 40000, 65535)), st.sampled_from((53, 443, 1024)),
                       st.sampled_from(("ACCEPT", "REJECT")), st.sampled_from(EXTRAS))
times = st.floats(min_value=1_793_609_000, max_value=1_793_613_000, allow_nan=False)
ops = st.one_of(
    st.tuples(st.just("add"), st.lists(log_points, min_size=1, max_size=4), st.sampled_from((6, 17)),
              st.integers(20, 1500), times, st.integers(0, 255)),
    st.tuples(st.just("record"), st.lists(log_points, min_size=1, max_size=4), st.sampled_from((6, 17)), times),
    st.tuples(st.just("count"), st.integers(1, 5), st.integers(1, 9000), st.integers(0, 4000), st.integers(0, 31)),
    st.tuples(st.just("flush"), st.one_of(st.none(), times)),
    st.tuples(st.just("pending")),
)


def _table(interval: int):
    from hyperplane import _core

    return _core.FlowLogTable(interval, AWS_TCP_FLAGS, EXTRA_FIELDS)


def _same(rows, records) -> None:
    got = rows.records(ACCOUNT)
    assert [r.format(V5_CUSTOM_FIELDS) for r in got] == [r.format(V5_CUSTOM_FIELDS) for r in records]
    assert [(r.window, r.start, r.end, r.tcp_flags, r.extra) for r in got] == \
        [(r.window, r.start, r.end, r.tcp_flags, r.extra) for r in records]
    assert rows.lines_v2(ACCOUNT) == _v2_lines(records)
    joined = "".join(line + "\n" for line in _v2_lines(records)).encode()
    for chunk in (300, 1 << 20):  # in pieces of whole lines from one reused buffer (the replay's file)
        pieces = []
        assert rows.write_v2(ACCOUNT, lambda piece: pieces.append(bytes(piece)), chunk) == len(joined)
        assert b"".join(pieces) == joined and all(piece.endswith(b"\n") for piece in pieces)
    assert (rows.windows.tolist(), rows.starts.tolist()) == ([r.window for r in records], [r.start for r in records])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from((60, 600)), st.lists(ops, max_size=40))
def test_the_table_keeps_the_records_the_aggregator_keeps(interval, steps):
    table, ref = _table(interval), FlowLogAggregator(interval, ACCOUNT)
    made = []  # (table ids, reference records) of each call, for "count"
    for step in steps:
        if step[0] == "add":
            _, logs, proto, nbytes, ts, flags = step
            made.append((table.add_all(logs, proto, nbytes, ts, flags), ref.add_all(logs, proto, nbytes, ts, flags)))
        elif step[0] == "record":
            _, logs, proto, ts = step
            made.append((table.record_all(logs, proto, ts), ref.record_all(logs, proto, ts)))
        elif step[0] == "count" and made:
            _, packets, nbytes, end, aws = step
            ids, records = made[-1]
            table.count(ids, packets, nbytes, records[0].window + end, aws)
            for record in records:  # what the core's fold does to the records of a connection
                record.packets += packets
                record.bytes += nbytes
                record.end = max(record.end, records[0].window + end)
                record.tcp_flags |= aws
        elif step[0] == "flush":
            _same(table.flush(step[1]), ref.flush(step[1]))
            made.clear()  # the ids of flushed records are gone (the core forgets them)
        elif step[0] == "pending":
            _same(table.flush(keep=True), ref.pending())
        assert len(table) == len(ref)
    _same(table.flush(), ref.flush())
    assert len(table) == 0


def test_ids_stay_valid_until_their_record_is_flushed():
    table = _table(60)
    early = table.add_all((("eni-0a", "10.0.0.1", "10.0.0.2", 1, 2, "ACCEPT", None),), 6, 40, 1000.0)
    late = table.add_all((("eni-0a", "10.0.0.1", "10.0.0.2", 1, 2, "ACCEPT", None),), 6, 40, 1100.0)
    assert len(table.flush(1080)) == 1  # the window [960, 1020)
    table.count(late, 2, 80, 1110, 0)
    assert table.get(late[0])["packets"] == 3 and table.get(late[0])["end"] == 1110
    with pytest.raises(KeyError):
        table.count(early, 1, 40, 1000, 0)
    with pytest.raises(ValueError, match="ACCEPT or REJECT"):
        table.add_all((("eni-0a", "10.0.0.1", "10.0.0.2", 1, 2, "DROP", None),), 6, 40, 1100.0)
    with pytest.raises(TypeError, match="unknown flow-log attribute"):
        table.add_all((("eni-0a", "10.0.0.1", "10.0.0.2", 1, 2, "ACCEPT", {"colour": "red"}),), 6, 40, 1100.0)


def test_addresses_of_flushed_records_are_forgotten():
    """A long capture to ever new addresses: after a flush the table keeps the addresses of its
    live records only (and the records it keeps still print theirs)."""
    table = _table(60)
    for k in range(20_000):
        table.add_all((("eni-0a", "10.0.1.4", f"198.51.{k // 250}.{k % 250}", 1024, 443, "ACCEPT", None),), 6, 40,
                      1000.0 + k / 1000)
    kept = table.add_all((("eni-0a", "10.0.1.4", "203.0.113.9", 1024, 443, "ACCEPT", None),), 6, 40, 1100.0)
    assert len(table.flush(1080)) == 20_000
    assert table.get(kept[0])["dstaddr"] == "203.0.113.9"
    assert table.address_count < 10
    assert table.flush().lines_v2(ACCOUNT) == [
        f"2 {ACCOUNT} eni-0a 10.0.1.4 203.0.113.9 1024 443 6 1 40 1100 1100 ACCEPT OK"]


open_points = st.tuples(st.sampled_from(IFACES), st.sampled_from(ADDRS), st.sampled_from(ADDRS),
                        st.sampled_from((443, 5432, -1, None)), st.sampled_from((53, 443, -1, None)),
                        st.sampled_from(EXTRAS))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(open_points, max_size=4), st.sampled_from((6, 17)), st.integers(1024, 65535),
                          st.integers(1024, 65535), times), min_size=1, max_size=6))
def test_records_at_interned_points_are_those_of_the_logs_they_stand_for(steps):
    """record_points (the core's planned opens: points with the ENI port as -1 and the NAT port
    as None, filled per connection) makes the records record_all makes for the logs those points
    give, in the same order, reusing the same ones."""
    by_points, by_logs = _table(60), _table(60)
    for points, proto, eni_port, nat_port, ts in steps:
        logs = [(i, s, d, eni_port if sp == -1 else nat_port if sp is None else sp,
                 eni_port if dp == -1 else nat_port if dp is None else dp, "ACCEPT", x) for i, s, d, sp, dp, x in points]
        interned = by_points.points(points, -1)
        assert len(interned) == len(points)
        assert by_points.record_points(interned, proto, eni_port, nat_port, ts) == by_logs.record_all(logs, proto, ts)
    assert [r.format(V5_CUSTOM_FIELDS) for r in by_points.flush().records(ACCOUNT)] == \
           [r.format(V5_CUSTOM_FIELDS) for r in by_logs.flush().records(ACCOUNT)]


def test_points_belong_to_the_table_that_interned_them():
    points = _table(60).points([("eni-0a", "10.0.1.4", "10.0.3.10", -1, 5432, None)], -1)
    with pytest.raises(ValueError):
        _table(60).record_points(points, 6, 40000, 0, 1_793_610_000.0)


def test_interned_points_outlive_the_forgetting_of_addresses():
    """Points interned before a flush that forgets the addresses of flushed records (a long
    capture to ever new addresses) still make records with their own addresses: the forgetting
    keeps and renumbers the addresses interned points use."""
    table = _table(60)
    points = table.points([("eni-0a", "10.0.2.4", "203.0.113.77", -1, 443, None)], -1)
    for k in range(20_000):
        table.add_all((("eni-0a", "10.0.1.4", f"198.51.{k // 250}.{k % 250}", 1024, 443, "ACCEPT", None),), 6, 40,
                      1000.0 + k / 1000)
    assert len(table.flush()) == 20_000 and table.address_count < 10  # forgotten
    (rid,) = table.record_points(points, 6, 40000, 0, 2000.0)
    got = table.get(rid)
    assert (got["srcaddr"], got["dstaddr"], got["srcport"]) == ("10.0.2.4", "203.0.113.77", 40000)


def test_tables_past_2_mib_keep_every_record_through_growth_and_flushes():
    """80k records: the record array and its index grow past 2 MiB, where their blocks are mapped
    apart and offered to huge pages (ext/hp_mem.h) and grow by moving their pages; a flush of all
    hands the array over and the table goes on in a new one, a partial flush copies. Every record
    is the reference aggregator's, through all of it."""
    table, ref = _table(60), FlowLogAggregator(60, ACCOUNT)
    logs = [("eni-0a", "10.0.1.4", f"198.51.{k // 250}.{k % 250}", 1024 + k % 50_000, 443, "ACCEPT", None)
            for k in range(80_000)]
    for start, ts in ((0, 1000.0), (40_000, 1030.0)):
        part = logs[start:start + 40_000]
        ids = table.add_all(part, 6, 40, ts, 2)
        ref.add_all(part, 6, 40, ts, 2)
        table.count(ids[::997], 3, 120, int(ts) + 5, 0)
        for record in ref.pending()[start:start + 40_000:997]:
            record.packets += 3
            record.bytes += 120
            record.end = max(record.end, int(ts) + 5)
    assert table.memory_bytes > 8 << 20
    _same(table.flush(), ref.flush())  # every record: the array is handed over
    table.add_all(logs[:30_000], 17, 60, 1100.0)
    ref.add_all(logs[:30_000], 17, 60, 1100.0)
    table.add_all(logs[30_000:], 17, 60, 1200.0)
    ref.add_all(logs[30_000:], 17, 60, 1200.0)
    _same(table.flush(1170), ref.flush(1170))  # the window [1080, 1140): copied out
    _same(table.flush(), ref.flush())
