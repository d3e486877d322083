"""Source-port pools: the compiled PortPool (hp_ports.h) against the pure-Python reference.

    python -m benchmarks.bench_ports_core [--quick] [--json] [--reps N]

Churn at a steady number of live allocations: step i releases the allocation made at step i - live
(FIFO, as connections expire) and allocates one toward dsts[i] with the dataplane's hint
(src << 16 | sport). One "op" = one release + one allocate. Workloads (all on the default range
1024-65535, 64,512 ports):
  * 1 destination at 95% of its ports (61,286 live): the port search scans a nearly full bitmap;
  * 1,000 destinations, 65,000 live (~65 per destination: sets);
  * 65,000 destinations, one live port each (the destination table dominates).
Backends: the C pool driven by ports_churn_v4 (one nogil loop: what the compiled new-connection
path pays), the C pool through its Python methods, and hyperplane.reference.ports.PortPool. The
ports of the C loop are checked against the reference's before timing. Rates are medians of --reps
runs. Memory per live allocation: the C pool's own accounting (memory_bytes(): table + sets +
bitmaps) and its RSS growth, against tracemalloc of the reference holding the same allocations.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from hyperplane import _core
from hyperplane.reference.ports import PortPool as RefPool

PROTO, DPORT, SRC = 6, 443, 0xAC100005
SIZE = 65535 - 1024 + 1


def workloads(quick: bool):
    churn = 20_000 if quick else 200_000
    return [
        ("1 destination, 95% full", 1, int(SIZE * 0.95), churn),
        ("1,000 destinations, 65,000 live", 1_000, 65_000, churn),
        ("65,000 destinations, 1 port each", None, 65_000, churn),
    ]


def make_dsts(ndst, live, churn, seed):
    n = live + churn
    if ndst is None:  # every allocation toward its own destination, FIFO: live distinct at any time
        return (0x0A000000 + np.arange(n) % (2 * live)).astype(np.uint32)
    rng = np.random.default_rng(seed)
    return (0x0A000000 + rng.integers(0, ndst, n)).astype(np.uint32)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def c_fill(dsts, live, seed):
    pool = _core.PortPool(seed=seed)
    out = np.full(len(dsts), -1, np.int32)
    _core.ports_churn_v4(pool, PROTO, SRC, DPORT, dsts, out, live, 0, live)
    return pool, out


def fresh_rss_per_live(ndst, live, churn, seed) -> float:
    """RSS growth per live allocation of a C fill in a fresh interpreter, after one warm-up fill (the
    first one also pays one-time costs: code paths, malloc arenas)."""
    code = ("import numpy as np; from hyperplane import _core; from benchmarks.bench_ports_core import *; "
            f"d = make_dsts({ndst!r}, {live}, {churn}, {seed}); warm = c_fill(d, {live}, {seed}); "
            "o = np.full(len(d), -1, np.int32); b = rss(); p = _core.PortPool(seed=" + str(seed) + "); "
            f"_core.ports_churn_v4(p, PROTO, SRC, DPORT, d, o, {live}, 0, {live}); "
            "print((rss() - b) / p.count)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip())


def ref_run(pool, dsts, out, live, start, stop):
    alloc, release = pool.allocate, pool.release
    for i in range(start, stop):
        j = i - live
        if j >= 0 and out[j] >= 0:
            release(PROTO, out[j], dsts[j], DPORT)
            out[j] = -1
        p = alloc(PROTO, dsts[i], DPORT, (SRC << 16) | (i & 0xFFFF))
        out[i] = -1 if p is None else p


def measure(name, ndst, live, churn, reps, seed, ref_churn):
    dsts = make_dsts(ndst, live, churn, seed)
    dl = dsts.tolist()
    rows = {}

    # correctness first: the nogil loop's ports equal the reference's (first ref_churn steps)
    pool, out = c_fill(dsts, live, seed)
    _core.ports_churn_v4(pool, PROTO, SRC, DPORT, dsts, out, live, live, live + ref_churn)
    rp, rout = RefPool(seed=seed), [-1] * len(dsts)
    ref_run(rp, dl, rout, live, 0, live + ref_churn)
    assert out[: live + ref_churn].tolist() == rout[: live + ref_churn], "C and reference disagree"

    times = []
    for _ in range(reps):
        pool, out = c_fill(dsts, live, seed)
        t = time.perf_counter()
        _core.ports_churn_v4(pool, PROTO, SRC, DPORT, dsts, out, live, live, live + churn)
        times.append(time.perf_counter() - t)
    rows["C, nogil loop (ports_churn_v4)"] = churn / statistics.median(times)
    stats = pool.stats()
    c_bytes = pool.memory_bytes() / pool.count

    times = []
    for _ in range(reps):
        pool, out0 = c_fill(dsts, live, seed)
        out = out0.tolist()
        t = time.perf_counter()
        ref_run(pool, dl, out, live, live, live + ref_churn)
        times.append(time.perf_counter() - t)
    rows["C, Python method calls"] = ref_churn / statistics.median(times)

    times = []
    for _ in range(max(1, reps // 2)):
        rp, rout = RefPool(seed=seed), [-1] * len(dsts)
        ref_run(rp, dl, rout, live, 0, live)
        t = time.perf_counter()
        ref_run(rp, dl, rout, live, live, live + ref_churn)
        times.append(time.perf_counter() - t)
    rows["reference PortPool"] = ref_churn / statistics.median(times)

    # memory: C accounting + RSS growth of a fill in a fresh process; reference by tracemalloc
    c_rss = fresh_rss_per_live(ndst, live, churn, seed)
    rout = [-1] * len(dsts)
    gc.collect()
    tracemalloc.start()
    rp = RefPool(seed=seed)
    ref_run(rp, dl, rout, live, 0, live)
    ref_bytes = tracemalloc.get_traced_memory()[0] / rp.count
    tracemalloc.stop()
    return {"workload": name, "live": live, "ops": churn, "rates": rows,
            "bytes_per_live": {"C (memory_bytes)": c_bytes, "C (RSS growth)": c_rss,
                               "reference (tracemalloc)": ref_bytes},
            "c_layout": stats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_ports_core", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    ref_churn = 5_000 if args.quick else 20_000
    results = [measure(name, nd, live, churn, args.reps, args.seed, ref_churn)
               for name, nd, live, churn in workloads(args.quick)]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        base = r["rates"]["reference PortPool"]
        print(f"\n{r['workload']}  ({r['live']:,} live; median of {args.reps}; op = release + allocate)")
        for k, v in r["rates"].items():
            print(f"  {k:34s} {v / 1e6:9.3f} M ops/s   {v / base:8.1f}x reference")
        for k, v in r["bytes_per_live"].items():
            print(f"  bytes per live allocation, {k:42s} {v:8.1f}")
        print(f"  C layout: {r['c_layout']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
