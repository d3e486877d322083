"""The pure-Python packet parser: link layers, IPv4/IPv6 (+ extension headers), TCP/UDP.

This is the executable specification of the C parser in ``ext/hp_parse.h`` (exposed as
``hyperplane._core.parse`` / ``parse_batch``); both return the same fields for every input, which
``tests/property/test_parser_fuzz.py`` checks differentially. :func:`parse` never raises and never
reads past ``len(data)``: on bad input it returns ``Parsed(ok=False, error="...")``.

Link types (pcap ``LINKTYPE_*``):

* ``NULL=0`` (4-byte address family in the capturing host's byte order) and ``LOOP=108`` (the
  same in network order): AF_INET = 2; AF_INET6 = 24, 28, 30 (BSDs, Darwin) or 10 (Linux, as
  scapy's ``Loopback`` writes it);
* ``ETHERNET=1``, with 802.1Q / 802.1ad / QinQ tags (0x8100, 0x88a8, 0x9100; at most
  :data:`MAX_VLAN_TAGS`);
* ``RAW=101`` (IPv4 or IPv6 by the version nibble; also ``RAW_BSD=12`` and ``RAW_OPENBSD=14``, the
  ``DLT_RAW`` values some files carry), ``IPV4=228``, ``IPV6=229``;
* ``LINUX_SLL=113`` (16-byte header, protocol at 14), ``LINUX_SLL2=276`` (20-byte header, protocol
  at 0); the protocol is an EtherType and may itself be a VLAN tag.

Rules (the C parser follows them line by line):

* IPv4: IHL >= 5 and the header (with options) within the captured bytes; total length >= IHL
  (else ``"bad ipv4 total length"``); ``ip_len`` = total length clipped to the captured bytes.
  A fragment has MF set or a non-zero offset; a non-first fragment has ``l4 = -1``.
* IPv6: extension headers hop-by-hop (0), routing (43), fragment (44), destination options (60)
  and AH (51) are walked (at most :data:`MAX_IPV6_EXT_HEADERS`) to the upper-layer protocol, within
  ``ip_len`` = 40 + payload length clipped to the captured bytes. A fragment header makes
  ``fragment=True`` (also an "atomic" one); with a non-zero offset the walk stops there and
  ``l4 = -1``, ``proto`` = the fragment header's next header.
* TCP/UDP are read within ``ip_len`` (Ethernet padding is never taken for L4 bytes). TCP needs 20
  bytes, data offset >= 5 and the options within the packet; UDP needs 8 bytes and a length field
  between 8 and the IP payload length the IP header declares. A *first fragment with more to come*
  is read leniently: ports when 4 bytes are there, flags when 14 are, no length checks (the rest of
  the header may be in the next fragment).
* Other protocols (ICMP, ...) are ``ok`` with ``l4`` set and ports 0.
* On an error the fields found before it keep their values; the others keep their defaults
  (``l3 = l4 = -1``, everything else 0/False).
"""
from __future__ import annotations

import ipaddress
from dataclasses import astuple as _astuple
from dataclasses import dataclass, fields

__all__ = [
    "NULL", "ETHERNET", "RAW", "RAW_BSD", "RAW_OPENBSD", "LOOP", "LINUX_SLL", "IPV4", "IPV6",
    "LINUX_SLL2", "LINKTYPES", "ERRORS", "FIELDS", "MAX_VLAN_TAGS", "MAX_IPV6_EXT_HEADERS",
    "Parsed", "parse", "ip_to_int", "int_to_ip", "from_scapy", "to_scapy",
    "TCP", "UDP", "ICMP", "ICMPV6",
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
]

# --- link types (pcap LINKTYPE_* values) ------------------------------------------------------
NULL = 0
ETHERNET = 1
RAW_BSD = 12  # DLT_RAW on most BSDs and Linux, as written in some pcap files: raw IP
RAW_OPENBSD = 14  # DLT_RAW on OpenBSD: raw IP
RAW = 101
LOOP = 108
LINUX_SLL = 113
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

#: Every link type the parser understands.
LINKTYPES = (NULL, ETHERNET, RAW_BSD, RAW_OPENBSD, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2)

# --- protocol numbers and TCP flags -----------------------------------------------------------
ICMP = 1
TCP = 6
UDP = 17
ICMPV6 = 58
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

# --- bounds ----------------------------------------------------------------------------------
MAX_VLAN_TAGS = 8  # stacked 802.1Q/802.1ad tags walked before giving up
MAX_IPV6_EXT_HEADERS = 10  # IPv6 extension headers walked before giving up

#: Error strings; the index is the C parser's error code (``hp_pkt.error``). ``""`` = no error.
ERRORS = (
    "",
    "truncated link header",
    "not ip",
    "unsupported linktype",
    "too many vlan tags",
    "truncated ip header",
    "bad ip version",
    "truncated ipv4 header",
    "bad ihl",
    "truncated ipv4 options",
    "bad ipv4 total length",
    "truncated ipv6 header",
    "truncated ipv6 extension header",
    "too many ipv6 extension headers",
    "truncated tcp header",
    "bad tcp data offset",
    "truncated tcp options",
    "truncated udp header",
    "bad udp length",
)
(
    _E_OK, _E_LINK, _E_NOT_IP, _E_LINKTYPE, _E_VLAN, _E_IP, _E_VERSION, _E_IPV4, _E_IHL,
    _E_IPV4_OPTS, _E_TOTLEN, _E_IPV6, _E_IPV6_EXT, _E_IPV6_EXT_COUNT, _E_TCP, _E_TCP_DOFF,
    _E_TCP_OPTS, _E_UDP, _E_UDP_LEN,
) = ERRORS

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_AF_INET = 2
_AF_INET6 = (10, 24, 28, 30)  # Linux (as scapy writes it), NetBSD/OpenBSD, FreeBSD, Darwin
_EXT_AH = 51
_EXT_FRAGMENT = 44
_EXT_HEADERS = frozenset((0, 43, 44, 60, 51))


@dataclass(slots=True)
class Parsed:
    """What :func:`parse` found. The field order is the order of ``_core.parse``'s tuple
    (:data:`FIELDS`); ``astuple()`` gives that tuple."""

    ok: bool = False
    error: str = ""
    not_ip: bool = False
    l3: int = -1  # offset of the IP header in data
    ip_len: int = 0  # IP total length, clipped to the captured bytes
    version: int = 0  # 4 or 6
    src: int = 0
    dst: int = 0
    proto: int = 0  # upper-layer protocol (after IPv6 extension headers)
    l4: int = -1  # offset of the L4 header in data, -1 when absent
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    fragment: bool = False

    def astuple(self) -> tuple:
        return _astuple(self)

    @classmethod
    def from_tuple(cls, values) -> "Parsed":
        return cls(*values)

    @property
    def src_ip(self) -> str:
        return int_to_ip(self.src, self.version or None)

    @property
    def dst_ip(self) -> str:
        return int_to_ip(self.dst, self.version or None)


#: Field names in tuple order (the order ``_core.parse`` returns them in).
FIELDS = tuple(f.name for f in fields(Parsed))


def _fail(p: Parsed, error: str) -> Parsed:
    p.ok = False
    p.error = error
    return p


def parse(data, linktype: int = RAW) -> Parsed:
    """Parse one captured frame of the given link type. Never raises (for any ``bytes``,
    ``bytearray`` or byte ``memoryview``) and never reads past ``len(data)``."""
    p = Parsed()
    n = len(data)
    if linktype == ETHERNET:
        if n < 14:
            return _fail(p, _E_LINK)
        return _ethertype(p, data, n, 12)
    if linktype == RAW or linktype == RAW_BSD or linktype == RAW_OPENBSD:
        return _ip(p, data, n, 0, 0)
    if linktype == IPV4:
        return _ip(p, data, n, 0, 4)
    if linktype == IPV6:
        return _ip(p, data, n, 0, 6)
    if linktype == LINUX_SLL:
        if n < 16:
            return _fail(p, _E_LINK)
        return _ethertype(p, data, n, 14)
    if linktype == LINUX_SLL2:
        if n < 20:
            return _fail(p, _E_LINK)
        return _ethertype_at(p, data, n, (data[0] << 8) | data[1], 20)
    if linktype == NULL or linktype == LOOP:
        if n < 4:
            return _fail(p, _E_LINK)
        if linktype == LOOP:
            family = (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]
        else:  # host order of the capturing machine: take the reading with a small value
            family = data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)
            if family & 0xFFFF0000:
                family = (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]
        if family == _AF_INET:
            return _ip(p, data, n, 4, 4)
        if family in _AF_INET6:
            return _ip(p, data, n, 4, 6)
        p.not_ip = True
        return _fail(p, _E_NOT_IP)
    return _fail(p, _E_LINKTYPE)


def _ethertype(p: Parsed, data, n: int, at: int) -> Parsed:
    """The EtherType at ``at`` (2 bytes, known to be captured), payload right after it."""
    return _ethertype_at(p, data, n, (data[at] << 8) | data[at + 1], at + 2)


def _ethertype_at(p: Parsed, data, n: int, ethertype: int, off: int) -> Parsed:
    tags = 0
    while ethertype in _VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            return _fail(p, _E_VLAN)
        if off + 4 > n:
            return _fail(p, _E_LINK)
        ethertype = (data[off + 2] << 8) | data[off + 3]
        off += 4
        tags += 1
    if ethertype == _ETH_IPV4:
        return _ip(p, data, n, off, 4)
    if ethertype == _ETH_IPV6:
        return _ip(p, data, n, off, 6)
    p.not_ip = True
    return _fail(p, _E_NOT_IP)


def _ip(p: Parsed, data, n: int, l3: int, expect: int) -> Parsed:
    """The IP header at ``l3``; ``expect`` is 4 or 6 when the link layer said so, 0 for raw."""
    p.l3 = l3
    avail = n - l3
    if avail < 1:
        return _fail(p, _E_IPV4 if expect == 4 else _E_IPV6 if expect == 6 else _E_IP)
    version = data[l3] >> 4
    if (expect and version != expect) or (version != 4 and version != 6):
        return _fail(p, _E_VERSION)
    p.version = version
    if version == 4:
        return _ipv4(p, data, avail, l3)
    return _ipv6(p, data, avail, l3)


def _ipv4(p: Parsed, data, avail: int, l3: int) -> Parsed:
    if avail < 20:
        return _fail(p, _E_IPV4)
    ihl = (data[l3] & 0x0F) * 4
    if ihl < 20:
        return _fail(p, _E_IHL)
    if ihl > avail:
        return _fail(p, _E_IPV4_OPTS)
    total = (data[l3 + 2] << 8) | data[l3 + 3]
    if total < ihl:
        return _fail(p, _E_TOTLEN)
    p.ip_len = total if total < avail else avail
    p.src = int.from_bytes(data[l3 + 12 : l3 + 16], "big")
    p.dst = int.from_bytes(data[l3 + 16 : l3 + 20], "big")
    p.proto = proto = data[l3 + 9]
    frag = (data[l3 + 6] << 8) | data[l3 + 7]
    more = bool(frag & 0x2000)
    if more or frag & 0x1FFF:
        p.fragment = True
        if frag & 0x1FFF:  # not the first fragment: no L4 header here
            p.ok = True
            return p
    return _l4(p, data, l3 + ihl, l3 + p.ip_len, l3 + total, proto, more)


def _ipv6(p: Parsed, data, avail: int, l3: int) -> Parsed:
    if avail < 40:
        return _fail(p, _E_IPV6)
    total = 40 + ((data[l3 + 4] << 8) | data[l3 + 5])
    p.ip_len = ip_len = total if total < avail else avail
    p.src = int.from_bytes(data[l3 + 8 : l3 + 24], "big")
    p.dst = int.from_bytes(data[l3 + 24 : l3 + 40], "big")
    end = l3 + ip_len
    nh = data[l3 + 6]
    off = l3 + 40
    count = 0
    more = False
    while nh in _EXT_HEADERS:
        if count == MAX_IPV6_EXT_HEADERS:
            return _fail(p, _E_IPV6_EXT_COUNT)
        count += 1
        if nh == _EXT_FRAGMENT:
            if off + 8 > end:
                return _fail(p, _E_IPV6_EXT)
            p.fragment = True
            fo = (data[off + 2] << 8) | data[off + 3]
            nh = data[off]
            off += 8
            if fo & 0xFFF8:  # offset > 0: not the first fragment
                p.proto = nh
                p.ok = True
                return p
            more = bool(fo & 1)
            continue
        if off + 2 > end:
            return _fail(p, _E_IPV6_EXT)
        hlen = (data[off + 1] + 2) * 4 if nh == _EXT_AH else (data[off + 1] + 1) * 8
        if off + hlen > end:
            return _fail(p, _E_IPV6_EXT)
        nh = data[off]
        off += hlen
    p.proto = nh
    return _l4(p, data, off, end, l3 + total, nh, more)


def _l4(p: Parsed, data, l4: int, end: int, wire_end: int, proto: int, lenient: bool) -> Parsed:
    """TCP/UDP header at ``l4``; ``end`` = end of the captured IP packet, ``wire_end`` = end the
    IP header declares; ``lenient`` for a first fragment with more to come."""
    p.l4 = l4
    have = end - l4
    if proto == TCP:
        if lenient:
            if have >= 4:
                p.sport = (data[l4] << 8) | data[l4 + 1]
                p.dport = (data[l4 + 2] << 8) | data[l4 + 3]
            if have >= 14:
                p.tcp_flags = data[l4 + 13]
        else:
            if have < 20:
                return _fail(p, _E_TCP)
            doff = (data[l4 + 12] >> 4) * 4
            if doff < 20:
                return _fail(p, _E_TCP_DOFF)
            if doff > have:
                return _fail(p, _E_TCP_OPTS)
            p.sport = (data[l4] << 8) | data[l4 + 1]
            p.dport = (data[l4 + 2] << 8) | data[l4 + 3]
            p.tcp_flags = data[l4 + 13]
    elif proto == UDP:
        if lenient:
            if have >= 4:
                p.sport = (data[l4] << 8) | data[l4 + 1]
                p.dport = (data[l4 + 2] << 8) | data[l4 + 3]
        else:
            if have < 8:
                return _fail(p, _E_UDP)
            ulen = (data[l4 + 4] << 8) | data[l4 + 5]
            if ulen < 8 or ulen > wire_end - l4:
                return _fail(p, _E_UDP_LEN)
            p.sport = (data[l4] << 8) | data[l4 + 1]
            p.dport = (data[l4 + 2] << 8) | data[l4 + 3]
    p.ok = True
    return p


# --- addresses --------------------------------------------------------------------------------


def ip_to_int(address) -> int:
    """``"10.0.0.1"`` / ``"2001:db8::1"`` / an :mod:`ipaddress` address -> int."""
    if isinstance(address, int):
        return address
    return int(ipaddress.ip_address(address))


def int_to_ip(value: int, version: int | None = None) -> str:
    """int -> address string; ``version`` 4 or 6 (default: 4 when the value fits 32 bits)."""
    if version is None:
        version = 4 if value < 1 << 32 else 6
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


# --- scapy adapters ---------------------------------------------------------------------------


def from_scapy(pkt) -> tuple[bytes, int]:
    """A scapy packet -> ``(bytes, linktype)``: Ether -> ETHERNET, IP/IPv6 -> RAW, CookedLinux ->
    LINUX_SLL, CookedLinuxV2 -> LINUX_SLL2, Loopback -> NULL."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback

    if isinstance(pkt, Ether):
        return bytes(pkt), ETHERNET
    if isinstance(pkt, (IP, IPv6)):
        return bytes(pkt), RAW
    if isinstance(pkt, CookedLinuxV2):  # before CookedLinux: it may derive from it
        return bytes(pkt), LINUX_SLL2
    if isinstance(pkt, CookedLinux):
        return bytes(pkt), LINUX_SLL
    if isinstance(pkt, Loopback):
        return bytes(pkt), NULL
    raise ValueError(f"unsupported scapy packet {pkt.summary()!r}: expected Ether, IP or IPv6 at the top")


def to_scapy(data, linktype: int = RAW):
    """Bytes -> a scapy packet (IP / IPv6 by the version nibble for raw IP)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    data = bytes(data)
    if linktype in (RAW, RAW_BSD, RAW_OPENBSD, IPV4, IPV6):
        version = data[0] >> 4 if data else 0
        if version == 4:
            return IP(data)
        if version == 6:
            return IPv6(data)
        return Raw(data)
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback

    if linktype == ETHERNET:
        return Ether(data)
    if linktype == LINUX_SLL:
        return CookedLinux(data)
    if linktype == LINUX_SLL2:
        return CookedLinuxV2(data)
    if linktype in (NULL, LOOP):
        return Loopback(data)
    raise ValueError(f"unsupported linktype {linktype}")
