"""A three-namespace lab: the Linux kernel's conntrack and nftables SNAT as a reference peer.

::

    [client ns]  c0 169.254.76.10/24 --- r0 169.254.76.1/24  [router ns]  r1 10.0.2.1/24 --- s0 10.0.2.10/24  [server ns]
                                           nftables: snat to 10.0.1.4:PORTS (tcp, out of r1)

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
def session(mode, sport):
    s = connect(sport)
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
                 f'    oifname "r1" ip protocol tcp snat to {NAT_IP}:{PORTS[0]}-{PORTS[1]}\n  }}\n}}\n')
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
    events = lab.spawn(lab.router, "conntrack", "-E", "-p", "tcp", "-o", "timestamp")
    dump = lab.spawn(lab.client, "tcpdump", "-i", "c0", "-n", "-U", "-s", "0", "-w", capture, "tcp")
    server = lab.spawn(lab.server, sys.executable, "-c", SERVER % {"ip": SERVER_IP, "port": SERVER_PORT})
    try:
        assert server.stdout.readline().strip() == "ready", "the server did not start"
        time.sleep(1.0)  # tcpdump and conntrack -E attach
        client = run(sys.executable, "-c", CLIENT % {"server": SERVER_IP, "port": SERVER_PORT,
                                                     "closed": CLOSED_PORT, "client": CLIENT_IP},
                     ns=lab.client, timeout=60)
        time.sleep(0.5)
    finally:
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
