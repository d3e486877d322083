"""Buffered pcap and pcapng writers for the taps.

``PcapWriter`` writes classic little-endian pcap (microsecond or nanosecond timestamps);
``PcapngWriter`` writes one section with one interface and can attach a comment (the verdict) to
each packet. Both take a timestamp as float seconds (``ts``) or exact integer nanoseconds
(``ts_ns``), keep records in memory until about ``buffer_size`` bytes are pending, and write them
with one call. ``write(data, ...)`` adds one packet; ``write_many(buffer, offsets, lengths, ...)`` and
``write_batch(batch)`` add a whole batch (one buffer plus arrays): the record headers are built by
numpy and the records are assembled in one allocation by ``hyperplane._core.capture_records`` when
the extension has it, else by one join (same bytes). ``open_writer(path)`` picks the format from the
file name.
"""
from __future__ import annotations

import math
import os
import struct
from typing import BinaryIO, Optional, Sequence, Union

import numpy as np

from hyperplane.io.output import OutputFile

try:  # the compiled record builder (ext/scan.pxi); the join below is its pure-Python twin
    from hyperplane import _core as _native
    if not hasattr(_native, "capture_records") or not hasattr(_native, "pcap_heads"):
        _native = None
except ImportError:  # pragma: no cover - the package works without the extension
    _native = None

__all__ = ["PcapWriter", "PcapngWriter", "open_writer", "DEFAULT_SNAPLEN", "LINKTYPE_RAW"]

LINKTYPE_RAW = 101
DEFAULT_SNAPLEN = 262144
DEFAULT_BUFFER_SIZE = 1 << 20
_NS = 1_000_000_000
_UINT32_MAX = (1 << 32) - 1

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]

_PCAP_RECORD = struct.Struct("<IIII")
_EPB_HEAD = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, caplen, wire length
_U32 = struct.Struct("<I")
_OPT_HEAD = struct.Struct("<HH")
_OPT_COMMENT = 1
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4


def _timestamp_ns(ts: Optional[float]) -> int:
    """Integer nanoseconds of float seconds ``ts`` (0 when it is None)."""
    if ts is None:
        return 0
    ts = float(ts)
    if not math.isfinite(ts):
        raise ValueError(f"timestamp {ts!r} is not a finite number of seconds")
    whole = math.floor(ts)
    # the fraction of a float is exact (Sterbenz), so rounding it alone keeps every representable digit
    return int(whole) * _NS + round((ts - whole) * _NS)


def _units_array(ts_ns: Optional[np.ndarray], timestamps: Optional[np.ndarray], n: int, unit_ns: int) -> np.ndarray:
    """Timestamps of ``write_many`` in the file's units (1 or 1000 ns), rounded half up, as int64."""
    if ts_ns is not None:
        ns = np.asarray(ts_ns, dtype=np.int64)
    elif timestamps is not None:
        seconds = np.asarray(timestamps, dtype=np.float64)
        if not np.isfinite(seconds).all():
            raise ValueError("timestamps must be finite numbers of seconds")
        whole = np.floor(seconds)
        ns = whole.astype(np.int64) * _NS + np.rint((seconds - whole) * _NS).astype(np.int64)
    else:
        ns = np.zeros(n, np.int64)
    if len(ns) != n:
        raise ValueError(f"{len(ns)} timestamps for {n} packets")
    return (ns + unit_ns // 2) // unit_ns


class _Writer:
    """Shared plumbing: the output file, the pending buffer, counting and closing."""

    def __init__(self, target: PathOrFile, buffer_size: int):
        if hasattr(target, "write"):
            self._file, self._owns_file = target, False
            self.name = str(getattr(target, "name", "<stream>"))
        else:
            self.name = os.fspath(target)
            self._file, self._owns_file = OutputFile(self.name), True
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._buffer_size = buffer_size
        self.packets_written = 0
        self.closed = False

    def _put(self, *pieces: bytes) -> None:
        """Queue pieces (owned bytes: the caller's buffers may change after the call)."""
        self._pending.extend(pieces)
        self._pending_bytes += sum(len(p) for p in pieces)
        if self._pending_bytes >= self._buffer_size:
            self.flush()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"{self.name}: write to a closed capture writer")

    @staticmethod
    def _lengths(data: bytes, snaplen: int, wire_length: Optional[int]) -> tuple[bytes, int]:
        wire = len(data) if wire_length is None else int(wire_length)
        if wire < len(data):
            raise ValueError(f"wire_length {wire} is smaller than the {len(data)} captured bytes")
        if wire > _UINT32_MAX:
            raise ValueError(f"wire_length {wire} does not fit a capture record")
        if snaplen and len(data) > snaplen:
            data = data[:snaplen]
        return data, wire

    def _lengths_many(self, lengths, wire_lengths, snaplen: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.asarray(lengths, dtype=np.int64)
        wire = lengths if wire_lengths is None else np.asarray(wire_lengths, dtype=np.int64)
        if len(wire) != len(lengths):
            raise ValueError(f"{len(wire)} wire lengths for {len(lengths)} packets")
        if (wire < lengths).any():
            i = int(np.argmax(wire < lengths))
            raise ValueError(f"wire_length {int(wire[i])} is smaller than the {int(lengths[i])} captured bytes "
                             f"(packet {i})")
        if (wire > _UINT32_MAX).any():
            raise ValueError("a wire length does not fit a capture record")
        caplen = np.minimum(lengths, snaplen) if snaplen else lengths
        return caplen, wire

    def _put_records(self, buffer, offsets, caplen: np.ndarray, heads: np.ndarray, pcapng: bool = False,
                     options: Optional[tuple[bytes, np.ndarray, np.ndarray]] = None) -> None:
        """Queue the records of a batch, as one bytes: ``heads[i]`` (a row of 16 or 28 bytes), the
        packet's ``caplen[i]`` bytes from ``buffer`` at ``offsets[i]`` and, for pcapng, zero padding
        to 4 bytes, the packet's options (``blob[start[i] : start[i] + length[i]]`` of ``options``)
        and the block trailer (the length, ``heads[i][4:8]``)."""
        data = _byte_view(buffer)
        starts = np.ascontiguousarray(offsets, dtype=np.int64)
        caplen = np.ascontiguousarray(caplen, dtype=np.int64)
        n = len(starts)
        if n != len(caplen):
            raise ValueError(f"{len(caplen)} lengths for {n} packets")
        if n and (starts.min() < 0 or (starts + caplen).max() > len(data)):
            i = int(np.argmax((starts < 0) | (starts + caplen > len(data))))
            raise ValueError(f"packet {i} ({int(caplen[i])} bytes at offset {int(starts[i])}) is outside the "
                             f"{len(data)}-byte buffer")
        heads = np.ascontiguousarray(heads)
        heads = heads.view(np.uint8).reshape(n, heads.itemsize * (heads.size // n if n else heads.shape[-1]))
        blob, opt_start, opt_len = options if options is not None else (None, None, None)
        if _native is not None:
            self._put(_native.capture_records(data, starts, caplen, heads, pcapng, blob, opt_start, opt_len))
            return
        # the pure-Python twin: a list of pieces, joined once
        ends = (starts + caplen).tolist()
        head_bytes = heads.tobytes()
        width = heads.shape[1]
        step = 3 if pcapng else 2
        pieces: list = [b""] * (step * n)
        pieces[0::step] = [head_bytes[i:i + width] for i in range(0, width * n, width)]
        pieces[1::step] = [data[a:b] for a, b in zip(starts.tolist(), ends)]
        if pcapng:
            trailers = heads[:, 4:8].tobytes()  # each block's length again
            pads = (caplen % 4).tolist()
            if options is None:
                pieces[2::step] = [_PAD[r] + trailers[j:j + 4] for j, r in zip(range(0, 4 * n, 4), pads)]
            else:
                pieces[2::step] = [_PAD[r] + blob[a:a + k] + trailers[j:j + 4] for j, r, a, k in
                                   zip(range(0, 4 * n, 4), pads, opt_start.tolist(), opt_len.tolist())]
        self._put(b"".join(pieces))

    def write_batch(self, batch, comments: Optional[Sequence[Optional[str]]] = None) -> None:
        """Write every packet of a reader :class:`~hyperplane.io.capture.Batch` (or any object with
        ``buffer``, ``offsets``, ``lengths``, ``ts_ns`` and ``wire_lengths``)."""
        wire = np.maximum(batch.wire_lengths, batch.lengths)  # a broken file may claim less than it holds
        self.write_many(batch.buffer, batch.offsets, batch.lengths, ts_ns=batch.ts_ns, wire_lengths=wire,
                        comments=comments)

    def flush(self) -> None:
        """Write the pending records to the file."""
        pending = self._pending
        if pending:
            if len(pending) <= 4:  # a few large pieces (write_many's records): no join copy
                for piece in pending:
                    self._file.write(piece)
            else:
                self._file.write(b"".join(pending))
            self._pending = []
            self._pending_bytes = 0
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file when the writer opened it (a file object passed in stays open)."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            if self._owns_file:
                self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} packets_written={self.packets_written}>"


class PcapWriter(_Writer):
    """Classic pcap, little-endian, version 2.4; ``nanosecond=True`` writes the a1b23c4d variant.

    Packets longer than ``snaplen`` are cut to it (their wire length is kept). Microsecond files
    round the timestamp to the nearest microsecond.
    """

    def __init__(self, target: PathOrFile, linktype: int = LINKTYPE_RAW, nanosecond: bool = False,
                 snaplen: int = DEFAULT_SNAPLEN, buffer_size: int = DEFAULT_BUFFER_SIZE):
        if not 0 <= linktype <= 0x03FFFFFF:
            raise ValueError(f"link type {linktype} is out of range")
        if not 0 < snaplen <= _UINT32_MAX:
            raise ValueError(f"snaplen {snaplen} must be positive")
        super().__init__(target, buffer_size)
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self._units = 1 if nanosecond else 1000
        self._half = self._units // 2
        self._per_second = _NS // self._units
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._put(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, data: bytes, ts: Optional[float] = None, ts_ns: Optional[int] = None,
              comment: Optional[str] = None, wire_length: Optional[int] = None) -> None:
        """Append one packet. ``comment`` is accepted for symmetry with pcapng and not stored."""
        if self.closed:
            self._check_open()
        if type(data) is not bytes:
            data = bytes(data)
        wire = n = len(data)
        if wire_length is not None or n > self.snaplen:
            data, wire = self._lengths(data, self.snaplen, wire_length)
            n = len(data)
        ts_ns = _timestamp_ns(ts) if ts_ns is None else int(ts_ns)
        sec, frac = divmod((ts_ns + self._half) // self._units, self._per_second)
        if sec < 0 or sec > _UINT32_MAX:
            raise ValueError(f"timestamp {ts_ns / _NS:.9f} s is outside the pcap range (0 .. 2**32-1 seconds)")
        pending = self._pending
        pending.append(_PCAP_RECORD.pack(sec, frac, n, wire))
        pending.append(data)
        self._pending_bytes += n + 16
        self.packets_written += 1
        if self._pending_bytes >= self._buffer_size:
            self.flush()

    def write_many(self, buffer: bytes, offsets, lengths, ts_ns=None, timestamps=None, wire_lengths=None,
                   comments: Optional[Sequence[Optional[str]]] = None) -> None:
        """Append ``buffer[offsets[i] : offsets[i] + lengths[i]]`` for every i, in one pass.

        Timestamps come as int nanoseconds (``ts_ns``) or float seconds (``timestamps``) arrays;
        ``comments`` is accepted for symmetry with pcapng and not stored.
        """
        self._check_open()
        caplen, head = self._heads(len(offsets), lengths, ts_ns, timestamps, wire_lengths)
        self._put_records(buffer, offsets, caplen, head)
        self.packets_written += len(offsets)

    def write_rows(self, rows, ts_ns) -> None:
        """:meth:`write_many` of packets that join themselves to their record headers
        (``rows.records(heads)``, ``rows.lengths``: the core's tap output), without being
        gathered into one buffer first; ``rows.buffer`` / ``rows.offsets`` when one is cut to
        ``snaplen``."""
        self._check_open()
        lengths = rows.lengths
        caplen, head = self._heads(len(lengths), lengths, ts_ns, None, None)
        if len(lengths) and caplen.max() < lengths.max():  # cut: the general path
            self._put_records(rows.buffer, rows.offsets, caplen, head)
        else:
            self._put(rows.records(head.view(np.uint8).reshape(len(lengths), 16)))
        self.packets_written += len(lengths)

    def _heads(self, n: int, lengths, ts_ns, timestamps, wire_lengths):
        """The captured lengths and the 16-byte record headers of ``n`` packets (in one pass in C
        when the timestamps are integer nanoseconds, as a replay gives them)."""
        if _native is not None and ts_ns is not None and len(lengths) == n:
            return _native.pcap_heads(np.ascontiguousarray(ts_ns, dtype=np.int64),
                                      np.ascontiguousarray(lengths, dtype=np.int64),
                                      None if wire_lengths is None else np.ascontiguousarray(wire_lengths, dtype=np.int64),
                                      self._units, self._per_second, self.snaplen)
        caplen, wire = self._lengths_many(lengths, wire_lengths, self.snaplen)
        sec, frac = np.divmod(_units_array(ts_ns, timestamps, n, self._units), self._per_second)
        if n and (sec.min() < 0 or sec.max() > _UINT32_MAX):
            raise ValueError("a timestamp is outside the pcap range (0 .. 2**32-1 seconds)")
        head = np.empty((n, 4), "<u4")
        head[:, 0], head[:, 1], head[:, 2], head[:, 3] = sec, frac, caplen, wire
        return caplen, head


class PcapngWriter(_Writer):
    """pcapng: one section, one interface of ``linktype``; an optional comment per packet.

    Timestamps are in microseconds, or nanoseconds with ``nanosecond=True`` (the interface then
    carries ``if_tsresol`` = 9).
    """

    def __init__(self, target: PathOrFile, linktype: int = LINKTYPE_RAW, nanosecond: bool = False,
                 snaplen: int = 0, application: str = "hyperplane", buffer_size: int = DEFAULT_BUFFER_SIZE):
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} does not fit a pcapng interface block")
        if not 0 <= snaplen <= _UINT32_MAX:
            raise ValueError(f"snaplen {snaplen} is out of range")
        super().__init__(target, buffer_size)
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self._units = 1 if nanosecond else 1000
        self._half = self._units // 2
        self._comments: dict[str, bytes] = {}
        shb_options = _option(4, application.encode()) + _end_of_options()  # shb_userappl
        self._put(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_options))
        idb_options = (_option(9, bytes([9])) + _end_of_options()) if nanosecond else b""
        self._put(_block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + idb_options))

    def write(self, data: bytes, ts: Optional[float] = None, ts_ns: Optional[int] = None,
              comment: Optional[str] = None, wire_length: Optional[int] = None) -> None:
        """Append one packet as an Enhanced Packet Block, with ``comment`` as its opt_comment."""
        if self.closed:
            self._check_open()
        if type(data) is not bytes:
            data = bytes(data)
        wire = n = len(data)
        if wire_length is not None or (self.snaplen and n > self.snaplen):
            data, wire = self._lengths(data, self.snaplen, wire_length)
            n = len(data)
        ts_ns = _timestamp_ns(ts) if ts_ns is None else int(ts_ns)
        units = (ts_ns + self._half) // self._units
        if units < 0 or units >> 64:
            raise ValueError(f"timestamp {ts_ns / _NS:.9f} s is negative or too large for pcapng")
        tail = _PAD[n & 3] + self._comment_option(comment) if comment else _PAD[n & 3]
        total = 32 + n + len(tail)
        pending = self._pending
        pending.append(_EPB_HEAD.pack(0x00000006, total, 0, units >> 32, units & _UINT32_MAX, n, wire))
        pending.append(data)
        pending.append(tail + _U32.pack(total))
        self._pending_bytes += total
        self.packets_written += 1
        if self._pending_bytes >= self._buffer_size:
            self.flush()

    def _comment_option(self, comment: str) -> bytes:
        """The encoded opt_comment + opt_endofopt; verdict texts repeat, so they are kept (bounded)."""
        encoded = self._comments.get(comment)
        if encoded is None:
            if len(self._comments) >= 4096:
                self._comments.clear()
            encoded = self._comments[comment] = _option(_OPT_COMMENT, comment.encode("utf-8")) + _end_of_options()
        return encoded

    def write_many(self, buffer: bytes, offsets, lengths, ts_ns=None, timestamps=None, wire_lengths=None,
                   comments: Optional[Sequence[Optional[str]]] = None) -> None:
        """Append ``buffer[offsets[i] : offsets[i] + lengths[i]]`` for every i, in one pass, with
        ``comments[i]`` (when given and not None) as each packet's opt_comment."""
        self._check_open()
        n = len(offsets)
        caplen, wire = self._lengths_many(lengths, wire_lengths, self.snaplen)
        units = _units_array(ts_ns, timestamps, n, self._units)
        if n and units.min() < 0:
            raise ValueError("a timestamp is negative, which pcapng cannot store")
        if comments is not None and len(comments) != n:
            raise ValueError(f"{len(comments)} comments for {n} packets")
        options = self._options_many(comments) if comments is not None else None
        total = 32 + caplen + (-caplen % 4)
        if options is not None:
            total = total + options[2]
        head = np.empty((n, 7), "<u4")
        head[:, 0], head[:, 1], head[:, 2] = 0x00000006, total, 0
        head[:, 3], head[:, 4] = units >> 32, units & _UINT32_MAX
        head[:, 5], head[:, 6] = caplen, wire
        self._put_records(buffer, offsets, caplen, head, pcapng=True, options=options)
        self.packets_written += n

    def _options_many(self, comments: Sequence[Optional[str]]) -> Optional[tuple[bytes, np.ndarray, np.ndarray]]:
        """``(blob, start, length)``: each distinct comment encoded once in ``blob``, and where each
        packet's options are in it (length 0 for a packet without a comment); None when no packet
        has one."""
        codes: dict = {}
        setdefault = codes.setdefault
        ids = [setdefault(c, len(codes)) if c else -1 for c in comments]
        if not codes:
            return None
        encoded = [self._comment_option(c) for c in codes]
        lengths = np.zeros(len(encoded) + 1, np.int64)  # the last entry: no options
        lengths[:-1] = [len(e) for e in encoded]
        starts = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(lengths[:-2], out=starts[1:-1])
        index = np.array(ids, np.int64)  # -1 picks the last entry
        return b"".join(encoded), starts[index], lengths[index]


def _byte_view(buffer):
    """``buffer`` as a flat sequence of bytes (bytes and bytearray as they are; a numpy array or any
    other buffer as a 1-d unsigned-byte memoryview, copied only when it is not contiguous)."""
    if isinstance(buffer, (bytes, bytearray)):
        return buffer
    view = memoryview(buffer)
    if not view.c_contiguous:
        return view.tobytes()
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        value = value[:0xFFFF]
    return _OPT_HEAD.pack(code, len(value)) + value + _PAD[len(value) % 4]


def _end_of_options() -> bytes:
    return _OPT_HEAD.pack(0, 0)


def _block(block_type: int, body: bytes) -> bytes:
    body += _PAD[len(body) % 4]
    total = len(body) + 12
    return _U32.pack(block_type) + _U32.pack(total) + body + _U32.pack(total)


def open_writer(target: PathOrFile, linktype: int = LINKTYPE_RAW, **options) -> Union[PcapWriter, PcapngWriter]:
    """A :class:`PcapngWriter` when the file name ends with ``.pcapng``, else a :class:`PcapWriter`."""
    name = getattr(target, "name", target)
    if isinstance(name, (str, os.PathLike)) and os.fspath(name).lower().endswith(".pcapng"):
        return PcapngWriter(target, linktype=linktype, **options)
    return PcapWriter(target, linktype=linktype, **options)
