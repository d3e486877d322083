"""Internet checksums (RFC 1071) and their incremental update (RFC 1624), in pure Python.

The C versions are in ``ext/hp_csum.h`` (``hyperplane._core.checksum``, ``rewrite_src``,
``rewrite_dst``); the tests check that both give the same bytes.

Incremental update, RFC 1624 eqn. 3: ``HC' = ~(~HC + ~m + m')`` in one's complement arithmetic,
for every 16-bit word ``m`` of the changed field (an IPv4 address is 2 words, an IPv6 address 8).

Address/port rewrites (:func:`rewrite_src`, :func:`rewrite_dst`) change the packet in place and fix
  * the IPv4 header checksum (IPv4 only),
  * the TCP checksum, the UDP checksum (a UDP checksum of 0 over IPv4 means "none" and stays 0; a
    UDP result of 0 is written as 0xFFFF) and the ICMPv6 checksum (its pseudo-header holds the
    addresses; the ICMPv4 checksum does not), when that checksum field is in the captured bytes.
An IPv6 destination change leaves the L4 checksum's address part alone when a routing header with
segments left is present: the pseudo-header then holds the final destination (RFC 8200 8.1).
A non-first fragment (``l4 == -1``) gets its address changed and its IP header checksum fixed only:
its L4 checksum is in the first fragment. Ports are changed only for TCP/UDP with an L4 header.
"""
from __future__ import annotations

import sys

from hyperplane import packet as _packet

_LITTLE = sys.byteorder == "little"

__all__ = [
    "ones_sum", "checksum", "update16", "update32", "update128", "rewrite_src", "rewrite_dst",
    "verify",
]


def ones_sum(data, start: int = 0) -> int:
    """The 16-bit one's complement sum of ``data`` (big-endian words; an odd last byte is padded
    with a zero byte), added to the partial sum ``start``; folded to 16 bits, not complemented."""
    b = bytes(data)
    if len(b) & 1:
        b += b"\x00"
    s = 0
    if b:
        # The one's complement sum is byte-order independent (RFC 1071 1.2.B): sum native-order
        # words, fold, and swap the result on a little-endian machine.
        s = _fold(sum(memoryview(b).cast("H")))
        if _LITTLE:
            s = ((s & 0xFF) << 8) | (s >> 8)
    return _fold(s + start)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data, start: int = 0) -> int:
    """RFC 1071 internet checksum of ``data`` (plus a partial sum ``start``, e.g. a
    pseudo-header): the one's complement of the one's complement sum."""
    return ~ones_sum(data, start) & 0xFFFF


def update16(hc: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one 16-bit word changing from ``old`` to ``new``."""
    s = (~hc & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    return ~_fold(s) & 0xFFFF


def update32(hc: int, old: int, new: int) -> int:
    """RFC 1624 for a 32-bit field (e.g. an IPv4 address) changing from ``old`` to ``new``."""
    s = (~hc & 0xFFFF) + (~old >> 16 & 0xFFFF) + (~old & 0xFFFF) + (new >> 16 & 0xFFFF) + (new & 0xFFFF)
    return ~_fold(s) & 0xFFFF


def update128(hc: int, old: int, new: int) -> int:
    """RFC 1624 for a 128-bit field (an IPv6 address) changing from ``old`` to ``new``."""
    s = ~hc & 0xFFFF
    for shift in range(0, 128, 16):
        s += (~(old >> shift) & 0xFFFF) + ((new >> shift) & 0xFFFF)
    return ~_fold(s) & 0xFFFF


def _get16(buf, at: int) -> int:
    return (buf[at] << 8) | buf[at + 1]


def _put16(buf, at: int, value: int) -> None:
    buf[at] = value >> 8
    buf[at + 1] = value & 0xFF


def _ipv6_routed(buf, l3: int, l4: int) -> bool:
    """A routing header with segments left between the IPv6 header at ``l3`` and the L4 header at
    ``l4``: the upper-layer checksum then uses the final destination from it (RFC 8200 8.1),
    not the header's destination address."""
    n = len(buf)
    if l3 + 40 > n or l4 > n:
        return False
    nh = buf[l3 + 6]
    off = l3 + 40
    count = 0
    while off + 8 <= l4 and count < 16 and nh in (0, 43, 44, 60, 51):
        count += 1
        if nh == 43 and buf[off + 3] != 0:
            return True
        if nh == 44:
            hlen = 8
        elif nh == 51:
            hlen = (buf[off + 1] + 2) * 4
        else:
            hlen = (buf[off + 1] + 1) * 8
        nh = buf[off]
        off += hlen
    return False


def _as_parsed(parsed) -> _packet.Parsed:
    if isinstance(parsed, _packet.Parsed):
        return parsed
    return _packet.Parsed.from_tuple(parsed)


def _rewrite(buf: bytearray, parsed, new_addr: int, new_port, dst: bool, offset: int) -> None:
    p = _as_parsed(parsed)
    if not p.ok or p.version not in (4, 6):
        raise ValueError(f"cannot rewrite a packet that did not parse: {p.error or 'not ip'}")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if not 0 <= new_addr < 1 << (32 if p.version == 4 else 128):
        raise ValueError(f"IPv{p.version} address out of range")
    if new_port is not None and not 0 <= new_port <= 0xFFFF:
        raise ValueError("port out of range")
    n = len(buf)
    l3 = offset
    l4 = -1 if p.l4 < 0 else min(offset + (p.l4 - p.l3), n)
    width = 4 if p.version == 4 else 16
    at = l3 + (16 if dst else 12) if p.version == 4 else l3 + (24 if dst else 8)
    if l3 >= n or at + width > n:
        raise ValueError("IP header outside the buffer")
    # nothing is written before this point
    old_addr = int.from_bytes(buf[at : at + width], "big")
    buf[at : at + width] = new_addr.to_bytes(width, "big")
    if p.version == 4:
        _put16(buf, l3 + 10, update32(_get16(buf, l3 + 10), old_addr, new_addr))
        addr_update = update32
    else:
        addr_update = update128
    if l4 < 0:
        return
    proto = p.proto
    if proto == _packet.TCP or proto == _packet.UDP:
        csum_at = l4 + (16 if proto == _packet.TCP else 6)
        port_at = l4 + (2 if dst else 0)
        has_port = new_port is not None and port_at + 2 <= n
        old_port = 0
        if has_port:
            old_port = _get16(buf, port_at)
            _put16(buf, port_at, new_port)
        if csum_at + 2 > n:
            return
        hc = _get16(buf, csum_at)
        if proto == _packet.UDP and hc == 0 and p.version == 4:
            return  # UDP over IPv4 without a checksum
        if not (dst and p.version == 6 and _ipv6_routed(buf, l3, l4)):
            hc = addr_update(hc, old_addr, new_addr)
        if has_port:
            hc = update16(hc, old_port, new_port)
        if proto == _packet.UDP and hc == 0:
            hc = 0xFFFF
        _put16(buf, csum_at, hc)
    elif proto == _packet.ICMPV6 and p.version == 6 and l4 + 4 <= n and not (dst and _ipv6_routed(buf, l3, l4)):
        _put16(buf, l4 + 2, addr_update(_get16(buf, l4 + 2), old_addr, new_addr))


def rewrite_src(ip_packet: bytearray, parsed, new_src_int: int, new_sport: int | None = None,
                offset: int = 0) -> None:
    """Set the source address (and the source port unless ``new_sport`` is None) of the packet in
    ``ip_packet`` in place, fixing the checksums incrementally.

    ``parsed`` is the :class:`~hyperplane.packet.Parsed` (or ``_core.parse`` tuple) of the packet;
    its offsets are taken relative to its ``l3``, and ``offset`` says where that IP header starts
    in ``ip_packet`` (0 for the IP packet itself, ``parsed.l3`` for the whole frame).
    Raises ValueError for a packet that did not parse or a value out of range."""
    _rewrite(ip_packet, parsed, new_src_int, new_sport, False, offset)


def rewrite_dst(ip_packet: bytearray, parsed, new_dst_int: int, new_dport: int | None = None,
                offset: int = 0) -> None:
    """Like :func:`rewrite_src` for the destination address and port."""
    _rewrite(ip_packet, parsed, new_dst_int, new_dport, True, offset)


# --- verification (for tests) -----------------------------------------------------------------


def _final_destination(data: bytes, p: _packet.Parsed) -> int:
    """The IPv6 destination the upper-layer checksum uses: the last address of a routing header
    with segments left (RFC 8200 8.1), else the header's destination."""
    nh = data[6]
    off = 40
    end = p.ip_len
    dst = p.dst
    while nh in (0, 43, 60, 51) and off + 2 <= end:
        hlen = (data[off + 1] + 2) * 4 if nh == 51 else (data[off + 1] + 1) * 8
        if nh == 43 and off + 8 <= end and data[off + 3] > 0:  # segments left
            rtype = data[off + 2]
            if rtype == 4 and off + 24 <= end:  # SRH: segment list[0] is the final one
                dst = int.from_bytes(data[off + 8 : off + 24], "big")
            elif rtype in (0, 2) and off + hlen <= end and hlen >= 24:
                dst = int.from_bytes(data[off + hlen - 16 : off + hlen], "big")
        nh = data[off]
        off += hlen
    return dst


def verify(ip_packet) -> bool:
    """True when the raw IP packet's IPv4 header checksum and its TCP/UDP/ICMP/ICMPv6 checksum
    are valid. False for a packet that does not parse, is cut short of its header's length, or is
    a fragment (its L4 checksum cannot be checked alone)."""
    data = bytes(ip_packet)
    p = _packet.parse(data, _packet.RAW)
    if not p.ok:
        return False
    if p.version == 4:
        ihl = (data[0] & 0x0F) * 4
        if ones_sum(data[:ihl]) != 0xFFFF:
            return False
        if _get16(data, 2) != p.ip_len:
            return False
    elif 40 + _get16(data, 4) != p.ip_len:
        return False
    if p.fragment or p.l4 < 0:
        return False
    seg = data[p.l4 : p.ip_len]
    proto = p.proto
    if proto == _packet.ICMP and p.version == 4:
        return ones_sum(seg) == 0xFFFF
    if proto not in (_packet.TCP, _packet.UDP, _packet.ICMPV6):
        return True
    if proto == _packet.UDP and p.version == 4 and _get16(seg, 6) == 0:
        return True
    if proto == _packet.UDP:
        seg = seg[: _get16(seg, 4)]
    length = len(seg)
    if p.version == 4:
        pseudo = data[12:20] + bytes((0, proto)) + length.to_bytes(2, "big")
    else:
        dst = _final_destination(data, p)
        pseudo = data[8:24] + dst.to_bytes(16, "big") + length.to_bytes(4, "big") + bytes((0, 0, 0, proto))
    return ones_sum(seg, ones_sum(pseudo)) == 0xFFFF
