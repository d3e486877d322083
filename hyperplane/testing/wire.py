"""Build IP packets as bytes (IPv4/IPv6 with TCP or UDP, checksums correct) without scapy.

The strategies build thousands of packets per test run; doing it with :mod:`struct` keeps them
fast and keeps the test tools independent of the dataplane's own packet code (a test oracle must
not share the code it checks). :func:`to_scapy` turns the bytes into a scapy packet on request.

    >>> pkt = ip_packet("169.254.76.10", "10.0.3.10", TCP, 40000, 5432, flags=SYN, seq=1)
    >>> len(pkt)
    40
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Union

__all__ = [
    "TCP", "UDP", "FIN", "SYN", "RST", "PSH", "ACK", "ip_packet", "tcp_packet", "udp_packet",
    "to_scapy", "five_tuple",
]

TCP = 6
UDP = 17
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

Address = Union[str, int, ipaddress.IPv4Address, ipaddress.IPv6Address]


def _addr(value: Address) -> ipaddress._BaseAddress:
    if isinstance(value, int):
        return ipaddress.IPv4Address(value) if value < 2**32 else ipaddress.IPv6Address(value)
    return ipaddress.ip_address(value)


def _csum(data: bytes, start: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_packet(src: Address, dst: Address, proto: int, sport: int = 0, dport: int = 0, flags: int = 0,
              seq: int = 0, ack: int = 0, payload: bytes = b"", ttl: int = 64, ident: int = 0,
              window: int = 65535, fragment_offset: int = 0, more_fragments: bool = False) -> bytes:
    """One IPv4 or IPv6 packet (the family follows ``src``) carrying TCP (``proto=6``), UDP
    (``17``) or, for any other number, ``payload`` as it is. Checksums are correct. IPv4 only:
    ``fragment_offset`` (in 8-byte units) and ``more_fragments`` make a fragment."""
    s, d = _addr(src), _addr(dst)
    if s.version != d.version:
        raise ValueError(f"{s} and {d} are not of the same IP version")
    sb, db = s.packed, d.packed
    if proto == TCP:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                                   flags & 0xFF, window, 0, 0) + payload)
        at = 16
    elif proto == UDP:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
        at = 6
    else:
        l4, at = bytearray(payload), None
    if at is not None:
        if s.version == 4:
            pseudo = sb + db + struct.pack("!BBH", 0, proto, len(l4))
        else:
            pseudo = sb + db + struct.pack("!IxxxB", len(l4), proto)
        c = _csum(bytes(l4), _csum(pseudo) ^ 0xFFFF)
        if proto == UDP and c == 0:
            c = 0xFFFF
        l4[at:at + 2] = struct.pack("!H", c)
    if s.version == 4:
        frag = (0x2000 if more_fragments else 0) | (fragment_offset & 0x1FFF)
        if not frag and not more_fragments:
            frag = 0x4000  # DF, as Linux sends
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, frag, ttl,
                                       proto, 0, sb, db))
        header[10:12] = struct.pack("!H", _csum(bytes(header)))
    else:
        header = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, ttl, sb, db))
    return bytes(header) + bytes(l4)


def tcp_packet(src: Address, sport: int, dst: Address, dport: int, flags: int, seq: int = 0, ack: int = 0,
               payload: bytes = b"") -> bytes:
    """``tcp_packet("169.254.76.10", 40000, "10.0.3.10", 5432, SYN, seq=1)``."""
    return ip_packet(src, dst, TCP, sport, dport, flags, seq, ack, payload)


def udp_packet(src: Address, sport: int, dst: Address, dport: int, payload: bytes = b"") -> bytes:
    """``udp_packet("169.254.76.10", 40000, "10.0.0.2", 53, b"query")``."""
    return ip_packet(src, dst, UDP, sport, dport, payload=payload)


def five_tuple(packet: bytes) -> tuple[int, str, int, str, int]:
    """``(proto, src, sport, dst, dport)`` of a packet built here (or any unfragmented IP
    packet with a 20-byte IPv4 or 40-byte IPv6 header); ports are 0 for other protocols."""
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto, src, dst, l4 = packet[9], packet[12:16], packet[16:20], ihl
    else:
        proto, src, dst, l4 = packet[6], packet[8:24], packet[24:40], 40
    sport = dport = 0
    if proto in (TCP, UDP) and len(packet) >= l4 + 4:
        sport, dport = struct.unpack("!HH", packet[l4:l4 + 4])
    return proto, str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport


def to_scapy(packet: bytes):
    """The packet as a scapy ``IP`` / ``IPv6`` object (scapy is imported only here)."""
    if packet[0] >> 4 == 6:
        from scapy.layers.inet6 import IPv6

        return IPv6(packet)
    from scapy.layers.inet import IP

    return IP(packet)
