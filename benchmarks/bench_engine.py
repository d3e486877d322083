"""The engine in memory: the core backend against the reference, in the same run.

    python -m benchmarks.bench_engine [--quick] [--json] [--plot growth.png]

1. **Established flows** at 1,000 / 10,000 / 100,000 / 1,000,000 concurrent flows (``--quick``:
   1,000 and 10,000), TCP and UDP: the flows are opened first (handshake / one request-response,
   through each engine), then batches of established packets in both directions, IP sizes
   cycling 64-1500 bytes, round-robin over the flows, are timed through ``process_batch``:

   * ``core``: ``CoreEngine.process_batch`` (batches of 8,192 packets: the C fast path);
   * ``reference``: the reference dataplane's ``process`` per packet (what ``Engine`` does for
     the reference backend), on the first ``--reference-packets`` packets of the same traffic
     (its cost per packet does not depend on how many there are). At 1,000,000 flows only TCP
     runs, and the reference only with ``--reference-1m`` (its Python connections alone take
     several GB).

   Timestamps advance with every call (a packet never goes back in time) and stay inside one
   flow-log window and before any timer, so steady state is measured. The series of core rates
   over the flow counts is the cost-growth curve (``--plot`` draws it).
2. **New connections**: ``--new-connections`` fresh flows (TCP: SYN, SYN-ACK, ACK; UDP: one
   request and its reply) through a fresh engine of each backend, in batches: connections per
   second, SG + NACL + route + port allocation + conntrack insert included (the core runs them
   on its slow path: the reference, plus teaching its C table).
3. **Memory**: the C table's bytes per connection (entries + index, as allocated) and the RSS
   growth of this process per connection while the core engine opened its flows (the C table
   and the slow path's Python connection objects together).

Medians of ``--repeat`` samples (3 by default); CPU-time rates beside wall-clock ones.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import sys

import numpy as np

from benchmarks.runner import Runner, Suite, format_bytes, print_table

SIZES = (64, 128, 256, 512, 576, 1024, 1280, 1500)
BATCH = 8192
SANDBOX_NET = "169.254.0.0/16"
DB = int(ipaddress.ip_address("10.0.2.15"))


def _model():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "scenarios"))
    from builders import rule, standard_vpc

    b = standard_vpc()
    b.sg("sg-db", ingress=[rule("all", group="sg-fn")], egress=[rule("all", cidr="0.0.0.0/0")])
    return b.build()


def _flow(f: int):
    base = int(ipaddress.ip_address("169.254.1.0"))
    return base + f // 1000, 10000 + f % 1000


def _packets(flows: int, proto: int, count: int):
    """``count`` established packets, alternating direction, round-robin over the flows."""
    from hyperplane.reference.dataplane import build_packet

    frames = []
    header = 40 if proto == 6 else 28
    for i in range(count):
        f = (i // 2) % flows
        sip, sport = _flow(f)
        size = SIZES[i % len(SIZES)]
        payload = bytes(size - header)
        if i % 2 == 0:
            frames.append(build_packet(4, sip, DB, proto, sport, 5432, 0x18, payload=payload))
        else:
            frames.append(build_packet(4, DB, sip, proto, 5432, sport, 0x10, payload=payload))
    return frames


def _open(flows: int, proto: int):
    """The packets opening every flow (TCP handshake / one UDP exchange)."""
    from hyperplane.reference.dataplane import build_packet

    frames = []
    for f in range(flows):
        sip, sport = _flow(f)
        if proto == 6:
            frames += [build_packet(4, sip, DB, 6, sport, 5432, 0x02), build_packet(4, DB, sip, 6, 5432, sport, 0x12),
                       build_packet(4, sip, DB, 6, sport, 5432, 0x10)]
        else:
            frames += [build_packet(4, sip, DB, 17, sport, 5432, payload=b"q"),
                       build_packet(4, DB, sip, 17, 5432, sport, payload=b"a")]
    return frames


def _batches(frames):
    out = []
    for start in range(0, len(frames), BATCH):
        chunk = frames[start : start + BATCH]
        lengths = np.array([len(f) for f in chunk], np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
        out.append((b"".join(chunk), offsets, lengths))
    return out


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Clock:
    """Timestamps that only move forward: 10 ns per packet."""

    def __init__(self, start: float):
        self.t = start

    def stamps(self, n: int):
        out = self.t + np.arange(n, dtype=np.float64) * 1e-8
        self.t += n * 1e-8
        return out


def bench(flows: int, proto: int, runner: Runner, suite: Suite, reference_packets: int,
          with_reference: bool = True) -> dict:
    from hyperplane.core import CoreEngine
    from hyperplane.engine import EngineOptions, Sandbox
    from hyperplane.reference.dataplane import Dataplane

    model = _model()
    sandboxes = [Sandbox("fn", ipaddress.ip_network(SANDBOX_NET))]
    options = EngineOptions()
    group = f"{'TCP' if proto == 6 else 'UDP'} {flows:,} flows"
    opening = _open(flows, proto)
    gc.collect()
    rss0 = _rss()
    core = CoreEngine(model, sandboxes, options, expected_connections=flows)
    clock = _Clock(100.0)
    for buf, offs, lens in _batches(opening):
        core.process_batch(buf, offs, lens, clock.stamps(len(offs)))
    del buf, offs, lens
    gc.collect()
    rss_per_conn = (_rss() - rss0) / flows
    stats = core.core_stats()
    assert stats["entries"] == flows, stats
    traffic = _batches(_packets(flows, proto, max(2 * flows, 4 * BATCH)))
    npackets = sum(len(o) for _, o, _ in traffic)
    clock.t = 102.0

    def run_core():
        for buf, offs, lens in traffic:
            core.process_batch(buf, offs, lens, clock.stamps(len(offs)))

    m = runner.measure("core", run_core, items=npackets, group=group, unit="pkt", number=1,
                       extra={"memory_bytes": stats["memory_bytes"]})
    suite.add(m)
    stops = core.core_stats()["stops"]
    slow = sum(v for k, v in stops.items() if k != "end")
    row = {"group": group, "flows": flows, "proto": proto, "core_pps": m.rate, "core_cpu_pps": m.cpu_rate,
           "reference_pps": None, "reference_cpu_pps": None, "ratio": None, "cpu_ratio": None,
           "c_bytes_per_conn": stats["memory_bytes"] / flows, "rss_bytes_per_conn": rss_per_conn,
           "slow_path_packets_while_timed": slow, "entry_bytes": stats["entry_bytes"]}
    del core, traffic
    gc.collect()
    if not with_reference:
        return row

    ref = Dataplane(model, sandboxes, options)
    rclock = _Clock(100.0)
    for frame in opening:
        ref.process(frame, float(rclock.stamps(1)[0]))
    del opening
    rframes = _packets(flows, proto, reference_packets)
    rclock.t = 102.0

    def run_reference():
        stamps = rclock.stamps(len(rframes)).tolist()
        process = ref.process
        for frame, ts in zip(rframes, stamps):
            process(frame, ts)

    r = runner.measure("reference", run_reference, items=len(rframes), group=group, unit="pkt", number=1)
    suite.add(r)
    row.update(reference_pps=r.rate, reference_cpu_pps=r.cpu_rate, ratio=m.rate / r.rate,
               cpu_ratio=(m.cpu_rate / r.cpu_rate) if m.cpu_rate and r.cpu_rate else None)
    return row


def bench_new(conns: int, proto: int, runner: Runner, suite: Suite) -> dict:
    """New connections per second through a fresh engine of each backend."""
    from hyperplane.core import CoreEngine
    from hyperplane.engine import EngineOptions, Sandbox
    from hyperplane.reference.dataplane import Dataplane

    model = _model()
    sandboxes = [Sandbox("fn", ipaddress.ip_network(SANDBOX_NET))]
    options = EngineOptions()
    group = f"new {'TCP' if proto == 6 else 'UDP'} connections ({conns:,})"
    frames = _open(conns, proto)
    batches = _batches(frames)
    stamps = [np.full(len(o), 100.0) + np.arange(len(o)) * 1e-6 + k for k, (_, o, _) in enumerate(batches)]
    state: dict = {}

    def fresh_core():
        state["e"] = None
        gc.collect()
        state["e"] = CoreEngine(model, sandboxes, options, expected_connections=conns)

    def run_core():
        e = state["e"]
        for (buf, offs, lens), ts in zip(batches, stamps):
            e.process_batch(buf, offs, lens, ts)

    def fresh_reference():
        state["e"] = None
        gc.collect()
        state["e"] = Dataplane(model, sandboxes, options)

    flat = np.concatenate(stamps).tolist()

    def run_reference():
        process = state["e"].process
        for frame, ts in zip(frames, flat):
            process(frame, ts)

    m = runner.measure("core", run_core, items=conns, group=group, unit="conn", number=1, setup=fresh_core)
    suite.add(m)
    r = runner.measure("reference", run_reference, items=conns, group=group, unit="conn", number=1,
                       setup=fresh_reference)
    suite.add(r)
    state.clear()
    return {"group": group, "core_cps": m.rate, "core_cpu_cps": m.cpu_rate, "reference_cps": r.rate,
            "reference_cpu_cps": r.cpu_rate, "ratio": m.rate / r.rate}


def _plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for proto, name in ((6, "TCP"), (17, "UDP")):
        pts = sorted((r["flows"], r["core_cpu_pps"] or r["core_pps"]) for r in rows if r["proto"] == proto)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o", label=f"core, {name}")
        ref = sorted((r["flows"], r["reference_cpu_pps"]) for r in rows if r["proto"] == proto and r["reference_cpu_pps"])
        if ref:
            ax.plot([p[0] for p in ref], [p[1] / 1e6 for p in ref], marker="x", linestyle="--",
                    label=f"reference, {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent flows")
    ax.set_ylabel("Mpackets/s (CPU time)")
    ax.set_title("established flows, process_batch, in memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_engine", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 flows only")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference-packets", type=int, default=20_000)
    ap.add_argument("--new-connections", type=int, default=10_000)
    ap.add_argument("--reference-1m", action="store_true", help="run the reference at 1,000,000 flows too")
    ap.add_argument("--plot", metavar="PNG", help="draw the cost-growth curve into this file")
    args = ap.parse_args(argv)
    runner = Runner(repeat=args.repeat, warmup=1)
    suite = Suite("engine in memory: established flows and new connections")
    rows = []
    for flows in ((1_000, 10_000) if args.quick else (1_000, 10_000, 100_000, 1_000_000)):
        for proto in ((6, 17) if flows < 1_000_000 else (6,)):
            rows.append(bench(flows, proto, runner, suite, args.reference_packets,
                              with_reference=flows < 1_000_000 or args.reference_1m))
    new_rows = [bench_new(args.new_connections, proto, runner, suite) for proto in (6, 17)]
    print_table(suite, baseline="reference")

    def mp(v):
        return f"{v / 1e6:6.2f}" if v else "   n/a"

    print("established flows (Mpps: wall / CPU; ratio: CPU time, against the reference in this run)")
    for row in rows:
        ratio = f"{row['cpu_ratio']:5.0f}x" if row["cpu_ratio"] else "   n/a"
        ref = f"{row['reference_pps'] / 1e3:6.1f} / {row['reference_cpu_pps'] / 1e3:6.1f} kpps" \
            if row["reference_pps"] else "       not run       "
        print(f"{row['group']:>20}: core {mp(row['core_pps'])} / {mp(row['core_cpu_pps'])} Mpps, reference {ref}, "
              f"ratio {ratio}; C table {row['c_bytes_per_conn']:.0f} B/conn ({row['entry_bytes']} B entry + index); "
              f"RSS growth {format_bytes(row['rss_bytes_per_conn'])}/conn; slow-path packets while timed: "
              f"{row['slow_path_packets_while_timed']}")
    for row in new_rows:
        print(f"{row['group']:>30}: core {row['core_cps'] / 1e3:6.1f} / {row['core_cpu_cps'] / 1e3:6.1f} k/s, "
              f"reference {row['reference_cps'] / 1e3:6.1f} / {row['reference_cpu_cps'] / 1e3:6.1f} k/s "
              f"(wall / CPU), ratio {row['ratio']:.2f}x")
    if args.plot:
        _plot(rows, args.plot)
    if args.json:
        import json

        print(json.dumps({"suite": suite.to_dict(), "rows": rows, "new_connections": new_rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
