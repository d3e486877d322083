"""The packet parser against scapy-built packets. Every test runs on both parsers: the pure-Python
``hyperplane.packet.parse`` and the C ``hyperplane._core.parse`` (through the same ``Parsed``)."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback

from hyperplane import packet
from hyperplane.packet import (
    ETHERNET, IPV4, IPV6, LINUX_SLL, LINUX_SLL2, LOOP, NULL, RAW, RAW_BSD, RAW_OPENBSD, Parsed,
)


def _core_parse(data, linktype=RAW):
    from hyperplane import _core

    return Parsed.from_tuple(_core.parse(data, linktype))


@pytest.fixture(params=["python", "core"])
def parse(request):
    if request.param == "core":
        pytest.importorskip("hyperplane._core", reason="the extension is not built")
        return _core_parse
    return packet.parse


SRC4, DST4 = "10.0.1.5", "192.0.2.80"
SRC6, DST6 = "2001:db8::5", "2001:db8:1::80"


def tcp4(**kw):
    return IP(src=SRC4, dst=DST4) / TCP(sport=40000, dport=443, flags="SA", **kw) / b"hello"


def udp6():
    return IPv6(src=SRC6, dst=DST6) / UDP(sport=5353, dport=53) / b"query"


def frame(ip: bytes, linktype: int, tags=()) -> bytes:
    """Wrap a raw IP packet for a link type, with scapy where scapy has the layer."""
    v6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if linktype == ETHERNET:
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        layers = eth
        for tpid, vid in tags:
            layers = layers / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
        raw = bytearray(bytes(layers / IP() if not v6 else layers / IPv6())[: 14 + 4 * len(tags)])
        # set each TPID (scapy picks 0x8100/0x88a8; 0x9100 is written by hand) and the last type
        for i, (tpid, _vid) in enumerate(tags):
            struct.pack_into("!H", raw, 12 + 4 * i, tpid)
        struct.pack_into("!H", raw, 12 + 4 * len(tags), ethertype)
        return bytes(raw) + ip
    if linktype == LINUX_SLL:
        return bytes(CookedLinux(pkttype=4, proto=ethertype)) + ip
    if linktype == LINUX_SLL2:
        return bytes(CookedLinuxV2(proto=ethertype)) + ip
    if linktype == NULL:
        return bytes(Loopback(type=(10 if v6 else 2))) + ip  # scapy: host (little-endian) order
    if linktype == LOOP:
        return struct.pack("!I", 30 if v6 else 2) + ip
    return ip


def check(p: Parsed, scapy_ip, l3: int):
    """The fields of an unfragmented TCP/UDP packet as scapy sees them."""
    ip = scapy_ip
    v6 = isinstance(ip, IPv6)
    assert p.ok, p.error
    assert p.error == "" and not p.not_ip and not p.fragment
    assert p.l3 == l3
    assert p.version == (6 if v6 else 4)
    assert p.src == packet.ip_to_int(ip.src) and p.dst == packet.ip_to_int(ip.dst)
    assert p.ip_len == len(ip)
    l4 = ip[TCP] if TCP in ip else ip[UDP]
    assert p.proto == (6 if TCP in ip else 17)
    assert p.l4 == l3 + len(ip) - len(l4)
    assert (p.sport, p.dport) == (l4.sport, l4.dport)
    assert p.tcp_flags == (int(l4.flags) if TCP in ip else 0)


LINK_CASES = [
    (ETHERNET, 14), (RAW, 0), (RAW_BSD, 0), (RAW_OPENBSD, 0), (LINUX_SLL, 16), (LINUX_SLL2, 20),
    (NULL, 4), (LOOP, 4),
]


@pytest.mark.parametrize("linktype,l3", LINK_CASES)
@pytest.mark.parametrize("make", [tcp4, udp6], ids=["tcp4", "udp6"])
def test_every_linktype(parse, linktype, l3, make):
    ip = make()
    p = parse(frame(bytes(ip), linktype), linktype)
    check(p, IP(bytes(ip)) if IP in ip else IPv6(bytes(ip)), l3)


def test_scapy_adapters(parse):
    for pkt, lt in [
        (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / tcp4(), ETHERNET), (tcp4(), RAW), (udp6(), RAW),
        (CookedLinux(proto=0x86DD) / udp6(), LINUX_SLL), (CookedLinuxV2(proto=0x0800) / tcp4(), LINUX_SLL2),
        (Loopback() / tcp4(), NULL), (Loopback() / udp6(), NULL),
    ]:
        data, linktype = packet.from_scapy(pkt)
        assert linktype == lt and data == bytes(pkt)
        assert parse(data, linktype).ok
        assert bytes(packet.to_scapy(data, linktype)) == data
    ip = tcp4()
    assert packet.to_scapy(bytes(ip)).haslayer(TCP)
    assert packet.to_scapy(bytes(udp6())).haslayer(UDP)
    with pytest.raises(ValueError):
        packet.from_scapy(TCP())


def test_ipv4_only_and_ipv6_only_linktypes(parse):
    assert parse(bytes(tcp4()), IPV4).ok
    assert parse(bytes(udp6()), IPV6).ok
    assert parse(bytes(udp6()), IPV4).error == "bad ip version"
    assert parse(bytes(tcp4()), IPV6).error == "bad ip version"
    assert parse(b"", IPV4).error == "truncated ipv4 header"
    assert parse(b"", IPV6).error == "truncated ipv6 header"
    assert parse(b"", RAW).error == "truncated ip header"
    assert parse(b"\x50" + bytes(30), RAW).error == "bad ip version"


@pytest.mark.parametrize(
    "tags",
    [
        [(0x8100, 10)],  # 802.1Q
        [(0x88A8, 100), (0x8100, 10)],  # 802.1ad QinQ
        [(0x9100, 100), (0x8100, 10)],  # old QinQ TPID
        [(0x8100, 1), (0x8100, 2), (0x8100, 3)],  # three stacked tags
        [(0x8100, i) for i in range(packet.MAX_VLAN_TAGS)],  # the bound itself
    ],
    ids=["dot1q", "qinq-88a8", "qinq-9100", "triple", "max"],
)
@pytest.mark.parametrize("make", [tcp4, udp6], ids=["tcp4", "udp6"])
def test_vlan_tags(parse, tags, make):
    ip = make()
    data = frame(bytes(ip), ETHERNET, tags)
    check(parse(data, ETHERNET), IP(bytes(ip)) if IP in ip else IPv6(bytes(ip)), 14 + 4 * len(tags))


def test_vlan_with_scapy_layers(parse):
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=20) / Dot1Q(vlan=30) / tcp4()
    data = bytes(pkt)
    assert data[12:14] == b"\x88\xa8" and data[16:18] == b"\x81\x00"
    check(parse(data, ETHERNET), pkt[IP], 22)


def test_too_many_vlan_tags(parse):
    tags = [(0x8100, i) for i in range(packet.MAX_VLAN_TAGS + 1)]
    p = parse(frame(bytes(tcp4()), ETHERNET, tags), ETHERNET)
    assert not p.ok and p.error == "too many vlan tags"


def test_vlan_tag_cut_short(parse):
    data = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / tcp4())[:16]
    assert parse(data, ETHERNET).error == "truncated link header"


def test_vlan_inside_sll(parse):
    data = bytes(CookedLinux(proto=0x8100)) + bytes(Dot1Q(vlan=7, type=0x0800)) + bytes(tcp4())
    check(parse(data, LINUX_SLL), tcp4(), 20)


@pytest.mark.parametrize(
    "data,linktype",
    [
        (bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ARP()), ETHERNET),
        (bytes(Ether(type=0x88CC) / (b"lldp" * 10)), ETHERNET),
        (bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q() / ARP()), ETHERNET),
        (bytes(CookedLinux(proto=0x0806) / ARP()), LINUX_SLL),
        (bytes(CookedLinuxV2(proto=0x0806) / ARP()), LINUX_SLL2),
        (struct.pack("<I", 7) + bytes(40), NULL),
        (struct.pack("!I", 7) + bytes(40), LOOP),
    ],
    ids=["arp", "lldp", "vlan-arp", "sll-arp", "sll2-arp", "null-iso", "loop-iso"],
)
def test_not_ip(parse, data, linktype):
    p = parse(data, linktype)
    assert not p.ok and p.not_ip and p.error == "not ip" and p.l3 == -1


def test_null_family_in_either_byte_order(parse):
    ip = bytes(udp6())
    for family in (24, 28, 30, 10):
        for fmt in ("<I", ">I"):
            p = parse(struct.pack(fmt, family) + ip, NULL)
            assert p.ok and p.version == 6, (family, fmt)
    assert parse(struct.pack(">I", 2) + bytes(tcp4()), NULL).ok
    assert parse(struct.pack("<I", 2) + bytes(tcp4()), LOOP).not_ip  # LOOP is network order only
    assert parse(struct.pack("<I", 2) + bytes(udp6()), NULL).error == "bad ip version"


@pytest.mark.parametrize("linktype", [ETHERNET, LINUX_SLL, LINUX_SLL2, NULL, LOOP])
def test_short_link_header(parse, linktype):
    need = {ETHERNET: 14, LINUX_SLL: 16, LINUX_SLL2: 20, NULL: 4, LOOP: 4}[linktype]
    data = frame(bytes(tcp4()), linktype)
    for cut in range(need):
        p = parse(data[:cut], linktype)
        assert not p.ok and p.error == "truncated link header"


def test_unsupported_linktype(parse):
    for lt in (2, 105, 127, 9999, -1):
        p = parse(bytes(tcp4()), lt)
        assert not p.ok and p.error == "unsupported linktype" and not p.not_ip


def test_ipv4_options(parse):
    ip = IP(src=SRC4, dst=DST4, options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"]), IPOption_NOP()]) / TCP(
        sport=1, dport=2, flags="S")
    data = bytes(ip)
    assert data[0] & 0x0F > 5
    p = parse(data)
    check(p, IP(data), 0)
    assert p.l4 == (data[0] & 0x0F) * 4


def test_tcp_options(parse):
    ip = IP() / TCP(options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)]) / b"x"
    data = bytes(ip)
    assert data[20 + 12] >> 4 > 5
    check(parse(data), IP(data), 0)


def test_icmp_has_l4_but_no_ports(parse):
    for ip, proto in [(IP() / ICMP(), 1), (IPv6() / ICMPv6EchoRequest(), 58)]:
        p = parse(bytes(ip))
        assert p.ok and p.proto == proto and p.l4 == (20 if proto == 1 else 40)
        assert (p.sport, p.dport, p.tcp_flags) == (0, 0, 0)


def test_ipv6_extension_headers(parse):
    ip = (
        IPv6(src=SRC6, dst=DST6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::1", "2001:db8::2"], segleft=0)
        / IPv6ExtHdrDestOpt()
        / AH(nh=6, payloadlen=4, icv=bytes(12))
        / TCP(sport=1234, dport=22, flags="PA")
        / b"data"
    )
    data = bytes(ip)
    p = parse(data)
    assert p.ok, p.error
    assert p.proto == 6 and (p.sport, p.dport) == (1234, 22) and p.tcp_flags == int(TCP(data[p.l4:]).flags)
    assert p.l4 == len(data) - len(ip[TCP])
    assert not p.fragment and p.ip_len == len(data)


def test_ipv6_extension_header_bound(parse):
    def chain(n):
        layers = IPv6(src=SRC6, dst=DST6)
        for _ in range(n):
            layers = layers / IPv6ExtHdrDestOpt()
        return bytes(layers / UDP(sport=1, dport=2))

    p = parse(chain(packet.MAX_IPV6_EXT_HEADERS))
    assert p.ok and p.proto == 17 and p.l4 == 40 + 8 * packet.MAX_IPV6_EXT_HEADERS
    p = parse(chain(packet.MAX_IPV6_EXT_HEADERS + 1))
    assert not p.ok and p.error == "too many ipv6 extension headers"


def test_ipv6_extension_header_cut(parse):
    data = bytes(IPv6() / IPv6ExtHdrHopByHop(options=[]) / IPv6ExtHdrDestOpt() / UDP())
    for cut in range(41, 40 + 16):
        p = parse(data[:cut])
        assert not p.ok and p.error == "truncated ipv6 extension header", cut
    # an extension header that claims more bytes than the payload holds
    bad = bytearray(bytes(IPv6() / IPv6ExtHdrDestOpt() / UDP()))
    bad[41] = 200
    assert parse(bytes(bad)).error == "truncated ipv6 extension header"


def test_ipv4_fragments(parse):
    big = IP(src=SRC4, dst=DST4, id=7) / UDP(sport=1111, dport=2222) / (b"z" * 3000)
    frags = fragment(big, fragsize=1000)
    assert len(frags) >= 3
    first = parse(bytes(frags[0]))
    assert first.ok and first.fragment and first.l4 == 20 and (first.sport, first.dport) == (1111, 2222)
    for f in frags[1:]:
        p = parse(bytes(f))
        assert p.ok and p.fragment and p.l4 == -1 and p.proto == 17 and p.sport == p.dport == 0
        assert p.src == packet.ip_to_int(SRC4) and p.ip_len == len(f)
    last = parse(bytes(frags[-1]))
    assert last.fragment  # offset > 0, MF clear


def test_ipv4_tiny_first_fragment_is_lenient(parse):
    # a SYN whose TCP header is split over two fragments (8 bytes in the first)
    tcp = bytes(TCP(sport=4444, dport=80, flags="S"))
    first = bytes(IP(src=SRC4, dst=DST4, flags="MF", proto=6) / tcp[:8])
    p = parse(first)
    assert p.ok and p.fragment and p.l4 == 20 and (p.sport, p.dport) == (4444, 80) and p.tcp_flags == 0
    first16 = bytes(IP(flags="MF", proto=6) / tcp[:16])
    assert parse(first16).tcp_flags == 2
    two = bytes(IP(flags="MF", proto=6) / tcp[:2])
    p = parse(two)
    assert p.ok and p.sport == 0 and p.dport == 0
    # the same cut without MF is an error
    assert parse(bytes(IP(proto=6) / tcp[:8])).error == "truncated tcp header"
    second = bytes(IP(frag=1, proto=6) / tcp[8:])
    p = parse(second)
    assert p.ok and p.fragment and p.l4 == -1 and p.proto == 6


def test_ipv6_fragments(parse):
    big = IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment() / UDP(sport=3333, dport=4444) / (b"q" * 3000)
    frags = fragment6(big, 1280)
    assert len(frags) >= 3
    first = parse(bytes(frags[0]))
    assert first.ok and first.fragment and first.proto == 17 and first.l4 == 48
    assert (first.sport, first.dport) == (3333, 4444)
    for f in frags[1:]:
        p = parse(bytes(f))
        assert p.ok and p.fragment and p.l4 == -1 and p.proto == 17 and p.sport == 0


def test_ipv6_atomic_fragment_is_strict(parse):
    data = bytes(IPv6() / IPv6ExtHdrFragment(offset=0, m=0) / TCP(sport=5, dport=6, flags="S"))
    p = parse(data)
    assert p.ok and p.fragment and p.l4 == 48 and p.tcp_flags == 2
    assert parse(data[:60]).error == "truncated tcp header"


def test_bad_ihl(parse):
    for ihl in range(5):
        data = bytearray(bytes(tcp4()))
        data[0] = 0x40 | ihl
        p = parse(bytes(data))
        assert not p.ok and p.error == "bad ihl" and p.version == 4 and p.l3 == 0


def test_ipv4_options_running_off_the_end(parse):
    data = bytearray(bytes(IP(options=[IPOption_RR()]) / UDP()))
    ihl = (data[0] & 0x0F) * 4
    assert parse(bytes(data[: ihl - 1])).error == "truncated ipv4 options"
    data[0] = 0x4F  # 60-byte header claimed, 36 captured
    assert parse(bytes(data[:36])).error == "truncated ipv4 options"
    assert parse(bytes(data[:19])).error == "truncated ipv4 header"


def test_total_length_beyond_caplen_is_clipped(parse):
    ip = tcp4()
    data = bytes(ip)
    cut = data[:-3]  # snaplen cut into the payload
    p = parse(cut)
    assert p.ok and p.ip_len == len(cut)
    bogus = bytearray(data)
    bogus[2:4] = (60000).to_bytes(2, "big")
    p = parse(bytes(bogus))
    assert p.ok and p.ip_len == len(data)


def test_total_length_below_header(parse):
    data = bytearray(bytes(tcp4()))
    for total in (0, 10, 19):
        data[2:4] = total.to_bytes(2, "big")
        p = parse(bytes(data))
        assert not p.ok and p.error == "bad ipv4 total length"


def test_total_length_shorter_than_frame_ignores_padding(parse):
    ip = IP(src=SRC4, dst=DST4) / UDP(sport=7, dport=9)  # 28 bytes: Ethernet pads it to 60
    data = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip) + bytes(18)
    p = parse(data, ETHERNET)
    check(p, ip.__class__(bytes(ip)), 14)
    assert p.ip_len == 28
    # a TCP header that only "fits" thanks to the padding is still cut short
    tcp = bytearray(bytes(IP() / TCP()))
    tcp[2:4] = (30).to_bytes(2, "big")
    assert parse(bytes(Ether(type=0x0800) / bytes(tcp)), ETHERNET).error == "truncated tcp header"


def test_ipv6_payload_length(parse):
    data = bytes(udp6())
    p = parse(data + b"padding")
    assert p.ok and p.ip_len == len(data)
    bogus = bytearray(data)
    bogus[4:6] = (5000).to_bytes(2, "big")
    p = parse(bytes(bogus))
    assert p.ok and p.ip_len == len(data)  # clipped to what was captured
    bogus[4:6] = (4).to_bytes(2, "big")  # the UDP header does not fit the payload
    assert parse(bytes(bogus)).error == "truncated udp header"
    assert parse(data[:39]).error == "truncated ipv6 header"


def test_tcp_data_offset(parse):
    data = bytearray(bytes(IP() / TCP(sport=1, dport=2) / b"abcdef"))
    for doff in range(5):
        data[32] = doff << 4
        assert parse(bytes(data)).error == "bad tcp data offset"
    data[32] = 6 << 4  # 24 bytes: fits thanks to the payload
    assert parse(bytes(data)).ok
    data[32] = 15 << 4  # 60 bytes: past the end
    p = parse(bytes(data))
    assert not p.ok and p.error == "truncated tcp options" and p.l4 == 20 and p.sport == 0


def test_tcp_and_udp_header_cut(parse):
    tcp = bytes(IP() / TCP())
    for cut in range(20, 40):
        assert parse(tcp[:cut]).error == "truncated tcp header"
    udp = bytes(IPv6() / UDP())
    for cut in range(40, 48):
        assert parse(udp[:cut]).error == "truncated udp header"


def test_udp_length_field(parse):
    data = bytearray(bytes(IP() / UDP() / b"12345678"))
    for ulen in (0, 7, 17):
        data[24:26] = ulen.to_bytes(2, "big")
        assert parse(bytes(data)).error == "bad udp length", ulen
    for ulen in (8, 16):  # shorter than the IP payload is allowed (trailing bytes)
        data[24:26] = ulen.to_bytes(2, "big")
        assert parse(bytes(data)).ok
    # a snaplen-cut UDP packet: the length field is checked against the IP header's length
    data[24:26] = (16).to_bytes(2, "big")
    assert parse(bytes(data[:-4])).ok


def test_tcp_flags(parse):
    for flags in ("S", "SA", "A", "FA", "R", "RA", "PA", "FSRPAUEC"):
        p = parse(bytes(IP() / TCP(flags=flags)))
        assert p.tcp_flags == int(TCP(flags=flags).flags)
    assert packet.FIN | packet.SYN | packet.RST | packet.PSH | packet.ACK | packet.URG | packet.ECE | packet.CWR == 255


def test_every_prefix_never_raises_and_is_consistent(parse):
    for pkt, lt in [
        (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q() / IP(options=[IPOption_RR()])
         / TCP(options=[("MSS", 1460)]) / b"x", ETHERNET),
        (CookedLinuxV2(proto=0x86DD) / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP(), LINUX_SLL2),
    ]:
        data = bytes(pkt)
        full = parse(data, lt)
        assert full.ok
        headers_end = full.l4 + (len(pkt[TCP]) - len(pkt[TCP].payload) if TCP in pkt else 8)
        for cut in range(len(data)):
            p = parse(data[:cut], lt)
            assert p.ok == (cut >= headers_end), (cut, p)


def test_parsed_tuple_order():
    p = packet.parse(bytes(tcp4()))
    assert p.astuple() == tuple(getattr(p, f) for f in packet.FIELDS)
    assert packet.FIELDS == ("ok", "error", "not_ip", "l3", "ip_len", "version", "src", "dst", "proto",
                             "l4", "sport", "dport", "tcp_flags", "fragment")
    assert Parsed.from_tuple(p.astuple()) == p
    assert p.src_ip == SRC4 and p.dst_ip == DST4
    assert not hasattr(p, "__dict__")  # slots


def test_defaults_on_failure(parse):
    p = parse(b"", ETHERNET)
    assert p == Parsed(ok=False, error="truncated link header")


def test_address_helpers():
    assert packet.ip_to_int("10.0.0.1") == 0x0A000001
    assert packet.ip_to_int("::1") == 1
    assert packet.ip_to_int(5) == 5
    assert packet.int_to_ip(0x0A000001) == "10.0.0.1"
    assert packet.int_to_ip(1, 6) == "::1"
    assert packet.int_to_ip(1 << 100) == "0:10::"
    for a in ("0.0.0.0", "255.255.255.255", "2001:db8::1", "fe80::1:2"):
        assert packet.int_to_ip(packet.ip_to_int(a), 6 if ":" in a else 4) == a
    with pytest.raises(ValueError):
        packet.ip_to_int("300.1.1.1")


def test_accepts_bytearray_and_memoryview(parse):
    data = bytes(tcp4())
    want = parse(data)
    assert parse(bytearray(data)) == want
    assert parse(memoryview(data)) == want
