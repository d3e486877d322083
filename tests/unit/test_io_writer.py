"""The pcap and pcapng writers: round trips through our reader, scapy's readers, and capinfos/tshark
when they are installed."""
from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperplane.io import PcapngWriter, PcapWriter, open_capture, open_writer

NS = 1_000_000_000
PACKETS = [bytes([0x45]) + bytes(range(i, i + 27 + i)) for i in range(7)]  # odd lengths exercise padding


# Every test here runs with the compiled record scanners and with their pure-Python twins.
pytestmark = pytest.mark.usefixtures("io_backend")


def _read(path):
    with open_capture(path) as reader:
        out = []
        for batch in reader:
            for i in range(len(batch)):
                out.append((batch.packet(i), int(batch.ts_ns[i]), float(batch.timestamps[i]),
                            int(batch.linktypes[i]), int(batch.wire_lengths[i])))
    return out, reader


@pytest.mark.parametrize("writer_class, nanosecond", [(PcapWriter, False), (PcapWriter, True),
                                                      (PcapngWriter, False), (PcapngWriter, True)])
def test_round_trip_keeps_data_timestamps_and_link_type(tmp_path, writer_class, nanosecond):
    path = str(tmp_path / "out")
    stamps = [1_700_000_000 * NS + i * 1_234_567_891 for i in range(len(PACKETS))]
    with writer_class(path, linktype=101, nanosecond=nanosecond) as writer:
        for data, ts_ns in zip(PACKETS, stamps):
            writer.write(data, ts_ns=ts_ns)
        assert writer.packets_written == len(PACKETS)
    got, reader = _read(path)
    assert reader.format == ("pcapng" if writer_class is PcapngWriter else "pcap")
    assert [g[0] for g in got] == PACKETS
    expected = stamps if nanosecond else [(t + 500) // 1000 * 1000 for t in stamps]
    assert [g[1] for g in got] == expected
    assert {g[3] for g in got} == {101}
    assert [g[4] for g in got] == [len(p) for p in PACKETS]


@pytest.mark.parametrize("writer_class", [PcapWriter, PcapngWriter])
def test_float_timestamps_round_to_the_file_resolution(tmp_path, writer_class):
    path = str(tmp_path / "out")
    with writer_class(path) as writer:
        writer.write(b"a", ts=1_700_000_000.25)
        writer.write(b"b", ts=12.0000004)  # rounds down to 12.000000
        writer.write(b"c", ts=12.0000006)  # rounds up to 12.000001
        writer.write(b"d", ts=12.9999996)  # carries into the next second
        writer.write(b"e")  # no timestamp: 0
    got, _ = _read(path)
    assert [g[1] for g in got] == [1_700_000_000_250_000_000, 12 * NS, 12 * NS + 1000, 13 * NS, 0]


def test_nanosecond_pcap_keeps_float_precision(tmp_path):
    path = str(tmp_path / "out.pcap")
    with PcapWriter(path, nanosecond=True) as writer:
        writer.write(b"x", ts=1.000000123)
    got, _ = _read(path)
    assert got[0][1] == NS + 123


@pytest.mark.parametrize("writer_class", [PcapWriter, PcapngWriter])
def test_snaplen_cuts_data_and_keeps_wire_length(tmp_path, writer_class):
    path = str(tmp_path / "out")
    with writer_class(path, snaplen=16) as writer:
        writer.write(bytes(range(40)))
        writer.write(bytes(8), wire_length=1500)
    got, _ = _read(path)
    assert [(g[0], g[4]) for g in got] == [(bytes(range(16)), 40), (bytes(8), 1500)]


def test_pcapng_comments_are_read_by_scapy(tmp_path):
    from scapy.utils import RawPcapNgReader

    path = str(tmp_path / "verdicts.pcapng")
    comments = ["forwarded", "dropped sg-ingress by sg-0abc", None, "é unicode"]
    with PcapngWriter(path) as writer:
        for i, comment in enumerate(comments):
            writer.write(PACKETS[i], ts=100.0 + i, comment=comment)
    with RawPcapNgReader(path) as reader:
        records = list(reader)
    assert [r[0] for r in records] == PACKETS[:4]
    assert [r[1].comments for r in records] == [[c.encode()] if c else None for c in comments]
    assert [((r[1].tshigh << 32) | r[1].tslow) for r in records] == [(100 + i) * 10**6 for i in range(4)]


def test_pcap_is_read_by_scapy(tmp_path):
    from scapy.utils import RawPcapReader

    path = str(tmp_path / "tap.pcap")
    with PcapWriter(path, linktype=101) as writer:
        for i, data in enumerate(PACKETS):
            writer.write(data, ts=1000.5 + i)
    with RawPcapReader(path) as reader:
        assert reader.linktype == 101
        records = list(reader)
    assert [r[0] for r in records] == PACKETS
    assert [(r[1].sec, r[1].usec) for r in records] == [(1000 + i, 500_000) for i in range(len(PACKETS))]


def test_small_buffer_flushes_and_file_objects_stay_open():
    sink = io.BytesIO()
    writer = PcapWriter(sink, buffer_size=10)
    for data in PACKETS:
        writer.write(data, ts=1.0)
    writer.close()
    assert not sink.closed
    got, _ = _read(io.BytesIO(sink.getvalue()))
    assert [g[0] for g in got] == PACKETS


@pytest.mark.parametrize("name, expected", [("a.pcapng", PcapngWriter), ("A.PCAPNG", PcapngWriter),
                                            ("a.pcap", PcapWriter), ("tap.cap", PcapWriter)])
def test_open_writer_picks_the_format_from_the_name(tmp_path, name, expected):
    with open_writer(str(tmp_path / name), linktype=1) as writer:
        assert type(writer) is expected and writer.linktype == 1


def test_writer_errors_are_clear(tmp_path):
    writer = PcapWriter(str(tmp_path / "e.pcap"))
    with pytest.raises(ValueError, match="wire_length 3 is smaller than the 4 captured bytes"):
        writer.write(b"abcd", wire_length=3)
    with pytest.raises(ValueError, match="outside the pcap range"):
        writer.write(b"abcd", ts=-1.0)
    with pytest.raises(ValueError, match="not a finite number"):
        writer.write(b"abcd", ts=float("nan"))
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"abcd")
    with pytest.raises(ValueError, match="link type"):
        PcapngWriter(str(tmp_path / "e.pcapng"), linktype=70000)


def _capinfos_count(path):
    out = subprocess.run(["capinfos", "-M", "-c", path], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if "Number of packets" in line)
    return int(line.split(":")[1].strip())


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos is not installed")
@pytest.mark.parametrize("name, nanosecond", [("t.pcap", False), ("t.pcap", True), ("t.pcapng", False),
                                              ("t.pcapng", True)])
def test_capinfos_counts_our_records(tmp_path, name, nanosecond):
    path = str(tmp_path / name)
    with open_writer(path, nanosecond=nanosecond) as writer:
        for i, data in enumerate(PACKETS * 3):
            writer.write(data, ts=10.0 + i / 8, comment=f"packet {i}")
    assert _capinfos_count(path) == len(PACKETS) * 3


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_comments_and_timestamps(tmp_path):
    path = str(tmp_path / "v.pcapng")
    with PcapngWriter(path, nanosecond=True) as writer:
        writer.write(PACKETS[0], ts_ns=1_700_000_000 * NS + 123_456_789, comment="dropped nacl-egress")
        writer.write(PACKETS[1], ts_ns=1_700_000_001 * NS, comment="forwarded")
    out = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.comment"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split("\t") for line in out] == [["1700000000.123456789", "dropped nacl-egress"],
                                                  ["1700000001.000000000", "forwarded"]]


@pytest.mark.parametrize("writer_class, nanosecond", [(PcapWriter, False), (PcapWriter, True),
                                                      (PcapngWriter, False), (PcapngWriter, True)])
def test_write_many_is_byte_identical_to_write(writer_class, nanosecond):
    buffer = b"".join(PACKETS)
    offsets = [sum(len(p) for p in PACKETS[:i]) for i in range(len(PACKETS))]
    lengths = [len(p) for p in PACKETS]
    stamps = [1_700_000_000 * NS + i * 123_456_789 + 499 for i in range(len(PACKETS))]
    wires = [n + (i % 2) * 100 for i, n in enumerate(lengths)]
    comments = [None if i % 3 == 0 else f"verdict {i}" for i in range(len(PACKETS))]
    one, many = io.BytesIO(), io.BytesIO()
    with writer_class(one, nanosecond=nanosecond, snaplen=40) as w:
        for data, ts_ns, wire, comment in zip(PACKETS, stamps, wires, comments):
            w.write(data, ts_ns=ts_ns, wire_length=wire, comment=comment)
    with writer_class(many, nanosecond=nanosecond, snaplen=40) as w:
        w.write_many(buffer, offsets, lengths, ts_ns=stamps, wire_lengths=wires, comments=comments)
        assert w.packets_written == len(PACKETS)
    assert many.getvalue() == one.getvalue()


def test_write_many_with_float_timestamps():
    sink = io.BytesIO()
    with PcapWriter(sink) as w:
        w.write_many(b"abcdef", [0, 2], [2, 4], timestamps=[5.25, 12.9999996])
    got, _ = _read(io.BytesIO(sink.getvalue()))
    assert [(g[0], g[1]) for g in got] == [(b"ab", 5_250_000_000), (b"cdef", 13 * NS)]


def test_write_many_errors():
    with PcapWriter(io.BytesIO()) as w:
        with pytest.raises(ValueError, match="wire_length 1 is smaller than the 2 captured bytes"):
            w.write_many(b"abcd", [0, 2], [2, 2], wire_lengths=[2, 1])
        with pytest.raises(ValueError, match="1 timestamps for 2 packets"):
            w.write_many(b"abcd", [0, 2], [2, 2], ts_ns=[0])
    with PcapngWriter(io.BytesIO()) as w:
        with pytest.raises(ValueError, match="1 comments for 2 packets"):
            w.write_many(b"abcd", [0, 2], [2, 2], comments=["x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-2 * NS, 2**33 * NS), st.integers(0, 70_000), st.integers(0, 3)),
                max_size=12),
       st.booleans(), st.sampled_from((40, 1500, 65535)), st.booleans())
def test_record_headers_in_c_are_the_numpy_ones(rows, nanosecond, snaplen, with_wire):
    """The compiled record headers (``_core.pcap_heads``, what a replay's tap writes) and their
    numpy twin agree on every field and on every error: timestamps rounded half up to the file's
    unit, before 1970 or past 2106, captured lengths cut to the snaplen, wire lengths."""
    import numpy as np

    import hyperplane.io.writer as writer_module

    compiled = pytest.importorskip("hyperplane._core", reason="the core is not built")
    ts_ns = np.array([r[0] for r in rows], np.int64)
    lengths = np.array([r[1] for r in rows], np.int64)
    wire = np.array([r[1] + (r[2] - 1) * 7 for r in rows], np.int64) if with_wire else None  # some short
    writer = PcapWriter(io.BytesIO(), nanosecond=nanosecond, snaplen=snaplen)

    def heads(native):
        saved = writer_module._native
        writer_module._native = native
        try:
            caplen, head = writer._heads(len(rows), lengths, ts_ns, None, wire)
            return np.asarray(caplen, np.int64).tolist(), np.asarray(head).astype("<u4").tobytes()
        except ValueError as err:
            return str(err)
        finally:
            writer_module._native = saved

    assert heads(compiled) == heads(None)


@pytest.mark.parametrize("suffix", [".pcap", ".pcapng"])
def test_copying_a_capture_batch_by_batch_keeps_every_record(tmp_path, suffix):
    import os

    source = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pcaps", "pcapng-multi-if-dns.pcapng")
    original, _ = _read(source)
    target = str(tmp_path / ("copy" + suffix))
    with open_capture(source, batch_size=4) as reader, open_writer(target, linktype=1, nanosecond=True) as w:
        for batch in reader:
            w.write_batch(batch)
    copied, _ = _read(target)
    assert [(c[0], c[1], c[4]) for c in copied] == [(o[0], o[1], o[4]) for o in original]
    if shutil.which("capinfos"):
        assert _capinfos_count(target) == len(original)


@pytest.mark.parametrize("snaplen", [65535, 40])
def test_tap_rows_write_the_records_their_gathered_bytes_would(snaplen):
    """A core tap's output written as rows (``PcapWriter.write_rows``: each packet joined to its
    record header where it lies, the rewritten headers and the input's payload) is byte for byte
    what writing its gathered packets gives, cut to ``snaplen`` too."""
    import os

    import numpy as np

    from hyperplane.engine import Engine, EngineOptions, available_backends
    from hyperplane.reference.dataplane import build_packet
    from hyperplane.vpc.loader import load_vpc

    if "core" not in available_backends():
        pytest.skip("the core is not built")
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "pcaps", "demo", "vpc")
    engine = Engine(load_vpc(demo), ["orders-api=169.254.76.0/24"], EngineOptions(), backend="core")
    sandbox, db = 0xA9FE4C05, 0x0A00030A
    frames = [build_packet(4, sandbox + k % 4, db, 6, 40000 + k % 4, 5432, 0x02 if k < 4 else 0x18,
                           payload=b"q" * (k * 7)) for k in range(12)]
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    stamps = 1_793_610_030.0 + np.arange(12) * 0.001
    rows = engine.process_batch(b"".join(frames), offsets, lengths, stamps).taps["eni"]
    assert len(rows) == 12
    ts_ns = (stamps * 1e9).astype(np.int64)[rows.index]
    by_rows, gathered = io.BytesIO(), io.BytesIO()
    with PcapWriter(by_rows, snaplen=snaplen) as w:
        w.write_rows(rows, ts_ns)
    with PcapWriter(gathered, snaplen=snaplen) as w:
        w.write_many(rows.buffer, rows.offsets, rows.lengths, ts_ns=ts_ns)
    assert by_rows.getvalue() == gathered.getvalue()
