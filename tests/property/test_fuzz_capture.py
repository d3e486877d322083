"""Fuzzing the capture reader and the packet parsers (issue 8).

Arbitrary bytes (``binary()``) and mutations of the real captures in ``../shared/pcaps/real/``
go to :func:`hyperplane.io.open_capture`, to :func:`hyperplane.packet.parse` (and the C parser
``hyperplane._core.parse`` when built) and to the Engine. Allowed outcomes: packets, a clean
``CaptureFormatError`` when opening, a truncation flag with a warning, a ``malformed`` /
``not-hyperplane`` verdict. Anything else (an exception, an offset outside the data, a
disagreement between the two parsers) fails.
"""
from __future__ import annotations

import io
import os
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperplane import packet as pk
from hyperplane.codes import DropReason
from hyperplane.io import CaptureFormatError, open_capture
from hyperplane.testing import engine_for, load_documents, packets
from hyperplane.testing.traffic import sandbox_ranges

try:
    from hyperplane import _core
except ImportError:  # the extension is not built
    _core = None

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "pcaps", "real")
PCAP_USEC_LE = bytes.fromhex("d4c3b2a1 0200 0400 00000000 00000000 ffff0000 65000000")  # LINKTYPE_RAW
PCAPNG_SHB = bytes.fromhex("0a0d0d0a 1c000000 4d3c2b1a 0100 0000 ffffffffffffffff 1c000000")


def _real_captures() -> list[tuple[str, bytes]]:
    if not os.path.isdir(REAL):
        return []
    out = []
    for name in sorted(os.listdir(REAL)):
        path = os.path.join(REAL, name)
        if name.endswith((".pcap", ".pcapng", ".cap")) and os.path.getsize(path) <= 64 * 1024:
            with open(path, "rb") as f:
                out.append((name, f.read()))
    return out


REAL_CAPTURES = _real_captures()

#: One tiny configuration so the engine can classify fuzzed packets (sandbox 169.254.76.0/24).
_MODEL = load_documents({
    "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}],
    "Subnets": [{"SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24"}],
    "SecurityGroups": [{"GroupId": "sg-1", "VpcId": "vpc-1",
                        "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}],
    "Functions": [{"FunctionName": "fn", "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}}],
})


def read_all(data: bytes) -> list:
    """Every packet the reader yields for ``data``; CaptureFormatError passes through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = open_capture(io.BytesIO(data), batch_size=7, chunk_size=4096)
        records = []
        for batch in reader:
            assert len(batch.offsets) == len(batch.lengths) == len(batch.timestamps) == len(batch.linktypes)
            for i in range(len(batch)):
                off, length = int(batch.offsets[i]), int(batch.lengths[i])
                assert 0 <= off and off + length <= len(batch.buffer)
                records.append((batch.packet(i), int(batch.linktypes[i])))
        if reader.truncated:
            assert 0 <= reader.truncated_offset <= len(data)
        return records


def check_parse(frame: bytes, linktype: int) -> pk.Parsed:
    p = pk.parse(frame, linktype)
    if p.ok:
        assert 0 <= p.l3 and p.l3 + p.ip_len <= len(frame), p
        assert p.l4 == -1 or p.l3 < p.l4 <= p.l3 + p.ip_len, p
        assert p.version in (4, 6)
    else:
        assert p.error or p.not_ip, p
    if _core is not None:
        assert _core.parse(frame, linktype) == p.astuple(), f"C and Python parsers differ on {frame.hex()}"
    return p


def check_engine(records) -> None:
    engine = engine_for(_MODEL, sandbox_ranges(_MODEL))
    for i, (frame, linktype) in enumerate(records):
        result = engine.process(frame, 1_700_000_000.0 + i, linktype)
        if not pk.parse(frame, linktype).ok:
            assert result.reason in (DropReason.MALFORMED, DropReason.NOT_HYPERPLANE), result


def _fuzz_capture(data: bytes) -> None:
    try:
        records = read_all(data)
    except CaptureFormatError as err:
        assert str(err), "a CaptureFormatError must say what is wrong"
        return
    for frame, linktype in records:
        check_parse(frame, linktype)
    check_engine(records)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_as_a_capture(data):
    _fuzz_capture(data)


@given(st.sampled_from([PCAP_USEC_LE, PCAPNG_SHB]), st.binary(max_size=512))
def test_arbitrary_records_after_a_valid_header(header, body):
    _fuzz_capture(header + body)


@st.composite
def mutated_real_capture(draw) -> bytes:
    name, data = draw(st.sampled_from(REAL_CAPTURES))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "length"]))
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[at:at + draw(st.integers(1, 16))]
        else:  # a plausible but wrong length field (pcap caplen / pcapng block length)
            buf[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00",
                                                   b"\x00\x00\x01\x00"]))
    return bytes(buf)


@pytest.mark.skipif(not REAL_CAPTURES, reason="../shared/pcaps/real is not present beside the checkout")
@given(mutated_real_capture())
def test_mutated_real_captures(data):
    _fuzz_capture(data)


@pytest.mark.skipif(not REAL_CAPTURES, reason="../shared/pcaps/real is not present beside the checkout")
def test_every_real_capture_reads_and_replays():
    for name, data in REAL_CAPTURES:
        _fuzz_capture(data)


LINKTYPES = st.sampled_from(pk.LINKTYPES)


@given(st.binary(max_size=128), LINKTYPES)
def test_parser_on_arbitrary_bytes(frame, linktype):
    check_parse(frame, linktype)


@given(packets(), st.data())
def test_parser_on_damaged_ip_packets(packet, data):
    """A real IP packet cut short or with a byte changed: parsed consistently, never raising."""
    frame = bytearray(packet)
    cut = data.draw(st.integers(0, len(frame)))
    if data.draw(st.booleans()) and frame:
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    p = check_parse(bytes(frame[:cut]), pk.RAW)
    engine = engine_for(_MODEL, sandbox_ranges(_MODEL))
    result = engine.process(bytes(frame[:cut]), 1_700_000_000.0)
    if not p.ok:
        assert result.reason in (DropReason.MALFORMED, DropReason.NOT_HYPERPLANE)
