"""VPC Flow Logs: aggregation of packets into records, the text format, and the S3 layout.

AWS semantics implemented (AWS-FACTS 8):

- A record covers one flow (network interface, 5-tuple) and one action (ACCEPT / REJECT) during
  one aggregation interval (600 s default, 60 s option). Windows here are aligned to multiples of
  the interval in Unix time (a 600 s window starts at hh:00, hh:10, ...): a packet at ``ts`` belongs
  to window ``floor(ts / interval) * interval``. ``start`` / ``end`` are the Unix seconds
  (``floor(ts)``) of the first and last packet of the record.
- Default format = every version-2 field in AWS's order (:data:`V2_FIELDS`), header line first;
  custom formats may use any subset of the v2-v5 fields (:data:`FIELD_VERSIONS`) in any order; the
  ``version`` field is the highest version among the chosen fields; an unavailable value is ``-``.
- ``tcp-flags`` is the OR over the record's packets of FIN=1, SYN=2, RST=4, and SYN-ACK=18 (the
  ACK bit counts only together with SYN); ACK or PSH alone count 0; SYN+ECE counts 2. Non-TCP
  records carry 0.
- ``instance-id`` is ``-`` (Hyperplane ENIs are requester-managed); ``type`` is IPv4/IPv6 from the
  address; ``pkt-srcaddr`` / ``pkt-dstaddr`` default to ``srcaddr`` / ``dstaddr``;
  ``traffic-path`` and ``flow-direction`` are ``-`` unless the caller gives them.
- S3 delivery: gzip files per 5 minutes of record *end* time, named
  ``<account>_vpcflowlogs_<region>_<flow-log-id>_<YYYYMMDDTHHmmZ>_<hash>.log.gz`` under
  ``AWSLogs/<account>/vpcflowlogs/<region>/<yyyy>/<mm>/<dd>/``.

Addresses may be given to :meth:`FlowLogAggregator.add` as text or as ints (IPv4 when below
2**32 unless ``type="IPv6"`` is passed); use one form consistently for a flow, since the raw value
is part of the aggregation key. They are written as text.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import socket
import time
from typing import Iterable, Sequence

import numpy as np

from hyperplane import limits
from hyperplane.io.output import open_output

#: The default format: every version-2 field, in AWS's order (cannot be changed on AWS).
V2_FIELDS: tuple[str, ...] = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
)

#: Every field this writer knows, with the format version that introduced it.
FIELD_VERSIONS: dict[str, int] = {
    **{name: 2 for name in V2_FIELDS},
    **{name: 3 for name in ("vpc-id", "subnet-id", "instance-id", "tcp-flags", "type",
                            "pkt-srcaddr", "pkt-dstaddr")},
    **{name: 4 for name in ("region", "az-id", "sublocation-type", "sublocation-id")},
    **{name: 5 for name in ("pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction",
                            "traffic-path")},
}

#: The v5 custom fields the emulator fills from the dataplane (issue 4).
V5_CUSTOM_FIELDS: tuple[str, ...] = V2_FIELDS + (
    "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr",
    "flow-direction", "traffic-path",
)

#: ``extra`` keyword arguments accepted by :meth:`FlowLogAggregator.add` (field name with ``_``).
EXTRA_FIELDS: tuple[str, ...] = (
    "vpc_id", "subnet_id", "instance_id", "type", "pkt_srcaddr", "pkt_dstaddr", "region",
    "az_id", "sublocation_type", "sublocation_id", "pkt_src_aws_service", "pkt_dst_aws_service",
    "flow_direction", "traffic_path",
)

#: Fields parsed back as integers by :func:`read_flow_logs`.
INT_FIELDS = frozenset({"version", "srcport", "dstport", "protocol", "packets", "bytes", "start",
                        "end", "tcp-flags", "traffic-path"})

ACTIONS = ("ACCEPT", "REJECT")
LOG_STATUSES = ("OK", "NODATA", "SKIPDATA")

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10


def _aws_tcp_flags(flags: int) -> int:
    """What one packet's flags add to a record's ``tcp-flags`` (AWS's rule, see module doc)."""
    value = flags & (_FIN | _SYN | _RST)
    if flags & _SYN and flags & _ACK:
        value |= _ACK
    return value


#: Per flags byte, the bits it contributes to ``tcp-flags`` (index = TCP flags byte).
AWS_TCP_FLAGS: tuple[int, ...] = tuple(_aws_tcp_flags(f) for f in range(256))


def check_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """Validate a (custom) field list: known names, no duplicates; returns it as a tuple."""
    fields = tuple(fields)
    if not fields:
        raise ValueError("a flow-log format needs at least one field")
    unknown = [f for f in fields if f not in FIELD_VERSIONS]
    if unknown:
        raise ValueError(f"unknown flow-log field(s): {', '.join(unknown)}; known: "
                         f"{' '.join(FIELD_VERSIONS)}")
    if len(set(fields)) != len(fields):
        raise ValueError("a flow-log field appears twice")
    return fields


def format_version(fields: Sequence[str]) -> int:
    """A format's version: the highest version among its fields."""
    return max(FIELD_VERSIONS[f] for f in fields)


def _address_text(address, ipv6: bool) -> str:
    if isinstance(address, str):
        return address
    if ipv6 or address > 0xFFFFFFFF:
        return socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, "big"))
    return socket.inet_ntop(socket.AF_INET, address.to_bytes(4, "big"))


class FlowRecord:
    """One flow-log record (one line)."""

    __slots__ = ("account_id", "interface_id", "srcaddr", "dstaddr", "srcport", "dstport",
                 "protocol", "packets", "bytes", "start", "end", "action", "log_status",
                 "tcp_flags", "extra", "window")

    def __init__(self, account_id: str, interface_id: str, srcaddr: str, dstaddr: str,
                 srcport: int, dstport: int, protocol: int, start: int, action: str,
                 window: int, extra: dict | None = None):
        self.account_id = account_id
        self.interface_id = interface_id
        self.srcaddr = srcaddr
        self.dstaddr = dstaddr
        self.srcport = srcport
        self.dstport = dstport
        self.protocol = protocol
        self.packets = 0
        self.bytes = 0
        self.start = start
        self.end = start
        self.action = action
        self.log_status = "OK"
        self.tcp_flags = 0
        self.extra = extra or {}
        self.window = window

    def value(self, field: str, version: int = 2) -> str:
        """The text of one field ('-' when unavailable)."""
        extra = self.extra
        if field == "version":
            return str(version)
        if field == "account-id":
            return self.account_id or "-"
        if field == "interface-id":
            return self.interface_id
        if field in ("srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes",
                     "start", "end", "action"):
            return str(getattr(self, field))
        if field == "log-status":
            return self.log_status
        if field == "tcp-flags":
            return str(self.tcp_flags)
        if field == "instance-id":
            return str(extra.get("instance_id") or "-")
        if field == "pkt-srcaddr":
            return str(extra.get("pkt_srcaddr") or self.srcaddr)
        if field == "pkt-dstaddr":
            return str(extra.get("pkt_dstaddr") or self.dstaddr)
        if field == "type":
            return str(extra.get("type") or ("IPv6" if ":" in self.srcaddr else "IPv4"))
        value = extra.get(field.replace("-", "_"))
        return "-" if value is None or value == "" else str(value)

    def format(self, fields: Sequence[str] = V2_FIELDS) -> str:
        """The record as one line of the given format (space-separated, no newline)."""
        if fields is V2_FIELDS or tuple(fields) == V2_FIELDS:  # the default format
            return _v2_lines((self,))[0]
        version = format_version(fields)
        return " ".join(self.value(f, version) for f in fields)

    def as_dict(self, fields: Sequence[str] = V2_FIELDS) -> dict:
        """The record as :func:`read_flow_logs` would parse it back."""
        return parse_line(self.format(fields), fields)

    def __repr__(self) -> str:
        return f"FlowRecord({self.format()!r})"


class FlowLogAggregator:
    """Packets in, flow-log records out: one record per (ENI, 5-tuple, action) per window."""

    __slots__ = ("interval", "account_id", "fields", "_records")

    def __init__(self, interval: int = limits.FLOW_LOG_INTERVAL, account_id: str = "123456789012",
                 fields: Sequence[str] = V2_FIELDS):
        if interval not in limits.FLOW_LOG_INTERVALS:
            raise ValueError(f"flow-log interval must be one of {limits.FLOW_LOG_INTERVALS} s, "
                             f"not {interval}")
        self.interval = int(interval)
        self.account_id = account_id
        self.fields = check_fields(fields)
        self._records: dict[tuple, FlowRecord] = {}

    def __len__(self) -> int:
        """Records not flushed yet."""
        return len(self._records)

    def add(self, eni_id: str, src, dst, sport: int, dport: int, proto: int, nbytes: int,
            ts: float, action: str, tcp_flags: int = 0, **extra) -> FlowRecord:
        """Count one packet of ``nbytes`` (IP length) seen on ``eni_id`` at ``ts`` with
        ``action`` ACCEPT or REJECT. ``extra`` (:data:`EXTRA_FIELDS`) is taken from the first
        packet of the record. Returns the record it went into."""
        record = self.record(eni_id, src, dst, sport, dport, proto, ts, action, **extra)
        record.packets += 1
        record.bytes += nbytes
        if tcp_flags:
            record.tcp_flags |= AWS_TCP_FLAGS[tcp_flags & 0xFF]
        return record

    def add_all(self, logs, proto: int, nbytes: int, ts: float, tcp_flags: int = 0) -> list[FlowRecord]:
        """:meth:`add` for one packet logged at several points: ``logs`` holds
        ``(eni_id, src, dst, sport, dport, action, extra)`` per point (``extra`` a dict or None).
        Returns the records, in the order of ``logs``."""
        records = self.record_all(logs, proto, ts)
        aws = AWS_TCP_FLAGS[tcp_flags & 0xFF] if tcp_flags else 0
        for record in records:
            record.packets += 1
            record.bytes += nbytes
            record.tcp_flags |= aws
        return records

    def record(self, eni_id: str, src, dst, sport: int, dport: int, proto: int, ts: float, action: str,
               **extra) -> FlowRecord:
        """The record a packet at ``ts`` goes into (made when it is the first), its time span
        stretched to ``ts``, without counting the packet (:meth:`add` counts it; the core's fast
        path counts its packets in bulk)."""
        return self.record_all(((eni_id, src, dst, sport, dport, action, extra),), proto, ts)[0]

    def record_all(self, logs, proto: int, ts: float) -> list[FlowRecord]:
        """:meth:`record` for each ``(eni_id, src, dst, sport, dport, action, extra)`` of ``logs``
        (one packet's log points); the records in the order of ``logs``."""
        second = math.floor(ts)
        window = second - second % self.interval
        records = self._records
        out = []
        for eni_id, src, dst, sport, dport, action, extra in logs:
            key = (eni_id, src, dst, sport, dport, proto, action, window)
            record = records.get(key)
            if record is None:
                record = records[key] = self._new(key, second, extra)
            elif second > record.end:
                record.end = second
            elif second < record.start:
                record.start = second
            out.append(record)
        return out

    def _new(self, key: tuple, second: int, extra) -> FlowRecord:
        eni_id, src, dst, sport, dport, proto, action, window = key
        if action not in ACTIONS:
            raise ValueError(f"flow-log action must be ACCEPT or REJECT, not {action!r}")
        if extra:
            for name in extra:
                if name not in EXTRA_FIELDS:
                    raise TypeError(f"unknown flow-log attribute {name!r}")
            ipv6 = extra.get("type") == "IPv6"
        else:
            ipv6 = False
        return FlowRecord(self.account_id, eni_id, _address_text(src, ipv6), _address_text(dst, ipv6), sport, dport,
                          proto, second, action, window, extra)

    def flush(self, before: float | None = None) -> list[FlowRecord]:
        """Remove and return the finished records: those whose window ended at or before
        ``before`` (all of them when ``before`` is None). Order: by window, then by the arrival
        of each record's first packet, which is deterministic for a given packet sequence."""
        if before is None:
            done = list(self._records.items())
            self._records = {}
        else:
            interval = self.interval
            done = [(k, r) for k, r in self._records.items() if r.window + interval <= before]
            for key, _ in done:
                del self._records[key]
        records = [r for _, r in done]
        records.sort(key=_window_of)  # stable: arrival order within a window
        return records


    def pending(self) -> list[FlowRecord]:
        """The records not flushed yet, in flush order (they stay)."""
        return sorted(self._records.values(), key=_window_of)

    def flush_lines(self, before: float | None = None):
        """:meth:`flush`, as ``(lines, windows, starts)``: the lines of this aggregator's format
        with each record's window and start as int64 arrays (what a writer needs; the core
        backend's aggregator makes them without records)."""
        records = self.flush(before)
        lines = format_records(records, self.fields)
        windows = np.fromiter((r.window for r in records), np.int64, len(records))
        starts = np.fromiter((r.start for r in records), np.int64, len(records))
        return lines, windows, starts

    def write_lines(self, write, before: float | None = None) -> int:
        """:meth:`flush`, the lines of this aggregator's format handed to ``write`` as UTF-8 bytes,
        each line ending in a newline, in one or more pieces (FlowLogWriter.write_bytes takes
        them). Returns how many records were flushed."""
        lines = self.flush_lines(before)[0]
        if lines:
            write(joined_lines(lines))
        return len(lines)


def _window_of(record: FlowRecord) -> int:
    return record.window


# --- writing ----------------------------------------------------------------------------------
def _v2_lines(records: Iterable[FlowRecord]) -> list[str]:
    """The lines of the default format: one f-string in one comprehension, the writer's hot loop
    (~0.7 us a record; a call per record would add half of that)."""
    return [f"2 {r.account_id or '-'} {r.interface_id} {r.srcaddr} {r.dstaddr} {r.srcport} {r.dstport} "
            f"{r.protocol} {r.packets} {r.bytes} {r.start} {r.end} {r.action} {r.log_status}" for r in records]


def format_records(records: Iterable[FlowRecord], fields: Sequence[str] = V2_FIELDS) -> list[str]:
    """Each record as one line of the format ``fields`` (no newline)."""
    if tuple(fields) == V2_FIELDS:
        return _v2_lines(records)
    return [record.format(fields) for record in records]


def joined_lines(lines: Sequence[str]) -> bytes:
    """Lines (no newlines) as one bytes, each ending in a newline (FlowLogWriter.write_bytes)."""
    return "".join(line + "\n" for line in lines).encode()


def _text(lines: Sequence[str], fields: Sequence[str]) -> str:
    body = "\n".join(lines)
    return " ".join(fields) + "\n" + body + ("\n" if body else "")


class FlowLogWriter:
    """A flow-log file written as it goes: the header line at once, then lines or records in
    the order given (a replay writes each window's records once the window is over, so its
    memory holds the open windows only). A path ending in ``.gz`` is written gzip-compressed
    (reproducibly: no timestamp, no file name in the header); an open text file is written to
    and left open. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path_or_file, fields: Sequence[str] = V2_FIELDS):
        self.fields = check_fields(fields)
        self._raw = self._bin = self._textfile = None
        if hasattr(path_or_file, "write"):
            self._textfile = path_or_file
        else:
            path = os.fspath(path_or_file)
            self._raw = open_output(path)
            self._bin = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0) if path.endswith(".gz") \
                else self._raw
        self._put(" ".join(self.fields) + "\n")

    def _put(self, text: str) -> None:
        if self._bin is not None:
            self._bin.write(text.encode())
        else:
            self._textfile.write(text)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Lines of this writer's format (no newlines)."""
        if lines:
            self._put("\n".join(lines) + "\n")

    def write_bytes(self, data) -> None:
        """Lines of this writer's format already joined: UTF-8 bytes (or any bytes-like object,
        written before the call returns), each line ending in a newline."""
        if data:
            if self._bin is not None:
                self._bin.write(data)
            else:
                self._textfile.write(str(data, "utf-8"))

    def write(self, records: Iterable[FlowRecord]) -> None:
        self.write_lines(format_records(records, self.fields))

    def close(self) -> None:
        if self._bin is not None:
            self._bin.close()  # a gzip stream writes its trailer
            self._raw.close()
        self._raw = self._bin = self._textfile = None

    def __enter__(self) -> "FlowLogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_flow_logs(records: Iterable[FlowRecord], path_or_file, fields: Sequence[str] = V2_FIELDS) -> None:
    """Write records with the header line (field names space-separated) to a path or an open
    text file. A path ending in ``.gz`` is written gzip-compressed (reproducibly: no timestamp)."""
    with FlowLogWriter(path_or_file, fields) as writer:
        writer.write(records)


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


S3_FILE_SPAN = 300  # seconds of record end time per delivered file (AWS publishes every 5 min)


def write_s3_layout(records: Iterable[FlowRecord], root, account: str, region: str,
                    flow_log_id: str, fields: Sequence[str] = V2_FIELDS) -> list[str]:
    """Write records as AWS delivers them to S3 and return the file paths written (sorted).

    Records are grouped by the 5-minute span of their ``end`` time (16:20:00-16:24:59 ->
    ``20180620T1620Z``). Each file holds the header line and its records in their given order,
    gzip-compressed without a timestamp; ``<hash>`` is the first 8 hex digits of the SHA-256 of
    the uncompressed text, so the same records always give the same names."""
    fields = check_fields(fields)
    groups: dict[int, list[FlowRecord]] = {}
    for record in records:
        groups.setdefault(record.end - record.end % S3_FILE_SPAN, []).append(record)
    written = []
    for span_start in sorted(groups):
        text = _text(format_records(groups[span_start], fields), fields).encode()
        t = time.gmtime(span_start)
        folder = os.path.join(os.fspath(root), "AWSLogs", account, "vpcflowlogs", region,
                              f"{t.tm_year:04d}", f"{t.tm_mon:02d}", f"{t.tm_mday:02d}")
        stamp = time.strftime("%Y%m%dT%H%MZ", t)
        digest = hashlib.sha256(text).hexdigest()[:8]
        name = f"{account}_vpcflowlogs_{region}_{flow_log_id}_{stamp}_{digest}.log.gz"
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(_gzip(text))
        written.append(path)
    return sorted(written)


# --- reading ----------------------------------------------------------------------------------
def parse_line(line: str, fields: Sequence[str]) -> dict:
    """One record line -> dict keyed by field name; '-' -> None; numeric fields -> int.

    Works for ACCEPT / REJECT records and for NODATA / SKIPDATA ones (whose address, port,
    protocol, packet and action fields are '-')."""
    values = line.split()
    if len(values) != len(fields):
        raise ValueError(f"record has {len(values)} values for {len(fields)} fields: {line!r}")
    record = {}
    for name, text in zip(fields, values):
        if text == "-":
            record[name] = None
        elif name in INT_FIELDS:
            record[name] = int(text)
        else:
            record[name] = text
    action = record.get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} in {line!r}")
    status = record.get("log-status")
    if status is not None and status not in LOG_STATUSES:
        raise ValueError(f"unknown log-status {status!r} in {line!r}")
    return record


def read_flow_logs(path) -> list[dict]:
    """Parse a flow-log file (plain text or gzip, detected from its first bytes) with the field
    list of its header line."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    lines = data.decode().splitlines()
    if not lines:
        raise ValueError(f"{os.fspath(path)}: empty flow-log file (no header line)")
    fields = check_fields(lines[0].split())
    records = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line, fields))
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}:{number}: {exc}") from None
    return records
