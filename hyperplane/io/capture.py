"""Streaming reader for classic pcap and pcapng captures, in batches for the dataplane.

``open_capture(path)`` returns a :class:`CaptureReader`; iterating it yields :class:`Batch` objects
of up to ``batch_size`` packets. The file is read in chunks (4 MiB by default) into a *window*; a
batch does not copy packet data: its ``buffer`` is the window's ``bytes`` and ``offsets`` /
``lengths`` locate each packet in it (record headers sit between packets, so always go through the
offsets). Only the per-packet arrays are built per batch, vectorised with numpy from the record
positions the scan loop collects, so memory use depends on the chunk and batch sizes, never on the
file size.

The record walk is compiled when ``hyperplane._core`` has the scanners of ``ext/scan.pxi``
(``scan_pcap``, ``scan_pcapng``: classic pcap records, and runs of pcapng Enhanced and Simple Packet
Blocks, filled into numpy arrays without the GIL; ``read_window``: the file's data read straight
into the new window). Otherwise the pure-Python loops below do the same walk; both give identical
batches (tests/unit/test_io_scan.py). The scanners only report where they stopped and why: every
decision (truncation, corruption messages, pcapng sections, interfaces, timestamp resolutions, every
other block type) stays here.

Formats:

* classic pcap: magic ``a1b2c3d4`` (microseconds) or ``a1b23c4d`` (nanoseconds), either byte order,
  major version 2; the link type is the header's with the FCS bits (the upper six bits) masked off.
* pcapng: sections (SHB, either byte order, any section length including -1), interfaces (IDB, with
  ``if_tsresol`` as a power of 10 or of 2 and ``if_tsoffset``), Enhanced, Simple and obsolete Packet
  Blocks; every other block type and every option is skipped by its length.

Errors: a file that is not a capture at all raises :class:`CaptureFormatError` when it is opened.
A capture that ends in the middle of a record, or whose records become nonsense (a record longer
than 256 MiB, a pcapng block length that is not a multiple of 4, ...), yields every complete record
before that point, then sets ``reader.truncated`` / ``reader.truncated_offset`` and emits a
:class:`CaptureTruncatedWarning` naming the file and the byte offset.
"""
from __future__ import annotations

import os
import struct
import warnings
from typing import BinaryIO, Iterator, Optional, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

try:  # the compiled record scanners (ext/scan.pxi); the pure-Python loops below are their twins
    from hyperplane import _core as _native
    if not all(hasattr(_native, name) for name in ("scan_pcap", "scan_pcapng")):
        _native = None
except ImportError:  # pragma: no cover - the package works without the extension
    _native = None

__all__ = [
    "Batch",
    "CaptureFormatError",
    "CaptureReader",
    "CaptureTruncatedWarning",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_RECORD_LENGTH",
    "iter_packets",
    "open_capture",
]

DEFAULT_BATCH_SIZE = 4096
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_RECORD_LENGTH = 256 * 1024 * 1024  # a larger packet record is corruption, not data

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34  # Kuznetzov's patched libpcap: not supported
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAP_LINKTYPE_MASK = 0x03FFFFFF  # the upper bits carry the FCS length, not the link type

_NS = 1_000_000_000
_INT64_MAX = (1 << 63) - 1
_INT32_MAX = (1 << 31) - 1

# pcapng block types and option codes
_BT_OPB = 0x00000002  # obsolete Packet Block
_BT_IDB = 0x00000001
_BT_SPB = 0x00000003
_BT_EPB = 0x00000006
_OPT_END = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class CaptureFormatError(ValueError):
    """The file is not a pcap or pcapng capture (or cannot be read at all); the message names it."""


class CaptureTruncatedWarning(UserWarning):
    """The capture stops in the middle of a record, or its records become corrupt."""


class _Corrupt(Exception):
    """Raised by a format scanner at a record that cannot be trusted; ``pos`` is its window offset."""

    def __init__(self, pos: int, reason: str):
        super().__init__(reason)
        self.pos = pos
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Batches


class Batch:
    """Up to ``batch_size`` consecutive packets of a capture.

    ``buffer`` (bytes) holds the packet data; packet ``i`` is
    ``buffer[offsets[i] : offsets[i] + lengths[i]]`` (the buffer is the reader's window, shared by
    the batches cut from it, with record headers between packets: always go through the offsets).
    Arrays: ``offsets`` int64, ``lengths`` int32 (captured bytes), ``wire_lengths`` int32 (original
    length on the wire, >= the captured length in a sane file), ``timestamps`` float64 seconds,
    ``ts_ns`` int64 exact nanoseconds (saturated at the int64 limit for times after 2262; the float
    keeps the file's value), ``linktypes`` int32 (per packet: pcapng interfaces differ).
    ``start_index`` is the 0-based capture position of the first packet.
    """

    __slots__ = ("buffer", "offsets", "lengths", "wire_lengths", "timestamps", "ts_ns", "linktypes",
                 "start_index")

    def __init__(self, buffer: bytes, offsets: np.ndarray, lengths: np.ndarray, wire_lengths: np.ndarray,
                 timestamps: np.ndarray, ts_ns: np.ndarray, linktypes: np.ndarray, start_index: int):
        self.buffer = buffer
        self.offsets = offsets
        self.lengths = lengths
        self.wire_lengths = wire_lengths
        self.timestamps = timestamps
        self.ts_ns = ts_ns
        self.linktypes = linktypes
        self.start_index = start_index

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        return f"<Batch packets={len(self)} start_index={self.start_index}>"

    def packet(self, i: int) -> bytes:
        """The captured bytes of the batch's ``i``-th packet."""
        off = int(self.offsets[i])
        return self.buffer[off:off + int(self.lengths[i])]

    def packets(self) -> Iterator[tuple[int, bytes, float, int]]:
        """``(capture index, data, timestamp seconds, link type)`` for each packet, in order."""
        buf = self.buffer
        index = self.start_index
        for off, length, ts, linktype in zip(self.offsets.tolist(), self.lengths.tolist(),
                                             self.timestamps.tolist(), self.linktypes.tolist()):
            yield index, buf[off:off + length], ts, linktype
            index += 1


class _BatchBuilder:
    """Collects the packets of one batch: vectorised runs from the fast scanners, single packets from
    the slow paths, kept in file order."""

    def __init__(self):
        self.count = 0
        self._parts: list[tuple] = []
        self._one: list[tuple[int, int, int, int, int, float]] = []

    def add_run(self, offsets: np.ndarray, lengths: np.ndarray, wire: np.ndarray, ts_ns: np.ndarray,
                linktypes: np.ndarray, seconds: Optional[np.ndarray] = None) -> None:
        """Add consecutive packets; ``seconds`` only when ``ts_ns`` was clamped to the int64 range."""
        self._flush_one()
        self._parts.append((offsets, lengths, wire, ts_ns, linktypes,
                            _ns_to_seconds(ts_ns) if seconds is None else seconds))
        self.count += len(offsets)

    def add_one(self, offset: int, length: int, wire: int, ts_ns: int, seconds: float, linktype: int) -> None:
        self._one.append((offset, length, min(wire, _INT32_MAX), ts_ns, linktype, seconds))
        self.count += 1

    def _flush_one(self) -> None:
        if self._one:
            cols = list(zip(*self._one))
            self._parts.append(tuple(np.array(col, np.int64) for col in cols[:5])
                               + (np.array(cols[5], np.float64),))
            self._one = []

    def build(self, buffer: bytes, start_index: int) -> Batch:
        self._flush_one()
        if len(self._parts) == 1:
            offsets, lengths, wire, ts_ns, linktypes, seconds = self._parts[0]
        else:
            offsets, lengths, wire, ts_ns, linktypes, seconds = (np.concatenate(c) for c in zip(*self._parts))
        return Batch(buffer, offsets.astype(np.int64, copy=False), lengths.astype(np.int32),
                     np.minimum(wire, _INT32_MAX).astype(np.int32), seconds,
                     ts_ns.astype(np.int64, copy=False), linktypes.astype(np.int32), start_index)


def _ns_to_seconds(ts_ns: np.ndarray) -> np.ndarray:
    """float64 seconds of int64 nanoseconds, split so the fraction keeps its precision."""
    ts_ns = ts_ns.astype(np.int64, copy=False)
    return (ts_ns // _NS).astype(np.float64) + (ts_ns % _NS).astype(np.float64) * 1e-9


_SCAN_FULL = 1  # = _core.SCAN_FULL; the other stops: 0 end of data, 2 corrupt length, 3 not judged
_SCAN_CORRUPT = 2


def _run_size(buf: bytes, pos: int, limit: int, smallest: int) -> int:
    """Entries to allocate for a compiled scan: ``limit``, or fewer when the window cannot hold that
    many records of at least ``smallest`` bytes."""
    return max(0, min(limit, (len(buf) - pos) // smallest + 1))


def _run_arrays(size: int, ts_dtype=np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Output arrays of a compiled scan: offsets int64, captured lengths int32, wire lengths int64,
    timestamps (``ts_dtype``)."""
    return np.empty(size, np.int64), np.empty(size, np.int32), np.empty(size, np.int64), np.empty(size, ts_dtype)


def _rows(buf: bytes, starts: np.ndarray, width: int) -> np.ndarray:
    """``(len(starts), width)`` uint8 copy of ``buf[s : s + width]`` for each start: one gather."""
    return sliding_window_view(np.frombuffer(buf, dtype=np.uint8), width)[starts]


# ---------------------------------------------------------------------------------------------
# The byte source: a window over the file, refilled in chunks


class _Window:
    """The bytes of the file from ``base`` on that are currently in memory."""

    def __init__(self, fileobj: BinaryIO, chunk_size: int):
        self._file = fileobj
        self._chunk = chunk_size
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self._readinto = callable(getattr(fileobj, "readinto", None))

    def fill(self, pos: int, need: int) -> int:
        """Drop ``buf[:pos]`` and read until at least ``need`` bytes are in the window (or EOF).

        Returns how many bytes were added; the window then starts at the old ``pos``.
        """
        rest_len = len(self.buf) - pos
        # windows of one size (the chunk) while records are small: the allocator then reuses the
        # freed window's memory instead of mapping (and page-faulting) fresh pages every time
        want = max(self._chunk - rest_len, need - rest_len, self._chunk // 2)
        direct = getattr(_native, "read_window", None) if self._readinto else None
        if direct is not None and not self.eof:  # the file's data lands in the new window: no join
            rest = memoryview(self.buf)[pos:]
            self.base += pos  # first, as below: a read error then names the same offset
            self.buf, got, self.eof = direct(self._file, rest, want)
            return got
        rest = self.buf[pos:] if pos else self.buf
        self.base += pos
        pieces = [rest] if rest else []
        got = 0
        while got < want and not self.eof:
            data = self._file.read(want - got)
            if not data:
                self.eof = True
                break
            pieces.append(data)
            got += len(data)
        self.buf = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return got


# ---------------------------------------------------------------------------------------------
# Classic pcap


class _PcapScanner:
    """Finds the packet records of a classic pcap file in a window."""

    format = "pcap"

    def __init__(self, endian: str, nanosecond: bool, linktype: int, snaplen: int, version: tuple[int, int]):
        self.endian = endian
        self.nanosecond = nanosecond
        self.linktype = linktype
        self.snaplen = snaplen
        self.version = version
        self._caplen = struct.Struct(endian + "I").unpack_from
        self._u4 = np.dtype(endian + "u4")
        self._frac_ns = 1 if nanosecond else 1000

    @classmethod
    def from_header(cls, name: str, header: bytes) -> "_PcapScanner":
        magic_le = struct.unpack_from("<I", header)[0]
        endian = "<" if magic_le in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(endian + "IHHiIII", header)
        if major != 2:
            raise CaptureFormatError(f"{name}: unsupported pcap version {major}.{minor} (only 2.x is defined)")
        return cls(endian, magic == PCAP_MAGIC_NSEC, linktype & PCAP_LINKTYPE_MASK, snaplen, (major, minor))

    def scan(self, buf: bytes, pos: int, limit: int, acc: _BatchBuilder) -> tuple[int, int]:
        """Collect up to ``limit`` complete records from ``buf[pos:]`` into ``acc``.

        Returns ``(pos, need)``: ``need == 0`` when ``limit`` records were collected, else the number
        of bytes the next record needs from ``pos`` (more than the window holds).
        """
        if _native is not None:
            return self._scan_native(buf, pos, limit, acc)
        end = len(buf)
        caplen_at = self._caplen
        positions: list[int] = []
        append = positions.append
        need = 0
        # The hot loop: one unpack per record and no bounds test; struct.error marks a header that is
        # not in the window. Only the last record collected can run past the window (each record
        # ends where the next one's header, which was read, begins): checked after the loop.
        try:
            for _ in range(limit):
                append(pos)
                pos += 16 + caplen_at(buf, pos + 8)[0]
        except struct.error:
            positions.pop()
            need = 16
        if positions:
            last = positions[-1]
            if last + 16 > end:  # the last header is cut by the window
                positions.pop()
                pos, need = last, 16
            elif pos > end:  # its data is
                positions.pop()
                pos, need = last, pos - last
        if positions:
            self._emit(buf, positions, acc)
        if need > 16 + MAX_RECORD_LENGTH:
            raise _Corrupt(pos, f"packet record length {need - 16} is larger than {MAX_RECORD_LENGTH}")
        return pos, need

    def _scan_native(self, buf: bytes, pos: int, limit: int, acc: _BatchBuilder) -> tuple[int, int]:
        """``scan`` with the compiled walker (``_core.scan_pcap``): same records, same answers."""
        size = _run_size(buf, pos, limit, 16)
        offsets, caplens, wire, ts_ns = _run_arrays(size)
        n, pos, status, value = _native.scan_pcap(buf, pos, size, self.endian == ">", self._frac_ns,
                                                  offsets, caplens, wire, ts_ns)
        if n:
            acc.add_run(offsets[:n], caplens[:n], wire[:n], ts_ns[:n], np.full(n, self.linktype, np.int32))
        if status == _SCAN_CORRUPT:
            raise _Corrupt(pos, f"packet record length {value} is larger than {MAX_RECORD_LENGTH}")
        if status == _SCAN_FULL:
            return pos, 0
        return pos, value

    def _emit(self, buf: bytes, positions: list[int], acc: _BatchBuilder) -> None:
        starts = np.array(positions, dtype=np.int64)
        head = _rows(buf, starts, 16).view(self._u4)  # (n, 4): sec, frac, caplen, wirelen
        caplen = head[:, 2]
        bad = np.flatnonzero(caplen > MAX_RECORD_LENGTH)
        if len(bad):
            # a giant record that happened to fit in a large window: stop before it
            k = int(bad[0])
            if k:
                self._emit(buf, positions[:k], acc)
            raise _Corrupt(positions[k], f"packet record length {int(caplen[k])} is larger than {MAX_RECORD_LENGTH}")
        ts_ns = head[:, 0].astype(np.int64) * _NS + head[:, 1].astype(np.int64) * self._frac_ns
        acc.add_run(starts + 16, caplen, head[:, 3].astype(np.int64), ts_ns,
                    np.full(len(starts), self.linktype, np.int32))


# ---------------------------------------------------------------------------------------------
# pcapng


class _Interface:
    """One pcapng interface: link type, snap length and timestamp conversion ns = units*num//den + off."""

    __slots__ = ("linktype", "snaplen", "num", "den", "offset_ns", "binary_shift")

    def __init__(self, linktype: int, snaplen: int, tsresol: int, tsoffset: int):
        self.linktype = linktype
        self.snaplen = snaplen
        self.offset_ns = tsoffset * _NS
        self.binary_shift = -1
        if tsresol & 0x80:
            shift = tsresol & 0x7F
            self.num, self.den = _NS, 1 << shift
            self.binary_shift = shift
        else:
            exp = tsresol
            self.num, self.den = (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))

    def key(self) -> tuple[int, int, int]:
        return self.num, self.den, self.offset_ns

    def convert(self, units: int) -> tuple[int, float]:
        """(nanoseconds clamped to int64, float seconds) of a timestamp in this interface's units."""
        ns = units * self.num // self.den + self.offset_ns
        return _clamp64(ns), ns // _NS + (ns % _NS) * 1e-9

    def convert_array(self, units: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Vectorised ``convert`` of uint64 units: ``(ts_ns, None)``, exact, in the common cases; near
        or beyond the int64 range (year 2262) it falls back to Python ints and returns the seconds."""
        top = int(units.max())
        margin = _INT64_MAX - abs(self.offset_ns)
        if self.den == 1 and top * self.num <= margin:
            return units.astype(np.int64) * self.num + self.offset_ns, None
        if self.num == 1 and self.den <= _INT64_MAX and top // self.den <= margin:
            return (units // np.uint64(self.den)).astype(np.int64) + self.offset_ns, None
        shift = self.binary_shift
        if 0 <= shift <= 33 and ((top >> shift) + 1) * _NS <= margin:
            whole = (units >> np.uint64(shift)).astype(np.int64) * _NS
            frac = ((units & np.uint64((1 << shift) - 1)) * np.uint64(_NS)) >> np.uint64(shift)
            return whole + frac.astype(np.int64) + self.offset_ns, None
        pairs = [self.convert(u) for u in units.tolist()]
        return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.float64)


def _clamp64(value: int) -> int:
    return max(-_INT64_MAX - 1, min(_INT64_MAX, value))


class _PcapngScanner:
    """Walks the blocks of a pcapng file in a window; EPB runs are decoded vectorised."""

    format = "pcapng"

    def __init__(self):
        self.endian = "<"
        self.interfaces: list[_Interface] = []
        self.sections = 0
        self.last_ts: tuple[int, Optional[float]] = (0, 0.0)  # (ns, seconds) of the previous packet:
        # Simple Packet Blocks carry no timestamp, they get the previous packet's
        self._lt_table = np.zeros(0, np.int32)  # link type by interface number
        self._uniform: Optional[_Interface] = None  # set when every interface converts time alike
        self._set_endian("<")

    def _set_endian(self, endian: str) -> None:
        self.endian = endian
        self._head = struct.Struct(endian + "II").unpack_from
        self._u4 = np.dtype(endian + "u4")

    @property
    def linktype(self) -> Optional[int]:
        return self.interfaces[0].linktype if self.interfaces else None

    @property
    def snaplen(self) -> Optional[int]:
        return self.interfaces[0].snaplen if self.interfaces else None

    def _interfaces_changed(self) -> None:
        self._lt_table = np.array([i.linktype for i in self.interfaces], np.int32)
        keys = {i.key() for i in self.interfaces}
        self._uniform = self.interfaces[0] if len(keys) == 1 else None  # one conversion for all

    # -- the section header -------------------------------------------------------------------

    def read_section_header(self, buf: bytes, pos: int, blen: int) -> None:
        """Start a new section with the SHB at ``pos``, whose ``blen`` bytes (from ``shb_length``) are
        all in the window; raises ``_Corrupt`` for a nonsense header."""
        major, minor = struct.unpack_from(self.endian + "HH", buf, pos + 12)
        if major != 1:
            raise _Corrupt(pos, f"unsupported pcapng version {major}.{minor} (only 1.x is defined)")
        self._walk_options(buf, pos, pos + 24, pos + blen - 4, "section header")
        self._check_trailer(buf, pos, blen)
        self.interfaces = []
        self._interfaces_changed()
        self.sections += 1

    def shb_length(self, buf: bytes, pos: int) -> int:
        """The length of the SHB at ``pos`` (12 bytes of it in the window); adopts its byte order."""
        bom_le = struct.unpack_from("<I", buf, pos + 8)[0]
        if bom_le == PCAPNG_BOM:
            endian = "<"
        elif bom_le == 0x4D3C2B1A:
            endian = ">"
        else:
            raise _Corrupt(pos, f"section header with a bad byte-order magic 0x{bom_le:08x}")
        if endian != self.endian:
            self._set_endian(endian)
        blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
        if blen < 28 or blen % 4:
            raise _Corrupt(pos, f"section header length {blen} is invalid (must be a multiple of 4, at least 28)")
        if blen > MAX_RECORD_LENGTH:
            raise _Corrupt(pos, f"section header length {blen} is larger than {MAX_RECORD_LENGTH}")
        return blen

    # -- blocks -------------------------------------------------------------------------------

    def scan(self, buf: bytes, pos: int, limit: int, acc: _BatchBuilder) -> tuple[int, int]:
        """Same contract as ``_PcapScanner.scan``; raises ``_Corrupt`` at a nonsense block."""
        end = len(buf)
        while acc.count < limit:
            if _native is not None:
                pos = self._scan_run_native(buf, pos, limit - acc.count, acc)
            else:
                pos = self._scan_epb_run(buf, pos, limit - acc.count, acc)
            if acc.count >= limit:
                break
            if pos + 12 > end:
                return pos, 12
            btype, blen = self._head(buf, pos)
            if btype == PCAPNG_SHB:
                blen = self.shb_length(buf, pos)
                if pos + blen > end:
                    return pos, blen
                self.read_section_header(buf, pos, blen)
                pos += blen
                continue
            if blen < 12 or blen % 4:
                raise _Corrupt(pos, f"block length {blen} is invalid (must be a multiple of 4, at least 12)")
            if blen > MAX_RECORD_LENGTH + 64:
                raise _Corrupt(pos, f"block length {blen} is larger than {MAX_RECORD_LENGTH}")
            if pos + blen > end:
                return pos, blen
            self._check_trailer(buf, pos, blen)
            if btype == _BT_IDB:
                self._read_interface(buf, pos, blen)
            elif btype == _BT_EPB:
                self._read_epb(buf, pos, blen, acc)
            elif btype == _BT_SPB:
                self._read_spb(buf, pos, blen, acc)
            elif btype == _BT_OPB:
                self._read_opb(buf, pos, blen, acc)
            # any other block (statistics, name resolution, secrets, custom, ...) is skipped
            pos += blen
        return pos, 0

    def _scan_epb_run(self, buf: bytes, pos: int, limit: int, acc: _BatchBuilder) -> int:
        """Collect consecutive, plausible EPBs; validated and decoded vectorised."""
        head = self._head
        end = len(buf)
        positions: list[int] = []
        append = positions.append
        # The hot loop only follows block lengths; every check is done vectorised below, and the
        # first block that fails one goes to the slow path (which waits for more data or explains).
        try:
            for _ in range(limit):
                btype, blen = head(buf, pos)
                if btype != _BT_EPB:
                    break
                append(pos)
                pos += blen
        except struct.error:
            pass
        if not positions:
            return pos
        starts = np.array(positions, dtype=np.int64)
        fits = int(np.searchsorted(starts, end - 28, side="right"))  # the 28-byte EPB header is in the window
        if fits == len(starts):
            fields = _rows(buf, starts + 4, 24).view(self._u4)  # blen, iface, ts high, ts low, caplen, wire
        else:  # the last blocks' headers are cut by the window: zeros, which fail the checks below
            fields = np.zeros((len(starts), 6), self._u4)
            if fits:
                fields[:fits] = _rows(buf, starts[:fits] + 4, 24).view(self._u4)
        blen = fields[:, 0].astype(np.int64)
        in_window = (starts + blen <= end) & (blen >= 32) & (np.arange(len(starts)) < fits)
        trailer = _rows(buf, np.where(in_window, starts + blen - 4, 0), 4).view(self._u4)[:, 0]
        iface = fields[:, 1]
        caplen = fields[:, 4].astype(np.int64)
        bad = ~in_window | (blen % 4 != 0) | (trailer != fields[:, 0]) | (iface >= len(self.interfaces)) \
            | (caplen > blen - 32)
        if bad.any():
            k = int(np.argmax(bad))
            if k == 0:
                return positions[0]
            starts, fields, caplen, iface = starts[:k], fields[:k], caplen[:k], iface[:k]
            pos = positions[k]
        units = (fields[:, 2].astype(np.uint64) << np.uint64(32)) | fields[:, 3].astype(np.uint64)
        ts_ns, seconds = self._convert(units, iface)
        self.last_ts = (int(ts_ns[-1]), float(seconds[-1]) if seconds is not None else None)
        acc.add_run(starts + 28, caplen, fields[:, 5].astype(np.int64), ts_ns, self._lt_table[iface], seconds)
        return pos

    def _scan_run_native(self, buf: bytes, pos: int, limit: int, acc: _BatchBuilder) -> int:
        """Collect consecutive, valid EPBs and SPBs with the compiled walker (``_core.scan_pcapng``);
        it stops at the first block it does not judge alone, which the slow path then reads."""
        size = _run_size(buf, pos, limit, 16)
        offsets, caplens, wire, units = _run_arrays(size, np.uint64)
        iface = np.empty(size, np.int32)
        snaplen = self.interfaces[0].snaplen if self.interfaces else 0
        n, pos, _status, _value = _native.scan_pcapng(buf, pos, size, self.endian == ">", len(self.interfaces),
                                                      snaplen, offsets, caplens, wire, units, iface)
        if not n:
            return pos
        units, iface = units[:n], iface[:n]
        simple = iface < 0  # Simple Packet Blocks: interface 0, the previous packet's time
        if not simple.any():
            ts_ns, seconds = self._convert(units, iface)
            linktypes = self._lt_table[iface]
        else:
            ts_ns, seconds = self._simple_times(units, iface, simple)
            linktypes = self._lt_table[np.where(simple, 0, iface)]
        self.last_ts = (int(ts_ns[-1]), float(seconds[-1]) if seconds is not None else None)
        acc.add_run(offsets[:n], caplens[:n], wire[:n], ts_ns, linktypes, seconds)
        return pos

    def _simple_times(self, units: np.ndarray, iface: np.ndarray, simple: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Times of a run with SPBs: each SPB takes the previous packet's (``last_ts`` before the run)."""
        n = len(units)
        ts_ns = np.empty(n, np.int64)
        seconds = np.empty(n, np.float64)
        enhanced = ~simple
        if enhanced.any():
            part_ns, part_s = self._convert(units[enhanced], iface[enhanced])
            ts_ns[enhanced] = part_ns
            seconds[enhanced] = _ns_to_seconds(part_ns) if part_s is None else part_s
        source = np.where(enhanced, np.arange(n), -1)
        np.maximum.accumulate(source, out=source)  # the latest EPB at or before each packet
        filled = simple & (source >= 0)
        ts_ns[filled] = ts_ns[source[filled]]
        seconds[filled] = seconds[source[filled]]
        lead = source < 0  # SPBs before the run's first EPB
        if lead.any():
            ns, secs = self.last_ts
            ts_ns[lead] = ns
            seconds[lead] = ns // _NS + (ns % _NS) * 1e-9 if secs is None else secs
        return ts_ns, seconds

    def _convert(self, units: np.ndarray, iface: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self._uniform is not None:
            return self._uniform.convert_array(units)
        ts_ns = np.empty(len(units), np.int64)
        seconds = None
        for i in np.unique(iface).tolist():
            mask = iface == i
            part_ns, part_s = self.interfaces[i].convert_array(units[mask])
            ts_ns[mask] = part_ns
            if part_s is not None:
                if seconds is None:
                    seconds = np.full(len(units), np.nan)
                seconds[mask] = part_s
        if seconds is not None:
            exact = np.isnan(seconds)
            seconds[exact] = _ns_to_seconds(ts_ns[exact])
        return ts_ns, seconds

    def _check_trailer(self, buf: bytes, pos: int, blen: int) -> None:
        trailer = struct.unpack_from(self.endian + "I", buf, pos + blen - 4)[0]
        if trailer != blen:
            raise _Corrupt(pos, f"block length {blen} does not match its trailer ({trailer})")

    def _walk_options(self, buf: bytes, block: int, start: int, end: int, what: str):
        """``[(code, value_offset, length)]`` of the options in ``buf[start:end]``, up to opt_endofopt."""
        unpack = struct.Struct(self.endian + "HH").unpack_from
        found = []
        while start + 4 <= end:
            code, length = unpack(buf, start)
            if code == _OPT_END:
                break
            value = start + 4
            if value + length > end:
                raise _Corrupt(block, f"{what} option {code} of length {length} runs past the end of its block")
            found.append((code, value, length))
            start = value + ((length + 3) & ~3)
        return found

    def _interface(self, pos: int, iface: int, what: str) -> _Interface:
        if iface >= len(self.interfaces):
            raise _Corrupt(pos, f"{what} refers to interface {iface}, but the section describes "
                                f"{len(self.interfaces)}")
        return self.interfaces[iface]

    def _read_interface(self, buf: bytes, pos: int, blen: int) -> None:
        if blen < 20:
            raise _Corrupt(pos, f"interface description block length {blen} is smaller than 20")
        linktype, _reserved, snaplen = struct.unpack_from(self.endian + "HHI", buf, pos + 8)
        tsresol, tsoffset = 6, 0
        for code, value, length in self._walk_options(buf, pos, pos + 16, pos + blen - 4, "interface"):
            if code == _OPT_IF_TSRESOL and length >= 1:
                tsresol = buf[value]
            elif code == _OPT_IF_TSOFFSET and length >= 8:
                tsoffset = struct.unpack_from(self.endian + "q", buf, value)[0]
        self.interfaces.append(_Interface(linktype, snaplen, tsresol, tsoffset))
        self._interfaces_changed()

    def _read_epb(self, buf: bytes, pos: int, blen: int, acc: _BatchBuilder) -> None:
        if blen < 32:
            raise _Corrupt(pos, f"enhanced packet block length {blen} is smaller than 32")
        iface, hi, lo, caplen, wire = struct.unpack_from(self.endian + "5I", buf, pos + 8)
        if caplen > blen - 32:
            raise _Corrupt(pos, f"enhanced packet block: captured length {caplen} exceeds the block ({blen})")
        info = self._interface(pos, iface, "enhanced packet block")
        self._add(acc, pos + 28, caplen, wire, info.convert((hi << 32) | lo), info.linktype)

    def _read_opb(self, buf: bytes, pos: int, blen: int, acc: _BatchBuilder) -> None:
        if blen < 32:
            raise _Corrupt(pos, f"packet block length {blen} is smaller than 32")
        iface, _drops, hi, lo, caplen, wire = struct.unpack_from(self.endian + "HH4I", buf, pos + 8)
        if caplen > blen - 32:
            raise _Corrupt(pos, f"packet block: captured length {caplen} exceeds the block ({blen})")
        info = self._interface(pos, iface, "packet block")
        self._add(acc, pos + 28, caplen, wire, info.convert((hi << 32) | lo), info.linktype)

    def _read_spb(self, buf: bytes, pos: int, blen: int, acc: _BatchBuilder) -> None:
        if blen < 16:
            raise _Corrupt(pos, f"simple packet block length {blen} is smaller than 16")
        info = self._interface(pos, 0, "simple packet block")
        wire = struct.unpack_from(self.endian + "I", buf, pos + 8)[0]
        caplen = min(wire, blen - 16)
        if info.snaplen:
            caplen = min(caplen, info.snaplen)
        self._add(acc, pos + 12, caplen, wire, self.last_ts, info.linktype)

    def _add(self, acc: _BatchBuilder, offset: int, caplen: int, wire: int, ts: tuple, linktype: int) -> None:
        ns, seconds = ts
        if seconds is None:
            seconds = ns // _NS + (ns % _NS) * 1e-9
        acc.add_one(offset, caplen, wire, ns, seconds, linktype)
        self.last_ts = (ns, seconds)


# ---------------------------------------------------------------------------------------------
# The reader


class CaptureReader:
    """A pcap or pcapng capture opened for streaming; iterate it once for :class:`Batch` objects.

    Attributes: ``name``, ``format`` (``"pcap"``/``"pcapng"``), ``linktype`` and ``snaplen`` (the
    file header's, or pcapng interface 0's), ``nanosecond`` (pcap only), ``packets_read``,
    ``bytes_read`` (file offset reached), ``truncated``, ``truncated_offset`` (byte offset of the
    first incomplete or corrupt record) and ``truncation_reason``.
    """

    def __init__(self, source: PathOrFile, batch_size: int = DEFAULT_BATCH_SIZE,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if chunk_size < 64:
            raise ValueError(f"chunk_size must be at least 64 bytes, not {chunk_size}")
        self.batch_size = batch_size
        self.packets_read = 0
        self.truncated = False
        self.truncated_offset: Optional[int] = None
        self.truncation_reason: Optional[str] = None
        self._file, self.name, self._owns_file = _open_source(source)
        self._window = _Window(self._file, chunk_size)
        self._pos = 0
        self._done = False
        self._iterator: Optional[Iterator[Batch]] = None
        try:
            self._scanner = self._read_file_header()
        except BaseException:
            self.close()
            raise

    # -- opening --------------------------------------------------------------------------------

    def _read_file_header(self):
        win = self._window
        try:
            win.fill(0, 24)
        except OSError as err:
            raise CaptureFormatError(f"{self.name}: cannot read ({err.strerror or err})") from None
        buf = win.buf
        if not buf:
            raise CaptureFormatError(f"{self.name}: empty file, not a pcap or pcapng capture")
        if len(buf) < 4:
            raise CaptureFormatError(f"{self.name}: {len(buf)} bytes is too short to be a pcap or pcapng file")
        magic_le = struct.unpack_from("<I", buf)[0]
        magic_be = struct.unpack_from(">I", buf)[0]
        if magic_le == PCAPNG_SHB:
            return self._open_pcapng()
        if PCAP_MAGIC_USEC in (magic_le, magic_be) or PCAP_MAGIC_NSEC in (magic_le, magic_be):
            if len(buf) < 24:
                raise CaptureFormatError(f"{self.name}: truncated pcap file header ({len(buf)} of 24 bytes)")
            scanner = _PcapScanner.from_header(self.name, buf)
            self._pos = 24
            return scanner
        if PCAP_MAGIC_MODIFIED in (magic_le, magic_be):
            raise CaptureFormatError(f"{self.name}: modified (Kuznetzov) pcap format is not supported")
        if buf[:2] == b"\x1f\x8b":
            raise CaptureFormatError(f"{self.name}: gzip-compressed file; decompress it first")
        raise CaptureFormatError(f"{self.name}: not a pcap or pcapng file (magic 0x{magic_be:08x})")

    def _open_pcapng(self) -> _PcapngScanner:
        win = self._window
        scanner = _PcapngScanner()
        try:
            if len(win.buf) < 12:
                raise _Corrupt(0, f"truncated section header ({len(win.buf)} bytes)")
            blen = scanner.shb_length(win.buf, 0)
            if len(win.buf) < blen:
                win.fill(0, blen)
                if len(win.buf) < blen:
                    raise _Corrupt(0, f"truncated section header ({len(win.buf)} of {blen} bytes)")
            scanner.read_section_header(win.buf, 0, blen)
        except _Corrupt as err:
            raise CaptureFormatError(f"{self.name}: not a valid pcapng file: {err.reason}") from None
        self._pos = blen
        return scanner

    # -- properties -------------------------------------------------------------------------------

    @property
    def format(self) -> str:
        return self._scanner.format

    @property
    def linktype(self) -> Optional[int]:
        return self._scanner.linktype

    @property
    def snaplen(self) -> Optional[int]:
        return self._scanner.snaplen

    @property
    def nanosecond(self) -> bool:
        return bool(getattr(self._scanner, "nanosecond", False))

    @property
    def bytes_read(self) -> int:
        return self._window.base + self._pos

    # -- iteration --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        if self._iterator is None:
            self._iterator = self._batches()
        return self._iterator

    def packets(self) -> Iterator[tuple[int, bytes, float, int]]:
        """``(index, data, timestamp seconds, link type)`` for every packet, streaming."""
        for batch in self:
            yield from batch.packets()

    def _batches(self) -> Iterator[Batch]:
        win = self._window
        scanner = self._scanner
        while not self._done:
            acc = _BatchBuilder()
            buf = win.buf
            stop: Optional[tuple[int, str]] = None
            need = 0
            try:
                self._pos, need = scanner.scan(buf, self._pos, self.batch_size, acc)
            except _Corrupt as err:
                stop = (err.pos, err.reason)
                self._pos = err.pos
            if acc.count:
                batch = acc.build(buf, self.packets_read)
                self.packets_read += acc.count
                yield batch
            if stop is not None:
                self._stop(win.base + stop[0], stop[1])
            elif need:
                self._refill(need)
            if self.truncated:
                warnings.warn(f"{self.name}: capture truncated at byte {self.truncated_offset}: "
                              f"{self.truncation_reason}; {self.packets_read} complete packets read",
                              CaptureTruncatedWarning, stacklevel=2)
        self.close()

    def _refill(self, need: int) -> None:
        win = self._window
        try:
            added = win.fill(self._pos, need)
        except OSError as err:
            self._pos = 0
            self._stop(win.base, f"read error ({err.strerror or err})")
            return
        self._pos = 0
        if not added and win.eof:
            if len(win.buf):
                self._stop(win.base, f"incomplete record ({len(win.buf)} bytes at the end of the file)")
            else:
                self._done = True

    def _stop(self, offset: int, reason: str) -> None:
        self._done = True
        self.truncated = True
        self.truncated_offset = offset
        self.truncation_reason = reason

    # -- resources --------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_file and self._file is not None:
            self._file.close()
        self._file = None

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CaptureReader {self.name!r} format={self.format} packets_read={self.packets_read}>"


def _open_source(source: PathOrFile) -> tuple[BinaryIO, str, bool]:
    if hasattr(source, "read"):
        return source, str(getattr(source, "name", "<stream>")), False  # type: ignore[return-value]
    name = os.fspath(source)
    try:
        return open(name, "rb"), name, True
    except IsADirectoryError:
        raise CaptureFormatError(f"{name}: is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureFormatError(f"{name}: no such file") from None
    except PermissionError:
        raise CaptureFormatError(f"{name}: permission denied") from None
    except OSError as err:
        raise CaptureFormatError(f"{name}: cannot open ({err.strerror or err})") from None


def open_capture(source: PathOrFile, batch_size: int = DEFAULT_BATCH_SIZE,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> CaptureReader:
    """Open a pcap or pcapng capture (a path or a binary file object) for streaming in batches.

    Raises :class:`CaptureFormatError` when it is not a capture (or cannot be opened).
    """
    return CaptureReader(source, batch_size=batch_size, chunk_size=chunk_size)


def iter_packets(source: PathOrFile, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[int, bytes, float, int]]:
    """``(index, data, timestamp seconds, link type)`` for every packet of a capture, streaming."""
    with open_capture(source, batch_size=batch_size) as reader:
        yield from reader.packets()
