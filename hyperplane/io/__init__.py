"""Capture I/O: the streaming pcap/pcapng reader and the pcap/pcapng writers."""
from hyperplane.io.capture import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    MAX_RECORD_LENGTH,
    Batch,
    CaptureFormatError,
    CaptureReader,
    CaptureTruncatedWarning,
    iter_packets,
    open_capture,
)
from hyperplane.io.writer import LINKTYPE_RAW, PcapngWriter, PcapWriter, open_writer

__all__ = [
    "Batch",
    "CaptureFormatError",
    "CaptureReader",
    "CaptureTruncatedWarning",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "LINKTYPE_RAW",
    "MAX_RECORD_LENGTH",
    "PcapWriter",
    "PcapngWriter",
    "iter_packets",
    "open_capture",
    "open_writer",
]
