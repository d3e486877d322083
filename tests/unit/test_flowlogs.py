"""Flow-log aggregation (windows, start/end, tcp-flags), formats, golden files, S3 layout, reader.

Golden files live in tests/golden/flowlogs/; regenerate them after an intended change with
``HYPERPLANE_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_flowlogs.py``.
"""
from __future__ import annotations

import gzip
import io
import os

import pytest

from hyperplane.flowlogs import (
    AWS_TCP_FLAGS, FIELD_VERSIONS, V2_FIELDS, V5_CUSTOM_FIELDS, FlowLogAggregator, FlowRecord,
    check_fields, format_version, read_flow_logs, write_flow_logs, write_s3_layout,
)

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "flowlogs")
UPDATE = os.environ.get("HYPERPLANE_UPDATE_GOLDEN") == "1"
FIN, SYN, RST, PSH, ACK, ECE = 1, 2, 4, 8, 16, 64
T0 = 1_718_900_400  # 2024-06-20T16:20:00Z, a multiple of 600

ENI, DB_ENI = "eni-0a1b2c3d4e5f60718", "eni-0db0db0db0db0db00"
LAMBDA_IP, DB_IP, DNS_IP = "10.0.1.37", "10.0.2.16", "10.0.3.53"
CONTEXT = dict(vpc_id="vpc-0123456789abcdef0", subnet_id="subnet-0aaa1111bbbb22223")


def scenario(interval=600, fields=V2_FIELDS) -> FlowLogAggregator:
    """A function's ENI talking to a database (accepted), to a DNS server (UDP), and a connection
    the database's security group rejects; one flow crosses a window boundary."""
    agg = FlowLogAggregator(interval=interval, account_id="123456789012", fields=fields)
    egress = dict(CONTEXT, flow_direction="egress", traffic_path=1)
    ingress = dict(CONTEXT, flow_direction="ingress")
    packets = [
        # (dt, eni, src, dst, sport, dport, proto, bytes, action, flags, extra)
        (0.2, ENI, LAMBDA_IP, DB_IP, 40001, 5432, 6, 60, "ACCEPT", SYN, egress),
        (0.3, ENI, DB_IP, LAMBDA_IP, 5432, 40001, 6, 60, "ACCEPT", SYN | ACK, ingress),
        (0.4, ENI, LAMBDA_IP, DB_IP, 40001, 5432, 6, 52, "ACCEPT", ACK, egress),
        (1.5, ENI, LAMBDA_IP, DB_IP, 40001, 5432, 6, 300, "ACCEPT", PSH | ACK, egress),
        (1.6, ENI, DB_IP, LAMBDA_IP, 5432, 40001, 6, 1500, "ACCEPT", PSH | ACK, ingress),
        (2.0, ENI, LAMBDA_IP, DNS_IP, 51000, 53, 17, 73, "ACCEPT", 0, egress),
        (2.1, ENI, DNS_IP, LAMBDA_IP, 53, 51000, 17, 140, "ACCEPT", 0, ingress),
        (3.0, ENI, LAMBDA_IP, "10.0.2.99", 40002, 3306, 6, 60, "ACCEPT", SYN, egress),
        (3.0, "eni-0c0ffee0c0ffee000", LAMBDA_IP, "10.0.2.99", 40002, 3306, 6, 60, "REJECT", SYN,
         dict(CONTEXT, flow_direction="ingress")),
        (4.0, "eni-0c0ffee0c0ffee000", LAMBDA_IP, "10.0.2.99", 40002, 3306, 6, 60, "REJECT", SYN,
         dict(CONTEXT, flow_direction="ingress")),
        (599.9, ENI, LAMBDA_IP, DB_IP, 40001, 5432, 6, 52, "ACCEPT", FIN | ACK, egress),
        (600.1, ENI, DB_IP, LAMBDA_IP, 5432, 40001, 6, 52, "ACCEPT", FIN | ACK, ingress),
        (600.2, ENI, LAMBDA_IP, DB_IP, 40001, 5432, 6, 40, "ACCEPT", RST, egress),
    ]
    for dt, eni, src, dst, sport, dport, proto, nbytes, action, flags, extra in packets:
        agg.add(eni, src, dst, sport, dport, proto, nbytes, T0 + dt, action, tcp_flags=flags, **extra)
    return agg


def render(records, fields) -> str:
    out = io.StringIO()
    write_flow_logs(records, out, fields)
    return out.getvalue()


@pytest.mark.parametrize("name,fields", [("v2_default.log", V2_FIELDS),
                                         ("v5_custom.log", V5_CUSTOM_FIELDS)])
def test_golden_output(name, fields):
    text = render(scenario(fields=fields).flush(), fields)
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    with open(path) as fh:
        assert text == fh.read()


def test_aggregation_per_eni_tuple_action_and_window():
    records = scenario().flush()
    by_key = {(r.interface_id, r.srcaddr, r.srcport, r.dstaddr, r.action, r.start): r for r in records}
    first = by_key[(ENI, LAMBDA_IP, 40001, DB_IP, "ACCEPT", T0)]
    assert (first.packets, first.bytes, first.start, first.end) == (4, 60 + 52 + 300 + 52, T0, T0 + 599)
    assert first.tcp_flags == SYN | FIN  # 3: SYN ... FIN; ACK/PSH add nothing
    reply = by_key[(ENI, DB_IP, 5432, LAMBDA_IP, "ACCEPT", T0)]
    assert reply.tcp_flags == 18 and reply.packets == 2  # SYN-ACK
    # The second window holds the rest of the flow.
    late = by_key[(ENI, LAMBDA_IP, 40001, DB_IP, "ACCEPT", T0 + 600)]
    assert late.packets == 1 and late.tcp_flags == RST
    late_reply = by_key[(ENI, DB_IP, 5432, LAMBDA_IP, "ACCEPT", T0 + 600)]
    assert late_reply.tcp_flags == FIN
    rejected = by_key[("eni-0c0ffee0c0ffee000", LAMBDA_IP, 40002, "10.0.2.99", "REJECT", T0 + 3)]
    assert (rejected.packets, rejected.end) == (2, T0 + 4)
    assert len(records) == 8
    # Order: by window, then by first packet.
    assert [r.window for r in records] == sorted(r.window for r in records)
    assert records[0] is first


def test_sixty_second_interval_splits_more():
    assert len(scenario(interval=60).flush()) == 9  # the SYN..FIN flow now spans two windows
    with pytest.raises(ValueError):
        FlowLogAggregator(interval=300)


def test_flush_before_returns_only_finished_windows():
    agg = scenario()
    assert agg.flush(before=T0 + 599) == []
    done = agg.flush(before=T0 + 600)
    assert {r.window for r in done} == {T0} and len(done) == 6
    assert len(agg) == 2
    assert len(agg.flush()) == 2 and len(agg) == 0


@pytest.mark.parametrize("flags,recorded", [
    (SYN, 2), (SYN | ACK, 18), (FIN, 1), (RST, 4), (ACK, 0), (PSH, 0), (PSH | ACK, 0),
    (SYN | ECE, 2), (FIN | ACK, 1), (RST | ACK, 4),
])
def test_aws_tcp_flag_rule(flags, recorded):
    assert AWS_TCP_FLAGS[flags] == recorded


def test_flags_or_across_packets():
    agg = FlowLogAggregator()
    for flags in (SYN | ACK, FIN | ACK):
        agg.add(ENI, DB_IP, LAMBDA_IP, 5432, 40001, 6, 52, T0, "ACCEPT", tcp_flags=flags)
    assert agg.flush()[0].tcp_flags == 19


def test_integer_addresses_and_ipv6():
    agg = FlowLogAggregator()
    agg.add(ENI, 0x0A000125, 0x0A000210, 1, 2, 17, 10, T0, "ACCEPT")
    agg.add(ENI, 0x20010DB8000000000000000000000001, 0x20010DB8000000000000000000000002, 1, 2, 6,
            10, T0, "ACCEPT")
    v4, v6 = agg.flush()
    assert (v4.srcaddr, v4.dstaddr) == ("10.0.1.37", "10.0.2.16")
    assert v6.srcaddr == "2001:db8::1" and v6.value("type") == "IPv6"
    assert v4.value("type") == "IPv4"


def test_custom_fields_any_order_and_unavailable_dash():
    agg = FlowLogAggregator()
    agg.add(ENI, LAMBDA_IP, DB_IP, 1, 2, 6, 10, T0, "ACCEPT", tcp_flags=SYN)
    record = agg.flush()[0]
    fields = ("traffic-path", "srcaddr", "version", "region", "pkt-dstaddr", "instance-id", "tcp-flags")
    assert record.format(fields) == f"- {LAMBDA_IP} 5 - {DB_IP} - 2"
    assert format_version(("srcaddr", "vpc-id")) == 3
    assert format_version(V2_FIELDS) == 2
    with pytest.raises(ValueError):
        check_fields(("srcaddr", "no-such-field"))
    with pytest.raises(ValueError):
        check_fields(("srcaddr", "srcaddr"))
    assert set(V5_CUSTOM_FIELDS) <= set(FIELD_VERSIONS)


def test_bad_action_and_extra_are_rejected():
    agg = FlowLogAggregator()
    with pytest.raises(ValueError):
        agg.add(ENI, LAMBDA_IP, DB_IP, 1, 2, 6, 10, T0, "DROP")
    with pytest.raises(TypeError):
        agg.add(ENI, LAMBDA_IP, DB_IP, 1, 2, 6, 10, T0, "ACCEPT", colour="red")


def test_one_packet_at_several_log_points_counts_like_one_add_per_point():
    """``add_all`` (the dataplane logs a packet at every point of its path in one call) makes
    and counts the same records, in the same order, as ``add`` point by point."""
    points = [(ENI, LAMBDA_IP, DB_IP, 40001, 5432, "ACCEPT", None),
              ("eni-0c0ffee0c0ffee000", LAMBDA_IP, DB_IP, 40001, 5432, "ACCEPT", {"flow_direction": "ingress"}),
              (ENI, LAMBDA_IP, DB_IP, 40001, 5432, "ACCEPT", None)]  # a point twice: one record, counted twice
    one, each = FlowLogAggregator(), FlowLogAggregator()
    for ts, flags, nbytes in ((T0 + 0.5, SYN, 60), (T0 + 3.2, 0x10, 52), (T0 + 700.0, FIN, 52)):
        got = one.add_all(points, 6, nbytes, ts, flags)
        want = [each.add(e, s, d, sp, dp, 6, nbytes, ts, a, flags, **(x or {})) for e, s, d, sp, dp, a, x in points]
        assert [r.format() for r in got] == [r.format() for r in want]
        assert got[0] is got[2]
    assert [r.format(V5_CUSTOM_FIELDS) for r in one.flush()] == [r.format(V5_CUSTOM_FIELDS) for r in each.flush()]
    with pytest.raises(ValueError):
        one.add_all([(ENI, LAMBDA_IP, DB_IP, 1, 2, "DROP", None)], 6, 10, T0)
    with pytest.raises(TypeError):
        one.record_all([(ENI, LAMBDA_IP, DB_IP, 1, 2, "ACCEPT", {"colour": "red"})], 6, T0)


def test_read_back_plain_and_gzip_with_nodata(tmp_path):
    records = scenario().flush()
    plain = tmp_path / "flows.log"
    write_flow_logs(records, plain)
    parsed = read_flow_logs(plain)
    assert parsed == [r.as_dict() for r in records]
    assert parsed[0]["srcport"] == 40001 and parsed[0]["action"] == "ACCEPT"
    zipped = tmp_path / "flows.log.gz"
    write_flow_logs(records, zipped, V5_CUSTOM_FIELDS)
    assert read_flow_logs(zipped)[0]["flow-direction"] == "egress"
    # AWS's NODATA example (AWS-FACTS 8), parsed with the default header.
    nodata = tmp_path / "nodata.log"
    nodata.write_text(" ".join(V2_FIELDS) + "\n"
                      "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n"
                      "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 "
                      "4249 1418530010 1418530070 REJECT OK\n")
    empty, rejected = read_flow_logs(nodata)
    assert empty["log-status"] == "NODATA" and empty["srcaddr"] is None and empty["action"] is None
    assert empty["start"] == 1431280876
    assert rejected["action"] == "REJECT" and rejected["bytes"] == 4249
    bad = tmp_path / "bad.log"
    bad.write_text(" ".join(V2_FIELDS) + "\n2 1 eni-1 - -\n")
    with pytest.raises(ValueError, match=":2:"):
        read_flow_logs(bad)


def test_s3_layout(tmp_path):
    records = scenario().flush()
    paths = write_s3_layout(records, tmp_path, "123456789012", "us-east-1", "fl-1234abcd")
    again = write_s3_layout(records, tmp_path / "again", "123456789012", "us-east-1", "fl-1234abcd")
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    assert [os.path.basename(p) for p in paths] == [os.path.basename(p) for p in again]
    folder = os.path.join("AWSLogs", "123456789012", "vpcflowlogs", "us-east-1", "2024", "06", "20")
    names = [os.path.basename(p) for p in rel]
    assert all(os.path.dirname(p) == folder for p in rel)
    # Ends at T0+1..T0+4 -> 16:20 file; ends at T0+599/600 -> 16:25 and 16:30 files.
    stamps = [n.split("_")[4] for n in names]
    assert stamps == ["20240620T1620Z", "20240620T1625Z", "20240620T1630Z"]
    for name in names:
        prefix, digest = name[: -len("_xxxxxxxx.log.gz")], name[-len("xxxxxxxx.log.gz"):-len(".log.gz")]
        assert prefix.startswith("123456789012_vpcflowlogs_us-east-1_fl-1234abcd_")
        assert len(digest) == 8 and int(digest, 16) >= 0
    with open(paths[0], "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
    with gzip.open(paths[0], "rt") as fh:
        assert fh.readline().split() == list(V2_FIELDS)
    total = sum(len(read_flow_logs(p)) for p in paths)
    assert total == len(records)
    with open(paths[0], "rb") as a, open(again[0], "rb") as b:
        assert a.read() == b.read()  # byte-for-byte reproducible


def test_record_repr_is_the_default_line():
    record = FlowRecord("1", "eni-1", "10.0.0.1", "10.0.0.2", 1, 2, 6, T0, "ACCEPT", T0)
    record.packets, record.bytes = 1, 40
    assert record.format() == f"2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 {T0} {T0} ACCEPT OK"


def test_default_format_fast_path_equals_the_field_by_field_format():
    from hyperplane.flowlogs import FlowLogAggregator, V2_FIELDS

    agg = FlowLogAggregator(interval=60, account_id="111122223333")
    agg.add("eni-1", "10.0.1.5", "10.0.3.10", 40000, 5432, 6, 60, 1_700_000_000.5, "ACCEPT", tcp_flags=2)
    agg.add("eni-1", "2600:1f18::5", "2600:1f18::9", 40000, 443, 6, 80, 1_700_000_001.0, "REJECT")
    for record in agg.flush():
        slow = " ".join(record.value(f, 2) for f in V2_FIELDS)
        assert record.format() == record.format(list(V2_FIELDS)) == slow
