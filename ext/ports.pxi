# Source-port pools: PortPool (one per Hyperplane ENI) and NatPortPool (one
# per NAT gateway), the compiled twins of hyperplane/reference/ports.py.
#
# Same API and, for the same calls, the same ports and counters as the
# reference (tests/unit/test_core_ports.py drives both in lockstep).  The data
# structures are C, in hp_ports.h (its header comment explains them).
#
# For a compiled new-connection loop (nogil): a PortPool `pool` exposes its C
# pool as `pool._p`; call
#     hp_ports_allocate_v4(&pool._p, proto, src, sport, dst, dport)
# (hint = src << 16 | sport, as the reference dataplane passes it) or
#     hp_ports_allocate(&pool._p, proto, dport, dst_hi, dst_lo, hint_words, n)
# and hp_ports_release / hp_ports_can_allocate / hp_ports_in_use.  A
# NatPortPool `nat` exposes `nat._n` for hp_nat_allocate / hp_nat_release,
# which return the index of the public address used.  Return values:
# port >= 1, HP_PORTS_FULL (-1), HP_PORTS_ENOMEM (-2); releases 0 or
# HP_PORTS_NOT_HELD.
#
# Differences from the reference, all outside the values a dataplane uses:
# allocate() raises ValueError for proto > 255, dst_port > 65535 or
# dst_ip >= 2**128 (the reference takes any non-negative int); lookups with such
# keys answer "not allocated".  Keys and hints must be ints (TypeError
# otherwise).  A failed allocate (negative hint) leaves no empty destination
# behind, so repr() may count one destination fewer than the reference's.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t
from libc.stdlib cimport malloc, free
import ipaddress as _ports_ipaddress
from operator import index as _ports_index

cdef extern from "hp_ports.h" nogil:
    ctypedef struct hp_pdest:
        pass

    ctypedef struct hp_ports:
        hp_pdest *tab
        uint32_t lo
        uint32_t hi
        uint32_t size
        uint64_t seed
        uint64_t count
        uint64_t cap
        uint64_t ndest
        uint64_t heap_bytes
        uint64_t n_bitmaps

    ctypedef struct hp_nat_ports:
        hp_ports *pools
        uint32_t n
        uint32_t per_destination
        uint64_t error_port_allocation
        uint64_t peak_connections
        uint64_t count

    int HP_PORTS_FULL
    int HP_PORTS_ENOMEM
    int HP_PORTS_NOT_HELD

    uint64_t hp_port_mix64(uint64_t x)
    uint64_t hp_port_hash(uint64_t seed, const uint64_t *hint, int nhint, uint64_t proto,
                          uint64_t dport, uint64_t dst_hi, uint64_t dst_lo)
    uint64_t hp_port_hash_v4(uint64_t seed, uint32_t src, uint16_t sport, uint8_t proto,
                             uint16_t dport, uint32_t dst)
    int hp_port_hint_v6(uint64_t src_hi, uint64_t src_lo, uint16_t sport, uint64_t *out)

    int hp_ports_init(hp_ports *p, uint32_t lo, uint32_t hi, uint64_t seed)
    void hp_ports_free(hp_ports *p)
    uint64_t hp_ports_memory(const hp_ports *p)
    int32_t hp_ports_allocate_hashed(hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                     uint64_t dst_lo, uint64_t hash)
    int32_t hp_ports_allocate(hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                              uint64_t dst_lo, const uint64_t *hint, int nhint)
    int32_t hp_ports_allocate_v4(hp_ports *p, uint8_t proto, uint32_t src, uint16_t sport,
                                 uint32_t dst, uint16_t dport)
    uint32_t hp_ports_count_for(const hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                uint64_t dst_lo)
    int hp_ports_can_allocate(const hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                              uint64_t dst_lo)
    int hp_ports_in_use(const hp_ports *p, uint8_t proto, uint32_t port, uint16_t dport,
                        uint64_t dst_hi, uint64_t dst_lo)
    int hp_ports_release(hp_ports *p, uint8_t proto, uint32_t port, uint16_t dport, uint64_t dst_hi,
                         uint64_t dst_lo)

    int hp_ports_copy(hp_ports *dst, const hp_ports *src)
    int hp_nat_copy(hp_nat_ports *dst, const hp_nat_ports *src)
    int hp_nat_init(hp_nat_ports *nat, uint32_t n, uint32_t lo, uint32_t hi, uint32_t per_destination,
                    const uint64_t *seeds)
    void hp_nat_free(hp_nat_ports *nat)
    int32_t hp_nat_allocate(hp_nat_ports *nat, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                            uint64_t dst_lo, const uint64_t *hint, int nhint, uint32_t *addr)
    int hp_nat_release(hp_nat_ports *nat, uint32_t addr, uint8_t proto, uint32_t port, uint16_t dport,
                       uint64_t dst_hi, uint64_t dst_lo)
    int hp_nat_can_allocate(const hp_nat_ports *nat, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                            uint64_t dst_lo)


_PORTS_M64 = (1 << 64) - 1
_PORTS_M128 = (1 << 128) - 1
_PORTS_DEFAULT = (1024, 65535)       # limits.PORT_RANGE and limits.NAT_PORT_RANGE
_PORTS_NAT_PER_DEST = 55_000         # limits.NAT_CONNECTIONS_PER_DESTINATION


cdef inline object _ports_int(object v):
    return v if type(v) is int else _ports_index(v)


cdef int _ports_key(object proto, object dst_ip, object dst_port, uint8_t *pr, uint16_t *dp,
                    uint64_t *hi, uint64_t *lo) except -1:
    """1 when (proto, dst_ip, dst_port) fits the C key, 0 when it does not (no such destination)."""
    proto = _ports_int(proto)
    dst_ip = _ports_int(dst_ip)
    dst_port = _ports_int(dst_port)
    if not (0 <= proto <= 255 and 0 <= dst_port <= 65535 and 0 <= dst_ip <= _PORTS_M128):
        return 0
    pr[0] = <uint8_t>proto
    dp[0] = <uint16_t>dst_port
    if dst_ip <= _PORTS_M64:
        hi[0] = 0
        lo[0] = <uint64_t>dst_ip
    else:
        hi[0] = <uint64_t>(dst_ip >> 64)
        lo[0] = <uint64_t>(dst_ip & _PORTS_M64)
    return 1


cdef int _ports_alloc_key(object proto, object dst_ip, object dst_port, uint8_t *pr, uint16_t *dp,
                          uint64_t *hi, uint64_t *lo) except -1:
    if not _ports_key(proto, dst_ip, dst_port, pr, dp, hi, lo):
        if proto < 0 or dst_ip < 0 or dst_port < 0:
            raise ValueError("hash inputs must be non-negative integers")
        raise ValueError(f"destination out of range for the compiled pool: proto {proto} (0-255), "
                         f"dst_port {dst_port} (0-65535), dst_ip {dst_ip} (< 2**128)")
    return 1


cdef class _PortsHint:
    """A non-negative int as little-endian 64-bit words (inline up to 4, else heap)."""
    cdef uint64_t inl[4]
    cdef uint64_t *words
    cdef int n

    def __dealloc__(self):
        if self.words != NULL and self.words != self.inl:
            free(self.words)

    cdef int set(self, object hint) except -1:
        cdef int i
        if self.words != NULL and self.words != self.inl:
            free(self.words)
        self.words = self.inl
        if not hint:
            hint = 0
        hint = _ports_int(hint)
        if 0 <= hint <= _PORTS_M64:
            self.inl[0] = <uint64_t>hint
            self.n = 1
            return 0
        if hint < 0:
            raise ValueError("hash inputs must be non-negative integers")
        n = (hint.bit_length() + 63) // 64
        if n > 4:
            self.words = <uint64_t *>malloc(n * sizeof(uint64_t))
            if self.words == NULL:
                self.words = self.inl
                raise MemoryError()
        for i in range(n):
            self.words[i] = <uint64_t>(hint & _PORTS_M64)
            hint >>= 64
        self.n = n
        return 0


cdef object _ports_fold(object h, object value):
    """The reference's _fold on Python ints (construction only)."""
    if value < 0:
        raise ValueError("hash inputs must be non-negative integers")
    while True:
        h = hp_port_mix64(<uint64_t>((h ^ (value & _PORTS_M64)) & _PORTS_M64))
        value >>= 64
        if not value:
            return h


def port_hash(seed, hint, proto, dst_ip, dst_port):
    """The reference's documented port_hash, computed by the C code (hp_port_hash)."""
    cdef uint8_t pr
    cdef uint16_t dp
    cdef uint64_t hi, lo
    cdef _PortsHint h = _PortsHint()
    h.set(hint)
    _ports_alloc_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo)
    return hp_port_hash(<uint64_t>(seed & _PORTS_M64), h.words, h.n, pr, dp, hi, lo)


def port_hash_sandbox(seed, src, sport, proto, dst_ip, dst_port):
    """port_hash(seed, (src << 16) | sport, proto, dst_ip, dst_port) through the C fast-path
    helpers the compiled loop uses: hp_port_hash_v4 (IPv4 sandbox and destination) or
    hp_port_hint_v6 + hp_port_hash (anything else up to 128 bits)."""
    cdef uint8_t pr
    cdef uint16_t dp
    cdef uint64_t hi, lo
    cdef uint64_t words[3]
    cdef int n
    _ports_alloc_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo)
    if not (0 <= src <= _PORTS_M128 and 0 <= sport <= 65535):
        raise ValueError("src must be < 2**128 and sport < 65536")
    if src <= 0xFFFFFFFF and hi == 0 and lo <= 0xFFFFFFFF:
        return hp_port_hash_v4(<uint64_t>(seed & _PORTS_M64), <uint32_t>src, <uint16_t>sport, pr, dp,
                               <uint32_t>lo)
    n = hp_port_hint_v6(<uint64_t>(src >> 64), <uint64_t>(src & _PORTS_M64), <uint16_t>sport, words)
    return hp_port_hash(<uint64_t>(seed & _PORTS_M64), words, n, pr, dp, hi, lo)


cdef class PortPool:
    """The source ports of one Hyperplane ENI (see hyperplane.reference.ports.PortPool): unique per
    (protocol, destination address, destination port) among live allocations; ports lo..hi."""

    cdef hp_ports _p
    cdef object _seed
    cdef _PortsHint _hint

    def __cinit__(self, lo=_PORTS_DEFAULT[0], hi=_PORTS_DEFAULT[1], seed=0):
        self._p.tab = NULL

    def __init__(self, lo=_PORTS_DEFAULT[0], hi=_PORTS_DEFAULT[1], seed=0):
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port range {lo}-{hi} is outside 1-65535")
        if lo > hi:
            raise ValueError(f"port range {lo}-{hi} is empty (lo > hi)")
        hp_ports_free(&self._p)
        if hp_ports_init(&self._p, lo, hi, <uint64_t>(seed & _PORTS_M64)) != 0:
            raise MemoryError()
        self._seed = seed
        self._hint = _PortsHint()

    def __dealloc__(self):
        hp_ports_free(&self._p)

    def __deepcopy__(self, memo):
        """An independent pool with the same allocations (explain probes a copy of the dataplane)."""
        cdef PortPool c = PortPool.__new__(PortPool)
        if hp_ports_copy(&c._p, &self._p) != 0:
            raise MemoryError()
        c._seed = self._seed
        c._hint = _PortsHint()
        return c

    @property
    def lo(self):
        return self._p.lo

    @property
    def hi(self):
        return self._p.hi

    @property
    def size(self):
        return self._p.size

    @property
    def seed(self):
        return self._seed

    @property
    def count(self):
        """Live allocations over all destinations."""
        return self._p.count

    @property
    def destinations(self):
        """Destinations with at least one live allocation."""
        return self._p.ndest

    def allocate(self, proto, dst_ip, dst_port, hint=0):
        """A free source port toward (proto, dst_ip, dst_port), now taken; None when every port of
        the range is in use toward that destination."""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        cdef int32_t port
        _ports_alloc_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo)
        if hint and isinstance(hint, int) and hint < 0 and not hp_ports_can_allocate(&self._p, pr, dp, hi, lo):
            return None  # the reference answers a full destination before it hashes the hint
        self._hint.set(hint)
        port = hp_ports_allocate(&self._p, pr, dp, hi, lo, self._hint.words, self._hint.n)
        if port >= 0:
            return port
        if port == HP_PORTS_FULL:
            return None
        raise MemoryError()

    def release(self, proto, port, dst_ip, dst_port):
        """Give a port back. KeyError when it is not allocated toward that destination."""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        port = _ports_int(port)
        if (not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo) or not 0 <= port <= 65535
                or hp_ports_release(&self._p, pr, port, dp, hi, lo) != 0):
            raise KeyError((proto, port, dst_ip, dst_port))

    def in_use(self, proto, port, dst_ip, dst_port):
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        port = _ports_int(port)
        if not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo) or not 0 <= port <= 65535:
            return False
        return bool(hp_ports_in_use(&self._p, pr, port, dp, hi, lo))

    def count_for(self, proto, dst_ip, dst_port):
        """Live allocations toward one destination."""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        if not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo):
            return 0
        return hp_ports_count_for(&self._p, pr, dp, hi, lo)

    def can_allocate(self, proto, dst_ip, dst_port):
        """O(1): is a port left toward this destination?"""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        if not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo):
            return True
        return bool(hp_ports_can_allocate(&self._p, pr, dp, hi, lo))

    def memory_bytes(self):
        """Bytes held by the C pool: the destination table, sets and bitmaps."""
        return hp_ports_memory(&self._p)

    def stats(self):
        """Internal layout: table capacity, destinations, bitmaps, heap bytes, total bytes."""
        return {"table_capacity": self._p.cap, "destinations": self._p.ndest,
                "bitmaps": self._p.n_bitmaps, "heap_bytes": self._p.heap_bytes,
                "memory_bytes": hp_ports_memory(&self._p)}

    def __repr__(self):
        return f"PortPool({self._p.lo}-{self._p.hi}, count={self._p.count}, destinations={self._p.ndest})"


cdef object _ports_address_int(object address):
    return address if isinstance(address, int) else int(_ports_ipaddress.ip_address(address))


cdef class NatPortPool:
    """The ports of a NAT gateway (see hyperplane.reference.ports.NatPortPool): one pool per public
    address, tried in order, at most per_destination live connections per destination per address;
    each failure counts in error_port_allocation."""

    cdef hp_nat_ports _n
    cdef readonly tuple public_ips
    cdef readonly object per_destination
    cdef dict _index
    cdef _PortsHint _hint

    def __cinit__(self, *args, **kwargs):
        self._n.pools = NULL
        self._n.n = 0

    def __init__(self, public_ips, lo=_PORTS_DEFAULT[0], hi=_PORTS_DEFAULT[1],
                 per_destination=_PORTS_NAT_PER_DEST, seed=0):
        cdef uint64_t *seeds
        cdef Py_ssize_t i
        if not public_ips:
            raise ValueError("a NAT gateway needs at least one address")
        if per_destination < 1:
            raise ValueError("per_destination must be at least 1")
        ips = tuple(public_ips)
        if len(set(ips)) != len(ips):
            raise ValueError("duplicate NAT gateway address")
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port range {lo}-{hi} is outside 1-65535")
        if lo > hi:
            raise ValueError(f"port range {lo}-{hi} is empty (lo > hi)")
        base = hp_port_mix64(<uint64_t>(seed & _PORTS_M64))
        sub = [_ports_fold(base, _ports_address_int(ip)) for ip in ips]
        seeds = <uint64_t *>malloc(len(ips) * sizeof(uint64_t))
        if seeds == NULL:
            raise MemoryError()
        for i in range(len(ips)):
            seeds[i] = <uint64_t>sub[i]
        hp_nat_free(&self._n)
        r = hp_nat_init(&self._n, <uint32_t>len(ips), lo, hi, <uint32_t>min(per_destination, 65535), seeds)
        free(seeds)
        if r != 0:
            raise MemoryError()
        self.public_ips = ips
        self.per_destination = per_destination
        self._index = {ip: i for i, ip in enumerate(ips)}
        self._hint = _PortsHint()

    def __dealloc__(self):
        hp_nat_free(&self._n)

    def __deepcopy__(self, memo):
        """An independent pool with the same allocations and counters."""
        cdef NatPortPool c = NatPortPool.__new__(NatPortPool)
        if hp_nat_copy(&c._n, &self._n) != 0:
            raise MemoryError()
        c.public_ips = self.public_ips
        c.per_destination = self.per_destination
        c._index = dict(self._index)
        c._hint = _PortsHint()
        return c

    @property
    def error_port_allocation(self):
        return self._n.error_port_allocation

    @error_port_allocation.setter
    def error_port_allocation(self, value):
        self._n.error_port_allocation = value

    @property
    def peak_connections(self):
        return self._n.peak_connections

    @peak_connections.setter
    def peak_connections(self, value):
        self._n.peak_connections = value

    @property
    def count(self):
        return self._n.count

    def allocate(self, proto, dst_ip, dst_port, hint=0):
        """(public_ip, port) for a new connection toward (proto, dst_ip, dst_port), or None (and
        error_port_allocation + 1) when every address is at its limit."""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        cdef uint32_t addr = 0
        cdef int32_t port
        _ports_alloc_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo)
        if hint and isinstance(hint, int) and hint < 0 and not hp_nat_can_allocate(&self._n, pr, dp, hi, lo):
            self._n.error_port_allocation += 1  # the reference never hashes the hint then
            return None
        self._hint.set(hint)
        port = hp_nat_allocate(&self._n, pr, dp, hi, lo, self._hint.words, self._hint.n, &addr)
        if port >= 0:
            return self.public_ips[addr], port
        if port == HP_PORTS_FULL:
            return None
        raise MemoryError()

    def release(self, public_ip, proto, port, dst_ip, dst_port):
        """Give back a (public_ip, port) mapping. KeyError when it is not allocated."""
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        i = self._index.get(public_ip)
        if i is None:
            raise KeyError(public_ip)
        port = _ports_int(port)
        if (not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo) or not 0 <= port <= 65535
                or hp_nat_release(&self._n, i, pr, port, dp, hi, lo) != 0):
            raise KeyError((proto, port, dst_ip, dst_port))

    def in_use(self, public_ip, proto, port, dst_ip, dst_port):
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        cdef Py_ssize_t k
        i = self._index.get(public_ip)
        if i is None:
            return False
        port = _ports_int(port)
        if not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo) or not 0 <= port <= 65535:
            return False
        k = i
        return bool(hp_ports_in_use(&self._n.pools[k], pr, port, dp, hi, lo))

    def can_allocate(self, proto, dst_ip, dst_port):
        cdef uint8_t pr
        cdef uint16_t dp
        cdef uint64_t hi, lo
        if not _ports_key(proto, dst_ip, dst_port, &pr, &dp, &hi, &lo):
            return True
        return bool(hp_nat_can_allocate(&self._n, pr, dp, hi, lo))

    def memory_bytes(self):
        cdef uint32_t i
        cdef uint64_t total = 0
        for i in range(self._n.n):
            total += hp_ports_memory(&self._n.pools[i])
        return total


def ports_churn_v4(PortPool pool, uint8_t proto, uint32_t src, uint16_t dport,
                   const uint32_t[::1] dsts not None, int32_t[::1] out not None,
                   Py_ssize_t live, Py_ssize_t start, Py_ssize_t stop):
    """Benchmark and test driver, one nogil loop over the C pool: for i in start..stop-1, release
    the allocation made at step i - live (if any, toward dsts[i - live]), then
    out[i] = allocate toward (proto, dsts[i], dport) with hint (src << 16) | (i & 0xFFFF), the
    dataplane's hint for sandbox src:sport (-1 = no port)."""
    cdef Py_ssize_t i, j
    cdef int32_t port
    cdef int bad = 0
    if not (0 <= start <= stop <= dsts.shape[0] and stop <= out.shape[0] and live >= 1):
        raise ValueError("need 0 <= start <= stop <= len(dsts), len(out) and live >= 1")
    with nogil:
        for i in range(start, stop):
            j = i - live
            if j >= 0 and out[j] >= 0:
                hp_ports_release(&pool._p, proto, <uint32_t>out[j], dport, 0, dsts[j])
                out[j] = -1
            port = hp_ports_allocate_v4(&pool._p, proto, src, <uint16_t>(i & 0xFFFF), dsts[i], dport)
            if port == HP_PORTS_ENOMEM:
                bad = 1
                break
            out[i] = port
    if bad:
        raise MemoryError()
