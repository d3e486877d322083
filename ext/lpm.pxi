# Longest-prefix-match tables for route lookups: Lpm4 (IPv4) and Lpm6 (IPv6).
#
# The data structures are C, in hp_lpm.h (its header comment explains the
# layout and why 16-8-8 is the default over DIR-24-8; benchmarks/README.md
# has the measurements).  This file is the Python face of them.
#
# Values are next-hop indices 1 .. 2**31 - 1; 0 means "no route" and is what a
# lookup returns when no prefix matches.  A prefix with host bits set (e.g.
# 10.0.0.1/8) is rejected with ValueError rather than masked: in a route table
# it is almost always a typo, and AWS rejects such CIDR blocks too.
#
# For a compiled dataplane loop (nogil): an Lpm4 `t` exposes its C table as
# `t._t`; call `hp_lpm4_lookup(&t._t, addr)` (host byte order address) or
# `hp_lpm4_lookup_batch(&t._t, addrs, out, n)`, and for Lpm6
# `hp_lpm6_lookup(&t._t, hi, lo)`.  While such a loop runs, nothing may
# insert into or remove from the table; the Python methods below enforce that
# for their own batch lookups.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

import numpy as _np

cdef extern from "hp_lpm.h" nogil:
    ctypedef struct hp_pfx_slot:
        uint64_t hi
        uint64_t lo
        uint32_t value
        uint32_t len

    ctypedef struct hp_pfxtab:
        hp_pfx_slot *slots
        size_t cap
        size_t count
        uint32_t len_count[129]

    ctypedef struct hp_lpm4:
        uint32_t chunk_cap
        uint32_t chunk_live
        int first_stride
        hp_pfxtab prefixes

    ctypedef struct hp_lpm6:
        hp_pfxtab prefixes
        uint32_t n_lens

    uint32_t HP_LPM_MAX_VALUE

    int hp_lpm4_init(hp_lpm4 *t, int first_stride)
    void hp_lpm4_free(hp_lpm4 *t)
    size_t hp_lpm4_memory(const hp_lpm4 *t)
    size_t hp_lpm4_lookup_memory(const hp_lpm4 *t)
    int hp_lpm4_insert(hp_lpm4 *t, uint32_t p, uint32_t length, uint32_t value)
    int hp_lpm4_remove(hp_lpm4 *t, uint32_t p, uint32_t length)
    uint32_t hp_lpm4_lookup(const hp_lpm4 *t, uint32_t a)
    void hp_lpm4_lookup_batch(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out, size_t n)
    void hp_lpm4_lookup_batch_plain(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out, size_t n)
    void hp_lpm4_lookup_batch_prefetch(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out, size_t n)
    int hp_lpm4_prefetch_pays(const hp_lpm4 *t)

    int hp_lpm6_init(hp_lpm6 *t)
    void hp_lpm6_free(hp_lpm6 *t)
    size_t hp_lpm6_memory(const hp_lpm6 *t)
    int hp_lpm6_insert(hp_lpm6 *t, uint64_t hi, uint64_t lo, uint32_t length, uint32_t value)
    int hp_lpm6_remove(hp_lpm6 *t, uint64_t hi, uint64_t lo, uint32_t length)
    uint32_t hp_lpm6_lookup(const hp_lpm6 *t, uint64_t hi, uint64_t lo)
    void hp_lpm6_lookup_batch(const hp_lpm6 *t, const uint64_t *hi, const uint64_t *lo,
                              uint32_t *out, size_t n)
    uint32_t hp_pfxtab_get(const hp_pfxtab *t, uint64_t hi, uint64_t lo, uint32_t length)


_LPM_U64 = (1 << 64) - 1


cdef object _lpm_check_value(object value):
    if not (1 <= value <= HP_LPM_MAX_VALUE):
        raise ValueError(f"route value must be in 1..{HP_LPM_MAX_VALUE} (0 means no route), got {value}")
    return value


cdef object _lpm_check_prefix(object prefix, object length, object bits):
    """Validates prefix/length; returns the prefix as a Python int."""
    if not (0 <= length <= bits):
        raise ValueError(f"prefix length must be in 0..{bits}, got {length}")
    if not (0 <= prefix < (1 << bits)):
        raise ValueError(f"prefix {prefix} is not an IPv{4 if bits == 32 else 6} address")
    if prefix & ((1 << (bits - length)) - 1):
        raise ValueError(f"prefix has host bits set beyond /{length}")
    return prefix


cdef object _lpm_items(const hp_pfxtab *tab, int bits):
    cdef size_t i
    out = []
    for i in range(tab.cap):
        if tab.slots[i].value:
            if bits == 32:
                prefix = tab.slots[i].lo
            else:
                prefix = (<object>tab.slots[i].hi << 64) | <object>tab.slots[i].lo
            out.append((prefix, tab.slots[i].len, tab.slots[i].value))
    out.sort()
    return out


cdef class Lpm4:
    """IPv4 longest-prefix-match table: uint32 address -> next-hop index.

    ``Lpm4(first_stride=16)`` builds a 16-8-8 multibit trie; ``first_stride=24``
    a DIR-24-8 table (80 MiB whatever its size, for comparison).
    """

    cdef hp_lpm4 _t
    cdef int _readers
    cdef bint _ready

    def __cinit__(self, int first_stride=16):
        self._ready = False
        self._readers = 0
        cdef int rc = hp_lpm4_init(&self._t, first_stride)
        if rc == -2:
            raise ValueError(f"first_stride must be 16 or 24, got {first_stride}")
        if rc != 0:
            raise MemoryError("cannot allocate the LPM table")
        self._ready = True

    def __dealloc__(self):
        if self._ready:
            hp_lpm4_free(&self._t)
            self._ready = False

    cdef int _check_writable(self) except -1:
        if self._readers:
            raise RuntimeError("Lpm4 modified while a batch lookup is running")
        return 0

    def insert(self, prefix, length, value):
        """Adds prefix/length -> value, replacing the value of an existing prefix.

        Returns True when the prefix is new.  ValueError for host bits set, a length
        outside 0..32 or a value outside 1..2**31-1.
        """
        _lpm_check_prefix(prefix, length, 32)
        _lpm_check_value(value)
        self._check_writable()
        cdef int rc = hp_lpm4_insert(&self._t, <uint32_t>prefix, <uint32_t>length, <uint32_t>value)
        if rc < 0:
            raise MemoryError("cannot grow the LPM table")
        return rc == 1

    def remove(self, prefix, length):
        """Removes prefix/length; KeyError if it is not in the table."""
        _lpm_check_prefix(prefix, length, 32)
        self._check_writable()
        if not hp_lpm4_remove(&self._t, <uint32_t>prefix, <uint32_t>length):
            raise KeyError((prefix, length))

    def get(self, prefix, length, default=None):
        """The value stored for exactly prefix/length, or ``default``."""
        _lpm_check_prefix(prefix, length, 32)
        cdef uint32_t v = hp_pfxtab_get(&self._t.prefixes, 0, <uint32_t>prefix, <uint32_t>length)
        return v if v else default

    def lookup(self, uint32_t addr):
        """The value of the longest prefix containing ``addr`` (0 when none)."""
        return hp_lpm4_lookup(&self._t, addr)

    def lookup_batch(self, addrs, out=None, *, prefetch=None):
        """Looks up a uint32 array of addresses; returns a uint32 array of values.

        ``out`` (a C-contiguous uint32 array of the same length) receives the values
        when given.  ``prefetch``: None lets the table choose (software prefetch when
        its lookup arrays outgrow the caches, see ``prefetch_pays``); True or False
        forces it (for benchmarks).  The loop releases the GIL.
        """
        a = _np.ascontiguousarray(addrs)
        if a.dtype != _np.uint32:
            raise TypeError(f"addresses must be a uint32 array, got {a.dtype}")
        if a.ndim != 1:
            a = a.reshape(-1)
        if out is None:
            out = _np.empty(a.shape[0], dtype=_np.uint32)
        elif out.shape[0] != a.shape[0]:
            raise ValueError("out has a different length from addrs")
        cdef const uint32_t[::1] av = a
        cdef uint32_t[::1] ov = out
        cdef size_t n = av.shape[0]
        cdef int mode = -1 if prefetch is None else (1 if prefetch else 0)
        if n == 0:
            return out
        self._readers += 1
        try:
            with nogil:
                if mode == 1:
                    hp_lpm4_lookup_batch_prefetch(&self._t, &av[0], &ov[0], n)
                elif mode == 0:
                    hp_lpm4_lookup_batch_plain(&self._t, &av[0], &ov[0], n)
                else:
                    hp_lpm4_lookup_batch(&self._t, &av[0], &ov[0], n)
        finally:
            self._readers -= 1
        return out

    def items(self):
        """All (prefix, length, value), sorted."""
        return _lpm_items(&self._t.prefixes, 32)

    def __len__(self):
        return self._t.prefixes.count

    @property
    def first_stride(self):
        return self._t.first_stride

    @property
    def memory_bytes(self):
        """Bytes allocated: lookup arrays, per-entry depths and the prefix record."""
        return hp_lpm4_memory(&self._t)

    @property
    def lookup_memory_bytes(self):
        """Bytes a lookup can touch: the root and the chunks in use."""
        return hp_lpm4_lookup_memory(&self._t)

    @property
    def prefetch_pays(self):
        """True when lookup_batch prefetches by default (lookup arrays > 8 MiB)."""
        return bool(hp_lpm4_prefetch_pays(&self._t))

    @property
    def chunks(self):
        """256-entry chunks in use below the root."""
        return self._t.chunk_live

    def __repr__(self):
        return f"<Lpm4 {self._t.first_stride}-bit root, {len(self)} prefixes, {self._t.chunk_live} chunks>"


cdef class Lpm6:
    """IPv6 longest-prefix-match table: 128-bit address -> next-hop index.

    Addresses are Python ints for the scalar API; ``lookup_batch`` takes the high
    and low 64 bits as two uint64 arrays.
    """

    cdef hp_lpm6 _t
    cdef int _readers
    cdef bint _ready

    def __cinit__(self):
        self._ready = False
        self._readers = 0
        if hp_lpm6_init(&self._t) != 0:
            raise MemoryError("cannot allocate the LPM table")
        self._ready = True

    def __dealloc__(self):
        if self._ready:
            hp_lpm6_free(&self._t)
            self._ready = False

    cdef int _check_writable(self) except -1:
        if self._readers:
            raise RuntimeError("Lpm6 modified while a batch lookup is running")
        return 0

    def insert(self, prefix, length, value):
        """Adds prefix/length -> value (see Lpm4.insert); returns True when new."""
        _lpm_check_prefix(prefix, length, 128)
        _lpm_check_value(value)
        self._check_writable()
        cdef int rc = hp_lpm6_insert(&self._t, <uint64_t>(prefix >> 64), <uint64_t>(prefix & _LPM_U64),
                                     <uint32_t>length, <uint32_t>value)
        if rc < 0:
            raise MemoryError("cannot grow the LPM table")
        return rc == 1

    def remove(self, prefix, length):
        """Removes prefix/length; KeyError if it is not in the table."""
        _lpm_check_prefix(prefix, length, 128)
        self._check_writable()
        if not hp_lpm6_remove(&self._t, <uint64_t>(prefix >> 64), <uint64_t>(prefix & _LPM_U64),
                              <uint32_t>length):
            raise KeyError((prefix, length))

    def get(self, prefix, length, default=None):
        """The value stored for exactly prefix/length, or ``default``."""
        _lpm_check_prefix(prefix, length, 128)
        cdef uint32_t v = hp_pfxtab_get(&self._t.prefixes, <uint64_t>(prefix >> 64),
                                        <uint64_t>(prefix & _LPM_U64), <uint32_t>length)
        return v if v else default

    def lookup(self, addr):
        """The value of the longest prefix containing ``addr`` (0 when none)."""
        if not (0 <= addr < (1 << 128)):
            raise ValueError(f"{addr} is not an IPv6 address")
        return hp_lpm6_lookup(&self._t, <uint64_t>(addr >> 64), <uint64_t>(addr & _LPM_U64))

    def lookup_batch(self, hi, lo, out=None):
        """Looks up addresses given as uint64 arrays of high and low halves."""
        h = _np.ascontiguousarray(hi)
        l = _np.ascontiguousarray(lo)
        if h.dtype != _np.uint64 or l.dtype != _np.uint64:
            raise TypeError("hi and lo must be uint64 arrays")
        if h.shape != l.shape or h.ndim != 1:
            raise ValueError("hi and lo must be 1-D arrays of the same length")
        if out is None:
            out = _np.empty(h.shape[0], dtype=_np.uint32)
        elif out.shape[0] != h.shape[0]:
            raise ValueError("out has a different length from the addresses")
        cdef const uint64_t[::1] hv = h
        cdef const uint64_t[::1] lv = l
        cdef uint32_t[::1] ov = out
        cdef size_t n = hv.shape[0]
        if n == 0:
            return out
        self._readers += 1
        try:
            with nogil:
                hp_lpm6_lookup_batch(&self._t, &hv[0], &lv[0], &ov[0], n)
        finally:
            self._readers -= 1
        return out

    def items(self):
        """All (prefix, length, value), sorted."""
        return _lpm_items(&self._t.prefixes, 128)

    def __len__(self):
        return self._t.prefixes.count

    @property
    def memory_bytes(self):
        return hp_lpm6_memory(&self._t)

    @property
    def lengths(self):
        """Distinct prefix lengths present (one hash probe each per lookup)."""
        return self._t.n_lens

    def __repr__(self):
        return f"<Lpm6 {len(self)} prefixes, {self._t.n_lens} lengths>"
