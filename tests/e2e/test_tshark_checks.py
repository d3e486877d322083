"""Every packet we write is checked by a tool we did not write: tshark, with IPv4/TCP/UDP checksum
validation on, must find no bad checksum and no malformed packet (expert info of severity warning
or worse) in the taps of the demo and of the dual-stack scenario."""
from __future__ import annotations

import json
import os

import pytest

from e2e_support import (
    CHECKSUM_BAD, CHECKSUM_GOOD, DEMO, REAL, SCENARIO_SANDBOXES, SCENARIO_VPC, cli, main_client, tshark_frames,
    tshark_problems,
)

TAPS = ("lambda", "eni", "internet")


def test_the_checker_itself_reports_a_bad_checksum(tshark, tmp_path):
    """Guard against a checker that silently checks nothing (e.g. a renamed preference)."""
    from scapy.layers.inet import IP, TCP

    from e2e_support import write_raw_capture

    good = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="S")
    bad = IP(bytes(good))
    bad[TCP].chksum = (bad[TCP].chksum + 1) & 0xFFFF
    path = str(tmp_path / "bad.pcap")
    write_raw_capture(path, [good, bad])
    frames = tshark_frames(tshark, path)
    assert [f.tcp for f in frames] == [CHECKSUM_GOOD, CHECKSUM_BAD]
    assert [f.ip for f in frames] == [CHECKSUM_GOOD, CHECKSUM_GOOD]
    problems = tshark_problems(tshark, path)
    assert problems and "frame 2" in problems[0]


@pytest.mark.parametrize("tap", TAPS)
def test_demo_taps_pass_tshark(demo_replay, tshark, tap):
    assert demo_replay.run.exit_code == 0, demo_replay.run.stderr
    path = demo_replay.path(f"{tap}.pcap")
    frames = tshark_frames(tshark, path)
    assert frames
    assert tshark_problems(tshark, path) == []
    # validation did run: every IPv4 header and TCP/UDP segment was verified good
    assert all(f.ip == CHECKSUM_GOOD for f in frames if "ip:" in f.protocols + ":")
    assert all(f.tcp == CHECKSUM_GOOD for f in frames if ":tcp" in f.protocols)
    assert all(f.udp == CHECKSUM_GOOD for f in frames if ":udp" in f.protocols)


def test_demo_pcapng_tap_passes_tshark(tmp_path, demo_args, tshark):
    out = str(tmp_path / "internet.pcapng")
    run = cli("replay", *demo_args, "--tap", f"internet={out}", "-q")
    assert run.exit_code == 0, run.stderr
    assert tshark_frames(tshark, out)
    assert tshark_problems(tshark, out) == []


@pytest.fixture(scope="module")
def scenario_replay(tmp_path_factory, scenario_capture):
    out = tmp_path_factory.mktemp("scenario-out")
    args = ["replay", scenario_capture, "--vpc", SCENARIO_VPC]
    for spec in SCENARIO_SANDBOXES:
        args += ["--sandbox", spec]
    for tap in TAPS:
        args += ["--tap", f"{tap}={out}/{tap}.pcap"]
    run = cli(*args, "--drops", out / "drops.jsonl", "--summary", out / "summary.json", "-q")
    assert run.exit_code == 0, run.stderr
    return out


def test_scenario_input_is_clean_for_tshark(scenario_capture, tshark):
    """The scenario's own packets pass, so any problem found in a tap is ours."""
    assert tshark_problems(tshark, scenario_capture) == []


def test_scenario_is_forwarded_end_to_end(scenario_replay):
    summary = json.loads((scenario_replay / "summary.json").read_text())
    assert summary["dropped"] == 0, (scenario_replay / "drops.jsonl").read_text()
    assert summary["packets"] == summary["forwarded"] == 29
    assert summary["nat_gateways"][0]["public_ip"] == "198.51.100.30"


@pytest.mark.parametrize("tap", TAPS)
def test_scenario_taps_pass_tshark(scenario_replay, scenario_capture, tshark, tap):
    path = str(scenario_replay / f"{tap}.pcap")
    frames = tshark_frames(tshark, path)
    assert tshark_problems(tshark, path) == []
    protocols = {p for f in frames for p in f.protocols.split(":")}
    if tap == "internet":
        # the NAT gateway's IPv4 flows (TCP 443, UDP 53) and the IPv6 flows beyond the egress-only IGW
        assert len(frames) == 20
        assert {"ip", "ipv6", "tcp", "udp"} <= protocols
    else:
        assert len(frames) == 29
        assert {"ip", "ipv6", "tcp", "udp", "dns", "pgsql", "http"} <= protocols
    assert sum(f.tcp == CHECKSUM_GOOD for f in frames) >= 8
    assert sum(f.udp == CHECKSUM_GOOD for f in frames) >= 2


def test_scenario_internet_tap_shows_the_nat_gateway_address(scenario_replay, tshark):
    import subprocess

    out = subprocess.run([tshark, "-n", "-r", str(scenario_replay / "internet.pcap"), "-Y", "ip",
                          "-T", "fields", "-e", "ip.src", "-e", "ip.dst"], capture_output=True, text=True).stdout
    pairs = {tuple(line.split("\t")) for line in out.splitlines()}
    assert pairs == {("198.51.100.30", "203.0.113.50"), ("203.0.113.50", "198.51.100.30"),
                     ("198.51.100.30", "203.0.113.53"), ("203.0.113.53", "198.51.100.30")}


# Real captures whose every packet has valid checksums and is well formed: what we forward from
# them must stay so (the others carry offloaded or corrupt checksums by design, see the corpus README).
CLEAN_REAL = [
    "tcp-http-get-fin.pcap", "tcp-ssh-fin.pcap", "tcp-smtp-fin.pcap", "udp-ntp.pcap", "sll2-tcp-http.pcap", "vlan-qinq-tcp-http.pcap", "rawip4-tcp-syslog.pcap",
    "bigendian-udp-nfsv3.pcap",
]


@pytest.mark.parametrize("name", CLEAN_REAL)
def test_taps_of_real_captures_pass_tshark(tmp_path, tshark, name):
    path = os.path.join(REAL, name)
    if not os.path.exists(path):
        pytest.skip(f"{REAL} is not present")
    assert tshark_problems(tshark, path) == [], "the corpus file itself is no longer clean"
    client = main_client(path)
    taps = {tap: str(tmp_path / f"{tap}.pcap") for tap in TAPS}
    run = cli("replay", path, "--vpc", os.path.join(DEMO, "vpc"),
              "--sandbox", f"orders-api={client}", *sum((["--tap", f"{t}={p}"] for t, p in taps.items()), []), "-q")
    assert run.exit_code == 0, run.stderr
    written = 0
    for tap, out in taps.items():
        frames = tshark_frames(tshark, out)
        written += len(frames)
        assert tshark_problems(tshark, out) == [], tap
    assert written > 0


def test_nat_idle_timeout_rst_is_written_after_its_trigger(tmp_path, tshark):
    """A packet after the NAT gateway's 350 s idle timeout is dropped and the gateway answers the
    sandbox with a RST: the lambda tap holds it right after the dropped packet, with its own
    comment and a valid checksum."""
    import subprocess

    from scapy.layers.inet import IP, TCP

    from e2e_support import SCENARIO_T0, write_raw_capture

    sb, server = "169.254.80.5", "203.0.113.50"
    packets = [IP(src=sb, dst=server) / TCP(sport=40001, dport=443, flags="S", seq=1),
               IP(src=server, dst=sb) / TCP(sport=443, dport=40001, flags="SA", seq=100, ack=2),
               IP(src=sb, dst=server) / TCP(sport=40001, dport=443, flags="A", seq=2, ack=101),
               IP(src=sb, dst=server) / TCP(sport=40001, dport=443, flags="PA", seq=2, ack=101) / b"late"]
    capture = str(tmp_path / "idle.pcap")
    # the handshake, then 400 s of silence (> 350 s) before the last packet
    write_raw_capture(capture, packets, t0=SCENARIO_T0, offsets_us=[0, 10_000, 20_000, 400_000_000])
    tap = str(tmp_path / "lambda.pcapng")
    run = cli("replay", capture, "--vpc", SCENARIO_VPC, "--sandbox", SCENARIO_SANDBOXES[0], "--tap", f"lambda={tap}",
              "--drops", tmp_path / "drops.jsonl", "-q")
    assert run.exit_code == 0, run.stderr
    drops = [json.loads(line) for line in (tmp_path / "drops.jsonl").read_text().splitlines()]
    assert [(d["index"], d["reason"], d["component"]) for d in drops] == [(3, "nat-idle-timeout", "nat-0e2e0000000000001")]
    out = subprocess.run([tshark, "-n", "-r", tap, "-T", "fields", "-E", "separator=;", "-e", "ip.src", "-e", "ip.dst",
                          "-e", "tcp.flags.reset", "-e", "frame.comment"], capture_output=True, text=True).stdout
    rows = [line.split(";") for line in out.splitlines()]
    assert len(rows) == 5
    assert rows[3][3] == "dropped nat-idle-timeout by nat-0e2e0000000000001"
    assert rows[4][:3] == [server, sb, "1"] or rows[4][:3] == [server, sb, "True"]
    assert rows[4][3] == "emitted by the emulator"
    frames = tshark_frames(tshark, tap)
    assert [(f.ip, f.tcp) for f in frames] == [(CHECKSUM_GOOD, CHECKSUM_GOOD)] * 5
    assert [f.number for f in frames if f.expert] == [5]  # a RST is a warning for tshark, by design
    assert "Malformed" not in frames[4].expert
