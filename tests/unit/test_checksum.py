"""Checksums (RFC 1071), incremental updates (RFC 1624) and the address/port rewrites, against
scapy's own checksum computation. The rewrite tests run on both implementations (pure Python
``hyperplane.checksum`` and C ``hyperplane._core``) and check that they write the same bytes."""
from __future__ import annotations

import glob
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
from scapy.utils import RawPcapReader
from scapy.utils import checksum as scapy_checksum

from hyperplane import checksum as ck
from hyperplane import packet

SRC4, DST4 = "10.0.1.5", "192.0.2.80"
SRC6, DST6 = "2001:db8::5", "2001:db8:1::80"
NEW4 = packet.ip_to_int("172.31.7.9")
NEW6 = packet.ip_to_int("fd00:ec2::1234:5678")


def _core():
    return pytest.importorskip("hyperplane._core", reason="the extension is not built")


@pytest.fixture(params=["python", "core"])
def impl(request):
    """(rewrite_src, rewrite_dst) of one implementation."""
    if request.param == "core":
        core = _core()
        return core.rewrite_src, core.rewrite_dst
    return ck.rewrite_src, ck.rewrite_dst


def recomputed(data: bytes) -> bytes:
    """scapy's bytes for the same packet with every checksum field recomputed."""
    pkt = IP(data) if data[0] >> 4 == 4 else IPv6(data)
    layer = pkt
    while layer:
        for name in ("chksum", "cksum"):
            if any(f.name == name for f in layer.fields_desc):
                delattr(layer, name)
        layer = layer.payload
    return bytes(pkt)


# --- RFC 1071 -----------------------------------------------------------------------------------


def test_rfc1071_example():
    # RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ck.ones_sum(data) == 0xDDF2
    assert ck.checksum(data) == 0x220D
    assert _core().ones_sum(data) == 0xDDF2
    assert _core().checksum(data) == 0x220D


@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_checksum_matches_scapy_and_core(data, start):
    assert ck.checksum(data) == scapy_checksum(data)
    assert _core().checksum(data) == ck.checksum(data)
    assert _core().ones_sum(data, start) == ck.ones_sum(data, start)
    assert _core().checksum(data, start) == ck.checksum(data, start)


def test_checksum_of_empty_and_odd():
    assert ck.checksum(b"") == 0xFFFF == _core().checksum(b"")
    assert ck.checksum(b"\x01") == (~0x0100) & 0xFFFF == _core().checksum(b"\x01")


# --- RFC 1624 -----------------------------------------------------------------------------------

WIDTHS = {2: (ck.update16, "update16"), 4: (ck.update32, "update32"), 16: (ck.update128, "update128")}


@given(st.data())
def test_incremental_update_equals_recomputation(data):
    width = data.draw(st.sampled_from(sorted(WIDTHS)))
    words = data.draw(st.integers(width // 2, 40))
    buf = bytearray(data.draw(st.binary(min_size=2 * words, max_size=2 * words)))
    at = 2 * data.draw(st.integers(0, words - width // 2))
    new = data.draw(st.binary(min_size=width, max_size=width))
    fn, name = WIDTHS[width]
    hc = ck.checksum(buf)
    old = int.from_bytes(buf[at : at + width], "big")
    buf[at : at + width] = new
    want = ck.checksum(buf)
    got = fn(hc, old, int.from_bytes(new, "big"))
    if any(buf):
        assert got == want
    else:  # all-zero data: 0x0000 and 0xFFFF are the same one's complement number
        assert got in (0, 0xFFFF)
    assert getattr(_core(), name)(hc, old, int.from_bytes(new, "big")) == got


# --- rewrites -----------------------------------------------------------------------------------

PACKETS = {
    "tcp4": lambda: IP(src=SRC4, dst=DST4) / TCP(sport=40000, dport=443, flags="PA") / b"GET / HTTP/1.1\r\n",
    "udp4": lambda: IP(src=SRC4, dst=DST4) / UDP(sport=5353, dport=53) / b"\x12\x34query",
    "tcp6": lambda: IPv6(src=SRC6, dst=DST6) / TCP(sport=40000, dport=443, flags="S"),
    "udp6": lambda: IPv6(src=SRC6, dst=DST6) / UDP(sport=5353, dport=53) / b"odd",
    "udp6-ext": lambda: IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / b"x",
    "tcp4-opts": lambda: IP(src=SRC4, dst=DST4, options=[b"\x01\x01\x01\x01"]) / TCP(options=[("MSS", 1400)]),
}


@pytest.mark.parametrize("name", sorted(PACKETS))
@pytest.mark.parametrize("side", ["src", "dst"])
@pytest.mark.parametrize("port", [None, 1024, 65535, 0])
def test_rewrite_matches_scapy(impl, name, side, port):
    pkt = PACKETS[name]()
    data = bytes(pkt)
    assert ck.verify(data)
    p = packet.parse(data)
    new = NEW4 if p.version == 4 else NEW6
    buf = bytearray(data)
    (impl[0] if side == "src" else impl[1])(buf, p, new, port)
    re = IP(bytes(buf)) if p.version == 4 else IPv6(bytes(buf))
    assert getattr(re, side) == packet.int_to_ip(new, p.version)
    l4 = re[TCP] if TCP in re else re[UDP]
    if port is not None:
        assert getattr(l4, "sport" if side == "src" else "dport") == port
    assert bytes(buf) == recomputed(bytes(buf))
    assert ck.verify(buf)


def test_both_implementations_write_the_same_bytes():
    core = _core()
    for name, make in PACKETS.items():
        data = bytes(make())
        p = packet.parse(data)
        for side in range(2):
            a, b = bytearray(data), bytearray(data)
            new = NEW4 if p.version == 4 else NEW6
            (ck.rewrite_src, ck.rewrite_dst)[side](a, p, new, 4242)
            (core.rewrite_src, core.rewrite_dst)[side](b, core.parse(data), new, 4242)
            assert a == b, name


def test_rewrite_inside_a_frame_with_offset(impl):
    from scapy.layers.l2 import Ether

    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / PACKETS["tcp4"]())
    p = packet.parse(frame, packet.ETHERNET)
    buf = bytearray(frame)
    impl[0](buf, p, NEW4, 2000, offset=p.l3)
    assert buf[:14] == frame[:14]
    ip = bytearray(frame[14:])
    impl[0](ip, p, NEW4, 2000)  # the IP packet alone: offsets relative to p.l3
    assert buf[14:] == ip and ck.verify(ip)


def test_udp4_without_checksum_stays_without(impl):
    pkt = IP(src=SRC4, dst=DST4) / UDP(sport=1, dport=2, chksum=0) / b"payload"
    buf = bytearray(bytes(pkt))
    p = packet.parse(bytes(buf))
    impl[0](buf, p, NEW4, 3000)
    impl[1](buf, p, NEW4 + 1, 4000)
    re = IP(bytes(buf))
    assert re[UDP].chksum == 0 and (re.sport, re.dport) == (3000, 4000)
    assert ck.verify(buf)
    assert re[IP].chksum == IP(recomputed(bytes(buf))).chksum


@pytest.mark.parametrize("version", [4, 6])
def test_udp_zero_result_is_written_as_ffff(impl, version):
    pkt = (IP(src=SRC4, dst=DST4) if version == 4 else IPv6(src=SRC6, dst=DST6)) / UDP(sport=1, dport=2) / b"abcd"
    data = bytes(pkt)
    p = packet.parse(data)
    new = NEW4 if version == 4 else NEW6
    csum_at = p.l4 + 6
    hc = struct.unpack_from("!H", data, csum_at)[0]
    after_addr = (ck.update32 if version == 4 else ck.update128)(hc, p.src, new)
    port = next(x for x in range(65536) if ck.update16(after_addr, 1, x) == 0)
    buf = bytearray(data)
    impl[0](buf, p, new, port)
    assert struct.unpack_from("!H", buf, csum_at)[0] == 0xFFFF
    assert bytes(buf) == recomputed(bytes(buf))  # scapy writes 0xFFFF too
    assert ck.verify(buf)


def test_tcp_zero_result_stays_zero(impl):
    pkt = IP(src=SRC4, dst=DST4) / TCP(sport=1, dport=2) / b"abcd"
    data = bytes(pkt)
    p = packet.parse(data)
    hc = struct.unpack_from("!H", data, 36)[0]
    after_addr = ck.update32(hc, p.src, NEW4)
    port = next(x for x in range(65536) if ck.update16(after_addr, 1, x) == 0)
    buf = bytearray(data)
    impl[0](buf, p, NEW4, port)
    assert struct.unpack_from("!H", buf, 36)[0] == 0
    assert ck.verify(buf)


def test_icmp_rewrites(impl):
    icmp4 = bytes(IP(src=SRC4, dst=DST4) / ICMP(id=7) / b"ping")
    buf = bytearray(icmp4)
    impl[0](buf, packet.parse(icmp4), NEW4, 5555)  # the port is ignored: no ports in ICMP
    assert buf[20:] == icmp4[20:]  # the ICMPv4 checksum has no pseudo-header
    assert bytes(buf) == recomputed(bytes(buf)) and ck.verify(buf)
    icmp6 = bytes(IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(id=7, data=b"ping"))
    buf = bytearray(icmp6)
    impl[1](buf, packet.parse(icmp6), NEW6, 5555)
    assert bytes(buf) == recomputed(bytes(buf)) and ck.verify(buf)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_fragment_rewrites(impl, proto):
    l4 = TCP(sport=1000, dport=80, flags="PA") if proto == "tcp" else UDP(sport=1000, dport=53)
    whole = IP(src=SRC4, dst=DST4, id=99) / l4 / (b"f" * 2000)
    frags = [bytes(f) for f in fragment(whole, fragsize=800)]
    ref = bytearray(bytes(whole))
    impl[0](ref, packet.parse(bytes(ref)), NEW4, 2000)
    for i, f in enumerate(frags):
        p = packet.parse(f)
        assert p.fragment and (p.l4 >= 0) == (i == 0)
        buf = bytearray(f)
        impl[0](buf, p, NEW4, 2000)
        re = IP(bytes(buf))
        assert re.src == packet.int_to_ip(NEW4) and re.chksum == IP(recomputed(bytes(buf))).chksum
        if i == 0:  # the L4 header (with the whole datagram's checksum) is in the first fragment
            assert buf[20:40] == ref[20:40] if proto == "tcp" else buf[20:28] == ref[20:28]
        else:
            assert buf[20:] == f[20:]


def test_snaplen_cut_packet_gets_the_same_checksum(impl):
    data = bytes(PACKETS["tcp4"]())
    full = bytearray(data)
    impl[0](full, packet.parse(data), NEW4, 999)
    cut = bytearray(data[:45])
    p = packet.parse(bytes(cut))
    assert p.ok and p.ip_len == 45
    impl[0](cut, p, NEW4, 999)
    assert cut == full[:45]


def test_ipv6_routing_header_checksum_uses_final_destination():
    final = "2001:db8:ffff::1"
    pkt = IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrRouting(addresses=[final], segleft=1) / UDP(sport=1, dport=2) / b"r"
    data = bytes(pkt)  # scapy computes the UDP checksum against the final destination
    assert ck.verify(data)
    bad = bytearray(data)
    bad[-1] ^= 1
    assert not ck.verify(bad)


def test_verify_rejects_bad_checksums():
    for make in PACKETS.values():
        data = bytearray(bytes(make()))
        assert ck.verify(data)
        data[-1] ^= 0x40
        assert not ck.verify(data)
    hdr = bytearray(bytes(PACKETS["udp4"]()))
    hdr[8] ^= 1  # TTL: only the IPv4 header checksum covers it
    assert not ck.verify(hdr)
    assert not ck.verify(b"\x45")
    assert not ck.verify(bytes(PACKETS["tcp4"]())[:-1])  # cut short of its total length


def test_rewrite_errors(impl):
    rewrite_src = impl[0]
    data = bytes(PACKETS["tcp4"]())
    p = packet.parse(data)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), packet.parse(b"\x00"), NEW4, 1)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), p, 1 << 32, 1)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), p, NEW4, 70000)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), p, NEW4, -2)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), p, -1, 1)
    with pytest.raises(ValueError):
        rewrite_src(bytearray(data), p, NEW4, 1, offset=-1)
    short = bytearray(data[:15])
    with pytest.raises(ValueError):
        rewrite_src(short, p, NEW4, 1)
    assert short == data[:15]  # nothing written
    with pytest.raises(ValueError):
        rewrite_src(bytearray(), p, NEW4, 1)
    v6 = bytes(PACKETS["udp6"]())
    with pytest.raises(ValueError):
        rewrite_src(bytearray(v6), packet.parse(v6), 1 << 128, 1)


def test_core_rewrite_needs_a_writable_buffer():
    core = _core()
    data = bytes(PACKETS["tcp4"]())
    with pytest.raises((TypeError, ValueError, BufferError)):
        core.rewrite_src(data, core.parse(data), NEW4, 1)


# --- real captures ------------------------------------------------------------------------------


def _records(path):
    """(bytes, linktype) of every record scapy can read; nothing for a file it refuses."""
    try:
        reader = RawPcapReader(path)
    except Exception:
        return
    with reader:
        try:
            for data, meta in reader:
                yield data, getattr(meta, "linktype", None) or reader.linktype
        except Exception:
            return


@pytest.mark.parametrize("name", ["ipv6-tcp-routing-hdr-cksum.pcap", "malformed-badcksum-tcp4.pcap",
                                  "malformed-badcksum-udp4.pcap", "malformed-badcksum-tcp6.pcap"])
def test_verify_on_real_captures(real_pcaps_dir, name):
    (data, lt), = list(_records(os.path.join(real_pcaps_dir, name)))
    p = packet.parse(data, lt)
    assert p.ok
    assert ck.verify(data[p.l3 : p.l3 + p.ip_len]) == (not name.startswith("malformed"))


def test_rewrites_keep_real_checksums_valid(real_pcaps_dir):
    """Every TCP/UDP packet of the corpus whose checksums are valid stays valid after rewriting
    its source and destination, and both implementations write the same bytes."""
    core = _core()
    checked = 0
    for path in sorted(glob.glob(os.path.join(real_pcaps_dir, "*.pcap*"))):
        for data, lt in _records(path):
            p = packet.parse(data, lt)
            if not p.ok or p.proto not in (6, 17) or p.l4 < 0:
                continue
            ip = bytes(data[p.l3 : p.l3 + p.ip_len])
            if not ck.verify(ip):
                continue
            new_src, new_dst = (NEW4, NEW4 ^ 0xFF) if p.version == 4 else (NEW6, NEW6 ^ 0xFFFF)
            a, b = bytearray(ip), bytearray(data)
            ck.rewrite_src(a, p, new_src, (p.sport + 1) & 0xFFFF)
            ck.rewrite_dst(a, p, new_dst, (p.dport * 7) & 0xFFFF)
            core.rewrite_src(b, core.parse(data, lt), new_src, (p.sport + 1) & 0xFFFF, offset=p.l3)
            core.rewrite_dst(b, core.parse(data, lt), new_dst, (p.dport * 7) & 0xFFFF, offset=p.l3)
            assert ck.verify(a), (path, p)
            assert bytes(a) == bytes(b[p.l3 : p.l3 + p.ip_len]), path
            checked += 1
    assert checked > 5000
