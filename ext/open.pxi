# open.pxi: planned opens inside the fast loop (ext/hp_open.h), for hyperplane/core.py.
#
# Opens is bound to one FlowTable (whose open hook it becomes) and to the FlowLogTable its
# records go to. The engine arms a template after each planned open it made in Python
# (hyperplane/core_open.py); later first packets the template matches are opened in the loop.
cimport cython
from libc.stdlib cimport calloc, realloc
from libc.string cimport memset

cdef extern from "hp_open.h" nogil:
    ctypedef struct hp_open_eni:
        int64_t conns
        int64_t peak
        int64_t cap
    ctypedef struct hp_tmpl:
        uint32_t next
        uint32_t gen
        uint32_t dst, src_lo, src_hi, nsub, rem
        uint16_t dport
        uint8_t proto, live, kflags, nat, nat_alloc, nat_proto
        uint32_t eni
        uint32_t earlier[4]
        uint32_t nearlier
        uint32_t eni_ip
        uint32_t nat_dst
        uint16_t nat_dport
        hp_ports *pool
        hp_nat_ports *nat_pool
        const uint32_t *nat_ips
        const hp_rec *keys[2]
        const uint8_t *modes[2]
        uint32_t npoints[2]
        uint8_t initial[256]
        double last
        uint64_t opened
        uint32_t group
    ctypedef struct hp_opened:
        double created
        uint64_t pkts[2]
        uint64_t bytes[2]
        uint32_t tmpl
        uint32_t exchanges
        uint64_t seq
        uint32_t rec[2][4]
        uint8_t nrec[2]
        uint8_t flags[2]
        uint8_t back
        uint8_t last_reply
    ctypedef struct hp_opener:
        hp_tmpl *tmpls
        uint32_t ntmpls, cap_tmpls
        uint32_t *buckets
        uint32_t nbuckets
        hp_open_eni *enis
        uint32_t nenis, cap_enis
        hp_opened *side
        uint32_t cap_side
        hp_fl *fl
        int64_t interval
        double until, since
        uint64_t seq
        int64_t base, live, peak
        uint64_t opened, released
        uint64_t declined[8]  # HP_DECLINE_COUNT (OPEN_DECLINES)
        int last_decline
        int enabled
        int error
    int HP_OPEN_RECS, HP_OPEN_ENIS, HP_OPEN_NONE, HP_DECLINE_COUNT
    void hp_open_init(hp_opener *op)
    void hp_open_free(hp_opener *op)
    uint32_t hp_open_hash(uint8_t proto, uint32_t dst, uint16_t dport)
    int hp_open_side_room(hp_opener *op, const hp_flow_table *t)
    int hp_open_first(hp_opener *op, hp_flow_table *t, uint32_t idx, double ts)
    uint32_t hp_open_release(hp_opener *op, hp_flow_table *t, uint32_t idx, int slot)
    int hp_open_try(void *ctx, hp_flow_table *t, const hp_pkt *p, double ts)
    void hp_open_attach(hp_opener *op, hp_flow_table *t)
    void hp_open_detach(hp_flow_table *t)

#: Why the fast loop's open hook declined, by code (the order of HP_DECLINE_* in hp_open.h).
OPEN_DECLINES = ("no-template", "time", "state", "event", "due", "eni", "ports", "other")
#: Most templates kept at once (a flood of destinations disarms them all and starts again).
OPEN_TEMPLATES_MAX = 65536
assert len(OPEN_DECLINES) == HP_DECLINE_COUNT


@cython.no_gc_clear  # __dealloc__ unhooks the table it holds, which a cycle collection must not clear first
cdef class Opens:
    """The templates of planned opens the fast loop makes itself (see hp_open.h), the ENI slot
    counts they take slots from, and the side records of the connections they opened (C-opened:
    their flow-log record ids, the packets counted into them, the open order) until the engine
    adopts them. Template ids and ENI slots are the indices the engine keeps its Python facts by."""

    cdef hp_opener _op
    cdef FlowTable ft
    cdef FlowLogTable fl
    cdef list _held     # per template: what its pointers point into
    cdef list _enis     # per ENI slot: the control plane's HyperplaneEni

    def __cinit__(self, FlowTable ft, FlowLogTable fl):
        hp_open_init(&self._op)
        self.ft = ft
        self.fl = fl
        self._held = []
        self._enis = []
        self._op.fl = &fl._t
        self._op.interval = fl.interval
        ft._op = &self._op
        hp_open_attach(&self._op, &ft._t)

    def __dealloc__(self):
        if self.ft is not None:
            self.ft._op = NULL
            hp_open_detach(&self.ft._t)
        hp_open_free(&self._op)

    # --- ENI slots --------------------------------------------------------------------------------
    def eni_slot(self, eni, int64_t capacity):
        """A slot for a HyperplaneEni (its ``connections`` and ``peak_connections`` are copied in
        by :meth:`push` and back by :meth:`pull`); returns its index."""
        cdef hp_open_eni *grown
        cdef uint32_t cap
        if self._op.nenis == self._op.cap_enis:
            cap = self._op.cap_enis * 2 if self._op.cap_enis else 8
            grown = <hp_open_eni *>realloc(self._op.enis, cap * sizeof(hp_open_eni))
            if grown == NULL:
                raise MemoryError()
            self._op.enis = grown
            self._op.cap_enis = cap
        self._op.enis[self._op.nenis].conns = eni.connections
        self._op.enis[self._op.nenis].peak = eni.peak_connections
        self._op.enis[self._op.nenis].cap = capacity
        self._enis.append(eni)
        self._op.nenis += 1
        return self._op.nenis - 1

    # --- templates --------------------------------------------------------------------------------
    def arm(self, uint32_t gen, int proto, uint32_t dst, int dport, uint32_t src_lo, uint32_t src_hi,
            uint32_t nsub, uint32_t rem, uint32_t eni_slot, earlier, uint32_t eni_ip, int kflags, bint nat,
            PortPool pool, NatPortPool nat_pool, nat_step, FlowLogPoints out_points, FlowLogPoints back_points,
            initial, uint32_t group=0):
        """A template: first packets of ``proto`` to ``dst``:``dport`` from ``src_lo``..``src_hi``
        with ``src % nsub == rem`` (``nsub`` 0: any) open in the loop on ENI slot ``eni_slot``
        (``earlier``: the slots of the ENIs of its group the control plane tries first, which must
        be full), from ``pool`` (and, with ``nat_step`` = (proto, dst, dport), a port of
        ``nat_pool``), with tap flags ``kflags`` for both kinds, a NAT mapping when ``nat``, the
        records of the legs' interned points, the opening state ``initial[tcp flags]`` (UDP:
        ``initial[0]``; None: decline), under configuration generation ``gen``; its opens are
        accounted to ``group`` (:meth:`pull`). A template with the same match is replaced. Returns
        the template's id."""
        cdef hp_tmpl *tm
        cdef hp_tmpl *other
        cdef uint32_t ref, j, cap
        cdef uint32_t *buckets
        cdef hp_tmpl *grown
        cdef uint32_t[::1] ips
        if out_points.table is not self.fl or back_points.table is not self.fl:
            raise ValueError("log points interned by another table")
        if out_points.count > HP_OPEN_RECS or back_points.count > HP_OPEN_RECS or len(earlier) > HP_OPEN_ENIS:
            return None
        if eni_slot >= self._op.nenis or any(e >= self._op.nenis for e in earlier):
            raise ValueError("unknown ENI slot")
        if len(initial) != 256:
            raise ValueError("initial needs 256 states")
        if self._op.ntmpls >= OPEN_TEMPLATES_MAX:
            self.disarm_all()
            if self._op.ntmpls >= OPEN_TEMPLATES_MAX:
                return None
        if self._op.nbuckets == 0:
            self._op.buckets = <uint32_t *>calloc(4096, sizeof(uint32_t))
            if self._op.buckets == NULL:
                raise MemoryError()
            self._op.nbuckets = 4096
        ref = self._op.buckets[hp_open_hash(<uint8_t>proto, dst, <uint16_t>dport) & (self._op.nbuckets - 1)]
        tm = NULL
        while ref:
            other = &self._op.tmpls[ref - 1]
            if (other.live and other.proto == proto and other.dst == dst and other.dport == dport
                    and other.src_lo == src_lo and other.src_hi == src_hi and other.nsub == nsub and other.rem == rem):
                other.live = 0  # replaced: C-opened connections keep pointing at it
                break
            ref = other.next
        if self._op.ntmpls == self._op.cap_tmpls:
            cap = self._op.cap_tmpls * 2 if self._op.cap_tmpls else 64
            grown = <hp_tmpl *>realloc(self._op.tmpls, cap * sizeof(hp_tmpl))
            if grown == NULL:
                raise MemoryError()
            self._op.tmpls = grown
            self._op.cap_tmpls = cap
        tm = &self._op.tmpls[self._op.ntmpls]
        memset(tm, 0, sizeof(hp_tmpl))
        tm.gen = gen
        tm.proto = <uint8_t>proto
        tm.dst = dst
        tm.dport = <uint16_t>dport
        tm.src_lo = src_lo
        tm.src_hi = src_hi
        tm.nsub = nsub
        tm.rem = rem
        tm.group = group
        tm.eni = eni_slot
        tm.nearlier = len(earlier)
        for j in range(tm.nearlier):
            tm.earlier[j] = earlier[j]
        tm.eni_ip = eni_ip
        tm.kflags = <uint8_t>(kflags & (HP_K_ENI | HP_K_INET | HP_K_NATRW))
        tm.nat = nat
        tm.pool = &pool._p
        held = [pool, out_points, back_points]
        if nat_step is not None:
            if nat_pool is None:
                raise ValueError("a NAT gateway port needs its pool")
            tm.nat_alloc = 1
            tm.nat_proto = <uint8_t>nat_step[0]
            tm.nat_dst = nat_step[1]
            tm.nat_dport = <uint16_t>nat_step[2]
            tm.nat_pool = &nat_pool._n
            ips = _np.array([int(a) for a in nat_pool.public_ips], dtype=_np.uint32)
            tm.nat_ips = &ips[0]
            held += [nat_pool, ips]
        tm.keys[0] = out_points.keys
        tm.modes[0] = out_points.modes
        tm.npoints[0] = <uint32_t>out_points.count
        tm.keys[1] = back_points.keys
        tm.modes[1] = back_points.modes
        tm.npoints[1] = <uint32_t>back_points.count
        for j in range(256):
            tm.initial[j] = HP_OPEN_NONE if initial[j] is None else <uint8_t>initial[j]
        j = hp_open_hash(<uint8_t>proto, dst, <uint16_t>dport) & (self._op.nbuckets - 1)
        tm.next = self._op.buckets[j]
        tm.live = 1
        self._op.ntmpls += 1
        self._op.buckets[j] = self._op.ntmpls
        self._held.append(held)
        return self._op.ntmpls - 1

    def disarm_all(self):
        """No template opens anything any more (the engine's facts changed); their storage is
        reused once no C-opened connection refers to one."""
        cdef uint32_t j
        for j in range(self._op.ntmpls):
            self._op.tmpls[j].live = 0
        if self._op.nbuckets:
            memset(self._op.buckets, 0, self._op.nbuckets * sizeof(uint32_t))
        if self._op.live == 0:
            self._op.ntmpls = 0
            self._held = []

    @property
    def memory_bytes(self):
        """Bytes held in C: the templates, their buckets, the ENI slots, the side records."""
        return (self._op.cap_tmpls * sizeof(hp_tmpl) + self._op.nbuckets * sizeof(uint32_t)
                + self._op.cap_enis * sizeof(hp_open_eni) + self._op.cap_side * sizeof(hp_opened))

    @property
    def templates(self):
        """Templates kept (armed or referred to by C-opened connections)."""
        return self._op.ntmpls

    # --- the engine's facts in and out of a run -------------------------------------------------
    def push(self, double until, double from_, int64_t base, int64_t peak, bint enabled):
        """Before a run: open only at ``from_`` <= time < ``until``; the conntrack table counts
        ``base`` connections (peak ``peak``); ``enabled`` False: open nothing; the ENI slots take
        their ENIs' counts."""
        cdef uint32_t j
        self._op.until = until
        self._op.since = from_
        self._op.base = base
        self._op.peak = peak
        self._op.enabled = enabled
        for j in range(self._op.nenis):
            eni = self._enis[j]
            self._op.enis[j].conns = eni.connections
            self._op.enis[j].peak = eni.peak_connections

    def pull(self):
        """After a run: None when it opened and released nothing, else the ENIs take their slots'
        counts and the result is ``(conntrack peak, opens, [(group, time of its last open), ...])``
        for the groups (``arm``) whose templates opened connections, by that time; raises
        MemoryError when the loop ran out of memory."""
        cdef uint32_t j
        cdef uint64_t total = 0
        cdef hp_tmpl *tm
        if self._op.error:
            self._op.error = 0
            raise MemoryError("planned opens in the fast loop")
        if not self._op.opened and not self._op.released:
            return None
        for j in range(self._op.nenis):
            eni = self._enis[j]
            eni.connections = self._op.enis[j].conns
            eni.peak_connections = self._op.enis[j].peak
        last = {}
        if self._op.opened:
            for j in range(self._op.ntmpls):
                tm = &self._op.tmpls[j]
                if tm.opened:
                    total += tm.opened
                    tm.opened = 0
                    if tm.last > last.get(tm.group, -INFINITY):
                        last[tm.group] = tm.last
        self._op.opened = self._op.released = 0
        return self._op.peak, total, sorted(last.items(), key=_second)

    def open(self, bytes frame, double ts, int linktype):
        """The fast loop's open hook for one first packet (``frame``, a miss of the table, at
        ``ts``), run by the engine right after arming its template: True when it opened it."""
        cdef hp_pkt p
        cdef int64_t n = len(frame)
        if n == 0 or not hp_flow_parse4(<const uint8_t *>PyBytes_AS_STRING(frame), n, linktype, &p):
            return False
        if hp_flow_find(&self.ft._t, <uint32_t>p.src_lo, <uint32_t>p.dst_lo, p.sport, p.dport, p.proto) >= 0:
            return False
        return bool(hp_open_try(&self._op, &self.ft._t, &p, ts))

    @property
    def last_decline(self):
        """Why the open hook declined last (a name of ``OPEN_DECLINES``): the packet a ``miss``
        stop of the fast loop is at."""
        return OPEN_DECLINES[self._op.last_decline]

    def declines(self):
        """Why the open hook declined since the last call, by reason (see ``OPEN_DECLINES``); resets."""
        cdef int k
        out = {OPEN_DECLINES[k]: self._op.declined[k] for k in range(HP_DECLINE_COUNT) if self._op.declined[k]}
        for k in range(HP_DECLINE_COUNT):
            self._op.declined[k] = 0
        return out

    # --- C-opened connections -----------------------------------------------------------------------
    @property
    def live(self):
        """C-opened connections not adopted yet."""
        return self._op.live

    def is_c(self, uint32_t idx):
        """Whether entry ``idx`` is C-opened and not adopted."""
        return bool(hp_open_is_c(&self._op, idx))

    cdef hp_opened *_side(self, uint32_t idx) except NULL:
        if not hp_open_is_c(&self._op, idx):
            raise KeyError(f"flow entry {idx} is not C-opened")
        return &self._op.side[idx]

    def template_of(self, uint32_t idx):
        return self._side(idx).tmpl - 1

    def mark(self, uint32_t idx):
        """Entry ``idx`` was opened by the engine itself: it takes the next number in the open order."""
        if hp_open_side_room(&self._op, &self.ft._t) != 0:
            raise MemoryError()
        self._op.side[idx].tmpl = 0
        self._op.side[idx].seq = self._op.seq
        self._op.seq += 1

    def seq_of(self, uint32_t idx):
        return self._op.side[idx].seq if idx < self._op.cap_side else 0

    def first(self, uint32_t idx, double ts):
        """The first reply of C-opened entry ``idx`` came at ``ts`` (an event the engine met): its records."""
        self._side(idx)
        if hp_open_first(&self._op, &self.ft._t, idx, ts) != 0:
            raise MemoryError("flow-log records")

    def release(self, uint32_t idx):
        """Release C-opened entry ``idx`` (taken due and expired by the engine): its last counts,
        ports, entry; not its ENI slot (the engine closes it). Returns its template id."""
        self._side(idx)
        return hp_open_release(&self._op, &self.ft._t, idx, 0)

    def unadopted(self):
        """The C-opened entries, in open order."""
        cdef uint32_t i
        if not self._op.live:
            return []
        out = [(self._op.side[i].seq, i) for i in range(min(self._op.cap_side, self.ft._t.top))
               if self._op.side[i].tmpl]
        out.sort()
        return [i for _, i in out]

    def info(self, uint32_t idx):
        """What adopting C-opened entry ``idx`` needs (its entry folded first): ``(template id,
        created, packets, bytes, flags, exchanges, last direction was a reply, records of the
        request leg, of the reply leg or None)``; packets, bytes and flags by direction."""
        cdef hp_opened *s = self._side(idx)
        cdef int d
        recs = [[s.rec[d][j] for j in range(s.nrec[d])] for d in range(2)]
        return (s.tmpl - 1, s.created, (s.pkts[0], s.pkts[1]), (s.bytes[0], s.bytes[1]), (s.flags[0], s.flags[1]),
                s.exchanges, bool(s.last_reply), recs[0], recs[1] if s.back else None)

    def adopted(self, uint32_t idx):
        """Entry ``idx`` is the engine's now."""
        self._side(idx).tmpl = 0
        self._op.live -= 1


def _second(item):
    return item[1]
