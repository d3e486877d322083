"""A replay writes its flow-log records as their windows close: the file is the one a flush at
the end gives, and the memory a replay holds does not grow with the capture's length."""
from __future__ import annotations

import functools
import gzip
import ipaddress
import tracemalloc

import pytest

from builders import standard_vpc
from hyperplane.engine import Engine, EngineOptions, Sandbox, available_backends
from hyperplane.flowlogs import read_flow_logs
from hyperplane.io import open_capture, open_writer
from hyperplane.reference.dataplane import build_packet
from hyperplane.replay import ReplayConfig, run_replay
from table import DB, SB

T0 = 1_800_000_000  # a multiple of 600: windows start on the minute
_SB, _DB = int(ipaddress.ip_address(SB)), int(ipaddress.ip_address(DB))


def _capture(path: str, seconds: int, flows_per_second: int) -> None:
    """Short TCP flows to the database, ``flows_per_second`` each second: SYN, SYN-ACK, then an
    RST from the sandbox (the connection ends 10 s later), so the live connections stay few
    however long the capture."""
    with open_writer(path) as writer:
        for second in range(seconds):
            for k in range(flows_per_second):
                sport = 10_000 + (second * flows_per_second + k) % 50_000
                ts = (T0 + second + k / flows_per_second) * 10**9
                writer.write(build_packet(4, _SB, _DB, 6, sport, 5432, 0x02, seq=1), ts_ns=int(ts))
                writer.write(build_packet(4, _DB, _SB, 6, 5432, sport, 0x12, seq=7, ack=2), ts_ns=int(ts) + 10**6)
                writer.write(build_packet(4, _SB, _DB, 6, sport, 5432, 0x04, seq=2), ts_ns=int(ts) + 2 * 10**6)


def _replay(capture: str, out, backend: str) -> dict:
    return run_replay(ReplayConfig(capture=capture, model=standard_vpc().build(),
                                   sandboxes=[Sandbox.parse(f"fn={SB}/32")], flow_logs_path=str(out),
                                   flow_log_interval=60, backend=backend))


@pytest.mark.parametrize("backend", available_backends())
def test_streamed_flow_logs_are_what_one_flush_at_the_end_gives(backend, tmp_path):
    capture = str(tmp_path / "c.pcap")
    _capture(capture, 900, 4)  # 15 windows of 60 s, 10,800 packets: three reader batches
    _replay(capture, tmp_path / "flows.log", backend)
    engine = Engine(standard_vpc().build(), [Sandbox.parse(f"fn={SB}/32")], EngineOptions(flow_log_interval=60),
                    backend=backend)
    with open_capture(capture) as reader:
        for batch in reader:
            engine.process_batch(batch.buffer, batch.offsets, batch.lengths, batch.timestamps, batch.linktypes)
    expected = [r.format() for r in engine.flow_logs(flush=True)]
    with open(tmp_path / "flows.log") as fh:
        lines = fh.read().splitlines()
    assert lines[1:] == expected
    assert len({int(line.split()[10]) // 60 for line in lines[1:]}) == 15  # records in every window
    records = read_flow_logs(tmp_path / "flows.log")
    assert sum(r["packets"] for r in records) == 2 * 3 * 900 * 4  # each packet on both ENIs
    _replay(capture, tmp_path / "flows.log.gz", backend)  # the same, gzip-compressed as it goes
    assert gzip.decompress((tmp_path / "flows.log.gz").read_bytes()) == (tmp_path / "flows.log").read_bytes()


def test_a_replay_holds_the_open_windows_not_the_whole_capture(tmp_path, monkeypatch):
    """Four times the capture (four times the flows and flow-log records) takes about the same
    peak memory: the records of finished windows are on disk, not in the engine. (The capture is
    read in small batches and chunks, so that it spans many of them and many windows.)"""
    import hyperplane.io

    monkeypatch.setattr(hyperplane.io, "open_capture",
                        functools.partial(hyperplane.io.open_capture, batch_size=256, chunk_size=1 << 16))

    def peak(seconds: int) -> int:
        capture = str(tmp_path / f"c{seconds}.pcap")
        _capture(capture, seconds, 5)
        tracemalloc.start()
        try:
            summary = _replay(capture, tmp_path / f"f{seconds}.log", "auto")
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert summary["packets"] == 15 * seconds and summary["dropped"] == 0
        return top

    short, long = peak(240), peak(960)
    records = read_flow_logs(tmp_path / "f960.log")
    assert len(records) > 18_000 and sum(r["packets"] for r in records) == 2 * 15 * 960  # all written
    assert long < 1.3 * short, (short, long)  # holding every record: ~3 times


@pytest.mark.parametrize("backend", available_backends())
def test_a_packet_late_for_a_written_window_gets_a_record_of_its_own(backend):
    """After the records of a window were flushed (written), a packet timestamped in that window
    is not lost: it makes a new record (the core's fast path must not count it into the
    flushed one)."""
    engine = Engine(standard_vpc().build(), [Sandbox.parse(f"fn={SB}/32")], EngineOptions(flow_log_interval=60),
                    backend=backend)
    syn = build_packet(4, _SB, _DB, 6, 40000, 5432, 0x02, seq=1)
    synack = build_packet(4, _DB, _SB, 6, 5432, 40000, 0x12, seq=7, ack=2)
    ack = build_packet(4, _SB, _DB, 6, 40000, 5432, 0x10, seq=2, ack=8)
    for data, ts in ((syn, T0 + 1), (synack, T0 + 1.1), (ack, T0 + 1.2), (ack, T0 + 1.3)):
        assert engine.process(data, ts).verdict.name == "FORWARDED"
    flushed = engine.flow_logs(flush=True, before=T0 + 60)
    assert flushed and all(r.window == T0 for r in flushed)
    if backend == "core":  # the records are gone from the C store too
        assert engine._impl.core_stats()["flow_log_records"] == 0
    written = [(r.interface_id, r.packets, r.end) for r in flushed]
    for data, ts in ((ack, T0 + 1.4), (ack, T0 + 61)):  # late for the written window, then on time
        assert engine.process(data, ts).verdict.name == "FORWARDED"
    rest = engine.flow_logs(flush=True)
    late = [r for r in rest if r.window == T0]
    assert sorted(r.interface_id for r in late) == sorted(r.interface_id for r in flushed if r.dstaddr == DB)
    assert all(r.packets == 1 and r.start == r.end == T0 + 1 for r in late)
    assert [(r.interface_id, r.packets, r.end) for r in flushed] == written  # the written records stay as written
    assert sum(r.packets for r in rest if r.window == T0 + 60) == 2
    with pytest.raises(ValueError, match="flush"):
        engine.flow_logs(flush=False, before=T0)


def test_workers_stream_their_flow_logs_and_the_merge_keeps_every_record(tmp_path):
    """``--workers 2``: each worker writes its records as windows close; the merged file holds the
    packets one process logs (not always in the same records: the workers own disjoint port slices),
    window after window."""
    from hyperplane.parallel import run_parallel_replay

    capture = str(tmp_path / "c.pcap")
    _capture(capture, 900, 4)
    _replay(capture, tmp_path / "one.log", "auto")
    run_parallel_replay(ReplayConfig(capture=capture, model=standard_vpc().build(),
                                     sandboxes=[Sandbox.parse(f"fn={SB}/32")], flow_logs_path=str(tmp_path / "two.log"),
                                     flow_log_interval=60), 2)
    one, two = (read_flow_logs(tmp_path / name) for name in ("one.log", "two.log"))

    def totals(records):  # packets per ENI, direction and window (which records merge depends on the ports)
        out = {}
        for r in records:
            key = (r["interface-id"], r["srcaddr"], r["dstaddr"], r["start"] // 60)
            out[key] = out.get(key, 0) + r["packets"]
        return out

    assert len(two) > 15 * 4 * 60 and totals(one) == totals(two) and len(totals(two)) == 15 * 4
    starts = [r["start"] // 60 for r in two]
    assert starts == sorted(starts)  # by window


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("fields", [None, "v5"])
def test_flow_log_lines_are_the_records_formatted(backend, fields):
    """What a writer takes (``flow_log_lines``: one str per record; ``write_flow_logs``: pieces of
    UTF-8 lines, from one reused buffer in the core) is each flushed record in the engine's
    format, with its window and start, in flush order."""
    from hyperplane.flowlogs import V5_CUSTOM_FIELDS

    options = EngineOptions(flow_log_interval=60, flow_log_fields=V5_CUSTOM_FIELDS if fields else None)

    def run():
        engine = Engine(standard_vpc().build(), [Sandbox.parse(f"fn={SB}/32")], options, backend=backend)
        for k in range(6):
            ts = T0 + 50 * k
            engine.process(build_packet(4, _SB, _DB, 6, 40000 + k, 5432, 0x02, seq=1), ts)
            engine.process(build_packet(4, _DB, _SB, 6, 5432, 40000 + k, 0x12, seq=7, ack=2), ts + 0.5)
        return engine

    records, plain, joined = run().flow_logs(), run(), run()
    fields_used = plain.flow_log_fields
    lines, windows, starts = plain.flow_log_lines(T0 + 120)
    rest = plain.flow_log_lines()
    assert lines + rest[0] == [r.format(fields_used) for r in records] and len(lines) == 3 * 4  # 3 flows by T0 + 120
    assert (windows.tolist() + rest[1].tolist(), starts.tolist() + rest[2].tolist()) == \
        ([r.window for r in records], [r.start for r in records])
    pieces = []
    assert joined.write_flow_logs(lambda piece: pieces.append(bytes(piece)), T0 + 120) == 3 * 4
    assert joined.write_flow_logs(lambda piece: pieces.append(bytes(piece))) == len(records) - 3 * 4
    assert all(piece.endswith(b"\n") for piece in pieces)
    assert b"".join(pieces).decode().splitlines() == [r.format(fields_used) for r in records]
