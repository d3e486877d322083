"""Route lookups: hyperplane's compiled LPM tables against pytricia and py-radix.

    python -m benchmarks.bench_lpm [--quick] [--json] [--markdown]

Tables of 1,000 and 100,000 random IPv4 prefixes (seeded; lengths weighted to
/16-/24 like a real routing table) answer 1,000,000 lookups of two kinds:
``uniform`` addresses drawn from the whole IPv4 space (many miss every prefix
longer than /16, as in a default-route table) and ``routed`` addresses drawn
inside the table's prefixes (every lookup walks to the prefix's level).

Measured side by side, ratios against pytricia (what a Python user would
reach for):
  * Lpm4 16-8-8 and DIR-24-8, batch (nogil loop), with and without software
    prefetch ("(default)" marks what lookup_batch picks by itself for the table);
  * Lpm4.lookup called from a Python loop;
  * pytricia ``get(int)`` and py-radix ``search_best(str)`` (skipped, and said
    so, when not installed), called from a Python loop over the first
    ``--baseline-lookups`` addresses (their rate per lookup does not depend on
    how many there are);
  * building each table (inserts/s).
The memory column is the RSS growth of a fresh process building the table.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.runner import (
    Measurement,
    Runner,
    Suite,
    format_bytes,
    markdown_table,
    print_table,
)

# Share of each prefix length, roughly the shape of the public IPv4 routing table:
# most routes are /24, then /22, /23, /20, /21, /16; a few short ones and a few
# longer than /24 so that the third trie level is exercised too.
LENGTH_WEIGHTS = {
    8: 0.2, 9: 0.1, 10: 0.2, 11: 0.3, 12: 0.6, 13: 0.9, 14: 1.5, 15: 1.0, 16: 3.0,
    17: 1.5, 18: 2.5, 19: 4.0, 20: 5.5, 21: 5.5, 22: 11.0, 23: 9.5, 24: 50.0,
    25: 0.5, 26: 0.5, 27: 0.4, 28: 0.4, 29: 0.4, 30: 0.3, 31: 0.1, 32: 0.2,
}

BASELINE = "pytricia get(), Python loop"


def make_prefixes(n: int, seed: int) -> list[tuple[int, int, int]]:
    """n distinct (prefix, length, next-hop value) triples, deterministic in seed."""
    rng = np.random.default_rng(seed)
    lengths_avail = np.array(list(LENGTH_WEIGHTS), dtype=np.int64)
    weights = np.array(list(LENGTH_WEIGHTS.values()), dtype=np.float64)
    weights /= weights.sum()
    seen: dict[tuple[int, int], int] = {}
    while len(seen) < n:
        k = n - len(seen)
        addrs = rng.integers(0, 2**32, size=k, dtype=np.uint64)
        lens = rng.choice(lengths_avail, size=k, p=weights)
        values = rng.integers(1, 4096, size=k)
        for a, length, v in zip(addrs.tolist(), lens.tolist(), values.tolist()):
            prefix = a & ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF)
            seen.setdefault((prefix, length), v)
            if len(seen) == n:
                break
    return [(p, length, v) for (p, length), v in seen.items()]


def make_addresses(prefixes: list[tuple[int, int, int]], n: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    if kind == "routed":
        table = np.array([(p, length) for p, length, _ in prefixes], dtype=np.uint64)
        pick = table[rng.integers(0, len(table), size=n)]
        host = rng.integers(0, 2**32, size=n, dtype=np.uint64) & ((np.uint64(1) << (np.uint64(32) - pick[:, 1])) - np.uint64(1))
        return (pick[:, 0] | host).astype(np.uint32)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- the structures


def build_lpm4(prefixes, first_stride: int = 16):
    from hyperplane import _core

    t = _core.Lpm4(first_stride)
    insert = t.insert
    for p, length, v in prefixes:
        insert(p, length, v)
    return t


def build_pytricia(prefixes):
    import pytricia

    t = pytricia.PyTricia(32)
    for p, length, v in prefixes:
        t.insert(p, length, v)
    return t


def prefix_strings(prefixes) -> list[tuple[str, int]]:
    return [(f"{ipaddress.IPv4Address(p)}/{length}", v) for p, length, v in prefixes]


def build_radix(cidrs):
    import radix

    t = radix.Radix()
    for cidr, v in cidrs:
        t.add(cidr).data["v"] = v
    return t


def available(module: str) -> str | None:
    """None when the module imports, else the reason it does not."""
    try:
        __import__(module)
    except ImportError as exc:
        return f"not installed ({exc.__class__.__name__}: {exc})"
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def memory_probe(kind: str, n: int, seed: int) -> int:
    """RSS growth while building one table (run in a fresh process)."""
    prefixes = make_prefixes(n, seed)
    cidrs = prefix_strings(prefixes) if kind == "radix" else None
    gc.collect()
    before = rss_bytes()
    if kind == "lpm4-16":
        t = build_lpm4(prefixes, 16)
    elif kind == "lpm4-24":
        t = build_lpm4(prefixes, 24)
    elif kind == "pytricia":
        t = build_pytricia(prefixes)
    elif kind == "radix":
        t = build_radix(cidrs)
    else:
        raise ValueError(kind)
    grown = rss_bytes() - before
    del t
    return grown


def measure_memory(kind: str, n: int, seed: int) -> int | None:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_lpm", "--memory-probe", kind, str(n), str(seed)],
            capture_output=True, text=True, check=True, timeout=600,
        )
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def python_loop(fn: Callable[[Any], Any], items: list) -> Callable[[], None]:
    def run() -> None:
        for x in items:
            fn(x)

    return run


# ----------------------------------------------------------------------------- the suite


def run(quick: bool = False, sizes=(1_000, 100_000), lookups: int = 1_000_000,
        baseline_lookups: int = 200_000, seed: int = 2024, with_memory: bool = True,
        progress: Callable[[str], None] | None = None) -> Suite:
    """Runs the route-lookup benchmarks and returns the Suite."""
    if quick:
        lookups = min(lookups, 200_000)
        baseline_lookups = min(baseline_lookups, 50_000)
    runner = Runner(repeat=3 if quick else 7, warmup=1, min_sample_s=0.02 if quick else 0.05)
    build_runner = Runner(repeat=1 if quick else 3, warmup=0, min_sample_s=0.0)
    say = progress or (lambda _msg: None)
    suite = Suite("IPv4 route lookups")
    suite.notes.append(f"{lookups:,} lookups per batch sample; Python-loop rows use the first "
                       f"{baseline_lookups:,} of them; seed {seed}")
    suite.notes.append("memory: RSS growth of a fresh process building the table; "
                       "'own' = the table's own accounting (lookup arrays + depth arrays + prefix record)")
    no_tricia = available("pytricia")
    no_radix = available("radix")

    for n in sizes:
        label = f"{n // 1000}k prefixes" if n >= 1000 else f"{n} prefixes"
        say(f"building {label}")
        prefixes = make_prefixes(n, seed)
        cidrs = prefix_strings(prefixes)
        ours16 = build_lpm4(prefixes, 16)
        ours24 = build_lpm4(prefixes, 24)
        tricia = None if no_tricia else build_pytricia(prefixes)
        rdx = None if no_radix else build_radix(cidrs)

        mem = {}
        if with_memory:
            for kind in ("lpm4-16", "lpm4-24", "pytricia", "radix"):
                if (kind == "pytricia" and no_tricia) or (kind == "radix" and no_radix):
                    continue
                mem[kind] = measure_memory(kind, n, seed)

        for kind in ("uniform", "routed"):
            group = f"{label}, {kind}"
            say(f"measuring {group}")
            addrs = make_addresses(prefixes, lookups, kind, seed + 1)
            out = np.empty_like(addrs)
            few = addrs[:baseline_lookups].tolist()
            few_str = [str(ipaddress.IPv4Address(a)) for a in few] if rdx is not None else []
            # all implementations agree before anything is timed
            expected = ours16.lookup_batch(addrs)
            assert np.array_equal(ours24.lookup_batch(addrs), expected)
            if tricia is not None:
                assert [tricia.get(a, 0) for a in few[:2000]] == expected[:2000].tolist()
            if rdx is not None:
                got = [(nd.data["v"] if nd is not None else 0) for nd in map(rdx.search_best, few_str[:2000])]
                assert got == expected[:2000].tolist()

            for table, stride, name in ((ours16, 16, "16-8-8"), (ours24, 24, "DIR-24-8")):
                own = table.memory_bytes
                for prefetch in (True, False):
                    auto = " (default)" if prefetch == table.prefetch_pays else ""
                    suite.add(runner.measure(
                        f"{name} lookup_batch, " + ("prefetch" if prefetch else "no prefetch") + auto,
                        lambda t=table, p=prefetch, a=addrs, o=out: t.lookup_batch(a, o, prefetch=p),
                        items=len(addrs), group=group, unit="lookups",
                        extra={"memory_bytes": mem.get(f"lpm4-{stride}"), "own_bytes": own,
                               "note": f"own {format_bytes(own)}"}))
            suite.add(runner.measure("16-8-8 lookup(), Python loop", python_loop(ours16.lookup, few),
                                     items=len(few), group=group, unit="lookups",
                                     extra={"memory_bytes": mem.get("lpm4-16")}))
            if tricia is not None:
                get = tricia.get
                suite.add(runner.measure(BASELINE, python_loop(get, few), items=len(few), group=group,
                                         unit="lookups", extra={"memory_bytes": mem.get("pytricia")}))
            else:
                suite.add(Measurement.skipped_because(BASELINE, no_tricia, group=group, unit="lookups"))
            if rdx is not None:
                suite.add(runner.measure("py-radix search_best(), Python loop", python_loop(rdx.search_best, few_str),
                                         items=len(few_str), group=group, unit="lookups",
                                         extra={"memory_bytes": mem.get("radix")}))
            else:
                suite.add(Measurement.skipped_because("py-radix search_best(), Python loop", no_radix,
                                                      group=group, unit="lookups"))

        group = f"{label}, build"
        say(f"measuring {group}")
        suite.add(build_runner.measure("16-8-8 insert()", lambda pf=prefixes: build_lpm4(pf, 16), items=n,
                                       group=group, unit="inserts"))
        suite.add(build_runner.measure("DIR-24-8 insert()", lambda pf=prefixes: build_lpm4(pf, 24), items=n,
                                       group=group, unit="inserts"))
        if tricia is not None:
            suite.add(build_runner.measure("pytricia insert(), Python loop", lambda pf=prefixes: build_pytricia(pf),
                                           items=n, group=group, unit="inserts"))
        if rdx is not None:
            suite.add(build_runner.measure("py-radix add(), Python loop", lambda c=cidrs: build_radix(c), items=n,
                                           group=group, unit="inserts"))
        del ours16, ours24, tricia, rdx
        gc.collect()
    return suite


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_lpm", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer lookups and repetitions (well under a minute)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--lookups", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="1000,100000", help="comma-separated prefix counts")
    ap.add_argument("--no-memory", action="store_true", help="skip the RSS measurements (subprocesses)")
    ap.add_argument("--memory-probe", nargs=3, metavar=("KIND", "N", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_probe:
        kind, n, seed = args.memory_probe
        print(memory_probe(kind, int(n), int(seed)))
        return 0

    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.json:
        suite = run(quick=args.quick, sizes=sizes, lookups=args.lookups, seed=args.seed,
                    with_memory=not args.no_memory)
        print(suite.to_json())
        return 0
    from rich.console import Console

    console = Console()
    with console.status("route lookups") as status:
        suite = run(quick=args.quick, sizes=sizes, lookups=args.lookups, seed=args.seed,
                    with_memory=not args.no_memory, progress=status.update)
    print_table(suite, baseline=BASELINE, console=console)
    if args.markdown:
        console.print(markdown_table(suite, baseline=BASELINE), markup=False, highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
