"""The C parser's Python surface: ``_core.parse``, ``_core.parse_batch`` (numpy rows laid out as
the C struct ``hp_pkt``), the tables it shares with ``hyperplane.packet``, and the bound on what
it reads (never past the captured length, whatever the bytes say)."""
from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether

from hyperplane import packet

def ETH():
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


core = pytest.importorskip("hyperplane._core", reason="the extension is not built")


def row_tuple(row) -> tuple:
    """A parse_batch row as the parse() tuple."""
    return (
        bool(row["ok"]), core.ERRORS[int(row["error"])], bool(row["not_ip"]), int(row["l3"]),
        int(row["ip_len"]), int(row["version"]), (int(row["src_hi"]) << 64) | int(row["src_lo"]),
        (int(row["dst_hi"]) << 64) | int(row["dst_lo"]), int(row["proto"]), int(row["l4"]),
        int(row["sport"]), int(row["dport"]), int(row["tcp_flags"]), bool(row["fragment"]),
    )


FRAMES = [
    (bytes(ETH() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")), packet.ETHERNET),
    (bytes(ETH() / Dot1Q(vlan=3) / IPv6(src="2001:db8::1", dst="2001:db8::ffff:1") / UDP(sport=3, dport=4)),
     packet.ETHERNET),
    (bytes(ETH() / ARP()), packet.ETHERNET),
    (bytes(IP() / UDP() / (b"x" * 3)), packet.RAW),
    (bytes(CookedLinux(proto=0x0800) / IP(flags="MF") / TCP()), packet.LINUX_SLL),
    (bytes(IPv6() / IPv6ExtHdrFragment(offset=10) / (b"\x00" * 16)), packet.IPV6),
    (b"", packet.RAW),
    (b"\x45\x00", packet.RAW),
    (bytes(fragment(IP() / UDP() / (b"y" * 100), fragsize=40)[1]), packet.RAW),
]


def test_tables_match_the_python_parser():
    assert core.ERRORS == packet.ERRORS
    assert core.PARSED_FIELDS == packet.FIELDS
    assert core.MAX_VLAN_TAGS == packet.MAX_VLAN_TAGS
    assert core.MAX_IPV6_EXT_HEADERS == packet.MAX_IPV6_EXT_HEADERS


def test_parse_tuple_matches_python():
    for data, lt in FRAMES:
        assert core.parse(data, lt) == packet.parse(data, lt).astuple()


def test_parse_default_linktype_is_raw():
    data = bytes(IP() / TCP())
    assert core.parse(data) == core.parse(data, packet.RAW)


def test_parse_accepts_buffers():
    data = bytes(ETH() / IP() / TCP())
    want = core.parse(data, 1)
    assert core.parse(bytearray(data), 1) == want
    assert core.parse(memoryview(data), 1) == want
    assert core.parse(np.frombuffer(data, dtype=np.uint8), 1) == want
    assert core.parse(memoryview(b"xx" + data)[2:], 1) == want


def test_dtype_is_the_struct_layout():
    dt = core.PARSED_DTYPE
    assert set(dt.names) == {"src_hi", "src_lo", "dst_hi", "dst_lo", "l3", "ip_len", "l4", "sport", "dport",
                             "ok", "error", "not_ip", "version", "proto", "tcp_flags", "fragment"}
    assert dt.itemsize >= 55
    offsets = sorted((dt.fields[n][1], dt.fields[n][0].itemsize) for n in dt.names)
    for (a, size), (b, _) in zip(offsets, offsets[1:]):
        assert a + size <= b  # no overlap


def test_parse_batch_matches_parse():
    buf = b"".join(d for d, _ in FRAMES)
    lengths = np.array([len(d) for d, _ in FRAMES])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    lts = np.array([lt for _, lt in FRAMES])
    rows = core.parse_batch(buf, offsets, lengths, lts)
    assert rows.dtype == core.PARSED_DTYPE and len(rows) == len(FRAMES)
    for row, (data, lt) in zip(rows, FRAMES):
        assert row_tuple(row) == core.parse(data, lt)
    # a numpy buffer and a single link type for all
    rows = core.parse_batch(np.frombuffer(buf, dtype=np.uint8), offsets, lengths, packet.RAW)
    for row, (data, _lt) in zip(rows, FRAMES):
        assert row_tuple(row) == core.parse(data, packet.RAW)


def test_parse_batch_empty():
    rows = core.parse_batch(b"", np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    assert len(rows) == 0 and rows.dtype == core.PARSED_DTYPE
    rows = core.parse_batch(b"", [0], [0], 1)
    assert row_tuple(rows[0]) == packet.parse(b"", 1).astuple()


@pytest.mark.parametrize(
    "offsets,lengths",
    [([0], [11]), ([-1], [2]), ([0], [-1]), ([11], [0]), ([5], [6]), ([2**62], [2**62])],
)
def test_parse_batch_rejects_frames_outside_the_buffer(offsets, lengths):
    with pytest.raises(ValueError):
        core.parse_batch(b"0123456789", offsets, lengths, 1)


def test_parse_batch_shape_errors():
    with pytest.raises(ValueError):
        core.parse_batch(b"0123", [0, 1], [1], 1)
    with pytest.raises(ValueError):
        core.parse_batch(b"0123", [0, 1], [1, 1], [1])


def test_never_reads_past_the_frame():
    """The frame ends inside the TCP header while the buffer goes on with the rest of it: the
    parser must report the cut, not read on into the next bytes."""
    whole = bytes(ETH() / IP() / TCP(sport=7, dport=8))
    for cut in range(len(whole)):
        rows = core.parse_batch(whole, [0], [cut], packet.ETHERNET)
        assert row_tuple(rows[0]) == packet.parse(whole[:cut], packet.ETHERNET).astuple()
        assert not rows[0]["ok"]
        assert core.parse(memoryview(whole)[:cut], packet.ETHERNET) == row_tuple(rows[0])


def test_large_batch_is_consistent():
    rng = np.random.default_rng(1)
    base = [d for d, _ in FRAMES if d]
    frames = [bytearray(base[i % len(base)]) for i in range(2000)]
    for f in frames:  # sprinkle mutations
        for _ in range(2):
            f[int(rng.integers(len(f)))] = int(rng.integers(256))
    buf = b"".join(frames)
    lengths = np.array([len(f) for f in frames])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    lts = rng.choice([0, 1, 101, 113, 228, 229, 276], size=len(frames)).astype(np.int32)
    rows = core.parse_batch(buf, offsets, lengths, lts)
    for i in range(0, len(frames), 7):
        assert row_tuple(rows[i]) == packet.parse(bytes(frames[i]), int(lts[i])).astuple()
