"""The reader against scapy's raw readers on every real capture in ../shared/pcaps/real (and on the
fixtures copied into tests/fixtures/pcaps): same records, bytes, timestamps, link types and wire
lengths; the broken files are refused with a clear CaptureFormatError."""
from __future__ import annotations

import csv
import os
import warnings

import pytest

from hyperplane.io import CaptureFormatError, open_capture

HERE = os.path.dirname(__file__)
REAL = os.path.join(HERE, "..", "..", "..", "shared", "pcaps", "real")
FIXTURES = os.path.join(HERE, "..", "fixtures", "pcaps")
INT64_MAX = (1 << 63) - 1


# Every test here runs with the compiled record scanners and with their pure-Python twins.
pytestmark = pytest.mark.usefixtures("io_backend")


def _manifest(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


REAL_ROWS = _manifest(REAL, "MANIFEST.tsv")
FIXTURE_ROWS = _manifest(FIXTURES, "PROVENANCE.tsv")


def _ours(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real capture that opens must read without truncation
        with open_capture(path, batch_size=50) as reader:
            packets = []
            for batch in reader:
                for i in range(len(batch)):
                    packets.append((batch.packet(i), int(batch.ts_ns[i]), float(batch.timestamps[i]),
                                    int(batch.linktypes[i]), int(batch.wire_lengths[i])))
    assert not reader.truncated and reader.packets_read == len(packets)
    return packets


def _scapy(path):
    """(data, exact timestamp in ns as a Python int, link type, wire length) per record."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    out = []
    if path.endswith(".pcapng"):
        with RawPcapNgReader(path) as reader:
            for data, meta in reader:
                units = (meta.tshigh << 32) | meta.tslow
                out.append((data, units * 10**9 // meta.tsresol, meta.linktype, meta.wirelen))
    else:
        with RawPcapReader(path) as reader:
            scale = 1 if reader.nano else 1000
            for data, meta in reader:
                out.append((data, meta.sec * 10**9 + meta.usec * scale, reader.linktype, meta.wirelen))
    return out


def _check_capture(folder, row):
    path = os.path.join(folder, row["file"])
    if row["file"].startswith("malformed-file-"):
        # libpcap and Wireshark refuse these (bad version, SHB option overrun): so do we, in one line
        with pytest.raises(CaptureFormatError) as err:
            open_capture(path)
        assert str(err.value).startswith(path + ": ") and "\n" not in str(err.value)
        return
    ours = _ours(path)
    assert len(ours) == int(row["packets"])
    theirs = _scapy(path)
    assert len(ours) == len(theirs)
    for index, (mine, ref) in enumerate(zip(ours, theirs)):
        data, ts_ns, seconds, linktype, wire = mine
        assert (data, linktype, wire) == (ref[0], ref[2], ref[3]), f"record {index}"
        if ref[1] <= INT64_MAX:
            assert ts_ns == ref[1], f"record {index}"
        else:  # beyond year 2262 in ns: saturated, the float seconds keep the file's value
            assert ts_ns == INT64_MAX and seconds == pytest.approx(ref[1] / 1e9), f"record {index}"
    assert {str(lt) for lt in {p[3] for p in ours}} <= set(_link_type_numbers(row["link_type"]))


def _link_type_numbers(column):
    """'EN10MB(1)+NULL(0)' -> ['1', '0']"""
    return [part.rsplit("(", 1)[1].rstrip(")") for part in column.split("+")]


@pytest.mark.skipif(not REAL_ROWS, reason="../shared/pcaps/real is not present beside the checkout")
@pytest.mark.parametrize("row", REAL_ROWS, ids=[r["file"] for r in REAL_ROWS])
def test_real_capture_matches_scapy(row):
    _check_capture(REAL, row)


@pytest.mark.parametrize("row", FIXTURE_ROWS, ids=[r["file"] for r in FIXTURE_ROWS])
def test_fixture_capture_matches_scapy(row):
    _check_capture(FIXTURES, row)


def test_fixtures_are_permissively_licensed():
    assert FIXTURE_ROWS, "tests/fixtures/pcaps/PROVENANCE.tsv lists the fixtures"
    listed = {row["file"] for row in FIXTURE_ROWS}
    present = {name for name in os.listdir(FIXTURES) if name.endswith((".pcap", ".pcapng"))}
    assert present == listed
    for row in FIXTURE_ROWS:
        assert row["license"].split()[0] in {"BSD-3-Clause", "MIT", "Unlicense"}, row["file"]
