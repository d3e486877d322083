"""Helpers of the end-to-end tests (the fixtures are in conftest.py): the CLI run in-process
(click's CliRunner) or as a real subprocess, the dual-stack scenario capture made with scapy, and
tshark / capinfos, the independent checkers of what we write."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from click.testing import CliRunner

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(ROOT, "pcaps", "demo")
DATA = os.path.join(os.path.dirname(__file__), "data")
SCENARIO_VPC = os.path.join(DATA, "scenario-vpc.yaml")
REAL = os.path.abspath(os.path.join(ROOT, "..", "shared", "pcaps", "real"))

#: The scenario function's execution environments (as --sandbox takes them).
SCENARIO_SANDBOXES = ("scen=169.254.80.0/24", "scen=fd00:80::/64")


# --- the CLI --------------------------------------------------------------------------------
@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    exception: Optional[BaseException] = None


def cli(*args: str) -> Run:
    """``hyperplane ARGS`` in-process; stdout and stderr kept apart."""
    from hyperplane.cli import main

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always separates them
        runner = CliRunner()
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return Run(result.exit_code, result.stdout, result.stderr, exc)


def cli_subprocess(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """``python -m hyperplane ARGS`` as a real process (what a user's shell runs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "hyperplane", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_one_clear_line(run, code: int, *fragments: str) -> str:
    """Exit status ``code``, no traceback, the error as one ``Error: ...`` line naming ``fragments``."""
    stderr = run.stderr
    got = run.exit_code if isinstance(run, Run) else run.returncode
    assert got == code, stderr
    assert "Traceback" not in stderr
    if isinstance(run, Run):
        assert run.exception is None, repr(run.exception)
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- the scenario ---------------------------------------------------------------------------
SCENARIO_T0 = 1_800_000_000


def _tcp_conversation(ip, src, dst, sport, dport, request: bytes, response: bytes) -> list:
    from scapy.layers.inet import TCP
    from scapy.packet import Raw

    options = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    c, s = 1000, 5000
    c_end, s_end = c + 1 + len(request), s + 1 + len(response)
    return [
        ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=c, options=options),
        ip(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="SA", seq=s, ack=c + 1, options=options),
        ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=c + 1, ack=s + 1),
        ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=c + 1, ack=s + 1) / Raw(request),
        ip(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="PA", seq=s + 1, ack=c_end) / Raw(response),
        ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="FA", seq=c_end, ack=s_end),
        ip(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="FA", seq=s_end, ack=c_end + 1),
        ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=c_end + 1, ack=s_end + 1),
    ]


def scenario_packets() -> list:
    """IPv4 TCP/UDP to a VPC interface, IPv4 TCP/UDP through the NAT gateway to the internet,
    IPv6 TCP/UDP through the egress-only internet gateway; every request answered (but syslog);
    payloads that tshark's dissectors accept (PostgreSQL, DNS, TLS-looking bytes, HTTP on 80)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    sb4, sb6 = "169.254.80.5", "fd00:80::5"
    query4 = DNS(id=0x1234, qd=DNSQR(qname="api.example.com"))
    answer4 = DNS(id=0x1234, qr=1, qd=DNSQR(qname="api.example.com"),
                  an=DNSRR(rrname="api.example.com", rdata="203.0.113.50"))
    query6 = DNS(id=0xABCD, qd=DNSQR(qname="v6.example.com", qtype="AAAA"))
    answer6 = DNS(id=0xABCD, qr=1, qd=DNSQR(qname="v6.example.com", qtype="AAAA"),
                  an=DNSRR(rrname="v6.example.com", type="AAAA", rdata="2001:db8::80"))
    packets = []
    packets += _tcp_conversation(IP, sb4, "10.30.3.10", 40001, 5432, b"Q\0\0\0\x0eSELECT 1;\0", b"Z\0\0\0\x05I")
    packets += [IP(src=sb4, dst="10.30.3.10") / UDP(sport=40002, dport=514) / Raw(b"<14>scen: hello")]
    packets += _tcp_conversation(IP, sb4, "203.0.113.50", 40003, 443, b"\x16\x03\x01" + b"x" * 300,
                                 b"\x16\x03\x03" + b"y" * 1200)
    packets += [IP(src=sb4, dst="203.0.113.53") / UDP(sport=40004, dport=53) / query4,
                IP(src="203.0.113.53", dst=sb4) / UDP(sport=53, dport=40004) / answer4]
    packets += _tcp_conversation(IPv6, sb6, "2001:db8::80", 40005, 80, b"GET / HTTP/1.1\r\nHost: v6\r\n\r\n",
                                 b"HTTP/1.1 204 No Content\r\n\r\n")
    packets += [IPv6(src=sb6, dst="2001:db8::53") / UDP(sport=40006, dport=53) / query6,
                IPv6(src="2001:db8::53", dst=sb6) / UDP(sport=53, dport=40006) / answer6]
    return packets


def write_raw_capture(path: str, packets: list, t0: int = SCENARIO_T0, step_us: int = 10_000,
                      offsets_us: Optional[list[int]] = None) -> None:
    """A pcap LINKTYPE_RAW written by scapy (not by our writer): packet i at ``t0`` plus
    ``offsets_us[i]`` microseconds, or ``i * step_us`` without offsets."""
    from scapy.utils import RawPcapWriter

    writer = RawPcapWriter(path, linktype=101)
    writer.write_header(None)
    for i, packet in enumerate(packets):
        usec = offsets_us[i] if offsets_us is not None else i * step_us
        writer.write_packet(bytes(packet), sec=t0 + usec // 1_000_000, usec=usec % 1_000_000)
    writer.close()




# --- tshark and capinfos ----------------------------------------------------------------------
#: Wireshark checksum statuses (epan/proto.h: PROTO_CHECKSUM_E_*).
CHECKSUM_BAD, CHECKSUM_GOOD, CHECKSUM_UNVERIFIED, CHECKSUM_NOT_PRESENT = 0, 1, 2, 3
_VALIDATE = ("ip.check_checksum", "tcp.check_checksum", "udp.check_checksum")


@functools.lru_cache(maxsize=None)
def checksum_preferences(tshark: str) -> tuple[str, ...]:
    """``-o NAME:TRUE`` for every checksum-validation preference this tshark knows (the names
    differ between versions; the defaults dump lists them, commented out, as ``#name: FALSE``)."""
    prefs = subprocess.run([tshark, "-G", "defaultprefs"], capture_output=True, text=True, timeout=120).stdout
    known = {m.group(1) for m in re.finditer(r"^#?\s*([\w.]+check_checksum):", prefs, re.M)}
    missing = [name for name in _VALIDATE if name not in known]
    assert not missing, f"this tshark has no preference {missing}; known: {sorted(known)}"
    args: list[str] = []
    for name in _VALIDATE:
        args += ["-o", f"{name}:TRUE"]
    return tuple(args)


@dataclass
class Frame:
    number: int
    protocols: str
    ip: Optional[int]
    tcp: Optional[int]
    udp: Optional[int]
    expert: str


def _status(text: str) -> Optional[int]:
    """The outermost header's status (a packet may carry an inner one, e.g. in ICMP errors)."""
    return int(text.split("|")[0]) if text else None


#: Expert severities (epan/proto.h: PI_WARN, PI_ERROR); malformed packets are errors.
EXPERT_WARN = 0x00600000


def tshark_frames(tshark: str, path: str) -> list[Frame]:
    """Every frame of ``path`` with its IPv4/TCP/UDP checksum status (validation on) and, when
    tshark has expert info of severity warning or worse for it (malformed packets included),
    its expert messages. TCP sequence analysis is off: a retransmitted SYN is the demo's story,
    not a defect of ours."""
    fields = ["frame.number", "frame.protocols", "ip.checksum.status", "tcp.checksum.status",
              "udp.checksum.status", "_ws.expert.severity", "_ws.malformed", "_ws.expert.message"]
    cmd = [tshark, "-n", "-r", path, *checksum_preferences(tshark), "-o", "tcp.analyze_sequence_numbers:FALSE",
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = []
    for line in proc.stdout.splitlines():
        cols = line.split("\t") + [""] * len(fields)
        severity = max((int(v) for v in cols[5].split("|") if v), default=0)
        serious = severity >= EXPERT_WARN or bool(cols[6])
        frames.append(Frame(int(cols[0]), cols[1], _status(cols[2]), _status(cols[3]), _status(cols[4]),
                            (cols[7] or "malformed") if serious else ""))
    return frames


def tshark_problems(tshark: str, path: str) -> list[str]:
    """One line per frame with a bad checksum, an unverified one (validation did not run), or
    expert info of severity warning or worse (malformed packets included); [] when clean."""
    problems = []
    for f in tshark_frames(tshark, path):
        for layer, status in (("ip", f.ip), ("tcp", f.tcp), ("udp", f.udp)):
            if status is not None and status not in (CHECKSUM_GOOD, CHECKSUM_NOT_PRESENT):
                problems.append(f"{os.path.basename(path)} frame {f.number}: {layer} checksum status {status}")
        if f.expert:
            problems.append(f"{os.path.basename(path)} frame {f.number}: {f.expert}")
    return problems


def capinfos_count(capinfos: str, path: str) -> Optional[int]:
    """The number of packet records capinfos reads (None when it cannot open the file)."""
    proc = subprocess.run([capinfos, "-c", "-M", path], capture_output=True, text=True, timeout=120)
    match = re.search(r"Number of packets:\s+(\d+)", proc.stdout)
    return int(match.group(1)) if match else None


# --- real captures ------------------------------------------------------------------------------
def main_client(path: str) -> Optional[str]:
    """The capture's main client, to map to a sandbox: the source of the first TCP SYN (without
    ACK), else the source of the first well-formed IP packet; None when there is none."""
    import warnings

    from hyperplane.io import CaptureTruncatedWarning, iter_packets
    from hyperplane.packet import SYN, ACK, TCP, int_to_ip, parse

    first = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaptureTruncatedWarning)
        for _, data, _, linktype in iter_packets(path):
            p = parse(data, linktype)
            if not p.ok:
                continue
            if first is None:
                first = int_to_ip(p.src, p.version)
            if p.proto == TCP and p.tcp_flags & (SYN | ACK) == SYN:
                return int_to_ip(p.src, p.version)
    return first
