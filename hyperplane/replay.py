"""Replay a capture through the engine: the library behind ``hyperplane replay`` and ``hyperplane demo``.

Streaming: the capture is read in batches, every packet is processed and written to the taps as it
goes, so memory grows with the tracked connections, not with the capture. Every packet read is
accounted for: ``packets == forwarded + dropped`` in the summary, always.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from hyperplane.codes import Verdict

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


def _comment(result) -> str:
    if result.verdict == Verdict.FORWARDED:
        return "forwarded"
    parts = [f"dropped {result.reason.label}"]
    if result.component:
        parts.append(f"by {result.component}")
    if result.rule is not None:
        parts.append(f"rule {result.rule}")
    return " ".join(parts)


def _drop_record(index: int, result) -> dict:
    return {
        "index": index,
        "reason": result.reason.label,
        "component": result.component,
        "rule": result.rule,
        "explanation_code": result.explanation_code,
    }


def run_replay(cfg: ReplayConfig) -> dict:
    """Run the replay described by ``cfg``; returns the summary (DESIGN §4 shape).

    Raises ``hyperplane.io.CaptureFormatError`` when the capture cannot be read at all.
    """
    from hyperplane.io import open_capture, open_writer

    engine = _engine_for(cfg)
    reader = open_capture(cfg.capture)
    with contextlib.ExitStack() as stack:
        stack.enter_context(reader)
        writers = {name: stack.enter_context(open_writer(path)) for name, path in cfg.taps.items()}
        drops = stack.enter_context(open(cfg.drops_path, "w")) if cfg.drops_path else None
        progress = stack.enter_context(_Progress(cfg.capture)) if cfg.progress else None
        index = 0
        for batch in reader:
            buf = batch.buffer
            offsets, lengths, stamps, linktypes = (batch.offsets.tolist(), batch.lengths.tolist(),
                                                   batch.timestamps.tolist(), batch.linktypes.tolist())
            for off, length, ts, linktype in zip(offsets, lengths, stamps, linktypes):
                result = engine.process(buf[off:off + length], ts, linktype)
                if writers:
                    comment = _comment(result)
                    for tap, data in result.taps.items():
                        writer = writers.get(tap)
                        if writer is not None and data:
                            writer.write(data, ts=ts, comment=comment)
                    for tap, data in getattr(result, "emitted", ()) or ():
                        writer = writers.get(tap)
                        if writer is not None:
                            writer.write(data, ts=ts, comment="emitted by the emulator")
                if drops is not None and result.verdict == Verdict.DROPPED:
                    drops.write(json.dumps(_drop_record(index, result)) + "\n")
                index += 1
            if progress is not None:
                progress.advance(len(offsets), reader)
        summary = engine.summary()
        summary["capture_truncated"] = bool(reader.truncated)
        if cfg.flow_logs_path:
            from hyperplane.flowlogs import write_flow_logs

            write_flow_logs(engine.flow_logs(flush=True), cfg.flow_logs_path, engine.flow_log_fields)
    if summary["packets"] != index:
        raise AssertionError(f"accounting error: read {index} packets, engine counted {summary['packets']}")
    if cfg.summary_path:
        with open(cfg.summary_path, "w") as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    return summary


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
