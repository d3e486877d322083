# flow.pxi: the flow table and the batch fast path of the core backend (ext/hp_flow.h).
#
# FlowTable is driven by hyperplane/core.py (CoreEngine): the slow path (the reference dataplane)
# teaches it connections; FlowTable.run forwards the packets of those connections in one nogil
# loop and stops at the first packet it cannot handle. See hp_flow.h for the rules.
from libc.string cimport memcpy, memcmp
from libc.math cimport INFINITY
from libc.stdlib cimport malloc, free
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

cdef extern from "hp_flow.h" nogil:
    ctypedef struct hp_conn:
        double expires
        double last_seen
        uint32_t ip[4]
        uint16_t port[4]
        uint32_t pkts[2]
        uint32_t bytes[2]
        uint32_t window
        uint32_t gen
        uint16_t end_off[2]
        uint8_t raw_flags[2]
        uint8_t aws_flags[2]
        uint8_t kind[3]
        uint8_t state
        uint8_t proto
        uint8_t bits
        uint16_t exchanges
    ctypedef struct hp_flow_event:
        double ts
        uint32_t idx
        uint32_t kind
    ctypedef struct hp_slot:
        uint32_t tag
        uint32_t ref
    ctypedef struct hp_flow_table:
        hp_conn *conns
        hp_slot *slots
        uint32_t nconns
        uint32_t cap_conns
        uint32_t top
        uint64_t mask
        uint64_t used
        uint32_t *dirty
        uint32_t ndirty
        hp_flow_event *events
        uint32_t nevents
        uint32_t earlier
        double earlier_min
        uint32_t ntimers
        uint64_t rehashes
        uint32_t gen
        uint32_t interval
        int strict
        double nat_idle
        double now
        uint8_t tcp[2][6][10]
        uint8_t fclass[256]
        uint8_t awsmap[256]
        double tcp_timeout[10]
        double udp_timeout[3]
        uint64_t fast_packets
        uint64_t stops[14]
    ctypedef struct hp_batch:
        const uint8_t *buf
        int64_t size
        const int64_t *offs
        const int64_t *lens
        const double *ts
        const int32_t *lts
        int32_t lt
        uint8_t *verdict
        uint8_t *reason
        uint8_t *tap_buf[3]
        int64_t tap_cap[3]
        int64_t tap_used[3]
        int64_t tap_n[3]
        int64_t *tap_idx[3]
        int64_t *tap_off[3]
        int64_t *tap_src[3]
        int32_t *tap_head[3]
        int32_t *tap_len[3]
    int hp_flow_init(hp_flow_table *t, uint32_t expected)
    void hp_flow_free(hp_flow_table *t)
    size_t hp_flow_memory(const hp_flow_table *t)
    int64_t hp_flow_find(const hp_flow_table *t, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                         uint8_t proto)
    int hp_flow_key(hp_flow_table *t, uint32_t idx, int k)
    void hp_flow_unkey(hp_flow_table *t, uint32_t idx, int k)
    int64_t hp_flow_alloc(hp_flow_table *t, uint8_t proto)
    void hp_flow_release(hp_flow_table *t, uint32_t idx)
    void hp_flow_render(const hp_conn *c, int k, const uint8_t *ip, int64_t n, int64_t l4, uint8_t **out,
                        int copy_same)
    unsigned hp_flow_same(const hp_conn *c, int k)
    int64_t hp_flow_head(int64_t l4, uint8_t proto)
    int hp_flow_parse4(const uint8_t *d, int64_t n, int32_t lt, hp_pkt *p)
    void hp_flow_gather(const uint8_t *tap, const uint8_t *src, int64_t n, const int64_t *off,
                        const int64_t *srcoff, const int32_t *head, const int32_t *len, uint8_t *dst,
                        const uint8_t *heads, int64_t width)
    int64_t hp_flow_run(hp_flow_table *t, hp_batch *b, int64_t start, int64_t count, int *why)
    int hp_flow_set_timed(hp_flow_table *t, uint32_t idx, int timed)
    int64_t hp_flow_next_due(hp_flow_table *t, double now, int *expired)
    int HP_K_KEY, HP_K_LEARNED, HP_K_ENI, HP_K_INET, HP_K_NATRW, HP_K_FIRST
    int HP_C_LASTREPLY, HP_C_NAT, HP_C_DIRTY, HP_C_OWNER_SHIFT, HP_C_TIMED
    int HP_STOP_COUNT, HP_STOP_BOUNDS

cdef extern from "hp_open.h" nogil:
    # the planned opens of the loop (open.pxi): their side records (the opener is opaque here)
    int hp_open_is_c(void *op, uint32_t idx)
    void hp_open_count(void *op, hp_flow_table *t, uint32_t idx)

#: Key kinds (hp_flow.h): the sandbox's packet, a reply in the sandbox's view, a reply in VPC form.
FLOW_KIND_OUT, FLOW_KIND_REPLY, FLOW_KIND_VPC = 0, 1, 2
FLOW_K_LEARNED, FLOW_K_ENI, FLOW_K_INET, FLOW_K_NATRW, FLOW_K_FIRST = (HP_K_LEARNED, HP_K_ENI, HP_K_INET, HP_K_NATRW,
                                                                     HP_K_FIRST)
#: Why FlowTable.run stopped, by code (the order of HP_STOP_* in hp_flow.h).
FLOW_STOPS = ("end", "parse", "miss", "generation", "unlearned", "time", "expired", "window",
              "nat-idle", "tcp", "overflow", "space", "bounds")
#: Bytes of one entry and of one index slot.
FLOW_ENTRY_BYTES = sizeof(hp_conn)
FLOW_SLOT_BYTES = sizeof(hp_slot)


cdef class FlowTable:
    """The C flow table (see hp_flow.h). Entries are addressed by index; the caller (CoreEngine)
    keeps the Python objects beside them. Not thread-safe."""

    cdef hp_flow_table _t
    cdef bint _ready
    cdef void *_op  # the Opens bound to this table (its hp_opener), or NULL

    def __cinit__(self, uint32_t expected=1024, uint32_t interval=600, bint strict=False, double nat_idle=350.0,
                  tcp_table=None, flag_class=None, aws_flags=None, tcp_timeouts=None, udp_timeouts=None):
        if hp_flow_init(&self._t, expected) != 0:
            raise MemoryError("cannot allocate the flow table")
        self._ready = True
        if interval == 0:
            raise ValueError("interval must be positive")
        self._t.interval = interval
        self._t.strict = strict
        self._t.nat_idle = nat_idle
        cdef int d, f, s
        if tcp_table is not None:
            a = _np.asarray(tcp_table, dtype=_np.uint8)
            if a.shape != (2, 6, 10):
                raise ValueError("tcp_table must have shape (2, 6, 10)")
            for d in range(2):
                for f in range(6):
                    for s in range(10):
                        self._t.tcp[d][f][s] = a[d, f, s]
        for name, values, size in (("flag_class", flag_class, 256), ("aws_flags", aws_flags, 256),
                                   ("tcp_timeouts", tcp_timeouts, 10), ("udp_timeouts", udp_timeouts, 3)):
            if values is not None and len(values) != size:
                raise ValueError(f"{name} needs {size} values")
        for f in range(256):
            self._t.fclass[f] = flag_class[f] if flag_class is not None else 5
            self._t.awsmap[f] = aws_flags[f] if aws_flags is not None else 0
        for s in range(10):
            self._t.tcp_timeout[s] = tcp_timeouts[s] if tcp_timeouts is not None else 0.0
        for s in range(3):
            self._t.udp_timeout[s] = udp_timeouts[s] if udp_timeouts is not None else 0.0

    def __dealloc__(self):
        if self._ready:
            hp_flow_free(&self._t)
            self._ready = False

    # --- properties -------------------------------------------------------------------------
    property gen:
        """Configuration generation: entries learned under another one punt."""
        def __get__(self):
            return self._t.gen
        def __set__(self, uint32_t value):
            self._t.gen = value

    property now:
        """The slow path's clock: packets stamped before it punt (time never goes backwards)."""
        def __get__(self):
            return self._t.now
        def __set__(self, double value):
            self._t.now = value

    def __len__(self):
        return self._t.nconns

    @property
    def keys(self):
        """Keys in the index."""
        return self._t.used

    @property
    def slots(self):
        return self._t.mask + 1

    @property
    def capacity(self):
        """Entries allocated."""
        return self._t.cap_conns

    @property
    def rehashes(self):
        return self._t.rehashes

    @property
    def timer_items(self):
        """Items in the timers' heap (one or more per timed entry, and stale ones not popped yet)."""
        return self._t.ntimers

    @property
    def memory_bytes(self):
        """Bytes held by the entries, the index, the dirty list and the first-packet events."""
        return hp_flow_memory(&self._t)

    def stops(self):
        """How often run() stopped for each reason (FLOW_STOPS) since the last call; resets."""
        out = {}
        cdef int i
        for i in range(HP_STOP_COUNT):
            if self._t.stops[i]:
                out[FLOW_STOPS[i]] = self._t.stops[i]
            self._t.stops[i] = 0
        return out

    def take_fast_packets(self):
        """Packets the fast path forwarded since the last call; resets."""
        n = self._t.fast_packets
        self._t.fast_packets = 0
        return n

    # --- entries ----------------------------------------------------------------------------
    cdef hp_conn *_conn(self, idx) except NULL:
        if not 0 <= idx < self._t.top or self._t.conns[idx].proto == 0:
            raise KeyError(idx)
        return &self._t.conns[<uint32_t>idx]

    def alloc(self, int proto):
        """A new entry for a TCP (6) or UDP (17) connection; returns its index."""
        if proto != 6 and proto != 17:
            raise ValueError("only TCP and UDP connections have entries")
        cdef int64_t idx = hp_flow_alloc(&self._t, <uint8_t>proto)
        if idx < 0:
            raise MemoryError("flow table full")
        return idx

    def release(self, idx):
        """Forget entry ``idx`` and its keys."""
        self._conn(idx)
        hp_flow_release(&self._t, <uint32_t>idx)

    def set(self, idx, int state, double expires, double last_seen, ips, ports, bint last_reply, bint nat,
            uint32_t gen):
        """Load the slow path's view of a connection into entry ``idx`` (not its counters).
        ``ips``/``ports``: sandbox, remote, ENI, NAT endpoints. Changing an endpoint that keys use
        is refused (ValueError), and so is loading a timed entry (the table keeps its state)."""
        cdef hp_conn *c = self._conn(idx)
        if c.bits & HP_C_TIMED:
            raise ValueError("a timed entry is the table's: untime it first")
        self._set(c, state, expires, last_seen, ips, ports, last_reply, nat, gen)

    cdef int _set(self, hp_conn *c, int state, double expires, double last_seen, ips, ports, bint last_reply,
                  bint nat, uint32_t gen) except -1:
        cdef int e, k
        for e in range(4):
            if c.ip[e] != <uint32_t>ips[e] or c.port[e] != <uint16_t>ports[e]:
                for k in range(3):
                    if c.kind[k] & HP_K_KEY:
                        raise ValueError("the endpoints of a keyed entry cannot change")
        for e in range(4):
            c.ip[e] = ips[e]
            c.port[e] = ports[e]
        c.state = state
        c.expires = expires
        c.last_seen = last_seen
        c.gen = gen
        c.bits = (c.bits & ~(HP_C_LASTREPLY | HP_C_NAT)) | (HP_C_LASTREPLY if last_reply else 0) | (HP_C_NAT if nat else 0)
        return 0

    def open(self, int proto, int state, double expires, double last_seen, ips, ports, bint nat, uint32_t gen,
             uint32_t window, int flags, bint reply_ahead, bint timed=False):
        """A new entry for a connection opened before its first packet (the core's planned open):
        ``alloc(proto)``, ``set(...)`` (not a UDP reply last), ``learn`` of the sandbox kind with
        tap ``flags`` in ``window`` and, with ``reply_ahead``, of the REPLY kind ahead of its
        first packet (``first=True``) with the same flags; ``timed``: ``set_timed(index, True)``.
        Returns its index."""
        cdef uint32_t idx = self.alloc(proto)
        cdef hp_conn *c = &self._t.conns[idx]
        self._set(c, state, expires, last_seen, ips, ports, False, nat, gen)
        self._learn(c, idx, 0, flags, window, False)
        if reply_ahead:
            self._learn(c, idx, 1, flags, window, True)
        if timed and hp_flow_set_timed(&self._t, idx, 1) != 0:
            raise MemoryError("flow timers")
        return idx

    def set_timed(self, idx, bint timed):
        """Whether the table keeps entry ``idx``'s timer (``take_due`` reports it when due: the
        earlier of its expiry and, with a NAT mapping, its last packet + the NAT idle timeout),
        and no one else tracks it."""
        self._conn(idx)
        if hp_flow_set_timed(&self._t, <uint32_t>idx, timed) != 0:
            raise MemoryError("flow timers")

    def take_due(self, double now):
        """The timed entries due by ``now``, in due-time order (ties: in no set order), as
        ``(index, expired)``: ``expired`` when the connection's timer ran out, else its NAT mapping
        went idle first. They are no longer timed (still in the table)."""
        cdef int expired = 0
        cdef int64_t idx
        out = []
        while True:
            idx = hp_flow_next_due(&self._t, now, &expired)
            if idx == -1:
                return out
            if idx < 0:
                raise MemoryError("flow timers")
            out.append((idx, bool(expired)))

    def get(self, idx):
        """Entry ``idx`` as a dict (for tests and reports)."""
        cdef hp_conn *c = self._conn(idx)
        return {
            "state": c.state, "expires": c.expires, "last_seen": c.last_seen, "proto": c.proto,
            "ips": tuple(c.ip[e] for e in range(4)), "ports": tuple(c.port[e] for e in range(4)),
            "packets": (c.pkts[0], c.pkts[1]), "bytes": (c.bytes[0], c.bytes[1]),
            "tcp_flags": (c.raw_flags[0], c.raw_flags[1]), "window": c.window, "gen": c.gen,
            "kinds": tuple(c.kind[k] for k in range(3)), "exchanges": c.exchanges,
            "last_reply": bool(c.bits & HP_C_LASTREPLY), "nat": bool(c.bits & HP_C_NAT),
            "owner": (c.bits >> HP_C_OWNER_SHIFT) & 3, "dirty": bool(c.bits & HP_C_DIRTY),
        }

    def learn(self, idx, int kind, int flags, uint32_t window, bint first=False):
        """Make ``kind`` of entry ``idx`` usable in flow-log window ``window`` with tap flags
        ``flags`` (FLOW_K_ENI | FLOW_K_INET | FLOW_K_NATRW): its key goes in the index (taking the
        5-tuple over from any other entry). Learning in another window than the entry's forgets
        the other kinds (their flow-log records belong to the old window). A reply kind becomes
        the owner of the REPLY counters (the entry must be folded: counters zero). ``first``: the
        kind is learned ahead of its first packet, which the fast path will report in
        take_events()."""
        self._learn(self._conn(idx), idx, kind, flags, window, first)

    cdef int _learn(self, hp_conn *c, uint32_t idx, int kind, int flags, uint32_t window, bint first) except -1:
        cdef int k
        if not 0 <= kind < 3:
            raise ValueError("kind must be 0, 1 or 2")
        if c.pkts[0] or c.pkts[1]:
            raise ValueError("fold the entry before teaching it")
        if c.window != window:
            for k in range(3):
                c.kind[k] &= HP_K_KEY
            c.window = window
        if hp_flow_key(&self._t, idx, kind) != 0:
            raise MemoryError("flow index full")
        c.kind[kind] = HP_K_KEY | HP_K_LEARNED | (flags & (HP_K_ENI | HP_K_INET | HP_K_NATRW)) | (HP_K_FIRST if first else 0)
        if kind != 0:
            c.bits = (c.bits & ~(3 << HP_C_OWNER_SHIFT)) | (kind << HP_C_OWNER_SHIFT)
        return 0

    def take_events(self):
        """The first packets of kinds learned ahead (``learn(..., first=True)``) the fast path
        forwarded since the last call, in packet order, as ``(index, kind, timestamp)``; resets."""
        cdef uint32_t j
        out = [(self._t.events[j].idx, self._t.events[j].kind, self._t.events[j].ts) for j in range(self._t.nevents)]
        self._t.nevents = 0
        return out

    def forget(self, idx, kind=None):
        """Un-learn one kind (or every kind) of entry ``idx``; keys stay in the index."""
        cdef hp_conn *c = self._conn(idx)
        cdef int k
        for k in range(3):
            if kind is None or k == kind:
                c.kind[k] &= HP_K_KEY

    def forget_all(self):
        """Un-learn every kind of every entry (e.g. after the flow-log records were flushed)."""
        cdef uint32_t i
        cdef int k
        for i in range(self._t.top):
            if self._t.conns[i].proto:
                for k in range(3):
                    self._t.conns[i].kind[k] &= HP_K_KEY

    def forget_windows(self, uint32_t below):
        """Un-learn every kind of the entries learned in a flow-log window before ``below`` (their
        records were flushed); returns those entries' indices."""
        cdef uint32_t i
        cdef int k
        cdef hp_conn *c
        out = []
        for i in range(self._t.top):
            c = &self._t.conns[i]
            if c.proto and c.window < below and (c.kind[0] | c.kind[1] | c.kind[2]) & ~HP_K_KEY:
                for k in range(3):
                    c.kind[k] &= HP_K_KEY
                out.append(i)
        return out

    def lookup(self, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto):
        """``(index, kind)`` of the entry keyed by this IPv4 5-tuple, or None."""
        cdef int64_t s = hp_flow_find(&self._t, src, dst, sport, dport, proto)
        if s < 0:
            return None
        cdef uint32_t ref = self._t.slots[s].ref
        return (ref >> 2) - 1, ref & 3

    def fold_into(self, list entries, reschedule, records, uint32_t interval, orig_dir, reply_dir):
        """The core's state sync (``CoreEngine._sync``), in C: for every entry the fast path
        changed, in the order they first changed, its connection (``entries[index].conn``, a
        reference ``Conn``) takes the entry's state, timer (then ``reschedule(conn)``), last seen
        (the NAT mapping's too) and counters (UDP: exchanges and the last direction,
        ``orig_dir`` / ``reply_dir``), and the flow-log records the kinds count into
        (``entries[index].records``, by key kind) count the packets with
        ``records.count(ids, packets, bytes, end, aws_flags)`` (``end``: the window's start, from
        ``interval``, plus the entry's offset). The entries' counters are reset."""
        cdef uint32_t j, idx
        cdef hp_conn *c
        count = records.count
        for j in range(self._t.ndirty):
            idx = self._t.dirty[j]
            c = &self._t.conns[idx]
            if c.proto and c.bits & HP_C_DIRTY:
                if self._op != NULL and hp_open_is_c(self._op, idx):
                    hp_open_count(self._op, &self._t, idx)  # C-opened: into its side record (open.pxi)
                else:
                    self._fold(c, entries[idx], reschedule, count, interval, orig_dir, reply_dir)
        self._t.ndirty = 0
        self._t.earlier = 0
        self._t.earlier_min = INFINITY

    @property
    def earlier(self):
        """Packets that moved the expiry of an entry the table does not time earlier since the
        last fold_into: until the next one, a timer of the caller's may be later than the entry's."""
        return self._t.earlier

    def fold_counts(self, idx, list records_by_kind, records, uint32_t interval):
        """fold_into's flow-log part alone, for entry ``idx`` when changed (the counts into
        ``records_by_kind``, its record ids by key kind), whose connection is dropped unread (an
        unadopted connection that expired: the core's ``_expire_timed``). The entry's counters
        are reset (its index stays in the dirty list: fold_into skips it unless changed again)."""
        cdef hp_conn *c = self._conn(idx)
        if c.bits & HP_C_DIRTY:
            self._count(c, records_by_kind, records.count, interval)
            self._reset(c)

    cdef int _fold(self, hp_conn *c, entry, reschedule, count, uint32_t interval, orig_dir, reply_dir) except -1:
        conn = entry.conn
        conn.state = c.state
        conn.expires = c.expires
        reschedule(conn)  # a timer the fast path moved earlier reaches the heap
        conn.last_seen = conn.nat_last_seen = c.last_seen
        if c.pkts[0]:
            conn.packets_orig += c.pkts[0]
            conn.bytes_orig += c.bytes[0]
            conn.flags_orig |= c.raw_flags[0]
        if c.pkts[1]:
            conn.packets_reply += c.pkts[1]
            conn.bytes_reply += c.bytes[1]
            conn.flags_reply |= c.raw_flags[1]
            conn.replied = True
        if c.proto == 17:
            conn.exchanges += c.exchanges
            conn._last_dir = reply_dir if c.bits & HP_C_LASTREPLY else orig_dir
        self._count(c, entry.records, count, interval)
        self._reset(c)
        return 0

    cdef int _count(self, hp_conn *c, list recs, count, uint32_t interval) except -1:
        cdef uint64_t base = <uint64_t>c.window * interval
        if c.pkts[0]:
            count(recs[0], c.pkts[0], c.bytes[0], base + c.end_off[0], c.aws_flags[0])
        if c.pkts[1]:
            count(recs[(c.bits >> HP_C_OWNER_SHIFT) & 3], c.pkts[1], c.bytes[1], base + c.end_off[1], c.aws_flags[1])
        return 0

    cdef void _reset(self, hp_conn *c):
        c.pkts[0] = c.pkts[1] = 0
        c.bytes[0] = c.bytes[1] = 0
        c.raw_flags[0] = c.raw_flags[1] = 0
        c.aws_flags[0] = c.aws_flags[1] = 0
        c.end_off[0] = c.end_off[1] = 0
        c.exchanges = 0
        c.bits &= ~HP_C_DIRTY

    @property
    def dirty(self):
        """Entries waiting to be folded."""
        return self._t.ndirty

    def reproduces(self, idx, int kind, bytes ip, int l4, lam, eni, inet):
        """True when ``(lam, eni, inet)`` are the forms the fast path would emit for IP packet
        ``ip`` (bytes, L4 header at ``l4``) arriving as ``kind`` of entry ``idx`` with the entry's
        learned tap flags (None for a tap the kind does not emit), compared in C: the core's
        learning check, once per connection. The forms are bytes (anything else is not equal);
        ``ip`` must be an IPv4 TCP/UDP packet the fast path would accept (ValueError otherwise)."""
        cdef hp_conn *c = self._conn(idx)
        cdef int64_t n = len(ip)
        cdef const uint8_t *src = <const uint8_t *>PyBytes_AS_STRING(ip)
        cdef hp_pkt p
        cdef uint8_t *outs[3]
        cdef uint8_t stack[3 * 1536]
        cdef uint8_t *buf = stack
        cdef int t
        if not 0 <= kind < 3:
            raise ValueError("kind must be 0, 1 or 2")
        if n == 0 or not hp_flow_parse4(src, n, 101, &p) or p.l4 != l4 or p.ip_len != n or p.proto != c.proto:
            raise ValueError("not an IPv4 TCP/UDP packet of this entry the fast path would take")
        cdef uint8_t flags = c.kind[kind]
        if lam is None or (eni is not None) != bool(flags & HP_K_ENI) or (inet is not None) != bool(flags & HP_K_INET):
            return False  # a tap the kind emits is missing, or one it does not emit is there
        wanted = (lam, eni, inet)
        for t in range(3):
            if wanted[t] is not None and (type(wanted[t]) is not bytes or len(wanted[t]) != n):
                return False
        if n > 1536:
            buf = <uint8_t *>malloc(3 * n)
            if buf == NULL:
                raise MemoryError()
        try:
            for t in range(3):
                outs[t] = buf + t * n if wanted[t] is not None else NULL
            hp_flow_render(c, kind, src, n, l4, outs, 1)
            for t in range(3):
                if wanted[t] is not None and memcmp(PyBytes_AS_STRING(wanted[t]), outs[t], n) != 0:
                    return False
            return True
        finally:
            if buf != stack:
                free(buf)

    # --- the fast path ----------------------------------------------------------------------
    def run(self, buffer, offsets, lengths, timestamps, linktypes, Py_ssize_t start, verdicts, reasons, tap_bufs,
            tap_idx, tap_off, tap_src, tap_head, tap_len, tap_state):
        """Forward packets ``start``.. on the fast path until one needs the slow path: binds the
        arrays (:class:`FlowBatch`, see there for their shapes) and calls :meth:`run_batch`.
        Returns ``(stop_index, stop_reason)``; stop_index == len(offsets) when all were handled."""
        return self.run_batch(FlowBatch(buffer, offsets, lengths, timestamps, linktypes, verdicts, reasons,
                                        tap_bufs, tap_idx, tap_off, tap_src, tap_head, tap_len, tap_state),
                              start)

    def run_batch(self, FlowBatch batch, Py_ssize_t start):
        """:meth:`run` over arrays bound once (a batch the loop resumes many times: binding ~20
        arrays costs more than a short run). Returns ``(stop_index, stop_reason)``."""
        cdef int why = 0, t
        cdef int64_t stop
        cdef Py_ssize_t count = batch.count
        if start < 0 or start > count:
            raise ValueError("start out of range")
        if count == start:
            return start, "end"
        for t in range(3):
            batch.b.tap_used[t] = batch.st[t]
            batch.b.tap_n[t] = batch.st[3 + t]
        with nogil:
            stop = hp_flow_run(&self._t, &batch.b, start, count, &why)
            self._t.stops[why] += 1
        for t in range(3):
            batch.st[t] = batch.b.tap_used[t]
            batch.st[3 + t] = batch.b.tap_n[t]
        if why == HP_STOP_BOUNDS:
            raise ValueError(f"frame {stop} (offset {batch.offs[stop]}, length {batch.lens[stop]}) lies outside "
                             "the buffer")
        return stop, FLOW_STOPS[why]


cdef class FlowBatch:
    """The arrays of one batch bound for :meth:`FlowTable.run_batch` (kept alive while bound).

    ``offsets``/``lengths`` int64, ``timestamps`` float64, ``linktypes`` int32 array or an int;
    ``verdicts``/``reasons`` uint8 outputs; per tap (lambda, eni, internet): ``tap_bufs[t]``
    a writable uint8 buffer and arrays with a row per packet: ``tap_idx/off/src[t]`` int64,
    ``tap_head/len[t]`` int32. Row r is batch packet ``idx[r]``, ``len[r]`` bytes: its first
    ``head[r]`` bytes at ``tap_bufs[t][off[r]:]``, the rest ``buffer[src[r] + head[r]:]``
    (head 0: the packet is the input's IP packet itself, nothing copied).
    ``tap_state`` int64[6] = bytes used per tap, rows used per tap (read and updated by each run).
    A tap buffer replaced by a larger one needs a new FlowBatch."""

    cdef hp_batch b
    cdef Py_ssize_t count
    cdef const uint8_t[::1] buf
    cdef const int64_t[::1] offs
    cdef const int64_t[::1] lens
    cdef const double[::1] tss
    cdef const int32_t[::1] lts
    cdef uint8_t[::1] vv
    cdef uint8_t[::1] rv
    cdef int64_t[::1] st
    cdef list _held  # the per-tap buffers, exported while bound (their pointers are in b)
    cdef uint8_t dummy

    def __init__(self, buffer, offsets, lengths, timestamps, linktypes, verdicts, reasons, tap_bufs, tap_idx,
                 tap_off, tap_src, tap_head, tap_len, tap_state):
        cdef uint8_t[::1] tb
        cdef int64_t[::1] a64
        cdef int32_t[::1] a32
        cdef int t
        self.buf = buffer
        self.offs = offsets
        self.lens = lengths
        self.tss = timestamps
        self.vv = verdicts
        self.rv = reasons
        self.st = tap_state
        self._held = []
        self.dummy = 0
        count = self.count = self.offs.shape[0]
        if (self.lens.shape[0] != count or self.tss.shape[0] != count or self.vv.shape[0] < count
                or self.rv.shape[0] < count):
            raise ValueError("batch arrays differ in length")
        if self.st.shape[0] < 6:
            raise ValueError("tap_state needs 6 counters")
        for t in range(3):
            tb = tap_bufs[t]
            self.b.tap_buf[t] = &tb[0] if tb.shape[0] else &self.dummy
            self.b.tap_cap[t] = tb.shape[0]
            self._held.append(tb)
            a64 = self._rows64(tap_idx[t])
            self.b.tap_idx[t] = &a64[0] if count else NULL
            a64 = self._rows64(tap_off[t])
            self.b.tap_off[t] = &a64[0] if count else NULL
            a64 = self._rows64(tap_src[t])
            self.b.tap_src[t] = &a64[0] if count else NULL
            a32 = self._rows32(tap_head[t])
            self.b.tap_head[t] = &a32[0] if count else NULL
            a32 = self._rows32(tap_len[t])
            self.b.tap_len[t] = &a32[0] if count else NULL
        self.b.buf = &self.buf[0] if self.buf.shape[0] else &self.dummy
        self.b.size = self.buf.shape[0]
        self.b.offs = &self.offs[0] if count else NULL
        self.b.lens = &self.lens[0] if count else NULL
        self.b.ts = &self.tss[0] if count else NULL
        if isinstance(linktypes, int) or _np.ndim(linktypes) == 0:
            self.b.lts = NULL
            self.b.lt = int(linktypes)
        else:
            self.lts = linktypes
            if self.lts.shape[0] != count:
                raise ValueError("linktypes and offsets differ in length")
            self.b.lts = &self.lts[0] if count else NULL
            self.b.lt = 0
        self.b.verdict = &self.vv[0] if count else NULL
        self.b.reason = &self.rv[0] if count else NULL

    def put(self, int64_t i, int verdict, int reason, dict taps):
        """A slow-path result of packet ``i``: its verdict and reason, and its form on each tap of
        ``taps`` (``{"lambda" | "eni" | "internet": bytes}``) as a row of that tap's own bytes
        after its rows so far (``tap_state`` updated). Returns -1, or the index of a tap whose
        buffer lacks room (nothing written then: the caller grows it, binds again and repeats)."""
        cdef Py_ssize_t pos = 0
        cdef PyObject *kp
        cdef PyObject *vp
        cdef int t
        cdef int64_t n, used, r
        cdef int64_t need[3]
        cdef const char *src[3]
        if not 0 <= i < self.count:
            raise ValueError("packet index out of range")
        if not 0 <= verdict <= 255 or not 0 <= reason <= 255:
            raise ValueError("verdict and reason are bytes")
        need[0] = need[1] = need[2] = -1
        while PyDict_Next(taps, &pos, &kp, &vp):
            key = <object>kp
            value = <object>vp
            if key == "lambda":
                t = 0
            elif key == "eni":
                t = 1
            elif key == "internet":
                t = 2
            else:
                raise ValueError(f"unknown tap {key!r}")
            if type(value) is not bytes:
                raise TypeError("tap forms are bytes")
            need[t] = len(<bytes>value)
            src[t] = PyBytes_AS_STRING(value)
        for t in range(3):
            if need[t] >= 0 and self.st[3 + t] >= self.count:
                raise ValueError("tap rows full")
            if need[t] > self.b.tap_cap[t] - self.st[t]:
                return t
        self.vv[i] = verdict
        self.rv[i] = reason
        for t in range(3):
            n = need[t]
            if n < 0:
                continue
            used = self.st[t]
            r = self.st[3 + t]
            if n:
                memcpy(self.b.tap_buf[t] + used, src[t], <size_t>n)
            self.b.tap_idx[t][r] = i
            self.b.tap_off[t][r] = used
            self.b.tap_src[t][r] = 0
            self.b.tap_head[t][r] = <int32_t>n
            self.b.tap_len[t][r] = <int32_t>n
            self.st[t] = used + n
            self.st[3 + t] = r + 1
        return -1

    def packet(self, int64_t i):
        """Packet ``i`` of the batch: ``(bytes, timestamp, link type)``."""
        if not 0 <= i < self.count:
            raise ValueError("packet index out of range")
        cdef int64_t off = self.offs[i], n = self.lens[i]
        if off < 0 or n < 0 or off + n > self.buf.shape[0]:
            raise ValueError("packet outside the buffer")
        return (PyBytes_FromStringAndSize(<const char *>&self.buf[off] if n else NULL, n), self.tss[i],
                self.lts[i] if self.b.lts != NULL else self.b.lt)

    cdef int64_t[::1] _rows64(self, rows):
        cdef int64_t[::1] a = rows
        if a.shape[0] < self.count:
            raise ValueError("tap row arrays need a row per packet")
        self._held.append(a)  # the buffer stays exported (cannot move) while bound
        return a

    cdef int32_t[::1] _rows32(self, rows):
        cdef int32_t[::1] a = rows
        if a.shape[0] < self.count:
            raise ValueError("tap row arrays need a row per packet")
        self._held.append(a)  # the buffer stays exported (cannot move) while bound
        return a


def flow_parse4(data, int linktype=101):
    """The fast path's own parser (hp_flow_parse4) on one frame: ``(src, dst, proto, sport, dport,
    tcp_flags, l3, l4, ip_len)``, or None when it leaves the frame to the full parser. For tests:
    whatever it accepts, :func:`parse` must parse to the same fields."""
    cdef const uint8_t[::1] buf = data
    cdef int64_t n = buf.shape[0]
    cdef hp_pkt p
    if n == 0 or not hp_flow_parse4(&buf[0], n, linktype, &p):
        return None
    return (p.src_lo, p.dst_lo, p.proto, p.sport, p.dport, p.tcp_flags, p.l3, p.l4, p.ip_len)


def flow_gather(tap, src, index, off, srcoff, head, length, heads=None):
    """Join the rows of one tap (see FlowTable.run) into one uint8 array, packet after packet;
    returns ``(array, offsets)``. With ``heads`` (uint8, a row of bytes per packet: capture record
    headers), each packet comes after its row, and the result is the bytes alone (a writer's
    records, made without gathering the packets first)."""
    cdef const uint8_t[::1] tv = tap
    cdef const uint8_t[::1] sv = src
    cdef const int64_t[::1] ov = _np.ascontiguousarray(off, dtype=_np.int64)
    cdef const int64_t[::1] so = _np.ascontiguousarray(srcoff, dtype=_np.int64)
    cdef const int32_t[::1] hv = _np.ascontiguousarray(head, dtype=_np.int32)
    lens = _np.ascontiguousarray(length, dtype=_np.int32)
    cdef const int32_t[::1] lv = lens
    cdef int64_t n = lv.shape[0], r, total = 0, width = 0
    cdef uint8_t dummy = 0
    cdef const uint8_t[:, ::1] hd
    cdef uint8_t *w
    if ov.shape[0] != n or so.shape[0] != n or hv.shape[0] != n:
        raise ValueError("row arrays differ in length")
    if heads is not None:
        hd = heads
        if hd.shape[0] != n:
            raise ValueError(f"{hd.shape[0]} header rows for {n} packets")
        width = hd.shape[1]
    offsets = _np.zeros(n, _np.int64)
    cdef int64_t[::1] offv = offsets
    for r in range(n):
        if hv[r] < 0 or lv[r] < hv[r] or (hv[r] and (ov[r] < 0 or ov[r] + hv[r] > tv.shape[0])) or (
                lv[r] > hv[r] and (so[r] < 0 or so[r] + lv[r] > sv.shape[0])):
            raise ValueError(f"row {r} lies outside its buffers")
        offv[r] = total
        total += lv[r]
    cdef uint8_t[::1] dv
    cdef const uint8_t *rows = NULL
    if heads is not None:
        out = PyBytes_FromStringAndSize(NULL, total + n * width)
        w = <uint8_t *>PyBytes_AS_STRING(out)
        if width:
            rows = &hd[0, 0]
    else:
        out = _np.empty(total, _np.uint8)
        dv = out
        w = &dv[0] if total else &dummy
    if n:
        with nogil:
            hp_flow_gather(&tv[0] if tv.shape[0] else &dummy, &sv[0] if sv.shape[0] else &dummy, n, &ov[0],
                           &so[0], &hv[0], &lv[0], w, rows, width)
    return out if heads is not None else (out, offsets)
