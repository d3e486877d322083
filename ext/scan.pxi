# scan.pxi: the record scanners of the capture reader and the record builder of the writers
# (hyperplane/io/capture.py and writer.py call them when present and keep a pure-Python twin).
#
#   scan_pcap(buf, pos, limit, big, frac_ns, offsets, caplens, wirelens, ts_ns)
#   scan_pcapng(buf, pos, limit, big, n_interfaces, spb_snaplen, offsets, caplens, wirelens, units, ifaces)
#       walk the records of ``buf`` (the reader's window) from ``pos`` and fill the arrays for up to
#       ``limit`` records; return ``(count, pos, status, value)``: ``pos`` is where the first record
#       not collected starts and ``status`` says why the walk stopped there:
#         SCAN_FULL     ``limit`` records were collected
#         SCAN_END      the record at ``pos`` is not complete in ``buf``; ``value`` = the bytes it
#                       needs from ``pos`` (16 or 12 while its header is cut)
#         SCAN_CORRUPT  (pcap) the record at ``pos`` claims ``value`` > SCAN_MAX_RECORD bytes
#         SCAN_OTHER    (pcapng) a block the scanner does not judge alone: another block type, or
#                       an EPB/SPB failing a check (length, trailer, interface, captured length)
#       The caller keeps every policy (truncation, corruption messages, interfaces, timestamp
#       resolutions): pcapng records come back as raw timestamp units and the interface number
#       (-1 for a Simple Packet Block, which has neither: it uses interface 0 and the previous time).
#
#   read_window(fileobj, rest, want) -> (window, added, eof)
#       the reader's next window: ``rest`` followed by up to ``want`` bytes that
#       ``fileobj.readinto`` puts straight into the new bytes object (no second copy of the chunk);
#       ``eof`` when the file gave no more. A file object without ``readinto`` raises
#       AttributeError (the caller then reads and joins).
#
#   capture_records(data, offsets, caplens, heads, pcapng, blob, opt_start, opt_len) -> bytes
#       the records of a writer's batch in one allocation: for each i, heads[i] (16 or 28 bytes),
#       data[offsets[i] : offsets[i] + caplens[i]], and for pcapng the zero padding to 4 bytes,
#       blob[opt_start[i] : opt_start[i] + opt_len[i]] (options) and the trailer (heads[i][4:8]).
#
#   pcap_heads(ts_ns, lengths, wire, unit_ns, per_second, snaplen) -> (caplens, heads)
#       the 16-byte record headers of a pcap writer's batch (little-endian uint32 rows: seconds,
#       fraction in units of ``unit_ns`` ns rounded half up, captured length cut to ``snaplen``
#       when it is not 0, wire length) and the captured lengths, with the checks and messages of
#       the writer's numpy twin (PcapWriter._heads): lengths first, then timestamps.
#
# Nothing is read outside ``buf`` / ``data`` / ``blob`` whatever the bytes say: every length is
# compared with what remains before it is used.
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE

import sys as _sc_sys

import numpy as _sc_np

SCAN_END = 0
SCAN_FULL = 1
SCAN_CORRUPT = 2
SCAN_OTHER = 3
SCAN_MAX_RECORD = 256 * 1024 * 1024

cdef enum:
    _SC_END = 0
    _SC_FULL = 1
    _SC_CORRUPT = 2
    _SC_OTHER = 3

cdef int64_t _SC_MAX = 256 * 1024 * 1024
cdef int64_t _SC_NS = 1000000000
cdef int64_t _SC_U32_MAX = 4294967295LL  # typed: a literal past 2**31 alone is a Python int in Cython


cdef inline uint32_t _sc_u32(const uint8_t *p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | <uint32_t>p[0]


cdef Py_ssize_t _sc_room(Py_ssize_t limit, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t size) except -1:
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    if pos < 0 or pos > end:
        raise ValueError(f"start offset {pos} is outside the buffer of {end} bytes")
    if size < limit:
        raise ValueError(f"output arrays of {size} entries cannot hold {limit} records")
    return limit


def scan_pcap(const uint8_t[::1] buf not None, Py_ssize_t pos, Py_ssize_t limit, bint big, int64_t frac_ns,
              int64_t[::1] offsets not None, int32_t[::1] caplens not None, int64_t[::1] wirelens not None,
              int64_t[::1] ts_ns not None):
    """Classic pcap records (16-byte header + data) of ``buf`` from ``pos``; see the file comment.
    ``frac_ns`` is 1000 for a microsecond file, 1 for a nanosecond one."""
    cdef Py_ssize_t end = buf.shape[0]
    cdef Py_ssize_t size = min(min(offsets.shape[0], caplens.shape[0]), min(wirelens.shape[0], ts_ns.shape[0]))
    limit = _sc_room(limit, pos, end, size)
    cdef Py_ssize_t n = 0
    cdef int status = _SC_FULL
    cdef int64_t value = 0, caplen
    cdef const uint8_t *p
    with nogil:
        while n < limit:
            if end - pos < 16:
                status, value = _SC_END, 16
                break
            p = &buf[pos]
            caplen = _sc_u32(p + 8, big)
            if caplen > _SC_MAX:
                status, value = _SC_CORRUPT, caplen
                break
            if end - pos - 16 < caplen:
                status, value = _SC_END, 16 + caplen
                break
            offsets[n] = pos + 16
            caplens[n] = <int32_t>caplen
            wirelens[n] = _sc_u32(p + 12, big)
            ts_ns[n] = <int64_t>_sc_u32(p, big) * _SC_NS + <int64_t>_sc_u32(p + 4, big) * frac_ns
            n += 1
            pos += 16 + caplen
    return n, pos, status, value


def scan_pcapng(const uint8_t[::1] buf not None, Py_ssize_t pos, Py_ssize_t limit, bint big,
                int64_t n_interfaces, int64_t spb_snaplen, int64_t[::1] offsets not None,
                int32_t[::1] caplens not None, int64_t[::1] wirelens not None, uint64_t[::1] units not None,
                int32_t[::1] ifaces not None):
    """A run of pcapng Enhanced and Simple Packet Blocks of ``buf`` from ``pos``; see the file
    comment. ``n_interfaces`` is the section's interface count, ``spb_snaplen`` interface 0's snap
    length (0: none)."""
    cdef Py_ssize_t end = buf.shape[0]
    cdef Py_ssize_t size = min(min(offsets.shape[0], caplens.shape[0]),
                               min(min(wirelens.shape[0], units.shape[0]), ifaces.shape[0]))
    limit = _sc_room(limit, pos, end, size)
    cdef Py_ssize_t n = 0
    cdef int status = _SC_FULL
    cdef int64_t value = 0, blen, caplen, wire
    cdef uint32_t btype, iface
    cdef const uint8_t *p
    with nogil:
        while n < limit:
            if end - pos < 12:
                status, value = _SC_END, 12
                break
            p = &buf[pos]
            btype = _sc_u32(p, big)
            blen = _sc_u32(p + 4, big)
            if btype == 6:  # Enhanced Packet Block
                if blen < 32 or blen % 4 or blen > _SC_MAX + 64:
                    status = _SC_OTHER
                    break
                if blen > end - pos:
                    status, value = _SC_END, blen
                    break
                if _sc_u32(p + blen - 4, big) != blen:
                    status = _SC_OTHER
                    break
                iface = _sc_u32(p + 8, big)
                caplen = _sc_u32(p + 20, big)
                if iface >= n_interfaces or caplen > blen - 32:
                    status = _SC_OTHER
                    break
                offsets[n] = pos + 28
                caplens[n] = <int32_t>caplen
                wirelens[n] = _sc_u32(p + 24, big)
                units[n] = (<uint64_t>_sc_u32(p + 12, big) << 32) | <uint64_t>_sc_u32(p + 16, big)
                ifaces[n] = <int32_t>iface
            elif btype == 3:  # Simple Packet Block
                if blen < 16 or blen % 4 or blen > _SC_MAX + 64 or n_interfaces < 1:
                    status = _SC_OTHER
                    break
                if blen > end - pos:
                    status, value = _SC_END, blen
                    break
                if _sc_u32(p + blen - 4, big) != blen:
                    status = _SC_OTHER
                    break
                wire = _sc_u32(p + 8, big)
                caplen = min(wire, blen - 16)
                if spb_snaplen > 0:
                    caplen = min(caplen, spb_snaplen)
                offsets[n] = pos + 12
                caplens[n] = <int32_t>caplen
                wirelens[n] = wire
                units[n] = 0
                ifaces[n] = -1
            else:
                status = _SC_OTHER
                break
            n += 1
            pos += blen
    return n, pos, status, value


def read_window(fileobj, const uint8_t[::1] rest not None, Py_ssize_t want):
    """``(rest + bytes read, bytes read, eof)``; see the file comment."""
    readinto = fileobj.readinto
    if want < 0:
        raise ValueError(f"cannot read {want} bytes")
    cdef Py_ssize_t keep = rest.shape[0], got = 0, r
    out = PyBytes_FromStringAndSize(NULL, keep + want)
    cdef char *base = PyBytes_AS_STRING(out)
    if keep:
        memcpy(base, &rest[0], keep)
    eof = False
    # the new bytes object is not shared yet: the file writes its data into it through a view
    view = PyMemoryView_FromMemory(base + keep, want, PyBUF_WRITE)
    try:
        while got < want:
            part = view[got:]
            count = readinto(part)
            part.release()
            r = 0 if count is None else count  # None: a non-blocking stream without data, as EOF
            if r <= 0:
                eof = True
                break
            if r > want - got:
                raise OSError(f"readinto reported {r} bytes for a {want - got}-byte buffer")
            got += r
    finally:
        view.release()
    if got < want:
        out = out[:keep + got]
    return out, got, eof


def capture_records(data not None, const int64_t[::1] offsets not None, const int64_t[::1] caplens not None,
                    const uint8_t[:, ::1] heads not None, bint pcapng, blob=None,
                    const int64_t[::1] opt_start=None, const int64_t[::1] opt_len=None):
    """The bytes of a writer's records, built in one allocation; see the file comment."""
    cdef const uint8_t[::1] src = data if len(data) else b"\0"
    cdef Py_ssize_t src_len = len(data)
    cdef const uint8_t[::1] opts = blob if blob is not None and len(blob) else b"\0"
    cdef Py_ssize_t opts_len = len(blob) if blob is not None else 0
    cdef Py_ssize_t n = offsets.shape[0], i, width = heads.shape[1]
    cdef bint with_options = opt_start is not None
    cdef int64_t total = 0, off, length, pad, o_off = 0, o_len = 0
    if caplens.shape[0] != n or heads.shape[0] != n:
        raise ValueError(f"{n} offsets, {caplens.shape[0]} lengths and {heads.shape[0]} headers")
    if pcapng and width < 8:
        raise ValueError("pcapng block headers are at least 8 bytes")
    if with_options and (opt_len is None or opt_start.shape[0] != n or opt_len.shape[0] != n):
        raise ValueError("option starts and lengths must come together, one per packet")
    for i in range(n):
        off, length = offsets[i], caplens[i]
        if off < 0 or length < 0 or length > src_len - off:
            raise ValueError(f"packet {i} ({length} bytes at offset {off}) is outside the "
                             f"{src_len}-byte buffer")
        total += width + length
        if pcapng:
            total += (-length & 3) + 4
            if with_options:
                o_off, o_len = opt_start[i], opt_len[i]
                if o_off < 0 or o_len < 0 or o_len > opts_len - o_off:
                    raise ValueError(f"options of packet {i} are outside their blob")
                total += o_len
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t *w = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            length = caplens[i]
            memcpy(w, &heads[i, 0], width)
            w += width
            if length:
                memcpy(w, &src[offsets[i]], length)
                w += length
            if pcapng:
                pad = -length & 3
                if pad:
                    memset(w, 0, pad)
                    w += pad
                if with_options:
                    o_len = opt_len[i]
                    if o_len:
                        memcpy(w, &opts[opt_start[i]], o_len)
                        w += o_len
                memcpy(w, &heads[i, 4], 4)
                w += 4
    return out


cdef inline int64_t _sc_floordiv(int64_t a, int64_t b) noexcept nogil:
    # Python's (and numpy's) floor division, b > 0
    cdef int64_t q = a // b if a >= 0 else -((-(a + 1)) // b) - 1
    return q


def pcap_heads(const int64_t[::1] ts_ns not None, const int64_t[::1] lengths not None,
               const int64_t[::1] wire=None, int64_t unit_ns=1000, int64_t per_second=1000000, int64_t snaplen=0):
    """``(caplens, heads)`` of a pcap writer's batch; see the file comment."""
    cdef Py_ssize_t n = lengths.shape[0], i
    cdef int64_t length, w, units, sec
    if ts_ns.shape[0] != n:
        raise ValueError(f"{ts_ns.shape[0]} timestamps for {n} packets")
    if wire is not None and wire.shape[0] != n:
        raise ValueError(f"{wire.shape[0]} wire lengths for {n} packets")
    if unit_ns <= 0 or per_second <= 0:
        raise ValueError("time units must be positive")
    caplens = _sc_np.empty(n, _sc_np.int64)
    heads = _sc_np.empty((n, 4), _sc_np.uint32)
    cdef int64_t[::1] cv = caplens
    cdef uint32_t[:, ::1] hv = heads
    for i in range(n):
        length = lengths[i]
        w = wire[i] if wire is not None else length
        if w < length:
            raise ValueError(f"wire_length {w} is smaller than the {length} captured bytes (packet {i})")
    for i in range(n):
        w = wire[i] if wire is not None else lengths[i]
        if w > _SC_U32_MAX:
            raise ValueError("a wire length does not fit a capture record")
    for i in range(n):
        # the writers' two units as constants: the compiler divides by a multiplication (a 64-bit
        # division is tens of cycles, more than all the rest); sums wrap as numpy's
        if unit_ns == 1000 and per_second == 1000000:
            units = _sc_floordiv(<int64_t>(<uint64_t>ts_ns[i] + 500u), 1000)
            sec = _sc_floordiv(units, 1000000)
        elif unit_ns == 1 and per_second == 1000000000:
            units = ts_ns[i]
            sec = _sc_floordiv(units, 1000000000)
        else:
            units = _sc_floordiv(<int64_t>(<uint64_t>ts_ns[i] + <uint64_t>(unit_ns // 2)), unit_ns)
            sec = _sc_floordiv(units, per_second)
        if sec < 0 or sec > _SC_U32_MAX:
            raise ValueError("a timestamp is outside the pcap range (0 .. 2**32-1 seconds)")
        length = lengths[i]
        cv[i] = length if snaplen <= 0 or length <= snaplen else snaplen
        hv[i, 0] = <uint32_t>sec
        hv[i, 1] = <uint32_t>(units - sec * per_second)
        hv[i, 2] = <uint32_t>cv[i]
        hv[i, 3] = <uint32_t>(wire[i] if wire is not None else length)
    if _sc_sys.byteorder != "little":
        heads = heads.astype("<u4")
    return caplens, heads
