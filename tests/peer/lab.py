"""A three-namespace lab: the Linux kernel's conntrack and nftables SNAT as a reference peer.

::

    [client ns]  c0 169.254.76.10/24 --- r0 169.254.76.1/24  [router ns]  r1 10.0.2.1/24 --- s0 10.0.2.10/24  [server ns]
                                           nftables: snat to 10.0.1.4:PORTS (tcp and udp, out of r1)

:func:`run_sessions` drives TCP sessions (one to RETRANS_PORT, whose first SYN the server's
namespace drops), :func:`run_udp_sessions` UDP flows with the router's UDP timeouts lowered.
The router's SNAT address 10.0.1.4 and port range are what our Engine uses for the function's
Hyperplane ENI in the matching VPC (subnet 10.0.1.0/24: its first free address is base + 4).
Every address lives inside the namespaces created here; :meth:`Lab.close` deletes them (and
with them the veths, rules and sockets) and is safe to call twice.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

CLIENT_IP, ROUTER_IN, ROUTER_OUT, SERVER_IP, NAT_IP = "169.254.76.10", "169.254.76.1", "10.0.2.1", "10.0.2.10", "10.0.1.4"
PORTS = (1024, 1039)
SERVER_PORT, CLOSED_PORT = 5432, 5433
RETRANS_PORT = 5434                # the server's namespace drops the first SYN to this port
UDP_PORT, SILENT_PORT = 7000, 7001  # UDP: an echo server, and a socket that reads and never answers
PROBE_PORT = 7002                   # only our Engine sees it (expiry probes), never the lab
# The router's UDP conntrack timeouts during the UDP run (its defaults are 30 / 120 s): short,
# so that the kernel expires the flows within seconds. The udp timeout exceeds the slow
# stream's gap (2.3 s) and the kernel's 2 s stream threshold.
KERNEL_UDP_TIMEOUTS = (3, 5)

REQUIRED = ("ip", "nft", "conntrack", "tcpdump")


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    absent = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if absent:
        return f"missing tools: {', '.join(absent)} (apt-get install iproute2 nftables conntrack tcpdump)"
    probe = f"hp8probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*args: str, ns: str | None = None, check: bool = True, timeout: float = 20.0,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


SERVER = r'''
import socket, sys, threading, time
def serve(conn):
    conn.settimeout(5)
    try:
        mode = conn.recv(64).split(b"\n")[0].decode()
        if mode == "half-close":
            while conn.recv(4096):
                pass
            conn.sendall(b"late answer")
        elif mode == "server-close":
            conn.sendall(b"bye")
        elif mode == "rst":
            conn.sendall(b"ok")
            conn.recv(4096)
        else:
            conn.sendall(b"answer")
            while conn.recv(4096):
                pass
    except OSError:
        pass
    finally:
        conn.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%(ip)s", %(port)d))
s.listen(16)
s.settimeout(30)
print("ready", flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    try:
        c, _ = s.accept()
    except OSError:
        break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

CLIENT = r'''
import json, socket, struct, sys, time
server, port, closed = "%(server)s", %(port)d, %(closed)d
out = {}
def connect(sport, dport=port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("%(client)s", sport))
    s.settimeout(5)
    s.connect((server, dport))
    return s
def session(mode, sport, dport=port):
    s = connect(sport, dport)
    s.sendall(mode.encode() + b"\n")
    if mode == "half-close":
        s.shutdown(socket.SHUT_WR)
        data = s.recv(4096)
        while s.recv(4096):
            pass
    elif mode == "server-close":
        data = s.recv(4096)
        while s.recv(4096):
            pass
    elif mode == "rst":
        data = s.recv(4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        data = s.recv(4096)
    s.close()
    out[f"{mode}:{sport}"] = data.decode()
    time.sleep(0.3)
session("close", 40001)
session("close", 40020, %(retrans)d)    # the server drops the first SYN: the client retransmits it
session("half-close", 40002)
session("server-close", 40003)
session("rst", 40004)
session("server-close", 40003)          # the same tuple again: TIME_WAIT reuse at the server
try:
    connect(40005, closed)
except ConnectionRefusedError:
    out["refused:40005"] = "refused"
time.sleep(0.3)
socks = [connect(40010 + i) for i in range(3)]  # three connections alive at once
for s in socks:
    s.sendall(b"close\n")
for s in socks:
    out[f"parallel:{s.getsockname()[1]}"] = s.recv(4096).decode()
for s in socks:
    s.close()
time.sleep(0.5)
print(json.dumps(out))
'''


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: f"hp8{os.getpid() % 100000}")
    made: list = field(default_factory=list)

    @property
    def client(self) -> str:
        return f"{self.tag}c"

    @property
    def router(self) -> str:
        return f"{self.tag}r"

    @property
    def server(self) -> str:
        return f"{self.tag}s"

    def build(self) -> None:
        for ns in (self.client, self.router, self.server):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
        run("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "r0", "netns", self.router)
        run("ip", "link", "add", "r1", "netns", self.router, "type", "veth", "peer", "name", "s0", "netns", self.server)
        for ns, dev, addr in ((self.client, "c0", f"{CLIENT_IP}/24"), (self.router, "r0", f"{ROUTER_IN}/24"),
                              (self.router, "r1", f"{ROUTER_OUT}/24"), (self.server, "s0", f"{SERVER_IP}/24")):
            run("ip", "addr", "add", addr, "dev", dev, ns=ns)
            run("ip", "link", "set", dev, "up", ns=ns)
            if shutil.which("ethtool"):  # one packet per frame, final checksums in the capture
                run("ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                    ns=ns, check=False)
        run("ip", "route", "add", "default", "via", ROUTER_IN, ns=self.client)
        run("ip", "route", "add", "default", "via", ROUTER_OUT, ns=self.server)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.router)
        rules = (f"table ip hp8nat {{\n  chain post {{\n    type nat hook postrouting priority 100; policy accept;\n"
                 f'    oifname "r1" ip protocol {{ tcp, udp }} snat to {NAT_IP}:{PORTS[0]}-{PORTS[1]}\n  }}\n}}\n')
        run("nft", "-f", "-", ns=self.router, stdin=rules)

    def close(self) -> None:
        while self.made:
            run("ip", "netns", "del", self.made.pop(), check=False)

    def spawn(self, ns: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> str:
    """End a process this module started (its own session) and return its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


@dataclass
class Sessions:
    capture: str  # pcap on the client side (the sandbox's view)
    events: list  # parsed conntrack -E events
    client_output: str


def run_sessions(lab: Lab, workdir: str) -> Sessions:
    capture = os.path.join(workdir, "client.pcap")
    # numgen inc counts 0, 1, 0, ... (mod 2): the first SYN to RETRANS_PORT is dropped, the
    # retransmission (after the client's 1 s initial RTO) gets through.
    run("nft", "-f", "-", ns=lab.server, stdin=(
        "table ip hp8drop {\n  chain in {\n    type filter hook input priority 0; policy accept;\n"
        f"    tcp dport {RETRANS_PORT} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop\n  }}\n}}\n"))
    events = lab.spawn(lab.router, "conntrack", "-E", "-p", "tcp", "-o", "timestamp")
    dump = lab.spawn(lab.client, "tcpdump", "-i", "c0", "-n", "-U", "-s", "0", "-w", capture, "tcp")
    servers = [lab.spawn(lab.server, sys.executable, "-c", SERVER % {"ip": SERVER_IP, "port": port})
               for port in (SERVER_PORT, RETRANS_PORT)]
    try:
        for server in servers:
            assert server.stdout.readline().strip() == "ready", "a server did not start"
        time.sleep(1.0)  # tcpdump and conntrack -E attach
        client = run(sys.executable, "-c", CLIENT % {"server": SERVER_IP, "port": SERVER_PORT, "retrans": RETRANS_PORT,
                                                     "closed": CLOSED_PORT, "client": CLIENT_IP},
                     ns=lab.client, timeout=60)
        time.sleep(0.5)
    finally:
        for server in servers:
            stop(server)
        stop(dump)
        raw_events = stop(events)
    return Sessions(capture, parse_events(raw_events), client.stdout)


EVENT = re.compile(r"\[(?P<ts>[\d.]+)\]\s+\[(?P<kind>NEW|UPDATE|DESTROY)\]\s+tcp\s+6\s+(?:\d+\s+)?(?P<state>[A-Z_]+)?\s*"
                   r"src=(?P<src>\S+) dst=(?P<dst>\S+) sport=(?P<sport>\d+) dport=(?P<dport>\d+).*?"
                   r"src=(?P<rsrc>\S+) dst=(?P<rdst>\S+) sport=(?P<rsport>\d+) dport=(?P<rdport>\d+)")


def parse_events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        m = EVENT.search(line)
        if m:
            event = m.groupdict()
            for key in ("sport", "dport", "rsport", "rdport"):
                event[key] = int(event[key])
            event["ts"] = float(event["ts"])
            out.append(event)
    return out


# --- UDP -------------------------------------------------------------------------------------

UDP_SERVER = r"""
import select, socket, time
echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
echo.bind(("%(ip)s", %(port)d))
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("%(ip)s", %(silent)d))
print("ready", flush=True)
deadline = time.time() + 20
while time.time() < deadline:
    ready, _, _ = select.select([echo, silent], [], [], 0.5)
    for s in ready:
        data, peer = s.recvfrom(2048)
        if s is echo:
            s.sendto(b"re:" + data, peer)
"""

UDP_CLIENT = r"""
import json, socket, time
server, port, silent = "%(server)s", %(port)d, %(silent)d
out = {}
def sock(sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("%(client)s", sport))
    s.settimeout(2)
    return s
def exchange(s, name, i):
    s.sendto(b"%%s-%%d" %% (name.encode(), i), (server, port))
    out[f"{name}:{s.getsockname()[1]}:{i}"] = s.recv(2048).decode()
start = time.time()
slow = sock(41004)
exchange(slow, "slow", 0)                 # the slow stream's first exchange ...
single = sock(41001)
exchange(single, "single", 0)             # one request, one response
fast = sock(41002)
for i in range(3):                        # three exchanges within a few milliseconds
    exchange(fast, "fast", i)
quiet = sock(41003)
quiet.sendto(b"unanswered", (server, silent))  # read by the server, never answered
time.sleep(max(0.0, start + 2.3 - time.time()))
exchange(slow, "slow", 1)                 # ... and its second one, 2.3 s later
print(json.dumps(out))
"""


@dataclass
class UdpSessions:
    capture: str          # pcap on the client side
    events: list          # parsed conntrack -E events (udp)
    client_output: str
    kernel_defaults: tuple  # the router namespace's (udp, udp_stream) timeouts before we lowered them


def _sysctl(lab: Lab, name: str) -> int:
    return int(run("sysctl", "-n", name, ns=lab.router).stdout.strip())


def run_udp_sessions(lab: Lab, workdir: str, expiry_wait: float = 15.0) -> UdpSessions:
    """UDP flows through the router with its UDP timeouts lowered to KERNEL_UDP_TIMEOUTS; then
    wait (at most ``expiry_wait`` s) until the kernel has destroyed every entry. ``conntrack -L``
    every 0.5 s makes the kernel evict expired entries at once instead of at its next GC pass."""
    udp_key, stream_key = "net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"
    defaults = (_sysctl(lab, udp_key), _sysctl(lab, stream_key))
    run("sysctl", "-qw", f"{udp_key}={KERNEL_UDP_TIMEOUTS[0]}", f"{stream_key}={KERNEL_UDP_TIMEOUTS[1]}", ns=lab.router)
    capture = os.path.join(workdir, "client-udp.pcap")
    events = lab.spawn(lab.router, "conntrack", "-E", "-p", "udp", "-o", "timestamp")
    dump = lab.spawn(lab.client, "tcpdump", "-i", "c0", "-n", "-U", "-s", "0", "-w", capture, "udp")
    server = lab.spawn(lab.server, sys.executable, "-c",
                       UDP_SERVER % {"ip": SERVER_IP, "port": UDP_PORT, "silent": SILENT_PORT})
    try:
        assert server.stdout.readline().strip() == "ready", "the UDP server did not start"
        time.sleep(1.0)  # tcpdump and conntrack -E attach
        client = run(sys.executable, "-c", UDP_CLIENT % {"server": SERVER_IP, "port": UDP_PORT,
                                                         "silent": SILENT_PORT, "client": CLIENT_IP},
                     ns=lab.client, timeout=30)
        deadline = time.time() + expiry_wait
        while time.time() < deadline:
            time.sleep(0.5)
            if not run("conntrack", "-L", "-p", "udp", ns=lab.router, check=False).stdout.strip():
                break
        time.sleep(0.3)
    finally:
        stop(server)
        stop(dump)
        raw_events = stop(events)
    return UdpSessions(capture, parse_udp_events(raw_events), client.stdout, defaults)


UDP_EVENT = re.compile(r"\[(?P<ts>[\d.]+)\]\s+\[(?P<kind>NEW|UPDATE|DESTROY)\]\s+udp\s+17\s+(?:(?P<timeout>\d+)\s+)?"
                       r"src=(?P<src>\S+) dst=(?P<dst>\S+) sport=(?P<sport>\d+) dport=(?P<dport>\d+)\s+"
                       r"(?P<unreplied>\[UNREPLIED\]\s+)?"
                       r"src=(?P<rsrc>\S+) dst=(?P<rdst>\S+) sport=(?P<rsport>\d+) dport=(?P<rdport>\d+)(?P<rest>.*)")


def parse_udp_events(text: str) -> list[dict]:
    """``label``: NEW is UNREPLIED; an UPDATE is REPLIED (the first reply) or ASSURED (the kernel's
    stream mode); DESTROY. ``timeout`` (s) is None on DESTROY."""
    out = []
    for line in text.splitlines():
        m = UDP_EVENT.search(line)
        if not m:
            continue
        event = m.groupdict()
        for key in ("sport", "dport", "rsport", "rdport"):
            event[key] = int(event[key])
        event["ts"] = float(event["ts"])
        event["timeout"] = int(event["timeout"]) if event["timeout"] else None
        event["assured"] = "[ASSURED]" in event.pop("rest")
        event["label"] = {"NEW": "UNREPLIED", "DESTROY": "DESTROY"}.get(
            event["kind"], "ASSURED" if event["assured"] else "REPLIED")
        out.append(event)
    return out
