"""The compiled record scanners and record builder (ext/scan.pxi) against their pure-Python twins in
hyperplane/io: the same batches (offsets, lengths, wire lengths, exact and float timestamps, link
types), the same truncation and corruption answers and warnings, and byte-identical writer output,
on generated captures, on every real capture in ../shared/pcaps/real (skipped when absent) and on
hypothesis-mutated files. Plus the scanners' own contract: statuses, argument checks, and no read
past the buffer whatever the bytes say."""
from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperplane.io.capture as capture
import hyperplane.io.writer as writer
from hyperplane.io import CaptureFormatError, PcapngWriter, PcapWriter, open_capture

core = pytest.importorskip("hyperplane._core")
if not all(hasattr(core, name) for name in ("scan_pcap", "scan_pcapng", "capture_records", "read_window")):
    pytest.skip("hyperplane._core has no record scanner (the extension is not built)", allow_module_level=True)

HERE = os.path.dirname(__file__)
REAL = os.path.join(HERE, "..", "..", "..", "shared", "pcaps", "real")
FIXTURES = os.path.join(HERE, "..", "fixtures", "pcaps")
NS = 1_000_000_000


# ---------------------------------------------------------------------------------------------
# Builders (the formats written out with struct)


def pcap_header(e="<", nsec=False, linktype=1, snaplen=65535):
    return struct.pack(e + "IHHiIII", 0xA1B23C4D if nsec else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(e, sec, frac, data, wire=None):
    return struct.pack(e + "IIII", sec, frac, len(data), len(data) if wire is None else wire) + data


def pad4(data):
    return data + b"\0" * (-len(data) % 4)


def block(e, btype, body):
    body = pad4(body)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def shb(e="<"):
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(e, linktype, snaplen=0, tsresol=None, tsoffset=None):
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + pad4(bytes([tsresol]))
    if tsoffset is not None:
        opts += struct.pack(e + "HH", 14, 8) + struct.pack(e + "q", tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(e, iface, units, data, wire=None, options=b""):
    head = struct.pack(e + "5I", iface, units >> 32, units & 0xFFFFFFFF, len(data), len(data) if wire is None else wire)
    return block(e, 6, head + pad4(data) + options)


def spb(e, data, wire=None):
    return block(e, 3, struct.pack(e + "I", len(data) if wire is None else wire) + data)


def opb(e, iface, units, data):
    return block(e, 2, struct.pack(e + "HH4I", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)) + data)


def random_pcap(rng, n, e="<", nsec=False):
    parts = [pcap_header(e, nsec, linktype=101)]
    for i in range(n):
        data = rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes()
        frac = int(rng.integers(0, NS if nsec else 1_000_000))
        parts.append(pcap_record(e, 1_600_000_000 + i, frac, data, len(data) + int(rng.integers(0, 3)) * 7))
    return b"".join(parts)


def random_pcapng(rng, n):
    """Two sections (little then big endian), interfaces of different link types and resolutions,
    EPB runs broken by SPBs, OPBs, statistics and custom blocks, and SPBs before any EPB."""
    out = []
    for e in ("<", ">"):
        out += [shb(e), idb(e, 1, snaplen=50), idb(e, 113, tsresol=9, tsoffset=-5), idb(e, 101, tsresol=0x80 | 20)]
        out.append(spb(e, b"lead" * 20))  # before any EPB: the previous section's (or zero) time
        for i in range(n):
            data = rng.integers(0, 256, int(rng.integers(0, 90)), dtype=np.uint8).tobytes()
            kind = rng.random()
            if kind < 0.7:
                out.append(epb(e, int(rng.integers(0, 3)), int(rng.integers(0, 1 << 62)), data,
                               len(data) + int(rng.integers(0, 2)) * 5))
            elif kind < 0.85:
                out.append(spb(e, data, len(data) + int(rng.integers(0, 2)) * 9))
            elif kind < 0.92:
                out.append(opb(e, int(rng.integers(0, 3)), i * 1000, data))
            else:
                out.append(block(e, 5 if kind < 0.96 else 0x0BAD, bytes(12)))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Reading with either backend


@contextlib.contextmanager
def backend(name):
    saved = capture._native
    capture._native = core if name == "compiled" else None
    try:
        yield
    finally:
        capture._native = saved


def outcome(content, chunk_size=capture.DEFAULT_CHUNK_SIZE, batch_size=capture.DEFAULT_BATCH_SIZE, source=None):
    """Everything a reader yields and says about ``content`` (bytes) or ``source`` (a path)."""
    try:
        reader = open_capture(source if source is not None else io.BytesIO(content), chunk_size=chunk_size,
                              batch_size=batch_size)
    except CaptureFormatError as err:
        return ("refused", str(err))
    batches = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with reader:
            for b in reader:
                assert 0 < len(b) <= batch_size
                ends = b.offsets.astype(np.int64) + b.lengths
                assert (b.offsets >= 0).all() and (ends <= len(b.buffer)).all()
                batches.append((
                    b.start_index, len(b.buffer),
                    b.offsets.dtype.str, b.offsets.tolist(), b.lengths.dtype.str, b.lengths.tolist(),
                    b.wire_lengths.dtype.str, b.wire_lengths.tolist(), b.ts_ns.dtype.str, b.ts_ns.tolist(),
                    b.timestamps.dtype.str, b.timestamps.view(np.int64).tolist(),  # bit for bit
                    b.linktypes.dtype.str, b.linktypes.tolist(), [b.packet(i) for i in range(len(b))],
                ))
    return ("read", batches, reader.packets_read, reader.bytes_read, reader.truncated, reader.truncated_offset,
            reader.truncation_reason, [str(w.message) for w in caught])


def both(content=None, source=None, **kw):
    with backend("compiled"):
        compiled = outcome(content, source=source, **kw)
    with backend("python"):
        python = outcome(content, source=source, **kw)
    assert compiled == python
    return compiled


# ---------------------------------------------------------------------------------------------
# Generated captures


@pytest.mark.parametrize("e", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
@pytest.mark.parametrize("chunk_size, batch_size", [(capture.DEFAULT_CHUNK_SIZE, 4096), (4096, 100), (64, 7)])
def test_pcap_compiled_equals_python(e, nsec, chunk_size, batch_size):
    content = random_pcap(np.random.default_rng(7), 3000, e, nsec)
    result = both(content, chunk_size=chunk_size, batch_size=batch_size)
    assert result[0] == "read" and result[2] == 3000 and not result[4]


@pytest.mark.parametrize("chunk_size, batch_size", [(capture.DEFAULT_CHUNK_SIZE, 4096), (4096, 100), (64, 7)])
def test_pcapng_compiled_equals_python(chunk_size, batch_size):
    content = random_pcapng(np.random.default_rng(11), 1500)
    result = both(content, chunk_size=chunk_size, batch_size=batch_size)
    assert result[0] == "read" and not result[4] and result[2] > 2000


def test_pcapng_simple_packet_blocks_take_the_previous_time():
    e = "<"
    content = b"".join([shb(e), idb(e, 1, snaplen=8), idb(e, 101, tsresol=9),
                        spb(e, b"a" * 3),  # before any packet: time 0
                        epb(e, 1, 5, b"x"), spb(e, b"b" * 20), spb(e, b"c"),  # interface 0's link type and snaplen
                        epb(e, 0, 7, b"y"), spb(e, b"d" * 4, 1000)])
    result = both(content)
    (_, _, _, _, _, lengths, _, wire, _, ts_ns, _, _, _, linktypes, packets), = result[1]
    assert packets == [b"aaa", b"x", b"b" * 8, b"c", b"y", b"dddd"]
    assert ts_ns == [0, 5, 5, 5, 7000, 7000] and linktypes == [1, 101, 1, 1, 1, 1]
    assert wire == [3, 1, 20, 1, 1, 1000]


def test_pcapng_time_beyond_int64_nanoseconds_in_a_run_with_simple_blocks():
    units = (1 << 64) - 1_000_000
    e = "<"
    content = shb(e) + idb(e, 1) + epb(e, 0, units, b"x") + spb(e, b"s") + epb(e, 0, 1_000_000, b"y") + spb(e, b"t")
    result = both(content)
    ts_ns = result[1][0][9]
    seconds = np.array(result[1][0][11], np.int64).view(np.float64)
    assert ts_ns == [(1 << 63) - 1, (1 << 63) - 1, NS, NS]
    assert seconds[1] == seconds[0] == pytest.approx(units / 1e6) and seconds[3] == 1.0


def test_memory_use_of_the_compiled_reader_stays_bounded(tmp_path):
    import tracemalloc

    path = str(tmp_path / "big.pcap")
    with PcapWriter(path) as w:
        w.write_many(bytes(200) * 1000, np.arange(1000) * 200, np.full(1000, 200), ts_ns=np.arange(1000))
        for _ in range(60):  # ~13 MB
            w.write_many(bytes(200) * 1000, np.arange(1000) * 200, np.full(1000, 200), ts_ns=np.arange(1000))
    chunk = 1 << 20
    with backend("compiled"):
        tracemalloc.start()
        try:
            count = sum(len(b) for b in open_capture(path, chunk_size=chunk))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 61_000 and peak < 6 * chunk


# ---------------------------------------------------------------------------------------------
# Real captures, whole and cut


def _real_files():
    files = []
    for folder in (REAL, FIXTURES):
        if os.path.isdir(folder):
            files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".pcap", ".pcapng"))]
    return files


REAL_FILES = _real_files()


@pytest.mark.skipif(not os.path.isdir(REAL), reason="../shared/pcaps/real is not present beside the checkout")
def test_real_captures_are_present():
    assert any(f.startswith(REAL) for f in REAL_FILES)


@pytest.mark.parametrize("path", REAL_FILES, ids=[os.path.basename(f) for f in REAL_FILES])
def test_real_capture_compiled_equals_python(path):
    both(source=path, batch_size=50)
    both(source=path, chunk_size=4096, batch_size=7)
    with open(path, "rb") as fh:
        content = fh.read()
    rng = np.random.default_rng(len(content))
    for cut in sorted({int(c) for c in rng.integers(0, len(content) + 1, 6)}):
        both(content[:cut], chunk_size=1024, batch_size=33)


# ---------------------------------------------------------------------------------------------
# Mutated files: whatever the bytes, both backends give the same answer


def _bases():
    rng = np.random.default_rng(3)
    return [random_pcap(rng, 12, ">", True), random_pcap(rng, 12, "<", False), random_pcapng(rng, 10),
            shb() + idb("<", 1) + b"".join(spb("<", bytes([i]) * i) for i in range(12))]


BASES = _bases()


@given(base=st.integers(0, len(BASES) - 1),
       edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
       words=st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from([0, 3, 6, 12, 16, 31, 32, 0xFFFFFFFF,
                                                                            300_000_000, 0x0A0D0D0A])),
                      max_size=3),
       cut=st.integers(0, 1 << 20), chunk_size=st.sampled_from([64, 97, 1000, 1 << 22]), batch_size=st.integers(1, 9))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_captures_compiled_equals_python(base, edits, words, cut, chunk_size, batch_size):
    content = bytearray(BASES[base])
    for position, value in edits:
        content[position % len(content)] = value
    for position, value in words:  # plausible and implausible lengths, types, magic numbers
        at = (position % (len(content) // 4)) * 4
        content[at:at + 4] = struct.pack("<I", value)
    content = bytes(content[:cut % (len(content) + 1)])
    both(content, chunk_size=chunk_size, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------
# The scanners' own contract


def _arrays(size, units=False):
    return (np.empty(size, np.int64), np.empty(size, np.int32), np.empty(size, np.int64),
            np.empty(size, np.uint64 if units else np.int64))


def test_scan_pcap_statuses():
    e = "<"
    records = pcap_record(e, 1, 2, b"abc", 9) + pcap_record(e, 3, 4, b"") + pcap_record(e, 5, 6, b"xy")
    o, c, w, t = _arrays(8)
    assert core.scan_pcap(records, 0, 8, False, 1000, o, c, w, t) == (3, len(records), core.SCAN_END, 16)
    assert o[:3].tolist() == [16, 35, 51] and c[:3].tolist() == [3, 0, 2] and w[:3].tolist() == [9, 0, 2]
    assert t[:3].tolist() == [NS + 2000, 3 * NS + 4000, 5 * NS + 6000]
    assert core.scan_pcap(records, 0, 2, False, 1000, o, c, w, t) == (2, 35, core.SCAN_FULL, 0)
    assert core.scan_pcap(records[:-1], 0, 8, False, 1000, o, c, w, t) == (2, 35, core.SCAN_END, 18)
    assert core.scan_pcap(records[:40], 35, 8, False, 1000, o, c, w, t) == (0, 35, core.SCAN_END, 16)
    big = struct.pack(">IIII", 1, 1, core.SCAN_MAX_RECORD + 1, 60)
    assert core.scan_pcap(big + bytes(100), 0, 8, True, 1, o, c, w, t) == (0, 0, core.SCAN_CORRUPT,
                                                                        core.SCAN_MAX_RECORD + 1)
    assert core.scan_pcap(b"", 0, 8, False, 1, o, c, w, t) == (0, 0, core.SCAN_END, 16)


def test_scan_pcapng_statuses():
    e = "<"
    run = epb(e, 1, (7 << 32) | 9, b"hello", 50) + spb(e, b"simple", 6)
    o, c, w, u = _arrays(8, units=True)
    i = np.empty(8, np.int32)
    assert core.scan_pcapng(run, 0, 8, False, 2, 4, o, c, w, u, i) == (2, len(run), core.SCAN_END, 12)
    assert o[:2].tolist() == [28, 40 + 12] and c[:2].tolist() == [5, 4] and w[:2].tolist() == [50, 6]
    assert u[0] == (7 << 32) | 9 and i[:2].tolist() == [1, -1]
    assert core.scan_pcapng(run, 0, 1, False, 2, 0, o, c, w, u, i) == (1, 40, core.SCAN_FULL, 0)
    assert core.scan_pcapng(run[:-1], 0, 8, False, 2, 0, o, c, w, u, i) == (1, 40, core.SCAN_END, len(run) - 40)
    # blocks it leaves to the reader: another type, a wrong trailer, an unknown interface, a bad length
    for other in [idb(e, 1), epb(e, 0, 1, b"x")[:-4] + b"\1\0\0\0", epb(e, 2, 1, b"x"),
                  struct.pack("<II", 6, 30) + bytes(30), struct.pack("<II5I", 6, 32, 0, 0, 0, 9, 9) + b"\x20\0\0\0"]:
        assert core.scan_pcapng(run + other, 0, 8, False, 2, 0, o, c, w, u, i) == (2, len(run), core.SCAN_OTHER, 0)
    assert core.scan_pcapng(spb(e, b"s"), 0, 8, False, 0, 0, o, c, w, u, i)[2] == core.SCAN_OTHER  # no interface 0
    assert core.scan_pcapng(epb(">", 0, 3, b"be"), 0, 8, True, 1, 0, o, c, w, u, i)[:2] == (1, 36)


def test_scanners_never_read_past_the_buffer():
    """The buffer is a view of a larger one whose tail would complete the record: the scanner must
    stop at the view's end (and an address sanitizer build would catch a stray read)."""
    e = "<"
    full = pcap_record(e, 1, 1, b"A" * 40) + pcap_record(e, 2, 2, b"B" * 40)
    o, c, w, t = _arrays(8)
    for cut in range(len(full)):
        n, pos, status, value = core.scan_pcap(memoryview(full)[:cut], 0, 8, False, 1, o, c, w, t)
        assert status == core.SCAN_END and pos + (value if value > 16 else 16) > cut and n == (cut >= 56) + 0
    blocks = epb(e, 0, 1, b"A" * 40) + spb(e, b"B" * 40)
    o, c, w, u = _arrays(8, units=True)
    i = np.empty(8, np.int32)
    for cut in range(len(blocks)):
        n, pos, status, value = core.scan_pcapng(memoryview(blocks)[:cut], 0, 8, False, 1, 0, o, c, w, u, i)
        assert status == core.SCAN_END and n == (cut >= 72) + 0 and pos + max(value, 12) > cut
    # a lying length never sends the scanner outside: 0xFFFFFFFF and friends
    for blen in (0, 4, 12, 16, 28, 32, 0xFFFFFFFC, 0xFFFFFFFF):
        for btype in (3, 6):
            data = struct.pack("<II", btype, blen) + bytes(40)
            n, pos, status, _ = core.scan_pcapng(data, 0, 8, False, 1, 0, o, c, w, u, i)
            assert pos <= len(data)


def test_scanner_argument_checks():
    o, c, w, t = _arrays(4)
    with pytest.raises(ValueError, match="start offset"):
        core.scan_pcap(b"x" * 10, 11, 4, False, 1, o, c, w, t)
    with pytest.raises(ValueError, match="start offset"):
        core.scan_pcap(b"x" * 10, -1, 4, False, 1, o, c, w, t)
    with pytest.raises(ValueError, match="cannot hold"):
        core.scan_pcap(b"x" * 10, 0, 5, False, 1, o, c, w, t)
    with pytest.raises((ValueError, TypeError)):
        core.scan_pcap(b"x" * 10, 0, 4, False, 1, o.astype(np.int32), c, w, t)


# ---------------------------------------------------------------------------------------------
# The window reader


class _Trickle(io.RawIOBase):
    """A stream that returns at most 7 bytes per read."""

    def __init__(self, data):
        self._data, self._pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        piece = self._data[self._pos:self._pos + min(7, len(b))]
        b[:len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


class _NoReadinto:
    def __init__(self, data):
        self._file = io.BytesIO(data)

    def read(self, n=-1):
        return self._file.read(min(n, 5))


@pytest.mark.parametrize("wrap", [io.BytesIO, _Trickle, _NoReadinto])
def test_streams_of_every_kind_read_the_same(wrap):
    content = random_pcap(np.random.default_rng(5), 200)
    reference = outcome(content)
    for name in ("compiled", "python"):
        with backend(name):
            reader = open_capture(wrap(content), chunk_size=100, batch_size=13)
            got = [b.packet(i) for b in reader for i in range(len(b))]
        assert got == [p for batch in reference[1] for p in batch[-1]] and not reader.truncated


def test_read_window():
    window, added, eof = core.read_window(io.BytesIO(b"0123456789"), b"ab", 4)
    assert (window, added, eof) == (b"ab0123", 4, False)
    window, added, eof = core.read_window(io.BytesIO(b"012"), memoryview(b"xyz")[1:], 8)
    assert (window, added, eof) == (b"yz012", 3, True)
    assert core.read_window(_Trickle(b"abcdefghijklmnop"), b"", 10) == (b"abcdefghij", 10, False)
    with pytest.raises(AttributeError):
        core.read_window(_NoReadinto(b"abc"), b"", 3)


# ---------------------------------------------------------------------------------------------
# Writers: the compiled record builder equals the join


@contextlib.contextmanager
def writer_backend(name):
    saved = writer._native
    writer._native = core if name == "compiled" else None
    try:
        yield
    finally:
        writer._native = saved


def _write_many(name, writer_class, buffer, offsets, lengths, ts_ns, wire, comments, **kw):
    sink = io.BytesIO()
    with writer_backend(name), writer_class(sink, **kw) as w:
        w.write_many(buffer, offsets, lengths, ts_ns=ts_ns, wire_lengths=wire, comments=comments)
        w.write_many(buffer, offsets[:0], lengths[:0], ts_ns=ts_ns[:0], wire_lengths=wire[:0],
                     comments=None if comments is None else [])
        w.write_many(buffer, offsets[::-1], lengths[::-1], ts_ns=ts_ns[::-1], wire_lengths=wire[::-1],
                     comments=None if comments is None else comments[::-1])
    return sink.getvalue()


@given(packets=st.lists(st.tuples(st.binary(max_size=70), st.integers(0, 3), st.integers(0, 1 << 40),
                                  st.sampled_from([None, "", "forwarded", "dropped by nacl-egress rule 100",
                                                   "\u00e9t\u00e9"])), max_size=40),
       gap=st.integers(0, 5), as_array=st.booleans(), snaplen=st.sampled_from([0, 16, 65535]))
@settings(max_examples=200, deadline=None)
def test_write_many_compiled_equals_join(packets, gap, as_array, snaplen):
    chunks, offsets = [], []
    at = 0
    for data, *_ in packets:
        chunks.append(b"\xee" * gap + data)
        offsets.append(at + gap)
        at += gap + len(data)
    buffer = b"".join(chunks)
    if as_array:  # the core's tap outputs are numpy buffers
        buffer = np.frombuffer(buffer, np.uint8).copy()
    offsets = np.array(offsets, np.int64)
    lengths = np.array([len(p[0]) for p in packets], np.int32)
    wire = lengths.astype(np.int64) + np.array([p[1] for p in packets], np.int64)
    ts_ns = np.array([p[2] for p in packets], np.int64)
    comments = [p[3] for p in packets]
    for cls, kw in [(PcapWriter, {"snaplen": snaplen or 65535}), (PcapngWriter, {"snaplen": snaplen}),
                    (PcapngWriter, {"nanosecond": True})]:
        for with_comments in (False, True):
            c = comments if with_comments else None
            compiled = _write_many("compiled", cls, buffer, offsets, lengths, ts_ns, wire, c, **kw)
            assert compiled == _write_many("python", cls, buffer, offsets, lengths, ts_ns, wire, c, **kw)
            one = io.BytesIO()  # and both equal writing packet by packet
            with cls(one, **kw) as w:
                for rounds in (range(len(packets)), reversed(range(len(packets)))):
                    for i in rounds:
                        w.write(packets[i][0], ts_ns=int(ts_ns[i]), wire_length=int(wire[i]),
                                comment=c[i] if c else None)
            assert compiled == one.getvalue()


@pytest.mark.parametrize("name", ["compiled", "python"])
def test_write_many_refuses_packets_outside_the_buffer(name):
    for offsets, lengths in [([0, 3], [2, 2]), ([-1], [1]), ([5], [0])]:
        with writer_backend(name), PcapngWriter(io.BytesIO()) as w:
            with pytest.raises(ValueError, match="outside the 4-byte buffer"):
                w.write_many(b"abcd", offsets, lengths)


def test_capture_records_checks_its_arguments():
    heads = np.zeros((1, 16), np.uint8)
    one = np.array([0], np.int64)
    with pytest.raises(ValueError, match="outside"):
        core.capture_records(b"ab", one, np.array([3], np.int64), heads, False)
    with pytest.raises(ValueError, match="headers"):
        core.capture_records(b"ab", one, one, np.zeros((2, 16), np.uint8), False)
    with pytest.raises(ValueError, match="options of packet 0"):
        core.capture_records(b"ab", one, one, np.zeros((1, 28), np.uint8), True, b"xy", one, np.array([3], np.int64))
    assert core.capture_records(b"ab", one, np.array([2], np.int64), heads, False) == bytes(16) + b"ab"
