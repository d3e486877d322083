"""Replay file to file: ``hyperplane replay`` against a plain scapy loop on the same capture.

    python -m benchmarks.bench_replay [--quick] [--packets N] [--flows N] [--scapy-packets N]
                                      [--backend auto|core|reference] [--repeat N] [--json]

1. Generates, deterministically (seeded, no clock), a pcap (LINKTYPE_RAW) of ``--packets``
   packets (1,000,000; ``--quick``: 100,000) over ``--flows`` TCP flows (100,000; ``--quick``:
   10,000) from the demo's orders-api sandboxes (169.254.76.0/24): half to the database
   10.0.3.10:5432 through a security-group reference, half to 200 internet servers on
   203.0.113.0/24:443 through the NAT gateway. Each flow is 10 packets in the sandbox's view:
   SYN, SYN-ACK, ACK, request (120 B), ACK, response (400 B), ACK, FIN, FIN, ACK, with checksums
   right. Flows are interleaved 1,000 at a time and the capture lasts 1,000 s (1 ms apart), so
   thousands of connections are live at once. The file is cached under ``--cache``.
2. ``hyperplane``: ``run_replay`` (what ``hyperplane replay`` runs) on the demo VPC, the capture
   to an eni tap (pcap) and a flow-log file, with the best available backend; packets/s over the
   whole run (engine creation, reading, writing, flow-log flush included).
3. ``scapy loop``: the least a user writes by hand: ``PcapReader``, rewrite the source address
   and port of every packet, delete the IP and TCP checksums so scapy recomputes them,
   ``PcapWriter``. It is slow, so it is timed on the first ``--scapy-packets`` packets (20,000;
   ``--quick``: 5,000) of the same file; its rate does not depend on the capture length.

Prints a table with the ratio; ``--json`` prints the suite as JSON. With the core backend, one
more (untimed) run adds where the time went, from the engine's own account
(``Engine.core_stats``): the C fast loop per packet, the planned opens per connection, the slow
path per punted packet, the rest (reading, writing, setup). Nothing asserts on time.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile

import numpy as np

from benchmarks.runner import Runner, Suite, print_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "pcaps", "demo")
SANDBOX_NET = "169.254.76.0/24"
FUNCTION = "orders-api"
T0 = 1_793_610_000  # 2026-11-02T09:00:00Z, the demo's start
PACKETS_PER_FLOW = 10
INTERLEAVE = 1_000

# (from sandbox?, TCP flags, payload bytes) of each packet of a flow, in order
_STEPS = (
    (True, 0x02, 0), (False, 0x12, 0), (True, 0x10, 0), (True, 0x18, 120), (False, 0x10, 0),
    (False, 0x18, 400), (True, 0x10, 0), (True, 0x11, 0), (False, 0x11, 0), (True, 0x10, 0),
)


def _ones_complement_sum(words: np.ndarray) -> np.ndarray:
    """Row-wise RFC 1071 sum of big-endian 16-bit words (uint16 array, one row per packet)."""
    total = words.astype(np.uint64).sum(axis=1)
    while (total >> 16).any():
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _packets(src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray, seq: np.ndarray,
             ack: np.ndarray, flags: int, payload: int, ident: np.ndarray) -> np.ndarray:
    """Rows of IPv4+TCP packets (no options) with ``payload`` bytes of ``x``, checksums right."""
    n = len(src)
    length = 40 + payload
    rows = np.zeros((n, length + (length & 1)), np.uint8)  # even width for the word sums
    be16 = lambda col, values: rows.__setitem__((slice(None), slice(col, col + 2)),  # noqa: E731
                                                values.astype(">u2").view(np.uint8).reshape(n, 2))
    be32 = lambda col, values: rows.__setitem__((slice(None), slice(col, col + 4)),  # noqa: E731
                                                values.astype(">u4").view(np.uint8).reshape(n, 4))
    rows[:, 0] = 0x45
    be16(2, np.full(n, length))
    be16(4, ident)
    rows[:, 6] = 0x40  # DF
    rows[:, 8] = 64
    rows[:, 9] = 6
    be32(12, src)
    be32(16, dst)
    be16(20, sport)
    be16(22, dport)
    be32(24, seq)
    be32(28, ack)
    rows[:, 32] = 5 << 4
    rows[:, 33] = flags
    be16(34, np.full(n, 65535))
    rows[:, 40:40 + payload] = ord("x")
    words = rows.view(">u2").astype(np.uint16)
    ip_sum = _ones_complement_sum(words[:, :10])
    be16(10, (~ip_sum) & 0xFFFF)
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + (length - 20)
    tcp_sum = _ones_complement_sum(words[:, 10:]) + pseudo.astype(np.uint64)
    while (tcp_sum >> 16).any():
        tcp_sum = (tcp_sum & 0xFFFF) + (tcp_sum >> 16)
    be16(36, (~tcp_sum) & 0xFFFF)
    return rows[:, :length]


def generate_capture(path: str, packets: int, flows: int, seed: int = 7) -> None:
    """The benchmark capture (see the module docstring); ``packets`` is rounded to whole flows."""
    rng = np.random.default_rng(seed)
    flows = min(flows, packets // PACKETS_PER_FLOW)
    total_flows = packets // PACKETS_PER_FLOW  # flows are reused round-robin past ``flows``
    base = int.from_bytes(bytes([169, 254, 76, 0]), "big")
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        written = 0
        for start in range(0, total_flows, INTERLEAVE):
            ids = np.arange(start, min(start + INTERLEAVE, total_flows), dtype=np.int64)
            k = ids % flows  # the flow's identity: sandbox address and port, destination
            src_ip = (base + 1 + k % 250).astype(np.uint64)
            sport = (10_000 + (k // 250) % 50_000).astype(np.uint64)
            to_db = (k % 2) == 0
            dst_ip = np.where(to_db, int.from_bytes(bytes([10, 0, 3, 10]), "big"),
                              int.from_bytes(bytes([203, 0, 113, 0]), "big") + 1 + (k // 2) % 200).astype(np.uint64)
            dport = np.where(to_db, 5432, 443).astype(np.uint64)
            c_isn = rng.integers(0, 2**32, len(ids), dtype=np.uint64)
            s_isn = rng.integers(0, 2**32, len(ids), dtype=np.uint64)
            c_seq, s_seq = c_isn.copy(), s_isn.copy()
            batch_rows = []
            for step, (outbound, flags, payload) in enumerate(_STEPS):
                ident = (ids * PACKETS_PER_FLOW + step) & 0xFFFF
                mask = np.uint64(0xFFFFFFFF)
                if outbound:
                    rows = _packets(src_ip, dst_ip, sport, dport, c_seq & mask, s_seq & mask if step else
                                    np.zeros_like(s_seq), flags, payload, ident)
                    c_seq = c_seq + np.uint64(payload + (1 if flags & 0x03 else 0))
                else:
                    rows = _packets(dst_ip, src_ip, dport, sport, s_seq & mask, c_seq & mask, flags, payload, ident)
                    s_seq = s_seq + np.uint64(payload + (1 if flags & 0x03 else 0))
                batch_rows.append(rows)
            # round-robin: step 0 of every flow of the chunk, then step 1, ...
            chunk = bytearray()
            for rows in batch_rows:
                n, width = rows.shape
                stamps = written + np.arange(n)
                sec = T0 + stamps // 1000
                usec = (stamps % 1000) * 1000
                head = np.empty((n, 4), "<u4")
                head[:, 0], head[:, 1], head[:, 2], head[:, 3] = sec, usec, width, width
                records = np.concatenate([head.view(np.uint8).reshape(n, 16), rows], axis=1)
                chunk += records.tobytes()
                written += n
            fh.write(chunk)


def ensure_capture(cache: str, packets: int, flows: int) -> str:
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"replay-{packets}p-{flows}f.pcap")
    if not os.path.exists(path):
        tmp = path + ".part"
        generate_capture(tmp, packets, flows)
        os.replace(tmp, path)
    return path


def replay_once(capture: str, out: str, backend: str) -> dict:
    from hyperplane.engine import Sandbox
    from hyperplane.replay import ReplayConfig, run_replay
    from hyperplane.vpc.loader import load_vpc

    cfg = ReplayConfig(capture=capture, model=load_vpc(os.path.join(DEMO, "vpc")),
                       sandboxes=[Sandbox.parse(f"{FUNCTION}={SANDBOX_NET}")],
                       taps={"eni": os.path.join(out, "eni.pcap")},
                       flow_logs_path=os.path.join(out, "flow-logs.log"), backend=backend)
    return run_replay(cfg)


def breakdown(capture: str, out: str) -> dict:
    """One more replay like :func:`replay_once` (core backend, untimed by the runner), with the
    engine's own account of its time (``Engine.core_stats``): the C fast loop (with the planned
    opens it makes itself), the Python of the other planned opens, the slow path per punted
    packet, and the rest of the run."""
    import time

    from hyperplane import replay

    engines = []
    make = replay._engine_for

    def keep(cfg):
        engines.append(make(cfg))
        return engines[-1]

    replay._engine_for = keep
    try:
        start = time.perf_counter()
        replay_once(capture, out, "core")
        wall = time.perf_counter() - start
    finally:
        replay._engine_for = make
    stats = engines[-1].core_stats()
    fast_packets = engines[-1].summary()["packets"] - stats["slow_packets"]
    return {
        "wall": wall, "fast_seconds": stats["fast_seconds"], "slow_seconds": stats["slow_seconds"],
        "slow_packets": stats["slow_packets"], "fast_packets": fast_packets,
        "open_seconds": stats["open_seconds"], "opened": stats["opened"], "opened_in_loop": stats["opened_in_loop"],
        "open_stops": stats["stops"].get("miss", 0) - stats["slow_packets"],
        "fast_ns_per_packet": stats["fast_seconds"] / max(fast_packets, 1) * 1e9,
        "slow_us_per_packet": stats["slow_seconds"] / max(stats["slow_packets"], 1) * 1e6,
        "rest_seconds": wall - stats["fast_seconds"] - stats["slow_seconds"] - stats["open_seconds"],
    }


def scapy_loop(capture: str, out: str, limit: int) -> int:
    """The hand-written baseline: read, rewrite source address and port, recompute checksums, write."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader, PcapWriter

    n = 0
    with PcapReader(capture) as reader, PcapWriter(out, sync=False) as writer:
        for pkt in reader:
            if n >= limit:
                break
            if IP in pkt:
                ip = pkt[IP]
                ip.src = "10.0.1.4"
                del ip.chksum
                if TCP in ip:
                    ip[TCP].sport = 1024 + (ip[TCP].sport % 64000)
                    del ip[TCP].chksum
            writer.write(pkt)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_replay", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 packets over 10,000 flows")
    ap.add_argument("--packets", type=int, help="packets in the capture (default 1,000,000)")
    ap.add_argument("--flows", type=int, help="flows in the capture (default 100,000)")
    ap.add_argument("--scapy-packets", type=int, help="packets timed through the scapy loop (default 20,000)")
    ap.add_argument("--backend", default="auto", choices=["auto", "core", "reference"])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each (median reported)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "hyperplane-bench"),
                    help="where the generated capture is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    packets = args.packets or (100_000 if args.quick else 1_000_000)
    flows = args.flows or (10_000 if args.quick else 100_000)
    scapy_packets = min(packets, args.scapy_packets or (5_000 if args.quick else 20_000))

    capture = ensure_capture(args.cache, packets, flows)
    backend = args.backend
    resolved = _resolve_backend(backend)
    suite = Suite(f"Replay file to file: {packets:,} packets, {flows:,} flows, eni tap + flow logs")
    runner = Runner(repeat=args.repeat, warmup=0)
    group = "file to file"
    with tempfile.TemporaryDirectory(prefix="hyperplane-bench-") as out:
        summary = {}

        def ours():
            summary.update(replay_once(capture, out, backend))

        m = suite.add(runner.measure(f"hyperplane ({resolved})", ours, items=packets, group=group,
                                     unit="pkt", number=1,
                                     extra={"note": "run_replay: read, engine, eni tap, flow logs"}))
        m.extra["summary"] = {k: summary.get(k) for k in ("packets", "forwarded", "dropped", "drops", "connections")}
        m.extra["enis"] = len(summary.get("enis", ()))
        scapy_out = os.path.join(out, "scapy.pcap")
        suite.add(runner.measure("scapy loop", lambda: scapy_loop(capture, scapy_out, scapy_packets),
                                 items=scapy_packets, group=group, unit="pkt", number=1,
                                 extra={"note": f"first {scapy_packets:,} packets of the same file"}))
        account = breakdown(capture, out) if resolved == "core" else None
    suite.notes.append(f"capture: {capture} ({os.path.getsize(capture) / 2**20:.1f} MiB)")
    suite.notes.append(f"replay summary: {m.extra['summary']}, {m.extra['enis']} Hyperplane ENIs")
    if account is not None:
        m.extra["breakdown"] = account
        suite.notes.append(
            "where the time went (one more, untimed run): {wall:.2f} s in all; C fast loop {fast_seconds:.2f} s "
            "({fast_ns_per_packet:.0f} ns per packet it forwarded, {opened_in_loop:,} of the {opened:,} planned "
            "opens included); Python for the other planned opens and the loop's stops for them "
            "({open_stops:,}) {open_seconds:.2f} s; slow path {slow_seconds:.2f} s over {slow_packets:,} packets "
            "({slow_us_per_packet:.1f} us each); the rest (reading, writing, flow-log lines, setup) "
            "{rest_seconds:.2f} s".format(**account))
    if args.json:
        print(suite.to_json())
    else:
        print_table(suite, baseline="scapy loop")
    if summary.get("packets") != packets:
        print(f"error: the replay counted {summary.get('packets')} packets, the capture has {packets}", file=sys.stderr)
        return 1
    return 0


def _resolve_backend(backend: str) -> str:
    from hyperplane.engine import available_backends

    if backend == "auto":
        return "core" if "core" in available_backends() else "reference"
    return backend


if __name__ == "__main__":
    sys.exit(main())
