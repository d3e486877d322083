"""Parallel replay: one capture sharded by flow across N worker processes.

``run_parallel_replay(config, workers)`` gives the outputs of :func:`hyperplane.replay.run_replay`
(taps, drops, flow logs, summary) computed by ``workers`` processes, each owning a part of the
connections. It is the library behind ``hyperplane replay --workers N``; ``docs/scaling.md`` maps
the same scheme onto a cluster.

How packets are split (every worker reads the whole capture and computes the same assignment, so
no packet crosses a process boundary; parsing is one C call per batch):

- a packet with a sandbox address at either end (the sandbox's own packets and replies in the
  sandbox's view) goes to ``symmetric_hash(proto, {src:sport, dst:dport}) % N``: both directions
  of a connection meet on one worker;
- a packet without a sandbox address (the VPC-side form of a reply, addressed to a Hyperplane
  ENI's address and port) goes to the worker owning that destination port: worker ``k`` owns the
  ``k``-th slice of the ENI port range on *every* ENI (:func:`port_slices`), so the worker that
  chose the port sees its replies, and no two workers can hand out the same VPC-side tuple.
  Destination ports outside the range (never a translated port) take the symmetric hash;
- non-IP and malformed frames go to worker 0 (their verdict needs no state);
- IP fragments: a fragment carrying ports goes where its ports send it and the worker is noted
  under (src, dst, IP id); later fragments (no ports) follow it. The assignment is a pure function
  of the packets read so far, so every worker computes the same.

Global decisions, split among the workers (each worker's engine gets its share):

- ENI port range: disjoint slices (above); NAT gateway port range: disjoint slices too, so no two
  workers can hand out the same NAT-side tuple;
- ENI capacity (``eni_capacity``) and the NAT gateway's per-destination limit: divided among the
  workers (``capacity // N``, the remainder to the first workers). An ENI therefore overflows
  when one shard fills its share, which can happen before the ENI as a whole is full; the merged
  summary can list more overflow ENIs than a one-worker run when the shards are unbalanced with
  respect to the capacity (with the real capacity of 65,000 and many flows, the shares fill
  together). ``workers`` may not exceed the capacity;
- the ENI quota per VPC (``enis_per_vpc``) is checked per shard, not globally.

What is identical to a one-worker run: every packet's verdict, drop reason, component and rule
(the tests check this on the demo and on real captures), ``packets``/``forwarded``/``dropped``/
``drops``/``connections`` of the summary, the set of flow-log records and their order (merged by
window, then by the capture index of each record's first packet), and the order of every output
file (capture order). What may differ: the ports chosen (each worker searches its own slice), so
the translated tap bytes and flow-log ports differ; which ENI carries a connection when ENIs
overflow (per-shard capacity); the ids and addresses of overflow ENIs when shards overflowed
different (subnet, SG set) pairs in a different order (each shard numbers the ENIs it creates);
``peak_connections`` (ENIs and NAT gateways): the **sum of the shards' peaks**, an upper bound of
the one-worker peak, equal to it when the shards peak together, never above the capacity.
"""
from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import json
import mmap
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import numpy as np

from hyperplane import limits
from hyperplane.engine import gc_paused
from hyperplane.flowlogs import FlowLogWriter
from hyperplane.io.output import open_output
from hyperplane.replay import EMITTED_COMMENT, ReplayConfig, check_outputs, run_replay

__all__ = ["run_parallel_replay", "Sharder", "port_slices", "shares", "merge_summaries"]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# --------------------------------------------------------------------------------------------
# splitting the global resources
# --------------------------------------------------------------------------------------------



class ShardingError(ValueError):
    """The replay cannot be split among the workers asked for (too few ports or too little
    capacity for each worker to own a slice)."""

def port_slices(port_range: tuple[int, int], workers: int) -> list[tuple[int, int]]:
    """``workers`` disjoint, contiguous, inclusive slices covering ``port_range``."""
    lo, hi = port_range
    size = hi - lo + 1
    if workers < 1:
        raise ShardingError("workers must be at least 1")
    if size < workers:
        raise ShardingError(f"port range {lo}-{hi} has fewer ports than the {workers} workers")
    bounds = [lo + (size * k) // workers for k in range(workers + 1)]
    return [(bounds[k], bounds[k + 1] - 1) for k in range(workers)]


def shares(total: int, workers: int, what: str = "capacity") -> list[int]:
    """``total`` split into ``workers`` positive integer shares (remainder to the first ones)."""
    if total < workers:
        raise ShardingError(f"{what} {total} cannot be split among {workers} workers (each needs at least 1)")
    base, extra = divmod(total, workers)
    return [base + (1 if k < extra else 0) for k in range(workers)]


# --------------------------------------------------------------------------------------------
# the flow hash
# --------------------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrap-around intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _C1
    x = x ^ (x >> np.uint64(27))
    x = x * _C2
    return x ^ (x >> np.uint64(31))


def _endpoint(hi: np.ndarray, lo: np.ndarray, port: np.ndarray) -> np.ndarray:
    return _mix(_mix(lo ^ _GOLDEN) ^ hi ^ (port.astype(np.uint64) << np.uint64(40)))


def _parse_arrays(buffer, offsets, lengths, linktypes) -> np.ndarray:
    """The fields the sharder needs, as the core's PARSED_DTYPE array (or the same fields from
    the pure-Python parser when the compiled core is missing)."""
    try:
        from hyperplane import _core
    except ImportError:
        _core = None
    if _core is not None:
        return _core.parse_batch(buffer, offsets, lengths, linktypes)
    from hyperplane.packet import parse

    dtype = np.dtype([("src_hi", "<u8"), ("src_lo", "<u8"), ("dst_hi", "<u8"), ("dst_lo", "<u8"),
                      ("l3", "<i4"), ("l4", "<i4"), ("sport", "<u2"), ("dport", "<u2"), ("ok", "?"),
                      ("version", "u1"), ("proto", "u1"), ("fragment", "?")])
    out = np.zeros(len(offsets), dtype=dtype)
    view = memoryview(buffer)
    for i, (off, length, lt) in enumerate(zip(np.asarray(offsets).tolist(), np.asarray(lengths).tolist(),
                                              np.asarray(linktypes).tolist())):
        p = parse(bytes(view[off:off + length]), lt)
        if not p.ok:
            continue
        out[i] = (p.src >> 64, p.src & 0xFFFFFFFFFFFFFFFF, p.dst >> 64, p.dst & 0xFFFFFFFFFFFFFFFF, p.l3, p.l4,
                  p.sport, p.dport, True, p.version, p.proto, p.fragment)
    return out


class Sharder:
    """Assigns each packet of a capture to a worker (see the module docstring). Deterministic:
    the same packets in the same order give the same assignment in every process."""

    def __init__(self, workers: int, sandboxes, port_range: tuple[int, int] = limits.PORT_RANGE):
        from hyperplane.engine import Sandbox

        self.workers = workers
        self.slices = port_slices(port_range, workers)
        self.port_range = (self.slices[0][0], self.slices[-1][1])
        self._starts = np.array([lo for lo, _ in self.slices], dtype=np.int64)
        self._nets = []  # (version, net_hi, net_lo, mask_hi, mask_lo)
        for sb in Sandbox.normalise(sandboxes):
            net = sb.network
            bits = net.max_prefixlen
            mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
            value = int(net.network_address)
            self._nets.append((net.version, np.uint64(value >> 64), np.uint64(value & 0xFFFFFFFFFFFFFFFF),
                               np.uint64(mask >> 64), np.uint64(mask & 0xFFFFFFFFFFFFFFFF)))
        self._fragments: dict[tuple, int] = {}

    def _in_sandbox(self, version, hi, lo) -> np.ndarray:
        hit = np.zeros(len(lo), dtype=bool)
        for v, net_hi, net_lo, mask_hi, mask_lo in self._nets:
            hit |= (version == v) & ((hi & mask_hi) == net_hi) & ((lo & mask_lo) == net_lo)
        return hit

    def assign(self, buffer, offsets, lengths, linktypes) -> np.ndarray:
        """The worker of every packet of one batch (an int array)."""
        n = len(offsets)
        if self.workers == 1 or n == 0:
            return np.zeros(n, dtype=np.int64)
        p = _parse_arrays(buffer, offsets, lengths, linktypes)
        ok = p["ok"]
        version = p["version"]
        sport, dport = p["sport"], p["dport"]
        with np.errstate(over="ignore"):
            a = _endpoint(p["src_hi"], p["src_lo"], sport)
            b = _endpoint(p["dst_hi"], p["dst_lo"], dport)
            h = _mix(a + b + p["proto"].astype(np.uint64))
        worker = (h % np.uint64(self.workers)).astype(np.int64)
        sandbox = self._in_sandbox(version, p["src_hi"], p["src_lo"]) | self._in_sandbox(version, p["dst_hi"], p["dst_lo"])
        lo, hi = self.port_range
        port = dport.astype(np.int64)
        vpc_side = ok & ~sandbox & (p["l4"] >= 0) & (port >= lo) & (port <= hi)
        if vpc_side.any():
            worker[vpc_side] = np.searchsorted(self._starts, port[vpc_side], side="right") - 1
        worker[~ok] = 0
        frag = np.flatnonzero(ok & p["fragment"])
        if len(frag):
            self._fragments_of(frag, p, worker, buffer, offsets)
        return worker

    def _fragments_of(self, rows, p, worker, buffer, offsets) -> None:
        """Later fragments follow the first one (in capture order, so every process agrees)."""
        table = self._fragments
        for i in rows.tolist():
            start = int(offsets[i]) + int(p["l3"][i])
            version = int(p["version"][i])
            ident = (buffer[start + 4] << 8 | buffer[start + 5]) if version == 4 else 0
            key = (version, int(p["src_hi"][i]), int(p["src_lo"][i]), int(p["dst_hi"][i]), int(p["dst_lo"][i]), ident)
            if p["l4"][i] >= 0:
                table[key] = int(worker[i])
                if len(table) > 65536:  # bounded: forget the oldest datagrams
                    for old in list(table)[: len(table) // 2]:
                        del table[old]
            else:
                worker[i] = table.get(key, int(worker[i]))


# --------------------------------------------------------------------------------------------
# one worker
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    config: ReplayConfig
    worker: int
    workers: int
    folder: str
    eni_capacity: int
    port_range: tuple[int, int]
    nat_port_range: tuple[int, int]
    nat_per_destination: int


def _engine(job: _Job):
    from hyperplane.engine import Engine, EngineOptions

    cfg = job.config
    options = EngineOptions(tcp_strict=cfg.tcp_strict, flow_log_interval=cfg.flow_log_interval, seed=cfg.seed,
                            eni_capacity=job.eni_capacity, port_range=job.port_range,
                            nat_connections_per_destination=job.nat_per_destination,
                            nat_port_range=job.nat_port_range)
    return Engine(cfg.model, cfg.sandboxes, options, backend=cfg.backend)


def _tap_records(packets, emitted, comments, pcapng: bool) -> tuple[list[int], list[int]]:
    """(batch-local packet index, bytes in the file) of every record ``replay._write_tap`` writes,
    in its order: a pcap record is 16 + n bytes, a pcapng EPB 32 + n padded, plus its comment."""
    if hasattr(packets, "lengths") and hasattr(packets, "offsets"):
        local = np.asarray(packets.index, dtype=np.int64).tolist()
        sizes = np.asarray(packets.lengths, dtype=np.int64).tolist()
    else:
        local = [i for i, _ in packets]
        sizes = [len(data) for _, data in packets]
    notes = [comments[i] if comments else None for i in local]
    if emitted:
        keyed = sorted([(i, 0, n, c) for i, n, c in zip(local, sizes, notes)]
                       + [(i, 1, len(data), EMITTED_COMMENT) for i, data in emitted])
        local = [k[0] for k in keyed]
        sizes = [k[2] for k in keyed]
        notes = [k[3] for k in keyed]
    if not pcapng:
        return local, [16 + n for n in sizes]
    out = []
    for n, note in zip(sizes, notes):
        size = 32 + n + (-n) % 4
        if note:
            text = len(note.encode("utf-8"))
            size += 4 + text + (-text) % 4 + 4
        out.append(size)
    return local, out


def _run_worker(job: _Job) -> dict:
    """Replay the packets of shard ``job.worker`` exactly as ``run_replay`` does (one
    ``process_batch`` per reader batch, the same tap writing); outputs go to files in ``job.folder``
    with the capture index of every record."""
    from hyperplane.io import CaptureTruncatedWarning, PcapngWriter, open_capture, open_writer
    from hyperplane.replay import _comments, _FlowLogStream, _write_tap

    cfg = job.config
    engine = _engine(job)
    sharder = Sharder(job.workers, cfg.sandboxes, cfg.port_range or limits.PORT_RANGE)
    me = job.worker
    writers = {name: open_writer(_tap_part(job.folder, name, me, path)) for name, path in cfg.taps.items()}
    want_comments = any(isinstance(w, PcapngWriter) for w in writers.values())
    # the capture index and file size of every tap record, appended as int64 as they are written
    tap_rows = {name: open(os.path.join(job.folder, f"rows-{name}-{me}.bin"), "wb") for name in cfg.taps}
    tap_sizes = {name: open(os.path.join(job.folder, f"sizes-{name}-{me}.bin"), "wb") for name in cfg.taps}
    drops = open(os.path.join(job.folder, f"drops-{me}.txt"), "w") if cfg.drops_path else None
    keyed = _KeyedFlowLogs(job.folder, me) if cfg.flow_logs_path else None
    flow_logs = _FlowLogStream(engine, lambda before: keyed.write(*engine.flow_log_lines(before))) \
        if keyed is not None else None
    index = mine = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CaptureTruncatedWarning)
        reader = open_capture(cfg.capture)
        with reader:
            for batch in reader:
                n = len(batch.offsets)
                owner = sharder.assign(batch.buffer, batch.offsets, batch.lengths, batch.linktypes)
                rows = np.flatnonzero(owner == me)
                if len(rows):
                    res = engine.process_batch(batch.buffer, batch.offsets[rows], batch.lengths[rows],
                                               batch.timestamps[rows], batch.linktypes[rows])
                    glob = rows + index  # capture index of each packet of this sub-batch
                    if writers:
                        comments = _comments(res, len(rows)) if want_comments else None
                        ts_ns = batch.ts_ns[rows]
                        for tap, writer in writers.items():
                            packets, emitted = res.taps.get(tap, ()), res.emitted.get(tap, ())
                            _write_tap(writer, packets, emitted, ts_ns, comments)
                            local, sizes = _tap_records(packets, emitted, comments, isinstance(writer, PcapngWriter))
                            if local:
                                glob[np.asarray(local, dtype=np.int64)].tofile(tap_rows[tap])
                                np.asarray(sizes, dtype=np.int64).tofile(tap_sizes[tap])
                    if drops is not None and res.reasons.any():
                        for record in res.drop_records(0):
                            record["index"] = row = int(glob[record["index"]])
                            drops.write(f"{row}\t{json.dumps(record)}\n")
                mine += len(rows)
                index += n
                if flow_logs is not None and n:
                    flow_logs.after(batch.timestamps)  # the capture's clock: every worker flushes alike
            truncated = bool(reader.truncated)
    for name, writer in writers.items():
        writer.close()
        tap_rows[name].close()
        tap_sizes[name].close()
    if drops is not None:
        drops.close()
    summary = engine.summary()
    if summary["packets"] != mine:
        raise AssertionError(f"worker {me}: processed {mine} packets, engine counted {summary['packets']}")
    flow = None
    if flow_logs is not None:
        flow_logs.finish()
        keyed.close()
        flow = {"fields": tuple(engine.flow_log_fields)}
    return {"worker": me, "summary": summary, "packets_total": index, "truncated": truncated,
            "warnings": [str(w.message) for w in caught], "flow": flow,
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}


class _KeyedFlowLogs:
    """A worker's flow-log records as they are flushed, formatted here (in parallel) and written
    to its file behind the key the parent merges the workers' files on: (window, start second,
    worker, arrival)."""

    def __init__(self, folder: str, worker: int):
        self.arrived = 0
        self.fh = open(_flow_part(folder, worker), "w")

    def write(self, lines, windows, starts) -> None:
        keys = [(w, s, self.arrived + i) for i, (w, s) in enumerate(zip(windows.tolist(), starts.tolist()))]
        self.arrived += len(keys)
        self.fh.writelines(f"{w}\t{s}\t{k}\t{line}\n" for (w, s, k), line in sorted(zip(keys, lines)))

    def close(self) -> None:
        self.fh.close()


def _child(job: _Job, conn) -> None:
    try:
        conn.send(("ok", _run_worker(job)))
    except BaseException as exc:  # report everything to the parent, which re-raises
        try:
            conn.send(("error", exc, traceback.format_exc()))
        except Exception:
            conn.send(("error", RuntimeError(repr(exc)), traceback.format_exc()))
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------


def _tap_part(folder: str, name: str, worker: int, final_path: str) -> str:
    """A worker's file for one tap, in the final file's format (the name's extension decides)."""
    ext = ".pcapng" if str(final_path).lower().endswith(".pcapng") else ".pcap"
    return os.path.join(folder, f"tap-{name}-{worker}{ext}")


def _flow_part(folder: str, worker: int) -> str:
    return os.path.join(folder, f"flows-{worker}.txt")


def _flow_lines(path: str, worker: int) -> Iterator[tuple[tuple, str]]:
    with open(path) as fh:
        for line in fh:
            window, start, arrived, text = line.rstrip("\n").split("\t", 3)
            yield (int(window), int(start), worker, int(arrived)), text


def _walk_records(data, pcapng: bool) -> tuple[int, np.ndarray]:
    """(file header length, size of every record), by walking the blocks: the fallback when the
    sizes a worker computed do not add up to its file."""
    sizes = []
    total = len(data)
    if pcapng:
        pos = 0
        while pos < total and struct.unpack_from("<I", data, pos)[0] in (0x0A0D0D0A, 0x00000001):
            pos += struct.unpack_from("<I", data, pos + 4)[0]
        header = pos
        while pos < total:
            sizes.append(struct.unpack_from("<I", data, pos + 4)[0])
            pos += sizes[-1]
    else:
        header = pos = 24
        while pos < total:
            sizes.append(16 + struct.unpack_from("<I", data, pos + 8)[0])
            pos += sizes[-1]
    return header, np.array(sizes, dtype=np.int64)


def _file_header_length(data, pcapng: bool) -> int:
    if not pcapng:
        return 24
    pos = 0
    while pos < len(data) and struct.unpack_from("<I", data, pos)[0] in (0x0A0D0D0A, 0x00000001):
        pos += struct.unpack_from("<I", data, pos + 4)[0]
    return pos


def _int64s(path: str) -> np.ndarray:
    """A worker's int64 file as a read-only array mapped from disk (not read into memory)."""
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.memmap(path, dtype=np.int64, mode="r")


#: Capture packets per step of a tap merge (what the merge holds in memory at once).
MERGE_CHUNK = 1 << 16


def _merge_tap(folder: str, name: str, path: str, workers: int, chunk: Optional[int] = None) -> None:
    """The workers' records of one tap, in capture order, behind the first worker's file header.
    Records are copied as bytes, never decoded or encoded again, ``chunk`` capture packets at a
    time from the workers' files mapped in memory: the merge holds one chunk, whatever the
    capture's size."""
    pcapng = str(path).lower().endswith(".pcapng")
    chunk = chunk or MERGE_CHUNK
    with contextlib.ExitStack() as stack:
        maps, rows, sizes, offsets = [], [], [], []
        for k in range(workers):
            fh = stack.enter_context(open(_tap_part(folder, name, k, path), "rb"))
            data = stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            header = _file_header_length(data, pcapng)
            size = _int64s(os.path.join(folder, f"sizes-{name}-{k}.bin"))
            if header + int(size.sum()) != len(data):
                header, size = _walk_records(data, pcapng)
            index = _int64s(os.path.join(folder, f"rows-{name}-{k}.bin"))
            if len(index) != len(size):
                raise AssertionError(f"tap {name}, worker {k}: {len(size)} records for {len(index)} packets")
            if k == 0:
                head = data[:header]
            maps.append(data)
            rows.append(index)
            sizes.append(size)
            offsets.append(header)
        done = [0] * workers  # records of each worker copied so far
        last = max((int(r[-1]) for r in rows if len(r)), default=-1)
        with open_output(path) as out:
            out.write(head)
            for lo in range(0, last + 1, chunk):
                part_rows, part_start, part_size, part_worker = [], [], [], []
                for k in range(workers):
                    a, b = done[k], int(np.searchsorted(rows[k], lo + chunk, side="left"))
                    if b == a:
                        continue
                    size = np.asarray(sizes[k][a:b], dtype=np.int64)
                    start = np.empty(b - a, dtype=np.int64)
                    start[0] = offsets[k]
                    np.cumsum(size[:-1], out=start[1:])
                    start[1:] += offsets[k]
                    part_rows.append(np.asarray(rows[k][a:b]))
                    part_start.append(start)
                    part_size.append(size)
                    part_worker.append(np.full(b - a, k, dtype=np.int64))
                    done[k], offsets[k] = b, offsets[k] + int(size.sum())
                if not part_rows:
                    continue
                order = np.argsort(np.concatenate(part_rows), kind="stable")  # a packet's records: one worker's order
                start = np.concatenate(part_start)[order]
                end = start + np.concatenate(part_size)[order]
                worker = np.concatenate(part_worker)[order]
                # records that follow each other in one worker's file are copied as one run
                new_run = np.ones(len(start), dtype=bool)
                new_run[1:] = (start[1:] != end[:-1]) | (worker[1:] != worker[:-1])
                first = np.flatnonzero(new_run)
                final = np.append(first[1:], len(start)) - 1
                out.write(b"".join([maps[k][a:b] for k, a, b in zip(worker[first].tolist(), start[first].tolist(),
                                                                    end[final].tolist())]))


def _drop_lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path) as fh:
        for line in fh:
            index, _, record = line.partition("\t")
            yield int(index), record


def merge_summaries(summaries: list[dict]) -> dict:
    """One summary (DESIGN §4 shape) from the shards' summaries: counts add up; ENIs and NAT
    gateways are matched by id and their ``peak_connections`` add up (see the module docstring)."""
    out = {"packets": 0, "forwarded": 0, "dropped": 0, "drops": {}, "connections": 0, "enis": [],
           "nat_gateways": []}
    enis: dict[str, dict] = {}
    nats: dict[str, dict] = {}
    for s in summaries:
        for key in ("packets", "forwarded", "dropped", "connections"):
            out[key] += s[key]
        for reason, count in s["drops"].items():
            out["drops"][reason] = out["drops"].get(reason, 0) + count
        for eni in s["enis"]:
            have = enis.get(eni["id"])
            if have is None:
                enis[eni["id"]] = dict(eni)
                continue
            have["peak_connections"] += eni["peak_connections"]
            extra = [f for f in eni["functions"] if f not in have["functions"]]
            if extra:
                have["functions"] = type(have["functions"])([*have["functions"], *extra])
        for nat in s["nat_gateways"]:
            have = nats.get(nat["id"])
            if have is None:
                nats[nat["id"]] = dict(nat)
            else:
                have["peak_connections"] += nat["peak_connections"]
                have["error_port_allocation"] += nat["error_port_allocation"]
    order = {r: i for i, r in enumerate(_reason_order())}
    out["drops"] = dict(sorted(out["drops"].items(), key=lambda kv: order.get(kv[0], len(order))))
    out["enis"] = list(enis.values())
    out["nat_gateways"] = list(nats.values())
    return out


def _reason_order() -> list[str]:
    from hyperplane.codes import DropReason

    return [r.label for r in DropReason if r]


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def _preload(backend: str) -> None:
    """Import what every worker needs once, before the fork, rather than once per worker."""
    import hyperplane.io  # noqa: F401
    import hyperplane.reference.dataplane  # noqa: F401
    from hyperplane.engine import available_backends

    if backend != "reference" and "core" in available_backends():
        try:
            import hyperplane.core  # noqa: F401  (imported for the workers)
        except ImportError:
            pass


def run_parallel_replay(config: ReplayConfig, workers: int, *, stats: Optional[dict] = None) -> dict:
    """Replay ``config`` with ``workers`` processes; returns the merged summary (the shape of
    :func:`hyperplane.replay.run_replay`'s) and writes the same files it would.

    ``workers == 1`` is :func:`run_replay` itself. ``stats``, when given, receives per-worker
    figures (packets, seconds) and the merge time. Raises what ``run_replay`` raises
    (``CaptureFormatError`` for an unreadable capture, ``ValueError`` for an output that is the
    capture or another output, or when the capacity or the port range cannot be split among the
    workers)."""
    if workers < 1:
        raise ShardingError("workers must be at least 1")
    if workers == 1:
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = run_replay(config)
        if stats is not None:
            seconds = time.perf_counter() - started
            stats.update(workers=1, seconds=seconds, merge_seconds=0.0,
                         per_worker=[{"packets": summary["packets"], "seconds": seconds,
                                      "cpu_seconds": time.process_time() - cpu_started}])
        return summary
    check_outputs(config)
    port_range = tuple(config.port_range or limits.PORT_RANGE)
    capacity = config.eni_capacity if config.eni_capacity is not None else limits.ENI_CAPACITY
    slices = port_slices(port_range, workers)
    nat_slices = port_slices(limits.NAT_PORT_RANGE, workers)
    capacities = shares(capacity, workers, "ENI capacity")
    nat_limits = shares(limits.NAT_CONNECTIONS_PER_DESTINATION, workers, "NAT connections per destination")
    started = time.perf_counter()
    _preload(config.backend)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with tempfile.TemporaryDirectory(prefix="hyperplane-parallel-") as folder:
        child_config = replace(config, progress=False)
        procs, pipes = [], []
        # The parent's objects (a previous engine's, the caller's) are inherited by every forked
        # worker: frozen, the workers' collector never walks them (walking writes to their pages,
        # which copies them: a fork taken after an in-process replay ran ~30 % slower).
        gc.freeze()
        try:
            _start_workers(ctx, child_config, workers, folder, capacities, slices, nat_slices, nat_limits,
                           procs, pipes)
        finally:
            gc.unfreeze()
        results, failure = [], None
        try:
            for k, pipe in enumerate(pipes):
                try:
                    message = pipe.recv()
                except EOFError:
                    message = ("error", RuntimeError(f"replay worker {k} died (exit code {procs[k].exitcode})"), "")
                if message[0] == "error" and failure is None:
                    failure = message
                elif message[0] == "ok":
                    results.append(message[1])
        finally:
            for proc in procs:
                proc.join(timeout=60)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
        if failure is not None:
            exc = failure[1]
            if isinstance(exc, Exception) and failure[2]:
                exc.add_note(f"in a replay worker:\n{failure[2]}")
            raise exc
        results.sort(key=lambda r: r["worker"])
        merge_started = time.perf_counter()
        with gc_paused():  # the merge builds a record per flow-log line: nothing cyclic
            summary = _merge_outputs(config, results, folder, workers)
        merge_seconds = time.perf_counter() - merge_started
    if stats is not None:
        stats.update(workers=workers, seconds=time.perf_counter() - started, merge_seconds=merge_seconds,
                     per_worker=[{"packets": r["summary"]["packets"], "seconds": r["seconds"],
                                  "cpu_seconds": r["cpu_seconds"]} for r in results])
    return summary


def _start_workers(ctx, child_config, workers, folder, capacities, slices, nat_slices, nat_limits, procs, pipes):
    """Start one worker process per shard; appends each to ``procs`` and its pipe to ``pipes``."""
    for k in range(workers):
        job = _Job(child_config, k, workers, folder, capacities[k], slices[k], nat_slices[k], nat_limits[k])
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(job, child_end), name=f"hyperplane-replay-{k}", daemon=True)
        proc.start()
        child_end.close()
        procs.append(proc)
        pipes.append(parent_end)


def _merge_outputs(config: ReplayConfig, results: list[dict], folder: str, workers: int) -> dict:
    from hyperplane.io import CaptureTruncatedWarning

    for message in results[0]["warnings"]:
        warnings.warn(message, CaptureTruncatedWarning, stacklevel=3)
    for name, path in config.taps.items():
        _merge_tap(folder, name, path, workers)
    if config.drops_path:
        streams = [_drop_lines(os.path.join(folder, f"drops-{k}.txt")) for k in range(workers)]
        with open_output(config.drops_path, text=True) as fh:
            for _, record in heapq.merge(*streams, key=lambda r: r[0]):
                fh.write(record)
    summary = merge_summaries([r["summary"] for r in results])
    summary["capture_truncated"] = any(r["truncated"] for r in results)
    total = results[0]["packets_total"]
    if summary["packets"] != total:
        raise AssertionError(f"accounting error: read {total} packets, the workers counted {summary['packets']}")
    if config.flow_logs_path:
        streams = [_flow_lines(_flow_part(folder, k), k) for k in range(workers)]
        with FlowLogWriter(config.flow_logs_path, results[0]["flow"]["fields"]) as writer:
            merged = heapq.merge(*streams, key=lambda entry: entry[0])
            while True:
                lines = [text for _, text in itertools.islice(merged, 1 << 16)]
                if not lines:
                    break
                writer.write_lines(lines)
    if config.summary_path:
        with open_output(config.summary_path, text=True) as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    return summary
