# Flow-log records in C (hp_flowlog.h): FlowLogTable, the core backend's record store, and
# FlowLogRows, the records a flush (or a look at the pending ones) took out of it.
#
# FlowLogTable takes the log points of hyperplane.flowlogs.FlowLogAggregator.record_all /
# add_all (tuples (interface id, src, dst, sport, dport, action, extra)) and makes the same
# records, by the same key, with the same counters, returned in the same order by a flush
# (tests/unit/test_core_flowlog.py drives both in lockstep). A record is an int id; interface
# ids, addresses and extra dicts are interned here (addresses: their text is made once).

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8

cimport cython

cdef extern from "hp_mem.h" nogil:
    void *hp_big_alloc(size_t size)
    void hp_big_free(void *p, size_t size)

cdef extern from "hp_flowlog.h" nogil:
    ctypedef struct hp_rec:
        int64_t window
        int64_t start
        int64_t end
        uint64_t packets
        uint64_t bytes
        uint64_t seq
        uint32_t iface
        uint32_t src
        uint32_t dst
        uint32_t extra
        uint16_t sport
        uint16_t dport
        uint8_t proto
        uint8_t action
        uint8_t flags
        uint8_t live

    ctypedef struct hp_fl:
        hp_rec *recs
        uint32_t top
        uint32_t cap
        uint32_t live
        uint32_t icap

    int hp_fl_init(hp_fl *t)
    void hp_fl_free(hp_fl *t)
    int64_t hp_fl_get(hp_fl *t, const hp_rec *key, int64_t second)
    int64_t hp_fl_window(double ts, int64_t interval, int64_t *second)
    int hp_fl_points(hp_fl *t, const hp_rec *keys, const uint8_t *modes, uint32_t n, uint8_t proto,
                     uint16_t eni_port, uint16_t nat_port, int64_t interval, double ts, uint32_t *out)
    void hp_fl_count(hp_fl *t, uint32_t id, uint64_t packets, uint64_t nbytes, int64_t end, uint8_t flags)
    int hp_fl_flush(hp_fl *t, double before, int all, int64_t interval, hp_rec **out, uint32_t *n,
                    size_t *bytes)
    int hp_fl_reindex(hp_fl *t, uint32_t icap)
    void hp_fl_sort(hp_rec *recs, uint32_t n)
    size_t hp_fl_line_v2(char *buf, const char *prefix, size_t plen, const char *src, size_t slen,
                         const char *dst, size_t dlen, const hp_rec *r)

_FLOWLOG_ACTIONS = ("ACCEPT", "REJECT")


def _flowlog_weakset():
    import weakref

    return weakref.WeakSet()


cdef class FlowLogPoints:
    """Log points interned by one :class:`FlowLogTable` (``FlowLogTable.points``): what
    ``record_points`` needs to make the ACCEPT records of a packet at each of them for a
    connection whose ENI and NAT ports fill the ports the points leave open."""

    cdef hp_rec *keys
    cdef uint8_t *modes  # per point: 1 sport is the ENI port, 2 the NAT port; 4 / 8 the same for dport
    cdef readonly Py_ssize_t count
    cdef object table
    cdef object __weakref__  # the table tracks its live points (their address ids follow its compaction)

    def __dealloc__(self):
        free(self.keys)
        free(self.modes)

    def __len__(self):
        return self.count


cdef class FlowLogTable:
    """Flow-log records by (interface, 5-tuple, action, window): the store behind the core
    backend's aggregator. ``record_all`` / ``add_all`` return record ids (ints, valid until the
    record is flushed); ``flush`` returns :class:`FlowLogRows`."""

    cdef hp_fl _t
    cdef readonly int64_t interval
    cdef dict _iface_id, _addr_id, _extra_id, _extra_content
    cdef list _iface_text, _addr_text, _addr_key, _extra_obj
    cdef object _aws  # tcp flags byte -> AWS tcp-flags bits (a bytes of 256)
    cdef frozenset _extra_fields
    cdef object _points  # the live FlowLogPoints interned here (a WeakSet)

    def __cinit__(self, int64_t interval, aws_flags, extra_fields):
        if interval <= 0:
            raise ValueError("interval must be positive")
        if hp_fl_init(&self._t) != 0:
            raise MemoryError()
        self.interval = interval
        self._iface_id, self._addr_id, self._extra_id, self._extra_content = {}, {}, {}, {}
        self._iface_text, self._addr_text, self._addr_key = [], [], []
        self._extra_obj = [None]
        self._points = _flowlog_weakset()
        self._aws = bytes(aws_flags)
        self._extra_fields = frozenset(extra_fields)
        if len(self._aws) != 256:
            raise ValueError("aws_flags: 256 values")

    def __dealloc__(self):
        hp_fl_free(&self._t)

    def __len__(self):
        return self._t.live

    @property
    def memory_bytes(self):
        return self._t.cap * sizeof(hp_rec) + self._t.icap * 8

    cdef uint32_t _iface(self, name) except? 0xFFFFFFFF:
        got = self._iface_id.get(name)
        if got is None:
            got = self._iface_id[name] = len(self._iface_text)
            self._iface_text.append(name)
        return got

    cdef uint32_t _addr(self, value) except? 0xFFFFFFFF:
        got = self._addr_id.get(value)
        if got is None:
            text = value if isinstance(value, str) else _flowlog_address_text(value, False)
            got = self._addr_id[value] = len(self._addr_text)
            self._addr_text.append(text)
            self._addr_key.append(value)
        return got

    cdef uint32_t _extra(self, extra) except? 0xFFFFFFFF:
        # By identity first (a plan's log point passes the same dict for every connection), else
        # by content; the identity cache is bounded (dicts made per call would fill it).
        if not extra:
            return 0
        got = self._extra_id.get(id(extra))
        if got is not None and self._extra_obj[got] is extra:
            return got
        content = tuple(extra.items())
        got = self._extra_content.get(content)
        if got is None:
            for name in extra:
                if name not in self._extra_fields:
                    raise TypeError(f"unknown flow-log attribute {name!r}")
            got = self._extra_content[content] = len(self._extra_obj)
            self._extra_obj.append(extra)
        if len(self._extra_id) >= 4096:
            self._extra_id.clear()
        self._extra_id[id(extra)] = got
        return got

    cdef int64_t _window(self, double ts, int64_t *second) except? -1:
        return hp_fl_window(ts, self.interval, second)

    cdef list _records(self, logs, int proto, double ts):
        cdef hp_rec key
        cdef int64_t second, got
        key.window = self._window(ts, &second)
        key.proto = <uint8_t>proto
        out = []
        for eni_id, src, dst, sport, dport, action, extra in logs:
            if action == "ACCEPT":
                key.action = 0
            elif action == "REJECT":
                key.action = 1
            else:
                raise ValueError(f"flow-log action must be ACCEPT or REJECT, not {action!r}")
            key.extra = self._extra(extra)
            key.live = 2 if key.extra != 0 and extra.get("type") == "IPv6" else 0
            key.iface = self._iface(eni_id)
            key.src = self._addr(src)
            key.dst = self._addr(dst)
            key.sport = <uint16_t>sport
            key.dport = <uint16_t>dport
            got = hp_fl_get(&self._t, &key, second)
            if got < 0:
                raise MemoryError("flow-log records")
            out.append(got)
        return out

    def points(self, points, int eni_port_mark):
        """Intern log points ``(interface id, src, dst, sport, dport, extra)`` for
        :meth:`record_points`: a port equal to ``eni_port_mark`` stands for the connection's ENI
        port, None for its NAT gateway port."""
        cdef FlowLogPoints out = FlowLogPoints()
        cdef Py_ssize_t n = len(points), j = 0
        cdef hp_rec *key
        cdef uint8_t mode
        out.table = self
        self._points.add(out)
        out.keys = <hp_rec *>malloc(sizeof(hp_rec) * (n if n else 1))
        out.modes = <uint8_t *>malloc(n if n else 1)
        if out.keys == NULL or out.modes == NULL:
            raise MemoryError()
        for eni_id, src, dst, sport, dport, extra in points:
            key = &out.keys[j]
            key.extra = self._extra(extra)
            key.live = 2 if key.extra != 0 and extra.get("type") == "IPv6" else 0
            key.iface = self._iface(eni_id)
            key.src = self._addr(src)
            key.dst = self._addr(dst)
            key.action = 0
            mode = 0
            if sport is None:
                mode |= 2
            elif sport == eni_port_mark:
                mode |= 1
            else:
                key.sport = <uint16_t>sport
            if dport is None:
                mode |= 8
            elif dport == eni_port_mark:
                mode |= 4
            else:
                key.dport = <uint16_t>dport
            out.modes[j] = mode
            j += 1
            out.count = j
        return out

    def record_points(self, FlowLogPoints points, int proto, int eni_port, int nat_port, double ts):
        """:meth:`record_all` of the ACCEPT logs at ``points`` for a connection with these ENI
        and NAT ports: the same records, without a tuple per log."""
        if points.table is not self:
            raise ValueError("log points interned by another table")
        cdef Py_ssize_t j
        cdef uint32_t *ids = <uint32_t *>malloc(max(points.count, 1) * sizeof(uint32_t))
        if ids == NULL:
            raise MemoryError()
        try:
            if hp_fl_points(&self._t, points.keys, points.modes, <uint32_t>points.count, <uint8_t>proto,
                            <uint16_t>eni_port, <uint16_t>nat_port, self.interval, ts, ids) != 0:
                raise MemoryError("flow-log records")
            return [ids[j] for j in range(points.count)]
        finally:
            free(ids)

    def record_all(self, logs, int proto, double ts):
        """The records of one packet at ``ts`` logged at ``logs``' points (made when the first),
        their time span stretched to ``ts``, the packet not counted: their ids in order."""
        return self._records(logs, proto, ts)

    def add_all(self, logs, int proto, uint64_t nbytes, double ts, int tcp_flags=0):
        """:meth:`record_all`, counting the packet (``nbytes``, ``tcp_flags``) into each."""
        ids = self._records(logs, proto, ts)
        cdef uint8_t aws = self._aws[tcp_flags & 0xFF]
        cdef uint32_t rid
        cdef hp_rec *r
        for i in ids:
            rid = i
            r = &self._t.recs[rid]
            r.packets += 1
            r.bytes += nbytes
            r.flags |= aws
        return ids

    def count(self, ids, uint64_t packets, uint64_t nbytes, int64_t end, int aws):
        """Count ``packets`` packets of ``nbytes`` bytes in all, the last at second ``end``, with
        tcp-flags bits ``aws``, into each record of ``ids`` (the core's fold)."""
        cdef uint32_t rid
        for i in ids:
            rid = i
            if rid >= self._t.top or not self._t.recs[rid].live:
                raise KeyError(f"flow-log record {rid} is gone")
            hp_fl_count(&self._t, rid, packets, nbytes, end, <uint8_t>aws)

    def get(self, uint32_t rid):
        """Record ``rid`` as a dict of its fields (for tests and debugging)."""
        if rid >= self._t.top or not self._t.recs[rid].live:
            raise KeyError(rid)
        cdef hp_rec *r = &self._t.recs[rid]
        return {"interface_id": self._iface_text[r.iface], "srcaddr": _flowlog_text(self._addr_text, self._addr_key, r.src, r.live),
                "dstaddr": _flowlog_text(self._addr_text, self._addr_key, r.dst, r.live), "srcport": r.sport, "dstport": r.dport, "protocol": r.proto,
                "action": _FLOWLOG_ACTIONS[r.action], "window": r.window, "start": r.start, "end": r.end,
                "packets": r.packets, "bytes": r.bytes, "tcp_flags": r.flags}

    def flush(self, before=None, bint keep=False):
        """Remove and return the records whose window ended at or before ``before`` (all when
        None), by window then creation. ``keep``: return them without removing (pending ones)."""
        cdef hp_rec *got
        cdef uint32_t n
        cdef uint32_t i
        cdef size_t size
        if keep:
            return self._peek()
        if hp_fl_flush(&self._t, 0.0 if before is None else float(before), before is None, self.interval,
                       &got, &n, &size) != 0:
            raise MemoryError("flow-log flush")
        rows = FlowLogRows.__new__(FlowLogRows)
        (<FlowLogRows>rows)._own(got, n, size, self._iface_text, self._addr_text, self._addr_key, self._extra_obj)
        if n and len(self._addr_text) > 4 * self._t.live + 4096:
            self._compact()
        return rows

    cdef object _peek(self):
        # every live record, sorted, copied (flush semantics without removal)
        cdef uint32_t i, k = 0
        cdef size_t size = max(self._t.live, 1) * sizeof(hp_rec)
        cdef hp_rec *got = <hp_rec *>hp_big_alloc(size)
        if got == NULL:
            raise MemoryError()
        for i in range(self._t.top):
            if self._t.recs[i].live:
                got[k] = self._t.recs[i]
                k += 1
        hp_fl_sort(got, k)
        rows = FlowLogRows.__new__(FlowLogRows)
        (<FlowLogRows>rows)._own(got, k, size, self._iface_text, self._addr_text, self._addr_key, self._extra_obj)
        return rows

    cdef void _compact(self):
        # Addresses no live record and no live interned points refer to are forgotten (a long
        # capture to ever new addresses must not grow the tables); the ids of the records and
        # points are renumbered (the points' arrays in place: the core's templates point at them).
        cdef uint32_t i
        cdef Py_ssize_t j
        cdef hp_rec *r
        cdef FlowLogPoints points
        new_id = {}
        texts, keys = [], []
        old_text, old_key = self._addr_text, self._addr_key
        for i in range(self._t.top):
            r = &self._t.recs[i]
            if not r.live:
                continue
            for old in (r.src, r.dst):
                if old not in new_id:
                    new_id[old] = len(texts)
                    texts.append(old_text[old])
                    keys.append(old_key[old])
            r.src = new_id[r.src]
            r.dst = new_id[r.dst]
        for points in list(self._points):
            for j in range(points.count):
                r = &points.keys[j]
                for old in (r.src, r.dst):
                    if old not in new_id:
                        new_id[old] = len(texts)
                        texts.append(old_text[old])
                        keys.append(old_key[old])
                r.src = new_id[r.src]
                r.dst = new_id[r.dst]
        self._addr_text, self._addr_key = texts, keys
        self._addr_id = {key: k for k, key in enumerate(keys)}
        hp_fl_reindex(&self._t, self._t.icap)  # the hashes changed with the ids

    @property
    def address_count(self):
        """Addresses interned (those of live records, and of records made since the last flush)."""
        return len(self._addr_text)

    def __deepcopy__(self, memo):
        raise TypeError("a FlowLogTable is not copied (explain's copy of the engine takes a fresh aggregator)")


cdef class FlowLogRows:
    """Records taken out of a :class:`FlowLogTable`, by window then creation: ``records(account)``
    makes :class:`hyperplane.flowlogs.FlowRecord` objects, ``lines_v2(account)`` the default
    format's lines directly; ``windows`` / ``starts`` give each record's window and start."""

    cdef hp_rec *_rows
    cdef uint32_t _n
    cdef size_t _bytes  # the block _rows is (hp_big_free)
    cdef list _iface_text, _addr_text, _addr_key, _extra_obj

    def __dealloc__(self):
        hp_big_free(self._rows, self._bytes)

    cdef void _own(self, hp_rec *rows, uint32_t n, size_t size, list ifaces, list addrs, list keys, list extras):
        self._rows = rows
        self._n = n
        self._bytes = size
        self._iface_text = ifaces
        self._addr_text = addrs
        self._addr_key = keys
        self._extra_obj = extras

    def __len__(self):
        return self._n

    @property
    def windows(self):
        """Each row's window start (seconds), as an int64 array."""
        cdef uint32_t i
        out = _np.empty(self._n, _np.int64)
        cdef int64_t[::1] v = out
        for i in range(self._n):
            v[i] = self._rows[i].window
        return out

    @property
    def starts(self):
        """Each row's start second, as an int64 array."""
        cdef uint32_t i
        out = _np.empty(self._n, _np.int64)
        cdef int64_t[::1] v = out
        for i in range(self._n):
            v[i] = self._rows[i].start
        return out

    def records(self, account_id):
        """The rows as FlowRecord objects."""
        from hyperplane.flowlogs import FlowRecord
        cdef uint32_t i
        cdef hp_rec *r
        out = []
        for i in range(self._n):
            r = &self._rows[i]
            record = FlowRecord(account_id, self._iface_text[r.iface],
                                _flowlog_text(self._addr_text, self._addr_key, r.src, r.live),
                                _flowlog_text(self._addr_text, self._addr_key, r.dst, r.live),
                                r.sport, r.dport, r.proto, r.start, _FLOWLOG_ACTIONS[r.action], r.window,
                                self._extra_obj[r.extra])
            record.packets = r.packets
            record.bytes = r.bytes
            record.end = r.end
            record.tcp_flags = r.flags
            out.append(record)
        return out

    cdef Py_ssize_t _line(self, uint32_t i, char *buf, list prefixes) except -1:
        # row i in the default format into buf (room for its prefix + 2 * 46 + 7 * 21 + 10 bytes:
        # 1024 always do), no newline; returns its length
        cdef hp_rec *r = &self._rows[i]
        cdef Py_ssize_t plen, slen, dlen
        cdef const char *ptext
        cdef const char *stext
        cdef const char *dtext
        prefix = prefixes[r.iface]
        src = _flowlog_text(self._addr_text, self._addr_key, r.src, r.live)  # held: their buffers are read below
        dst = _flowlog_text(self._addr_text, self._addr_key, r.dst, r.live)
        ptext = PyUnicode_AsUTF8AndSize(prefix, &plen)
        stext = PyUnicode_AsUTF8AndSize(src, &slen)
        dtext = PyUnicode_AsUTF8AndSize(dst, &dlen)
        if plen > 800 or slen > 45 or dlen > 45:
            raise ValueError("flow-log interface id or address too long")
        return hp_fl_line_v2(buf, ptext, plen, stext, slen, dtext, dlen, r)

    def lines_v2(self, account_id):
        """The rows in the default (version 2) format, one str each, as FlowRecord.format gives
        (composed in C)."""
        cdef uint32_t i
        cdef char buf[1024]
        cdef Py_ssize_t n
        prefixes = [f"2 {account_id or '-'} {name} " for name in self._iface_text]
        out = []
        for i in range(self._n):
            n = self._line(i, buf, prefixes)
            out.append(PyUnicode_DecodeUTF8(buf, n, NULL))
        return out

    def write_v2(self, account_id, write, Py_ssize_t chunk=1 << 20):
        """The lines of :meth:`lines_v2` as UTF-8, each ending in a newline, handed to ``write`` in
        pieces of about ``chunk`` bytes, whole lines each: memoryviews of one buffer that the next
        piece overwrites (``write`` writes or copies it at once). A file's ``write`` takes them as
        they are, and the lines are never all in memory at once (the interface prefixes and the
        addresses are resolved to UTF-8 once). Returns the bytes written."""
        cdef _V2Texts texts
        cdef uint32_t i = 0, stop
        cdef Py_ssize_t used, total = 0, per
        if not self._n:
            return 0
        texts = _V2Texts(self, account_id)
        per = max(chunk // texts.line_max, 1)  # lines per piece, each at most line_max bytes
        buf = bytearray(per * texts.line_max)
        view = memoryview(buf)
        while i < self._n:
            stop = <uint32_t>min(<Py_ssize_t>self._n, <Py_ssize_t>i + per)
            used = self._lines_into(texts, buf, i, stop)
            write(view[:used])
            total += used
            i = stop
        return total

    cdef Py_ssize_t _lines_into(self, _V2Texts texts, char *out, uint32_t start, uint32_t stop) except -1:
        # rows start..stop in the default format at out (room for line_max bytes a row), each
        # line ending in a newline; returns the bytes written
        cdef uint32_t i
        cdef Py_ssize_t used = 0, n
        cdef hp_rec *r
        for i in range(start, stop):
            r = &self._rows[i]
            if r.live & 2:  # an int address written as IPv6: the general path
                n = self._line(i, out + used, texts.prefixes)
            else:
                if texts.alen[r.src] > 45 or texts.alen[r.dst] > 45:
                    raise ValueError("flow-log address too long")
                n = hp_fl_line_v2(out + used, texts.ptext[r.iface], texts.plen[r.iface], texts.atext[r.src],
                                  texts.alen[r.src], texts.atext[r.dst], texts.alen[r.dst], r)
            used += n
            out[used] = 10
            used += 1
        return used


@cython.final
cdef class _V2Texts:
    """The texts of a FlowLogRows' default-format lines, resolved to UTF-8 once: each interface's
    line prefix ("2 ACCOUNT INTERFACE ") and each address; ``line_max`` bounds a line's bytes."""

    cdef list prefixes, addrs  # held: the UTF-8 buffers below are theirs
    cdef const char **ptext
    cdef Py_ssize_t *plen
    cdef const char **atext
    cdef Py_ssize_t *alen
    cdef Py_ssize_t line_max

    def __cinit__(self, FlowLogRows rows, account_id):
        cdef Py_ssize_t k, widest = 0
        self.prefixes = [f"2 {account_id or '-'} {name} " for name in rows._iface_text]
        self.addrs = rows._addr_text
        self.ptext = <const char **>malloc(max(len(self.prefixes), 1) * sizeof(char *))
        self.plen = <Py_ssize_t *>malloc(max(len(self.prefixes), 1) * sizeof(Py_ssize_t))
        self.atext = <const char **>malloc(max(len(self.addrs), 1) * sizeof(char *))
        self.alen = <Py_ssize_t *>malloc(max(len(self.addrs), 1) * sizeof(Py_ssize_t))
        if self.ptext == NULL or self.plen == NULL or self.atext == NULL or self.alen == NULL:
            raise MemoryError()
        for k in range(len(self.prefixes)):
            self.ptext[k] = PyUnicode_AsUTF8AndSize(self.prefixes[k], &self.plen[k])
            if self.plen[k] > 800:
                raise ValueError("flow-log interface id too long")
            widest = max(widest, self.plen[k])
        for k in range(len(self.addrs)):
            self.atext[k] = PyUnicode_AsUTF8AndSize(self.addrs[k], &self.alen[k])
        # a line: prefix, two addresses (<= 45 bytes each, checked on both paths), seven numbers
        # (<= 20 digits and a separator each), the action and status, the newline
        self.line_max = widest + 2 * 46 + 7 * 21 + 11

    def __dealloc__(self):
        free(self.ptext)
        free(self.plen)
        free(self.atext)
        free(self.alen)


cdef inline str _flowlog_text(list texts, list keys, uint32_t addr, uint8_t live):
    """An address's text in a record: an int address of a record whose first packet said
    ``type`` IPv6 is written as IPv6 (as FlowLogAggregator does)."""
    if live & 2:
        key = keys[addr]
        if not isinstance(key, str):
            return _flowlog_address_text(key, True)
    return texts[addr]


def _flowlog_address_text(value, bint ipv6):
    from hyperplane.flowlogs import _address_text
    return _address_text(value, ipv6)
