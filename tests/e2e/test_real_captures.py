"""Every real capture of ../shared/pcaps/real (third-party test files: see its README and
MANIFEST.tsv) replays through ``hyperplane replay`` without a traceback, with the packet
accounting exact against ``capinfos`` and the documented exit status; broken packets are
``malformed`` drops, and only broken packets are."""
from __future__ import annotations

import csv
import json
import os

import pytest

from e2e_support import DEMO, REAL, assert_one_clear_line, capinfos_count, cli, main_client, tshark_frames

MANIFEST = os.path.join(REAL, "MANIFEST.tsv")


def manifest_rows() -> list[dict]:
    if not os.path.exists(MANIFEST):
        return []
    with open(MANIFEST, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


ROWS = manifest_rows()
pytestmark = pytest.mark.skipif(not ROWS, reason=f"{REAL} is not present")

#: Packets whose IP or TCP/UDP header does not fit, by 0-based index (what the drops file says).
MALFORMED = {
    # IHL = 15 (60 bytes) but 20 bytes captured
    "trunc-ipv4-header.pcap": [0],
    # IPv4 total length 0, smaller than the header
    "malformed-ipv4-bogus-ihl.pcap": [0],
    # IPv6 payload length runs past the packet; the TCP header that remains is cut
    "malformed-ipv6-invalid-payload-length.pcap": [0],
    # UDP length field 5 < 8
    "malformed-udp-invalid-length.pcap": [0],
    # TCP/UDP headers of 0 or 4 bytes over IPv4 (0-2) and IPv6 (4-6); 3 and 7 are GRE, which is
    # not malformed for us but unsupported
    "malformed-decode-too-small.pcap": [0, 1, 2, 4, 5, 6],
    # the SYN's TCP options are cut by the 68-byte snaplen (later packets have no options)
    "trunc-tcp-header-cut.pcap": [0],
}


def _id(row: dict) -> str:
    return row["file"]


@pytest.fixture(scope="module")
def vpc() -> str:
    return os.path.join(DEMO, "vpc")


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_real_capture_replays_with_exact_accounting(row, vpc, tmp_path, capinfos, request):
    path = os.path.join(REAL, row["file"])
    client = main_client(path) if row["category"] != "malformed-file" else None
    args = ["replay", path, "--vpc", vpc, "--summary", tmp_path / "s.json", "--drops", tmp_path / "d.jsonl",
            "--tap", f"eni={tmp_path}/eni.pcap", "--flow-logs", tmp_path / "f.log", "-q"]
    if client:
        args += ["--sandbox", f"orders-api={client}"]
    run = cli(*args)
    assert run.exception is None, repr(run.exception)
    assert "Traceback" not in run.stderr

    if row["category"] == "malformed-file":
        # libpcap and Wireshark refuse these files: so do we, with exit status 3 and one line
        assert capinfos_count(capinfos, path) is None
        assert_one_clear_line(run, 3, path)
        return

    assert run.exit_code == 0, run.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["packets"] == capinfos_count(capinfos, path) == int(row["packets"])
    assert summary["packets"] == summary["forwarded"] + summary["dropped"]
    assert summary["capture_truncated"] is False
    drops = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(drops) == summary["dropped"]
    assert all(0 <= d["index"] < summary["packets"] for d in drops)
    malformed = [d["index"] for d in drops if d["reason"] == "malformed"]
    assert all(d["rule"] for d in drops if d["reason"] == "malformed"), "a malformed drop says what is wrong"
    if row["file"] in MALFORMED:
        assert malformed == MALFORMED[row["file"]]
    elif row["file"].startswith("malformed-fuzz-"):
        # randomly corrupted bytes: some headers break, and tshark must agree on every one we reject
        assert malformed
        flagged = {f.number - 1 for f in tshark_frames(request.getfixturevalue("tshark"), path) if f.expert}
        assert set(malformed) <= flagged, sorted(set(malformed) - flagged)
    else:
        assert malformed == [], [d for d in drops if d["reason"] == "malformed"]


def test_the_table_of_malformed_files_is_in_the_corpus():
    files = {row["file"] for row in ROWS}
    assert set(MALFORMED) <= files


def test_a_messy_capture_replays_identically_twice(vpc, tmp_path):
    """Determinism on a real, messy capture: two runs give identical drops and flow logs."""
    path = os.path.join(REAL, "malformed-fuzz-2006-bigendian.pcap")
    client = main_client(path)
    outputs = []
    for n in range(2):
        out = tmp_path / str(n)
        out.mkdir()
        run = cli("replay", path, "--vpc", vpc, "--sandbox", f"orders-api={client}", "--drops", out / "d.jsonl",
                  "--flow-logs", out / "f.log", "--tap", f"eni={out}/eni.pcap", "-q")
        assert run.exit_code == 0, run.stderr
        outputs.append([(out / name).read_bytes() for name in ("d.jsonl", "f.log", "eni.pcap")])
    assert outputs[0] == outputs[1]
