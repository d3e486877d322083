"""Replay a capture through the engine: the library behind ``hyperplane replay`` and ``hyperplane demo``.

Streaming: the capture is read in batches, every packet is processed and written to the taps as it
goes, so memory grows with the tracked connections, not with the capture. Every packet read is
accounted for: ``packets == forwarded + dropped`` in the summary, always.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hyperplane.codes import DropReason
from hyperplane.engine import survivors_frozen
from hyperplane.io.output import open_output

TAP_NAMES = ("lambda", "eni", "internet")


@dataclass
class ReplayConfig:
    capture: str
    model: Any
    sandboxes: list
    taps: dict[str, str] = field(default_factory=dict)
    drops_path: Optional[str] = None
    flow_logs_path: Optional[str] = None
    flow_log_interval: int = 600
    summary_path: Optional[str] = None
    eni_capacity: Optional[int] = None
    port_range: Optional[tuple[int, int]] = None
    tcp_strict: bool = False
    backend: str = "auto"
    seed: int = 0
    progress: bool = False


def _engine_for(cfg: ReplayConfig):
    from hyperplane.engine import Engine, EngineOptions

    opts: dict[str, Any] = {"tcp_strict": cfg.tcp_strict, "flow_log_interval": cfg.flow_log_interval,
                            "seed": cfg.seed}
    if cfg.eni_capacity is not None:
        opts["eni_capacity"] = cfg.eni_capacity
    if cfg.port_range is not None:
        opts["port_range"] = tuple(cfg.port_range)
    return Engine(cfg.model, cfg.sandboxes, EngineOptions(**opts), backend=cfg.backend)


def _comments(res, n: int) -> list[str]:
    """The per-packet verdict comments of a batch (pcapng taps): ``forwarded`` or
    ``dropped REASON by COMPONENT rule RULE``."""
    comments = ["forwarded"] * n
    reasons = res.reasons
    for i in np.flatnonzero(reasons).tolist():
        parts = [f"dropped {DropReason(int(reasons[i])).label}"]
        if res.components[i]:
            parts.append(f"by {res.components[i]}")
        if res.rules[i] is not None:
            parts.append(f"rule {res.rules[i]}")
        comments[i] = " ".join(parts)
    return comments


EMITTED_COMMENT = "emitted by the emulator"


def _write_tap(writer, packets, emitted, ts_ns, comments) -> None:
    """Write one tap's packets of a batch. ``packets`` is the engine's sequence of ``(index,
    bytes)`` in packet order (the core's ``TapOutput`` carries one buffer with offsets, written as
    it is); ``emitted`` the packets the emulator sent by itself, each after its trigger's own."""
    if emitted:
        rows = [(i, 0, data, comments[i] if comments else None) for i, data in packets]
        rows += [(i, 1, data, EMITTED_COMMENT) for i, data in emitted]
        rows.sort(key=lambda row: (row[0], row[1]))
        for i, _, data, comment in rows:
            writer.write(data, ts_ns=int(ts_ns[i]), comment=comment)
        return
    if not len(packets):
        return
    if comments is None and hasattr(packets, "records") and hasattr(writer, "write_rows"):
        writer.write_rows(packets, ts_ns[np.asarray(packets.index, dtype=np.int64)])  # no gathering first
        return
    if hasattr(packets, "buffer") and hasattr(packets, "offsets"):
        index = np.asarray(packets.index, dtype=np.int64)
        buffer, offsets, lengths = packets.buffer, packets.offsets, packets.lengths
    else:
        index = np.fromiter((i for i, _ in packets), dtype=np.int64, count=len(packets))
        datas = [data for _, data in packets]
        lengths = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
        offsets = np.zeros(len(datas), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        buffer = b"".join(datas)
    tap_comments = [comments[i] for i in index.tolist()] if comments is not None else None
    writer.write_many(buffer, offsets, lengths, ts_ns=ts_ns[index], comments=tap_comments)


def check_outputs(cfg: ReplayConfig) -> None:
    """Raise ValueError naming the first output that is the capture being read or another output
    (the same path, or another name of the same file)."""
    outputs = [(f"--tap {name}", path) for name, path in cfg.taps.items()]
    outputs += [(flag, path) for flag, path in (("--drops", cfg.drops_path), ("--flow-logs", cfg.flow_logs_path),
                                                ("--summary", cfg.summary_path)) if path]
    seen = [("the capture", cfg.capture)]
    for flag, path in outputs:
        for what, other in seen:
            if _same_file(path, other):
                raise ValueError(f"{flag} {path}: that is {what}" + ("" if what == "the capture" else f" ({other})"))
        seen.append((flag, path))


def _same_file(a, b) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def run_replay(cfg: ReplayConfig) -> dict:
    """Run the replay described by ``cfg``; returns the summary (DESIGN §4 shape).

    Each batch of the reader goes through ``Engine.process_batch`` and each tap's packets of the
    batch are written with one ``write_many`` call, so the per-packet work is the engine's.
    Raises ``hyperplane.io.CaptureFormatError`` when the capture cannot be read at all, and
    ValueError when an output would overwrite the capture or another output (:func:`check_outputs`).
    Output files are overwritten in place and cut to length when closed (hyperplane/io/output.py).
    """
    from hyperplane.io import PcapngWriter, open_capture, open_writer

    check_outputs(cfg)
    engine = _engine_for(cfg)
    reader = open_capture(cfg.capture)
    with contextlib.ExitStack() as stack:
        stack.enter_context(reader)
        writers = {name: stack.enter_context(open_writer(path)) for name, path in cfg.taps.items()}
        want_comments = any(isinstance(w, PcapngWriter) for w in writers.values())
        drops = stack.enter_context(open_output(cfg.drops_path, text=True)) if cfg.drops_path else None
        progress = stack.enter_context(_Progress(cfg.capture)) if cfg.progress else None
        freeze_survivors = stack.enter_context(survivors_frozen())
        flow_logs = None
        if cfg.flow_logs_path:
            from hyperplane.flowlogs import FlowLogWriter

            flow_writer = stack.enter_context(FlowLogWriter(cfg.flow_logs_path, engine.flow_log_fields))
            flow_logs = _FlowLogStream(engine, lambda before: engine.write_flow_logs(flow_writer.write_bytes, before))
        index = 0
        for batch in reader:
            n = len(batch.offsets)
            res = engine.process_batch(batch.buffer, batch.offsets, batch.lengths, batch.timestamps,
                                       batch.linktypes)
            if writers:
                comments = _comments(res, n) if want_comments else None
                for tap, writer in writers.items():
                    _write_tap(writer, res.taps.get(tap, ()), res.emitted.get(tap, ()), batch.ts_ns, comments)
            if drops is not None and res.reasons.any():
                drops.writelines(json.dumps(record) + "\n" for record in res.drop_records(index))
            index += n
            if flow_logs is not None and n:
                flow_logs.after(batch.timestamps)
            freeze_survivors()
            if progress is not None:
                progress.advance(n, reader)
        summary = engine.summary()
        summary["capture_truncated"] = bool(reader.truncated)
        if flow_logs is not None:
            flow_logs.finish()
    if summary["packets"] != index:
        raise AssertionError(f"accounting error: read {index} packets, engine counted {summary['packets']}")
    if cfg.summary_path:
        with open_output(cfg.summary_path, text=True) as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    return summary


class _FlowLogStream:
    """The flow-log file of a replay, written as the capture's clock moves on: a window's records
    are written once the clock (the latest packet timestamp so far) is one interval past the
    window's end, so memory holds the records of two windows at most, whatever the capture's
    length. The extra interval keeps a capture whose timestamps step back a little (packets
    captured on several queues) from splitting a record in two; a packet timestamped in a window
    already written gets a record of its own, written later. For a capture in time order the
    file is what one flush at the end writes: records by window, then by first packet."""

    def __init__(self, engine, flush):
        self.flush = flush  # flush(before): the records of the windows over by `before` (all: None) written
        self.interval = int(engine.options.flow_log_interval)
        self.clock = float("-inf")
        self.written_below = None  # windows before this index are written

    def after(self, timestamps) -> None:
        """After a batch with these packet timestamps: write the windows that are over."""
        self.clock = max(self.clock, float(np.max(timestamps)))
        before = self.clock - self.interval
        below = math.floor(before / self.interval)
        if self.written_below is None or below > self.written_below:
            self.written_below = below
            self.flush(before)

    def finish(self) -> None:
        self.flush(None)


class _Progress:
    """A rich progress bar over the capture's bytes; only used on a terminal."""

    def __init__(self, path: str):
        self.path = path
        self.total = os.path.getsize(path)

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.fields[packets]} packets"),
                                  TimeRemainingColumn(), transient=True)
        self._progress.__enter__()
        self._task = self._progress.add_task("replay", total=self.total, packets=0)
        self._packets = 0
        return self

    def advance(self, n: int, reader) -> None:
        self._packets += n
        pos = getattr(reader, "bytes_read", None)
        self._progress.update(self._task, completed=pos if pos is not None else 0, packets=self._packets)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)
