"""Differential fuzzing: the C parser (``hyperplane._core.parse``) and the pure-Python parser
(``hyperplane.packet.parse``) return identical results and never raise, for arbitrary bytes, for
mutated valid packets and for every record of the real-capture corpus.

``make asan`` runs this file against an AddressSanitizer build of ``_core``; the C parser gets
each frame in a buffer of exactly its size (a fresh numpy allocation), so a read past the captured
length is an ASan heap-buffer-overflow, not a silent read of a neighbour's byte.
"""
from __future__ import annotations

import glob
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Raw
from scapy.utils import RawPcapReader

from hyperplane import packet

core = pytest.importorskip("hyperplane._core", reason="the extension is not built")

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LINKTYPES = list(packet.LINKTYPES)


def exact(data) -> np.ndarray:
    """A private heap buffer of exactly len(data) bytes (no trailing NUL as bytes have)."""
    return np.frombuffer(bytes(data), dtype=np.uint8).copy()


def same(data, linktype):
    py = packet.parse(bytes(data), linktype)
    c = core.parse(exact(data), linktype)
    assert c == py.astuple(), (bytes(data).hex(), linktype)
    assert isinstance(py.error, str) and (py.ok == (py.error == ""))
    if py.ok:
        assert 0 <= py.l3 and py.l3 + py.ip_len <= len(data)
        assert py.l4 == -1 or py.l3 <= py.l4 <= py.l3 + py.ip_len
    return py


# --- the build under test ---------------------------------------------------------------------


def test_core_is_the_expected_build():
    """Under ``make asan``: the ASan ``_core`` is the one imported, and ASan is in the process."""
    want = os.environ.get("HYPERPLANE_EXPECT_CORE")
    if not want:
        pytest.skip("HYPERPLANE_EXPECT_CORE is not set (only `make asan` sets it)")
    assert os.path.realpath(core.__file__).startswith(os.path.realpath(want) + os.sep), core.__file__
    if os.environ.get("HYPERPLANE_EXPECT_ASAN"):
        with open("/proc/self/maps") as maps:
            assert "libasan" in maps.read()


# --- arbitrary bytes --------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(LINKTYPES + [2, 999, -5]))
def test_arbitrary_bytes(data, linktype):
    same(data, linktype)


@FUZZ
@given(st.sampled_from([4, 6]), st.binary(max_size=120), st.sampled_from(LINKTYPES))
def test_arbitrary_bytes_behind_a_plausible_header(version, rest, linktype):
    head = bytes([0x45 if version == 4 else 0x60])
    for prefix in (b"", bytes(12) + (b"\x08\x00" if version == 4 else b"\x86\xdd"), struct.pack("<I", 2)):
        same(prefix + head + rest, linktype)


# --- mutated valid packets --------------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4s = st.integers(0, 2**32 - 1).map(lambda v: packet.int_to_ip(v, 4))
ipv6s = st.integers(0, 2**128 - 1).map(lambda v: packet.int_to_ip(v, 6))


EXT_CODES = {"hbh": 0, "dst": 60, "rt": 43, "frag": 44, "ah": 51}
L4_CODES = {"tcp": 6, "udp": 17, "icmp": 1, "raw": 59}


@st.composite
def ip_packets(draw):
    version = draw(st.sampled_from([4, 6]))
    more = draw(st.booleans()) and draw(st.booleans())
    offset = draw(st.sampled_from([0, 0, 0, 1, 185]))
    l4 = draw(st.sampled_from(sorted(L4_CODES)))
    if version == 4:
        options = draw(st.sampled_from([[], [], [IPOption_NOP()] * 4, [IPOption_RR(routers=["1.2.3.4"])]]))
        ip = IP(src=draw(ipv4s), dst=draw(ipv4s), ttl=draw(st.integers(0, 255)), options=options,
                flags="MF" if more else 0, frag=offset)
    else:
        ip = IPv6(src=draw(ipv6s), dst=draw(ipv6s), hlim=draw(st.integers(0, 255)))
        kinds = draw(st.lists(st.sampled_from(sorted(EXT_CODES)), max_size=4))
        for i, kind in enumerate(kinds):
            nh = EXT_CODES[kinds[i + 1]] if i + 1 < len(kinds) else L4_CODES[l4]
            ip = ip / {
                "hbh": lambda: IPv6ExtHdrHopByHop(nh=nh),
                "dst": lambda: IPv6ExtHdrDestOpt(nh=nh),
                "rt": lambda: IPv6ExtHdrRouting(nh=nh, addresses=["2001:db8::1"], segleft=draw(st.integers(0, 1))),
                "frag": lambda: IPv6ExtHdrFragment(nh=nh, offset=offset, m=int(more)),
                "ah": lambda: AH(nh=nh, payloadlen=4, icv=bytes(12)),
            }[kind]()
    if l4 == "tcp":
        opts = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7), ("SAckOK", b"")]]))
        ip = ip / TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.integers(0, 255)), options=opts)
    elif l4 == "udp":
        ip = ip / UDP(sport=draw(ports), dport=draw(ports))
    elif l4 == "icmp":
        ip = ip / ICMP()
    return bytes(ip / Raw(draw(st.binary(max_size=40))))


@st.composite
def frames(draw):
    ip = draw(ip_packets())
    linktype = draw(st.sampled_from(LINKTYPES))
    v6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if linktype in (packet.IPV4, packet.IPV6):
        linktype = packet.IPV6 if v6 else packet.IPV4
    if linktype == packet.ETHERNET:
        tpids = draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=packet.MAX_VLAN_TAGS + 1))
        head = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02"))[:12]
        for tpid in tpids:
            head += struct.pack("!HH", tpid, draw(st.integers(0, 4095)))
        return head + struct.pack("!H", ethertype) + ip, linktype
    if linktype == packet.LINUX_SLL:
        return bytes(CookedLinux(proto=ethertype)) + ip, linktype
    if linktype == packet.LINUX_SLL2:
        return bytes(CookedLinuxV2(proto=ethertype)) + ip, linktype
    if linktype in (packet.NULL, packet.LOOP):
        family = draw(st.sampled_from([10, 24, 28, 30])) if v6 else 2
        fmt = ">I" if linktype == packet.LOOP or draw(st.booleans()) else "<I"
        return struct.pack(fmt, family) + ip, linktype
    return ip, linktype


@st.composite
def mutated_frames(draw):
    data, linktype = draw(frames())
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["set", "set", "set", "cut", "insert", "delete"]))
        if kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif not data:
            continue
        elif kind == "set":  # mostly in the headers, where it matters
            at = draw(st.integers(0, min(len(data), 90) - 1))
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            at = draw(st.integers(0, len(data) - 1))
            del data[at : at + draw(st.integers(1, 8))]
    if draw(st.integers(0, 9)) == 0:
        linktype = draw(st.sampled_from(LINKTYPES))
    return bytes(data), linktype


@FUZZ
@given(frames())
def test_valid_frames(frame):
    data, linktype = frame
    p = same(data, linktype)
    tags = 0
    if linktype == packet.ETHERNET:
        while data[12 + 4 * tags : 14 + 4 * tags] in (b"\x81\x00", b"\x88\xa8", b"\x91\x00"):
            tags += 1
    if tags <= packet.MAX_VLAN_TAGS:
        assert p.ok, p


@FUZZ
@given(mutated_frames())
def test_mutated_frames(frame):
    same(*frame)


@FUZZ
@given(frames())
def test_every_prefix(frame):
    data, linktype = frame
    for cut in range(len(data) + 1):
        same(data[:cut], linktype)


@FUZZ
@given(st.lists(mutated_frames(), min_size=1, max_size=20))
def test_batch_equals_single(batch):
    buf = b"".join(d for d, _ in batch)
    lengths = np.array([len(d) for d, _ in batch], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rows = core.parse_batch(exact(buf), offsets, lengths, np.array([lt for _, lt in batch], dtype=np.int32))
    for row, (data, lt) in zip(rows, batch):
        py = packet.parse(data, lt)
        assert bool(row["ok"]) == py.ok and core.ERRORS[row["error"]] == py.error
        assert (int(row["src_hi"]) << 64 | int(row["src_lo"])) == py.src
        assert (int(row["l3"]), int(row["ip_len"]), int(row["l4"]), int(row["sport"]), int(row["dport"])) == (
            py.l3, py.ip_len, py.l4, py.sport, py.dport)


# --- the real-capture corpus ------------------------------------------------------------------

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "pcaps", "real")
REAL_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REAL, "*.pcap*")))


def records(path):
    """(bytes, linktype) of every record scapy can read; stops quietly where it cannot (the
    malformed-file-* captures are a job for the capture reader, not for the parser)."""
    try:
        reader = RawPcapReader(path)
    except Exception:
        return []
    out = []
    with reader:
        try:
            for data, meta in reader:
                out.append((data, getattr(meta, "linktype", None) or reader.linktype))
        except Exception:
            pass
    return out


@pytest.mark.parametrize("name", REAL_FILES or ["(none)"])
def test_real_captures(real_pcaps_dir, name):
    if name == "(none)":
        pytest.skip("no captures")
    recs = records(os.path.join(real_pcaps_dir, name))
    for data, lt in recs:
        same(data, lt)
    if recs:
        buf = b"".join(d for d, _ in recs)
        lengths = np.array([len(d) for d, _ in recs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = core.parse_batch(exact(buf), offsets, lengths, np.array([lt for _, lt in recs], dtype=np.int32))
        assert [bool(r) for r in rows["ok"]] == [packet.parse(d, lt).ok for d, lt in recs]


def test_real_corpus_outcomes(real_pcaps_dir):
    """A few facts about the corpus the parsers must get right."""
    def parsed(name):
        return [packet.parse(d, lt) for d, lt in records(os.path.join(real_pcaps_dir, name))]

    assert all(p.ok and p.version == 4 and p.l3 == 22 for p in parsed("vlan-qinq-tcp-http.pcap"))
    assert all(p.ok and p.l3 == 26 for p in parsed("vlan-qinqinq-tcp-http.pcap"))
    assert all(p.ok and p.l3 == 20 for p in parsed("sll2-tcp-http.pcap"))
    assert all(p.ok and p.version == 6 and p.l3 == 4 for p in parsed("null-quic-ipv6.pcap"))
    assert all(p.ok and p.l3 == 0 for p in parsed("rawip-ipv6-http-streams.pcap"))
    assert all(p.not_ip for p in parsed("vlan-pppoe-tcp-http-rst.pcap"))
    frags = parsed("frag-ipv6-udp.pcap")
    assert all(p.fragment for p in frags) and any(p.l4 == -1 for p in frags) and any(p.l4 > 0 for p in frags)
    assert [p.error for p in parsed("trunc-ipv4-header.pcap")] == ["truncated ipv4 options"]
    assert [p.error for p in parsed("malformed-udp-invalid-length.pcap")] == ["bad udp length"]
    assert [p.error for p in parsed("malformed-ipv4-bogus-ihl.pcap")] == ["bad ipv4 total length"]
    trunc = parsed("trunc-snaplen-tcp-stream.pcap")
    assert all(p.ok for p in trunc) and any(p.ip_len < 1500 for p in trunc)
