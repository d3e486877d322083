"""The Linux kernel as a baseline: forwarding + conntrack + nftables SNAT in network namespaces.

Three namespaces on two veth pairs, made for one measurement and deleted afterwards (also on
failure)::

    sender 10.201.0.2 --veth-- 10.201.0.1 router 10.202.0.1 --veth-- 10.202.0.2 sink

The router forwards (``net.ipv4.ip_forward=1``) and source-NATs everything leaving toward the sink
(``snat to 10.202.0.1:1024-65535``, conntrack on); the sink drops the UDP it receives in an nftables
input chain (no ICMP answers). The sender replays a capture with ``tcpreplay --topspeed``; traffic
exists only inside these namespaces. The rate is the sink's received packets divided by
tcpreplay's sending time: what the router forwarded, translated, per second (LINUX-PEER.md).

- ``established``: the capture's flows are opened by a first pass, then the measured passes hit
  conntrack entries that already carry their NAT binding (UDP, UNREPLIED: no answers come back);
- ``new flow``: every packet a new flow (conntrack flushed before each pass).

Requires root, ``ip`` with netns, ``nft``, ``conntrack`` and ``tcpreplay``; :func:`unavailable`
says why not otherwise. Every run is bounded: a fixed number of packets and a timeout per command.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Optional

import numpy as np

from hyperplane.bench import world

SENDER_NET, SINK_NET = (10, 201), (10, 202)
TIMEOUT = 120  # seconds, per command


def unavailable() -> Optional[str]:
    """None when the kernel baseline can run here, else the reason it cannot."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "conntrack", "tcpreplay", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"ip netns does not work here ({exc})"
    return None


def _run(*args: str, ns: Optional[str] = None, check: bool = True, input: Optional[str] = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    out = subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=TIMEOUT, input=input)
    return out.stdout


class Lab:
    """The three namespaces; a context manager that always tears them down."""

    def __init__(self, tag: Optional[str] = None):
        tag = tag or f"{os.getpid() % 100000}"
        self.sender, self.router, self.sink = f"hpb-snd-{tag}", f"hpb-rtr-{tag}", f"hpb-snk-{tag}"
        self.namespaces = (self.sender, self.router, self.sink)
        self.router_mac = ""
        self.sender_mac = ""

    def __enter__(self) -> "Lab":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)

    def _build(self) -> None:
        s, r, k = self.namespaces
        for ns in self.namespaces:
            _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", "veth-s", "netns", s, "type", "veth", "peer", "name", "veth-rs", "netns", r)
        _run("ip", "link", "add", "veth-rk", "netns", r, "type", "veth", "peer", "name", "veth-k", "netns", k)
        for ns, dev, addr in ((s, "veth-s", "10.201.0.2/24"), (r, "veth-rs", "10.201.0.1/24"),
                              (r, "veth-rk", "10.202.0.1/24"), (k, "veth-k", "10.202.0.2/24")):
            _run("ip", "addr", "add", addr, "dev", dev, ns=ns)
            _run("ip", "link", "set", dev, "up", ns=ns)
            _run("ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                 ns=ns, check=False)
            _run("ip", "link", "set", "lo", "up", ns=ns)
        _run("ip", "route", "add", "default", "via", "10.201.0.1", ns=s)
        _run("ip", "route", "add", "default", "via", "10.202.0.1", ns=k)
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=r)
        _run("nft", "-f", "-", ns=r, input=(
            "table ip hpb {\n"
            "  chain post { type nat hook postrouting priority 100; policy accept;\n"
            "    oifname \"veth-rk\" meta l4proto { tcp, udp } snat to 10.202.0.1:1024-65535\n  }\n}\n"))
        _run("nft", "-f", "-", ns=k, input=(
            "table ip hpb {\n  chain in { type filter hook input priority 0; policy accept;\n"
            "    meta l4proto { tcp, udp } drop\n  }\n}\n"))
        self.router_mac = self._mac(r, "veth-rs")
        self.sender_mac = self._mac(s, "veth-s")
        # the sender knows the router's address without asking (no ARP during a timed run)
        _run("ip", "neigh", "replace", "10.201.0.1", "lladdr", self.router_mac, "dev", "veth-s", ns=s)

    @staticmethod
    def _mac(ns: str, dev: str) -> str:
        info = json.loads(_run("ip", "-j", "link", "show", dev, ns=ns))
        return info[0]["address"]

    def sink_packets(self) -> int:
        info = json.loads(_run("ip", "-j", "-s", "link", "show", "veth-k", ns=self.sink))
        return int(info[0]["stats64"]["rx"]["packets"])

    def flush_conntrack(self) -> None:
        _run("conntrack", "-F", ns=self.router, check=False)

    def conntrack_count(self) -> int:
        out = _run("conntrack", "-C", ns=self.router, check=False).strip()
        return int(out) if out.isdigit() else -1

    def replay(self, pcap: str, loops: int = 1) -> tuple[int, float]:
        """tcpreplay the capture ``loops`` times at top speed; (packets the sink got, seconds)."""
        before = self.sink_packets()
        start = time.perf_counter()
        out = subprocess.run(["ip", "netns", "exec", self.sender, "tcpreplay", "-q", "--topspeed", "--preload-pcap",
                              f"--loop={loops}", "-i", "veth-s", pcap], capture_output=True, text=True,
                             timeout=TIMEOUT)
        wall = time.perf_counter() - start
        seconds = _tcpreplay_seconds(out.stdout + out.stderr) or wall
        time.sleep(0.05)  # let the last packets cross the router
        return self.sink_packets() - before, seconds


def _tcpreplay_seconds(text: str) -> Optional[float]:
    """The sending time tcpreplay reports ("Actual: N packets (B bytes) sent in S seconds")."""
    for line in text.splitlines():
        if "Actual:" in line and " sent in " in line:
            try:
                return float(line.split(" sent in ")[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def write_capture(path: str, lab: Lab, flows: int, packets_per_flow: int = 1, seed: int = 0) -> int:
    """An Ethernet capture of UDP packets from the sender to the sink: ``flows`` distinct flows
    (source port, destination port), each ``packets_per_flow`` times, in seeded random order."""
    from hyperplane.io import PcapWriter

    ids = np.tile(np.arange(flows, dtype=np.int64), packets_per_flow)
    np.random.default_rng(seed).shuffle(ids)
    src = np.full(len(ids), 0x0AC90002, dtype=np.uint32)  # 10.201.0.2
    dst = np.full(len(ids), 0x0ACA0002, dtype=np.uint32)  # 10.202.0.2
    sport = (1024 + ids % 60000).astype(np.uint32)
    dport = (5000 + ids // 60000).astype(np.uint32)
    pk = world.build(src, dst, sport, dport, world.UDP, payload=18)  # 46-byte IP: a 60-byte frame
    ether = bytes.fromhex(lab.router_mac.replace(":", "")) + bytes.fromhex(lab.sender_mac.replace(":", "")) + b"\x08\x00"
    with PcapWriter(path, linktype=1) as writer:
        buf = pk.buffer
        for off, n in zip(pk.offsets.tolist(), pk.lengths.tolist()):
            writer.write(ether + buf[off:off + n], ts=0.0)
    return len(ids)


def measure(flow_counts=(10_000,), new_flows: int = 100_000, repeat: int = 5, packets: int = 400_000,
            seed: int = 0, progress=None) -> dict:
    """Packets/s through the router: ``established`` per flow count and ``new_flow``.

    Returns ``{"established": {flows: [rates]}, "new_flow": [rates], "new_flow_count": n}``;
    raises RuntimeError when the lab cannot be built."""
    say = progress or (lambda _m: None)
    results: dict = {"established": {}, "new_flow": [], "new_flow_count": new_flows, "conntrack_max": conntrack_max()}
    with tempfile.TemporaryDirectory(prefix="hyperplane-kernel-") as folder, Lab() as lab:
        for flows in flow_counts:
            say(f"kernel: {flows:,} established flows")
            per_flow = max(1, packets // flows)
            pcap = os.path.join(folder, f"est-{flows}.pcap")
            sent = write_capture(pcap, lab, flows, per_flow, seed)
            lab.flush_conntrack()
            lab.replay(pcap)  # opens every flow
            rates = []
            for _ in range(repeat):
                got, seconds = lab.replay(pcap)
                rates.append(got / seconds if seconds > 0 else 0.0)
            results["established"][flows] = {"rates": rates, "sent": sent, "conntrack": lab.conntrack_count()}
        say(f"kernel: every packet a new flow ({new_flows:,})")
        pcap = os.path.join(folder, "new.pcap")
        write_capture(pcap, lab, new_flows, 1, seed)
        for _ in range(repeat):
            lab.flush_conntrack()
            got, seconds = lab.replay(pcap)
            results["new_flow"].append(got / seconds if seconds > 0 else 0.0)
        results["new_flow_conntrack"] = lab.conntrack_count()
    return results


def conntrack_max() -> Optional[int]:
    """The kernel's connection-tracking table limit (flows beyond it are not tracked)."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_max") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def summarise(rates: list[float]) -> str:
    if not rates:
        return "-"
    return f"{statistics.median(rates) / 1e6:.3f} M/s (min {min(rates) / 1e6:.3f}, max {max(rates) / 1e6:.3f})"
