"""The streaming capture reader on captures built byte by byte here (both byte orders, pcap and pcapng),
including truncation at every byte offset, corruption, clear errors and bounded memory."""
from __future__ import annotations

import io
import os
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperplane.io import (
    Batch,
    CaptureFormatError,
    CaptureTruncatedWarning,
    PcapWriter,
    PcapngWriter,
    iter_packets,
    open_capture,
)

NS = 1_000_000_000


# Every test here runs with the compiled record scanners and with their pure-Python twins.
pytestmark = pytest.mark.usefixtures("io_backend")


# ---------------------------------------------------------------------------------------------
# Capture builders (the file formats written out with struct, independently of our writer)


def pcap_header(endian="<", nsec=False, linktype=1, snaplen=65535, version=(2, 4)):
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)


def pcap_record(endian, sec, frac, data, wire=None):
    return struct.pack(endian + "IIII", sec, frac, len(data), len(data) if wire is None else wire) + data


def pad4(data):
    return data + b"\0" * (-len(data) % 4)


def option(endian, code, value):
    return struct.pack(endian + "HH", code, len(value)) + pad4(value)


def end_of_options(endian):
    return struct.pack(endian + "HH", 0, 0)


def block(endian, btype, body):
    body = pad4(body)
    return struct.pack(endian + "II", btype, len(body) + 12) + body + struct.pack(endian + "I", len(body) + 12)


def shb(endian="<", version=(1, 0), section_length=-1, options=b""):
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, *version, section_length) + options)


def idb(endian, linktype, snaplen=0, tsresol=None, tsoffset=None):
    opts = b""
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(endian, 14, struct.pack(endian + "q", tsoffset))
    opts += option(endian, 2, b"eth0")  # if_name: an option we skip
    opts += end_of_options(endian)
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts)


def epb(endian, iface, units, data, wire=None, options=b""):
    head = struct.pack(endian + "5I", iface, units >> 32, units & 0xFFFFFFFF, len(data),
                       len(data) if wire is None else wire)
    return block(endian, 6, head + pad4(data) + options)


def spb(endian, data, wire):
    return block(endian, 3, struct.pack(endian + "I", wire) + data)


def opb(endian, iface, units, data):
    head = struct.pack(endian + "HH4I", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return block(endian, 2, head + data)


def read_all(source, **kw):
    """(packets as tuples, reader) after reading a whole capture."""
    with open_capture(source, **kw) as reader:
        packets = []
        for batch in reader:
            assert isinstance(batch, Batch)
            for i in range(len(batch)):
                packets.append((batch.packet(i), int(batch.ts_ns[i]), float(batch.timestamps[i]),
                                int(batch.linktypes[i]), int(batch.wire_lengths[i])))
    return packets, reader


def write(tmp_path, content, name="c.pcap"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


# ---------------------------------------------------------------------------------------------
# Classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nsec):
    frac_unit = 1 if nsec else 1000
    records = [(1_600_000_000, 5, b"\x45" + bytes(39), None),
               (1_600_000_001, 999_999 if not nsec else 999_999_999, bytes(range(60)), 1500),
               (4_000_000_000, 0, b"", None)]
    content = pcap_header(endian, nsec, linktype=101) + b"".join(pcap_record(endian, *r) for r in records)
    packets, reader = read_all(write(tmp_path, content))
    assert reader.format == "pcap" and reader.nanosecond is nsec and reader.linktype == 101
    assert not reader.truncated and reader.packets_read == 3
    assert [p[0] for p in packets] == [r[2] for r in records]
    assert [p[1] for p in packets] == [r[0] * NS + r[1] * frac_unit for r in records]
    assert [p[2] for p in packets] == pytest.approx([r[0] + r[1] * frac_unit / NS for r in records], abs=1e-6)
    assert [p[3] for p in packets] == [101, 101, 101]
    assert [p[4] for p in packets] == [40, 1500, 0]  # wire length kept when caplen < wirelen


def test_pcap_link_type_ignores_fcs_bits(tmp_path):
    content = pcap_header(linktype=1 | 0x04000000 | (4 << 28)) + pcap_record("<", 1, 0, b"abcd")
    packets, reader = read_all(write(tmp_path, content))
    assert reader.linktype == 1 and packets[0][3] == 1


def test_pcap_header_only_is_an_empty_capture(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        packets, reader = read_all(write(tmp_path, pcap_header(snaplen=1234)))
    assert packets == [] and not reader.truncated and reader.snaplen == 1234 and reader.packets_read == 0


def test_reader_accepts_a_binary_file_object():
    content = pcap_header() + pcap_record("<", 7, 0, b"xyz")
    packets, reader = read_all(io.BytesIO(content))
    assert packets[0][0] == b"xyz" and reader.bytes_read == len(content)


# ---------------------------------------------------------------------------------------------
# pcapng


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_with_own_link_types_and_resolutions(tmp_path, endian):
    comment = option(endian, 1, b"a packet comment") + end_of_options(endian)
    content = b"".join([
        shb(endian, options=option(endian, 4, b"test app") + end_of_options(endian)),
        idb(endian, 1),  # default resolution: microseconds
        idb(endian, 113, tsresol=9, tsoffset=100),  # nanoseconds, +100 s
        idb(endian, 101, tsresol=0x80 | 10),  # 2^-10 s
        epb(endian, 0, 1_700_000_000_123_456, b"eth-frame", options=comment),
        block(endian, 5, struct.pack(endian + "III", 0, 0, 0)),  # interface statistics: skipped
        epb(endian, 1, 1_700_000_000_987_654_321, b"sll"),
        block(endian, 0x00000BAD, b"custom block body"),  # custom block: skipped
        epb(endian, 2, 1_700_000_000 * 1024 + 512, b"raw-ip", wire=900),
    ])
    packets, reader = read_all(write(tmp_path, content, "c.pcapng"))
    assert reader.format == "pcapng" and reader.linktype == 1 and not reader.truncated
    assert [p[0] for p in packets] == [b"eth-frame", b"sll", b"raw-ip"]
    assert [p[3] for p in packets] == [1, 113, 101]
    assert [p[1] for p in packets] == [1_700_000_000_123_456_000, 1_700_000_100_987_654_321,
                                       1_700_000_000_500_000_000]
    assert packets[2][2] == pytest.approx(1_700_000_000.5)
    assert [p[4] for p in packets] == [9, 3, 900]


def test_pcapng_simple_packet_blocks(tmp_path):
    e = "<"
    content = b"".join([
        shb(e), idb(e, 101, snaplen=64),
        epb(e, 0, 5_000_000, b"first"),
        spb(e, bytes(100), 100),  # cut to the interface's snaplen
        spb(e, bytes(range(10)) + b"\0\0", 10),  # padding is not packet data
        spb(e, bytes(8), 1000),  # shorter than its original length: the block space bounds it
    ])
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert [len(p[0]) for p in packets] == [5, 64, 10, 8]
    assert packets[2][0] == bytes(range(10))
    assert [p[4] for p in packets] == [5, 100, 10, 1000]
    # no timestamp in an SPB: the previous packet's time, so time never runs backwards
    assert [p[1] for p in packets] == [5 * NS] * 4


def test_pcapng_simple_packet_block_without_snaplen(tmp_path):
    content = shb() + idb("<", 1, snaplen=0) + spb("<", bytes(20), 20)
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert len(packets[0][0]) == 20


def test_pcapng_obsolete_packet_block(tmp_path):
    content = shb() + idb("<", 1, tsresol=9) + opb("<", 0, 42, b"old-style")
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert packets == [(b"old-style", 42, pytest.approx(42e-9), 1, 9)]


def test_pcapng_sections_reset_interfaces_and_byte_order(tmp_path):
    content = b"".join([
        shb("<", section_length=0), idb("<", 1), epb("<", 0, 1, b"le"),
        shb(">"), idb(">", 101, tsresol=9), epb(">", 0, 2, b"be"),
        idb(">", 113), epb(">", 1, 3, b"be-second-interface"),  # an interface added after packets
    ])
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert [(p[0], p[1], p[3]) for p in packets] == [(b"le", 1000, 1), (b"be", 2, 101),
                                                      (b"be-second-interface", 3000, 113)]


def test_pcapng_timestamp_beyond_int64_nanoseconds(tmp_path):
    units = (1 << 64) - 1_000_000  # microseconds: ~1.8e13 s, as some tools write negative times
    content = shb() + idb("<", 1) + epb("<", 0, units, b"x") + epb("<", 0, 1_000_000, b"y")
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert packets[0][1] == (1 << 63) - 1  # ts_ns saturates ...
    assert packets[0][2] == pytest.approx(units / 1e6)  # ... the float keeps the file's value
    assert packets[1][1] == NS


# ---------------------------------------------------------------------------------------------
# Batching and streaming


@pytest.mark.parametrize("chunk_size", [64, 100, 4 * 1024 * 1024])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_batches_split_at_batch_size_with_start_index(tmp_path, chunk_size, fmt):
    payloads = [bytes([i]) * (i * 7 % 50) for i in range(10)]
    if fmt == "pcap":
        content = pcap_header() + b"".join(pcap_record("<", i, 0, p) for i, p in enumerate(payloads))
    else:
        content = shb() + idb("<", 1) + b"".join(epb("<", 0, i * 10**6, p) for i, p in enumerate(payloads))
    with open_capture(write(tmp_path, content), batch_size=3, chunk_size=chunk_size) as reader:
        batches = list(reader)
        assert sum(len(b) for b in batches) == 10 and all(len(b) <= 3 for b in batches)
        assert [b.start_index for b in batches] == list(np.cumsum([0] + [len(b) for b in batches[:-1]]))
        got = [b.packet(i) for b in batches for i in range(len(b))]
        assert got == payloads
        assert reader.packets_read == 10 and reader.bytes_read == len(content)
        assert list(reader) == []  # a capture is read once
    b = batches[0]
    assert b.offsets.dtype == np.int64 and b.lengths.dtype == np.int32 and b.wire_lengths.dtype == np.int32
    assert b.timestamps.dtype == np.float64 and b.ts_ns.dtype == np.int64 and b.linktypes.dtype == np.int32
    assert isinstance(b.buffer, bytes)


def test_iter_packets(tmp_path):
    content = pcap_header(linktype=228) + pcap_record("<", 10, 500_000, b"a") + pcap_record("<", 11, 0, b"bc")
    assert list(iter_packets(write(tmp_path, content))) == [(0, b"a", 10.5, 228), (1, b"bc", 11.0, 228)]


@pytest.mark.parametrize("writer_class", [PcapWriter, PcapngWriter])
def test_memory_does_not_grow_with_file_size(tmp_path, writer_class):
    path = str(tmp_path / "big")
    payload = bytes(range(200))
    with writer_class(path, linktype=101) as w:
        for i in range(100_000):  # ~22 MB
            w.write(payload, ts_ns=i * 1000)
    assert os.path.getsize(path) > 20_000_000
    chunk = 1024 * 1024
    tracemalloc.start()
    try:
        count = 0
        with open_capture(path, chunk_size=chunk) as reader:
            for batch in reader:
                count += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 6 * chunk, f"peak {peak} bytes while streaming a {os.path.getsize(path)}-byte file"


# ---------------------------------------------------------------------------------------------
# Clear errors for files that are not captures


@pytest.mark.parametrize("content, message", [
    (b"<html><body>not a capture</body></html>", "not a pcap or pcapng file (magic 0x3c68746d)"),
    (b"", "empty file"),
    (b"\xd4\xc3", "2 bytes is too short"),
    (pcap_header()[:20], "truncated pcap file header (20 of 24 bytes)"),
    (pcap_header(version=(1, 4)), "unsupported pcap version 1.4"),
    (struct.pack("<I", 0xA1B2CD34) + bytes(20), "modified (Kuznetzov) pcap"),
    (b"\x1f\x8b\x08\x00" + bytes(30), "gzip-compressed"),
    (shb()[:20], "truncated section header"),
    (shb(version=(0, 1)), "unsupported pcapng version 0.1"),
    (struct.pack("<III", 0x0A0D0D0A, 28, 0x11223344) + bytes(16), "bad byte-order magic"),
    (struct.pack("<III", 0x0A0D0D0A, 30, 0x1A2B3C4D) + bytes(18), "section header length 30 is invalid"),
    (shb(options=struct.pack("<HH", 4, 200) + b"abcd"), "option 4 of length 200 runs past"),
])
def test_not_a_capture_is_refused_with_one_clear_line(tmp_path, content, message):
    path = write(tmp_path, content, "x.pcap")
    with pytest.raises(CaptureFormatError) as err:
        open_capture(path)
    text = str(err.value)
    assert text.startswith(path + ": ") and message in text and "\n" not in text
    assert isinstance(err.value, ValueError)


def test_missing_file_and_directory_are_clear_errors(tmp_path):
    with pytest.raises(CaptureFormatError, match="no such file"):
        open_capture(str(tmp_path / "missing.pcap"))
    with pytest.raises(CaptureFormatError, match="is a directory"):
        open_capture(str(tmp_path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        open_capture(io.BytesIO(pcap_header()), batch_size=0)


# ---------------------------------------------------------------------------------------------
# Truncation at every byte offset, and corruption after valid records


def _pcap_sample():
    """(file header, records, which records are packets)."""
    records = [pcap_record("<", 1, 0, b"A" * 5), pcap_record("<", 2, 0, b""), pcap_record("<", 3, 0, b"C" * 9)]
    return pcap_header(), records, [True, True, True]


def _pcapng_sample():
    records = [idb("<", 1), epb("<", 0, 1, b"A" * 5), block("<", 5, bytes(12)), epb("<", 0, 2, b"B" * 8),
               spb("<", b"C" * 3, 3)]
    return shb(), records, [False, True, False, True, True]


@pytest.mark.parametrize("sample", [_pcap_sample, _pcapng_sample])
@pytest.mark.parametrize("chunk_size", [64, 4096])
def test_truncation_at_every_byte_offset(tmp_path, sample, chunk_size):
    header, records, is_packet = sample()
    content = header + b"".join(records)
    ends = list(np.cumsum([len(header)] + [len(r) for r in records]))  # record boundaries
    path = str(tmp_path / "cut")
    for cut in range(len(content) + 1):
        with open(path, "wb") as fh:
            fh.write(content[:cut])
        if cut < len(header):
            with pytest.raises(CaptureFormatError):
                open_capture(path, chunk_size=chunk_size)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            packets, reader = read_all(path, chunk_size=chunk_size)
        complete = sum(1 for end, packet in zip(ends[1:], is_packet) if packet and end <= cut)
        assert len(packets) == complete, f"cut at {cut}"
        assert reader.truncated == (cut not in ends), f"cut at {cut}"
        if reader.truncated:
            start = max(b for b in ends if b <= cut)
            assert reader.truncated_offset == start
            assert len(caught) == 1 and issubclass(caught[0].category, CaptureTruncatedWarning)
            assert f"{path}: capture truncated at byte {start}" in str(caught[0].message)
        else:
            assert reader.truncated_offset is None and not caught


def _corrupt_after_two(fmt, bad):
    if fmt == "pcap":
        good = pcap_header() + pcap_record("<", 1, 0, b"one") + pcap_record("<", 2, 0, b"two")
    else:
        good = shb() + idb("<", 1) + epb("<", 0, 1, b"one") + epb("<", 0, 2, b"two")
    return good, good + bad


@pytest.mark.parametrize("fmt, bad, reason", [
    ("pcap", struct.pack("<IIII", 3, 0, 300_000_000, 60) + bytes(64), "larger than 268435456"),
    ("pcapng", struct.pack("<II", 6, 34) + bytes(40), "block length 34 is invalid"),
    ("pcapng", struct.pack("<II", 6, 8) + bytes(40), "block length 8 is invalid"),
    ("pcapng", struct.pack("<II", 1, 0x7FFFFFF0) + bytes(40), "larger than"),
    ("pcapng", epb("<", 0, 3, b"abc")[:-4] + struct.pack("<I", 999), "does not match its trailer"),
    ("pcapng", epb("<", 5, 3, b"abc"), "refers to interface 5"),
    ("pcapng", struct.pack("<II5I", 6, 32, 0, 0, 0, 200, 200) + struct.pack("<I", 32), "captured length 200"),
    ("pcapng", block("<", 1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 40)), "runs past"),
])
def test_corruption_after_valid_records_stops_there(tmp_path, fmt, bad, reason):
    good, content = _corrupt_after_two(fmt, bad)
    path = write(tmp_path, content + bytes(100))
    with pytest.warns(CaptureTruncatedWarning, match=f"byte {len(good)}: .*{reason}"):
        packets, reader = read_all(path)
    assert [p[0] for p in packets] == [b"one", b"two"]
    assert reader.truncated and reader.truncated_offset == len(good) and reason in reader.truncation_reason


# ---------------------------------------------------------------------------------------------
# Damaged files: never a crash, never a hang, and the same answer whatever the chunk and batch sizes


def _base_captures():
    pcap = pcap_header(">", nsec=True) + b"".join(pcap_record(">", i, i, bytes([i]) * (i * 5 % 23), 99)
                                                  for i in range(8))
    pcapng = b"".join([shb(), idb("<", 1, snaplen=20), epb("<", 0, 1, b"a" * 7), block("<", 5, bytes(12)),
                       idb("<", 113, tsresol=9), epb("<", 1, 2, b"b" * 13), spb("<", b"c" * 30, 30),
                       opb("<", 0, 3, b"d" * 3), shb(">"), idb(">", 101), epb(">", 0, 4, b"e" * 9)])
    return [pcap, pcapng]


def _outcome(path, chunk_size, batch_size):
    try:
        reader = open_capture(path, chunk_size=chunk_size, batch_size=batch_size)
    except CaptureFormatError as err:
        return ("refused", str(err))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packets = []
        with reader:
            for batch in reader:
                assert 0 < len(batch) <= batch_size
                assert all(0 <= o and o + n <= len(batch.buffer) for o, n in zip(batch.offsets, batch.lengths))
                packets.extend((batch.packet(i), int(batch.ts_ns[i]), int(batch.linktypes[i]),
                                int(batch.wire_lengths[i])) for i in range(len(batch)))
    assert reader.packets_read == len(packets)
    assert len(caught) == (1 if reader.truncated else 0)
    return ("read", packets, reader.truncated, reader.truncated_offset)


@given(base=st.sampled_from([0, 1]), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                      max_size=6),
       cut=st.integers(0, 10_000), batch_size=st.integers(1, 5))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_captures_read_the_same_with_any_chunk_and_batch_size(tmp_path, base, edits, cut, batch_size):
    content = bytearray(_base_captures()[base])
    for position, value in edits:
        content[position % len(content)] = value
    path = write(tmp_path, bytes(content[:cut]) if cut < len(content) else bytes(content), "damaged")
    reference = _outcome(path, 4 * 1024 * 1024, 4096)
    assert _outcome(path, 64, batch_size) == reference


def test_undamaged_base_captures_read_completely(tmp_path):
    pcap, pcapng = _base_captures()
    kind, packets, truncated, _ = _outcome(write(tmp_path, pcap), 64, 3)
    assert not truncated and len(packets) == 8 and {p[2] for p in packets} == {1}
    kind, packets, truncated, _ = _outcome(write(tmp_path, pcapng, "b.pcapng"), 64, 3)
    assert not truncated
    assert [(p[0], p[2]) for p in packets] == [(b"a" * 7, 1), (b"b" * 13, 113), (b"c" * 20, 1), (b"d" * 3, 1),
                                               (b"e" * 9, 101)]
    assert [p[1] for p in packets] == [1000, 2, 2, 3000, 4000]


def test_pcapng_unusual_timestamp_resolutions(tmp_path):
    e = "<"
    content = b"".join([
        shb(e), idb(e, 1, tsresol=12), idb(e, 1, tsresol=0x80 | 40), idb(e, 1, tsresol=30), idb(e, 1, tsresol=0),
        epb(e, 0, 1_500_000_123_456_789_012, b"ps"),  # picoseconds
        epb(e, 1, 3 << 40 | 1 << 39, b"2^-40"),  # 3.5 s
        epb(e, 2, 5 * 10**18, b"1e-30"),  # 5e-12 s
        epb(e, 3, 7, b"seconds"),
    ])
    packets, _ = read_all(write(tmp_path, content, "c.pcapng"))
    assert [p[1] for p in packets] == [1_500_000_123_456_789, 3_500_000_000, 0, 7 * NS]
