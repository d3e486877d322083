"""The Linux kernel as a baseline: forwarding + conntrack + nftables SNAT between network namespaces.

    sudo python -m benchmarks.kernel_baseline [--flows 1000,10000,100000] [--new-flows 200000]
                                              [--packets 1000000] [--repeat 7] [--json]

Builds three namespaces (sender, router with nftables SNAT and conntrack, sink) on two veth pairs,
replays UDP captures with ``tcpreplay --topspeed`` only inside them (a fixed number of packets,
each command under a timeout), measures packets/s through the router for established flows and
for every-packet-a-new-flow, and deletes the namespaces (also on failure). The code is in
``hyperplane/bench/kernel.py``, so ``hyperplane bench`` uses the same measurement as a baseline row.
Needs root, ip (netns), nft, conntrack, tcpreplay and ethtool; says why when it cannot run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from hyperplane.bench import kernel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.kernel_baseline", description=__doc__.split("\n")[0])
    ap.add_argument("--flows", default="1000,10000,100000", help="established flow counts, comma-separated")
    ap.add_argument("--new-flows", type=int, default=200_000, help="flows of the every-packet-new pass")
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets per established pass")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    reason = kernel.unavailable()
    if reason is not None:
        print(f"kernel baseline skipped: {reason}", file=sys.stderr)
        return 1
    flows = tuple(int(f) for f in args.flows.split(",") if f)
    limit = kernel.conntrack_max()
    if limit is not None and max(flows + (args.new_flows,)) > limit:
        print(f"note: nf_conntrack_max is {limit:,}; flows beyond it are not tracked", file=sys.stderr)
    results = kernel.measure(flow_counts=flows, new_flows=args.new_flows, repeat=args.repeat, packets=args.packets,
                             seed=args.seed, progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for n, entry in results["established"].items():
        print(f"established, {n:>9,} flows: {kernel.summarise(entry['rates'])}")
    print(f"every packet a new flow ({results['new_flow_count']:,}): {kernel.summarise(results['new_flow'])}")
    if results["new_flow"]:
        print(f"median new flows/s: {statistics.median(results['new_flow']):,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
