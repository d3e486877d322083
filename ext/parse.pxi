# parse.pxi: the packet parser (ext/hp_parse.h) over the C struct hp_pkt, callable without the
# GIL by the compiled dataplane (hp_parse(data, caplen, linktype, &pkt)), plus Python wrappers:
#
#   parse(data, linktype=101) -> tuple, in the field order PARSED_FIELDS:
#       (ok, error, not_ip, l3, ip_len, version, src, dst, proto, l4, sport, dport, tcp_flags,
#        fragment)
#     the same values as hyperplane.packet.parse(data, linktype).astuple(); src/dst are ints.
#   parse_batch(buffer, offsets, lengths, linktypes) -> numpy structured array of PARSED_DTYPE,
#     one row per packet, laid out exactly as hp_pkt (the C parser writes into it directly).
#     Fields: src_hi, src_lo, dst_hi, dst_lo (uint64; the address is hi << 64 | lo), l3, ip_len,
#     l4 (int32), sport, dport (uint16), ok (bool), error (uint8 code, ERRORS[code] is its
#     string), not_ip (bool), version, proto, tcp_flags (uint8), fragment (bool).
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t, uint64_t

import numpy as _np

cdef extern from "hp_parse.h" nogil:
    ctypedef struct hp_pkt:
        uint64_t src_hi
        uint64_t src_lo
        uint64_t dst_hi
        uint64_t dst_lo
        int32_t l3
        int32_t ip_len
        int32_t l4
        uint16_t sport
        uint16_t dport
        uint8_t ok
        uint8_t error
        uint8_t not_ip
        uint8_t version
        uint8_t proto
        uint8_t tcp_flags
        uint8_t fragment
    int hp_parse(const uint8_t *d, size_t caplen, int linktype, hp_pkt *p)
    const char *hp_error_str(int code)
    int HP_E_COUNT
    int HP_MAX_VLAN_TAGS
    int HP_MAX_IPV6_EXT_HEADERS

#: Error strings by code (= hyperplane.packet.ERRORS).
ERRORS = tuple(hp_error_str(i).decode("ascii") for i in range(HP_E_COUNT))
MAX_VLAN_TAGS = HP_MAX_VLAN_TAGS
MAX_IPV6_EXT_HEADERS = HP_MAX_IPV6_EXT_HEADERS
#: Field names of parse()'s tuple (= hyperplane.packet.FIELDS).
PARSED_FIELDS = ("ok", "error", "not_ip", "l3", "ip_len", "version", "src", "dst", "proto", "l4",
                 "sport", "dport", "tcp_flags", "fragment")


cdef object _parsed_dtype():
    cdef hp_pkt p
    cdef char *base = <char *>&p
    spec = [
        ("src_hi", "u8", <char *>&p.src_hi - base), ("src_lo", "u8", <char *>&p.src_lo - base),
        ("dst_hi", "u8", <char *>&p.dst_hi - base), ("dst_lo", "u8", <char *>&p.dst_lo - base),
        ("l3", "i4", <char *>&p.l3 - base), ("ip_len", "i4", <char *>&p.ip_len - base),
        ("l4", "i4", <char *>&p.l4 - base),
        ("sport", "u2", <char *>&p.sport - base), ("dport", "u2", <char *>&p.dport - base),
        ("ok", "?", <char *>&p.ok - base), ("error", "u1", <char *>&p.error - base),
        ("not_ip", "?", <char *>&p.not_ip - base), ("version", "u1", <char *>&p.version - base),
        ("proto", "u1", <char *>&p.proto - base), ("tcp_flags", "u1", <char *>&p.tcp_flags - base),
        ("fragment", "?", <char *>&p.fragment - base),
    ]
    return _np.dtype({"names": [s[0] for s in spec], "formats": [_np.dtype(s[1]).newbyteorder("=") for s in spec],
                      "offsets": [s[2] for s in spec], "itemsize": sizeof(hp_pkt)})


#: numpy dtype of parse_batch()'s rows: the memory layout of the C struct hp_pkt.
PARSED_DTYPE = _parsed_dtype()


cdef tuple _pkt_tuple(const hp_pkt *p):
    return (
        p.ok != 0, ERRORS[p.error], p.not_ip != 0, p.l3, p.ip_len, p.version,
        (<object>p.src_hi << 64) | p.src_lo, (<object>p.dst_hi << 64) | p.dst_lo,
        p.proto, p.l4, p.sport, p.dport, p.tcp_flags, p.fragment != 0,
    )


def parse(data, int linktype=101):
    """Parse one frame (any contiguous bytes-like object) with the C parser; returns the tuple
    described at the top of parse.pxi (never raises for any bytes)."""
    cdef const uint8_t[::1] buf = data
    cdef size_t n = buf.shape[0]
    cdef hp_pkt p
    with nogil:
        hp_parse(&buf[0] if n else NULL, n, linktype, &p)
    return _pkt_tuple(&p)


def parse_batch(buffer, offsets, lengths, linktypes=101):
    """Parse many frames held in one buffer: frame i is ``buffer[offsets[i] : offsets[i] +
    lengths[i]]`` of link type ``linktypes[i]`` (or one int for all). Returns a structured array
    of :data:`PARSED_DTYPE`. Raises ValueError when a frame lies outside the buffer."""
    cdef const uint8_t[::1] buf = buffer
    cdef const int64_t[::1] offs = _np.ascontiguousarray(offsets, dtype=_np.int64)
    cdef const int64_t[::1] lens = _np.ascontiguousarray(lengths, dtype=_np.int64)
    cdef Py_ssize_t count = offs.shape[0], i
    cdef int64_t size = buf.shape[0], off, length
    cdef const int32_t[::1] lts
    cdef int single_lt = 0, use_single = 0
    cdef Py_ssize_t bad = -1
    if lens.shape[0] != count:
        raise ValueError("offsets and lengths differ in length")
    if _np.ndim(linktypes) == 0:
        single_lt = int(linktypes)
        use_single = 1
        lts = _np.zeros(1, dtype=_np.int32)
    else:
        lts = _np.ascontiguousarray(linktypes, dtype=_np.int32)
        if lts.shape[0] != count:
            raise ValueError("linktypes and offsets differ in length")
    out = _np.zeros(count, dtype=PARSED_DTYPE)
    cdef uint8_t[::1] raw = out.view(_np.uint8)
    cdef hp_pkt *rows = <hp_pkt *>&raw[0] if count else NULL
    cdef const uint8_t *base = &buf[0] if size else NULL
    with nogil:
        for i in range(count):
            off = offs[i]
            length = lens[i]
            if off < 0 or length < 0 or off > size or length > size - off:
                bad = i
                break
            hp_parse(base + off if length else NULL, <size_t>length,
                     single_lt if use_single else lts[i], &rows[i])
    if bad >= 0:
        raise ValueError(f"frame {bad} (offset {offsets[bad]}, length {lengths[bad]}) lies outside the buffer")
    return out
