# csum.pxi: RFC 1071 checksums, RFC 1624 incremental updates and the in-place address/port
# rewrite (ext/hp_csum.h), plus Python-visible wrappers for tests. The pure-Python twin is
# hyperplane/checksum.py; the wrappers take and return the same values.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "hp_csum.h" nogil:
    uint16_t hp_ones_sum(const uint8_t *p, size_t n, uint64_t start)
    uint16_t hp_checksum(const uint8_t *p, size_t n, uint64_t start)
    uint16_t hp_csum_update16(uint16_t hc, uint16_t old_, uint16_t new_)
    uint16_t hp_csum_update32(uint16_t hc, uint32_t old_, uint32_t new_)
    uint16_t hp_csum_update128(uint16_t hc, uint64_t old_hi, uint64_t old_lo, uint64_t new_hi, uint64_t new_lo)
    int hp_rewrite(uint8_t *buf, size_t n, int64_t l3, int64_t l4, int version, int proto,
                   int dst, uint64_t addr_hi, uint64_t addr_lo, int32_t port)
    int HP_RW_OK, HP_RW_NOT_IP, HP_RW_RANGE, HP_RW_SHORT

cdef uint64_t _MASK64 = 0xFFFFFFFFFFFFFFFF


def ones_sum(data, start=0):
    """One's complement sum of ``data`` (plus ``start``), folded, not complemented."""
    cdef const uint8_t[::1] buf = data
    cdef size_t n = buf.shape[0]
    cdef uint64_t s = start
    cdef uint16_t r
    with nogil:
        r = hp_ones_sum(&buf[0] if n else NULL, n, s)
    return r


def checksum(data, start=0):
    """RFC 1071 internet checksum of ``data`` (bytes-like), plus a partial sum ``start``."""
    return ~ones_sum(data, start) & 0xFFFF


def update16(hc, old, new):
    """RFC 1624 eqn. 3 for one 16-bit word."""
    return hp_csum_update16(hc, old, new)


def update32(hc, old, new):
    """RFC 1624 for a 32-bit field."""
    return hp_csum_update32(hc, old, new)


def update128(hc, old, new):
    """RFC 1624 for a 128-bit field (IPv6 address), given as Python ints."""
    return hp_csum_update128(hc, (old >> 64) & _MASK64, old & _MASK64, (new >> 64) & _MASK64, new & _MASK64)


cdef _rewrite(buf, parsed, addr, port, int dst, offset):
    # parsed: a _core.parse tuple (ok, error, not_ip, l3, ip_len, version, src, dst, proto, l4, ...)
    # or anything with astuple() giving it (hyperplane.packet.Parsed).
    if not isinstance(parsed, tuple):
        parsed = parsed.astuple()
    if not parsed[0] or parsed[5] not in (4, 6):
        raise ValueError(f"cannot rewrite a packet that did not parse: {parsed[1] or 'not ip'}")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if addr < 0 or (addr >> (32 if parsed[5] == 4 else 128)) != 0:
        raise ValueError(f"IPv{parsed[5]} address out of range")
    if port is not None and not 0 <= port <= 0xFFFF:
        raise ValueError("port out of range")
    cdef uint8_t[::1] view = buf
    cdef size_t n = view.shape[0]
    cdef int64_t l3 = offset
    cdef int64_t l4 = -1 if parsed[9] < 0 else offset + (parsed[9] - parsed[3])
    cdef int rc
    if n == 0:
        raise ValueError("IP header outside the buffer")
    rc = hp_rewrite(&view[0], n, l3, l4, parsed[5], parsed[8], dst,
                    (addr >> 64) & _MASK64, addr & _MASK64, -1 if port is None else port)
    if rc == HP_RW_SHORT:
        raise ValueError("IP header outside the buffer")
    if rc != HP_RW_OK:
        raise ValueError(f"rewrite failed ({rc})")


def rewrite_src(buf, parsed, new_src, new_sport=None, offset=0):
    """In place: set the source address (and port unless ``new_sport`` is None) of the IP packet
    whose header is at ``buf[offset]`` (a writable buffer, e.g. bytearray), fixing the IPv4 header
    and TCP/UDP/ICMPv6 checksums incrementally. Same contract as
    ``hyperplane.checksum.rewrite_src``; ``parsed`` is a ``parse`` tuple or a ``Parsed``."""
    _rewrite(buf, parsed, new_src, new_sport, 0, offset)


def rewrite_dst(buf, parsed, new_dst, new_dport=None, offset=0):
    """Like ``rewrite_src`` for the destination address and port."""
    _rewrite(buf, parsed, new_dst, new_dport, 1, offset)


# --- the C twin of hyperplane.reference.dataplane.Rewrite (the core's slow path uses it) ----------
# Same tuples, same bytes (tests/unit/test_core_rewrite.py): ``(version, addr_at, addr bytes,
# port_off, port bytes, ip_sum, l4_sum, l4_sum_noport)``.

def rewrite_make(int version, bint dst, old_addr, new_addr, int old_port, int new_port):
    """``Rewrite.make`` for IPv4 in C (IPv6: the Python one)."""
    if version != 4:
        return _py_rewrite_make(version, dst, old_addr, new_addr, old_port, new_port)
    cdef uint32_t old_a = old_addr, new_a = new_addr
    cdef uint64_t addr_sum = 0xFFFF * 2 - ((old_a >> 16) + (old_a & 0xFFFF)) + ((new_a >> 16) + (new_a & 0xFFFF))
    cdef uint8_t a[4]
    cdef uint8_t pb[2]
    a[0] = new_a >> 24
    a[1] = (new_a >> 16) & 0xFF
    a[2] = (new_a >> 8) & 0xFF
    a[3] = new_a & 0xFF
    pb[0] = (new_port >> 8) & 0xFF
    pb[1] = new_port & 0xFF
    if not 0 <= new_port <= 0xFFFF:
        raise OverflowError("port out of range")
    return (4, 16 if dst else 12, PyBytes_FromStringAndSize(<char *>a, 4), 2 if dst else 0,
            PyBytes_FromStringAndSize(<char *>pb, 2), addr_sum, addr_sum + ((~old_port) & 0xFFFF) + new_port,
            addr_sum)


def rewrite_apply(tuple rewrite, bytes ip, p):
    """``Rewrite.apply`` in C: the rewritten copy of the IP packet ``ip`` (``p``: its Parsed), by
    the in-place rewrite of ``rewrite_src`` / ``rewrite_dst`` (``hp_rewrite``: the same bytes as
    ``Rewrite.apply`` for a packet of the connection, by test). IPv6, other protocols and
    address fields outside ``ip``: the Python one."""
    cdef bytes addr = rewrite[2], port = rewrite[4]
    cdef int proto = p.proto
    cdef int64_t l4 = p.l4
    if rewrite[0] != 4 or (proto != 6 and proto != 17) or len(addr) != 4 or len(port) != 2:
        return _py_rewrite_apply(rewrite, ip, p)
    cdef const uint8_t *a = <const uint8_t *>PyBytes_AS_STRING(addr)
    cdef const uint8_t *pp = <const uint8_t *>PyBytes_AS_STRING(port)
    cdef Py_ssize_t n = len(ip)
    out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(ip), n)
    if l4 >= 0:
        l4 -= p.l3
    if hp_rewrite(<uint8_t *>PyBytes_AS_STRING(out), n, 0, l4, 4, proto, rewrite[1] == 16,
                  0, (<uint64_t>a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3], (pp[0] << 8) | pp[1]) != HP_RW_OK:
        return _py_rewrite_apply(rewrite, ip, p)
    return out


def _py_rewrite_make(*args):
    from hyperplane.reference.dataplane import Rewrite
    return Rewrite.make(*args)


def _py_rewrite_apply(*args):
    from hyperplane.reference.dataplane import Rewrite
    return Rewrite.apply(*args)
