"""The scenarios of ``hyperplane bench``, each adding measurements (and its baselines) to a suite.

Every scenario generates its traffic from the seed (:mod:`hyperplane.bench.world`), measures with
the :class:`~hyperplane.bench.runner.Runner` (warm-up, repetitions, median and spread), and marks
one row per group as the group's baseline for the ratio column: the engine under test ("ours":
the core backend when :func:`hyperplane.engine.available_backends` has it, else the reference).
A ratio is ``row rate / ours``: the kernel at 3.0x forwards three times as many packets per second
as our engine; scapy at 0.2x a fifth. A baseline that cannot run is a skipped row with the reason.
"""
from __future__ import annotations

import gc
import io
import ipaddress
import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from hyperplane.bench import world
from hyperplane.bench.runner import Measurement, Runner, Suite

BATCH = 8192


def rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    """The largest RSS this process has had (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Context:
    """What every scenario gets: the settings, the runner and the suite to fill."""

    quick: bool
    seed: int
    suite: Suite
    runner: Runner
    ours: str  # "core" or "reference"
    say: Callable[[str], None] = lambda _m: None
    kernel: Optional[dict] = None  # kernel.measure() results, or None
    kernel_reason: Optional[str] = None  # why the kernel baseline is missing
    data: dict = field(default_factory=dict)  # series for the charts and the JSON output

    @property
    def ours_label(self) -> str:
        return f"hyperplane {self.ours}"

    def skip(self, name: str, reason: str, group: str, unit: str) -> None:
        self.suite.add(Measurement.skipped_because(name, reason, group=group, unit=unit))


def _fixed(ctx: Context, name: str, fn, items: int, group: str, unit: str, setup=None, repeat=None,
           extra: Optional[dict] = None) -> Measurement:
    """One call per sample (for work that changes state: opening connections)."""
    runner = Runner(repeat=repeat or ctx.runner.repeat, warmup=0, min_sample_s=0.0)
    return ctx.suite.add(runner.measure(name, fn, items=items, group=group, unit=unit, number=1, setup=setup,
                                        extra=extra))


def _from_rates(name: str, rates: list[float], group: str, unit: str, extra: dict) -> Measurement:
    """A row for rates measured elsewhere (the kernel): samples of one million items."""
    items = 1_000_000
    return Measurement(name=name, group=group, unit=unit, items_per_sample=items,
                       samples_ns=[int(items * 1e9 / r) for r in rates if r > 0], extra=extra)


def _feed(engine, packets: world.Packets, batch: int = BATCH) -> None:
    """Every packet through ``engine.process_batch``, in batches."""
    for lo in range(0, len(packets), batch):
        hi = lo + batch
        engine.process_batch(packets.buffer, packets.offsets[lo:hi], packets.lengths[lo:hi],
                             packets.timestamps[lo:hi])


class _Clock:
    """Timestamps that move forward by ``step`` per packet across samples (never back in time)."""

    def __init__(self, start: float, step: float = 1e-6):
        self.now = start
        self.step = step

    def next(self, n: int) -> np.ndarray:
        stamps = self.now + np.arange(n, dtype=np.float64) * self.step
        self.now += n * self.step
        return stamps


# --------------------------------------------------------------------------------------------
# scapy: the loop a user would write by hand
# --------------------------------------------------------------------------------------------


def scapy_loop(frames: list[bytes], table: dict, out) -> None:
    """Read each packet, rewrite its source from a NAT table, fix the checksums, write it."""
    from scapy.layers.inet import IP

    for frame in frames:
        pkt = IP(frame)
        l4 = pkt.payload
        new = table.get((pkt.src, l4.sport, pkt.dst, l4.dport))
        if new is not None:
            pkt.src, l4.sport = new
        del pkt.chksum, l4.chksum
        out.write(bytes(pkt))


def _scapy_table(flows: np.ndarray) -> dict:
    src, sport, dst, dport = world.flow_endpoints(flows)
    table = {}
    for k, (s, sp, d, dp) in enumerate(zip(src.tolist(), sport.tolist(), dst.tolist(), dport.tolist())):
        table[(str(ipaddress.IPv4Address(s)), sp, str(ipaddress.IPv4Address(d)), dp)] = ("10.0.1.4", 1024 + k % 64000)
    return table


def _scapy_row(ctx: Context, group: str, frames: list[bytes], table: dict, unit: str = "packets") -> None:
    try:
        import scapy.layers.inet  # noqa: F401  (the loop needs it)
    except ImportError as exc:
        ctx.skip("scapy loop (read, rewrite, checksums, write)", f"scapy not installed ({exc})", group, unit)
        return
    sink = io.BytesIO()

    def run():
        sink.seek(0)
        scapy_loop(frames, table, sink)

    ctx.suite.add(ctx.runner.measure("scapy loop (read, rewrite, checksums, write)", run, items=len(frames),
                                     group=group, unit=unit))


# --------------------------------------------------------------------------------------------
# established flows, new connections, mixed
# --------------------------------------------------------------------------------------------


def _open_flows(backend: str, n: int, **options):
    """An engine with ``n`` UDP flows opened and answered; (engine, opening seconds, RSS growth)."""
    engine = world.make_engine(backend, **options)
    ids = np.arange(n, dtype=np.int64)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    _feed(engine, world.requests(ids, start=world.EPOCH, step=1e-7))
    seconds = time.perf_counter() - started
    _feed(engine, world.replies(ids, start=world.EPOCH + 0.5, step=1e-7))
    gc.collect()
    return engine, seconds, rss_bytes() - before


def _established_traffic(n: int, count: int, seed: int) -> world.Packets:
    """``count`` packets of flows drawn from ``n`` (seeded), requests and replies alternating."""
    rng = np.random.default_rng(seed)
    flows = rng.integers(0, n, size=count)
    both = world.concat(world.requests(np.arange(n)), world.replies(np.arange(n)))
    return world.take(both, flows + n * (np.arange(count) % 2))


def _time_batches(engine, traffic: world.Packets, clock: _Clock) -> Callable[[], None]:
    def run():
        stamps = clock.next(len(traffic))
        for lo in range(0, len(traffic), BATCH):
            hi = lo + BATCH
            engine.process_batch(traffic.buffer, traffic.offsets[lo:hi], traffic.lengths[lo:hi], stamps[lo:hi])

    return run


def established(ctx: Context) -> None:
    """Established UDP flows at 1k / 10k / 100k (/ 1M) concurrent flows."""
    sizes = [1_000, 10_000, 100_000] + ([] if ctx.quick else [1_000_000])
    series = ctx.data.setdefault("established", [])
    kernel = (ctx.kernel or {}).get("established", {})
    for n in sizes:
        group = f"established flows, {n:,} concurrent"
        unit = "packets"
        if ctx.quick and ctx.ours == "reference" and n >= 100_000:
            ctx.skip(ctx.ours_label, "the reference engine opens ~4k connections/s: 100k flows only without --quick",
                     group, unit)
            continue
        ctx.say(f"{group}: opening the flows")
        engine, seconds, grown = _open_flows(ctx.ours, n)
        per_conn = grown / n if n >= 10_000 else None
        count = min(2 * n, 20_000 if ctx.quick else 50_000)
        traffic = _established_traffic(n, count, ctx.seed)
        ctx.say(f"{group}: measuring")
        m = ctx.suite.add(ctx.runner.measure(
            ctx.ours_label, _time_batches(engine, traffic, _Clock(world.EPOCH + 1.0)), items=count, group=group,
            unit=unit, extra={"baseline": True, "memory_bytes": per_conn, "bytes_per_connection": per_conn,
                              "note": f"opened {n / seconds:,.0f} conn/s; memory = RSS growth per connection"}))
        series.append({"flows": n, "rate": m.rate, "min": m.rate_min, "max": m.rate_max, "backend": ctx.ours,
                       "bytes_per_connection": per_conn})
        del engine
        gc.collect()
        if ctx.ours == "core":
            small = min(n, 10_000)
            ref, _, _ = _open_flows("reference", small)
            ref_traffic = _established_traffic(small, min(2 * small, 10_000), ctx.seed)
            ctx.suite.add(ctx.runner.measure("hyperplane reference", _time_batches(ref, ref_traffic, _Clock(world.EPOCH + 1)),
                                             items=len(ref_traffic), group=group, unit=unit,
                                             extra={"note": f"at {small:,} flows (per-packet cost flat in the flow count)"}))
            del ref
        else:
            ctx.skip("hyperplane core", "the core engine is unavailable (hyperplane._core provides no Engine): "
                     "ours = the reference", group, unit)
        frames = traffic.frames()[:2000]
        _scapy_row(ctx, group, frames, _scapy_table(np.arange(min(n, 100_000))))
        rates = kernel.get(n, kernel.get(str(n), {})).get("rates") if kernel else None
        if rates:
            ctx.suite.add(_from_rates("Linux kernel (forward + conntrack + nft SNAT)", rates, group, unit,
                                      {"note": "tcpreplay --topspeed through a netns router, UDP, conntrack hits"}))
        else:
            limit = (ctx.kernel or {}).get("conntrack_max")
            reason = ctx.kernel_reason or "not measured at this flow count" + (
                f" (nf_conntrack_max is {limit:,} here)" if limit and n > limit else " (--quick)" if ctx.quick else "")
            ctx.skip("Linux kernel (forward + conntrack + nft SNAT)", reason, group, unit)


def new_connections(ctx: Context) -> None:
    """New UDP connections per second (every packet opens a flow)."""
    n = 3_000 if ctx.quick else 10_000
    group = f"new connections, {n:,} flows per sample"
    unit = "connections"
    ids = np.arange(n, dtype=np.int64)
    requests = world.requests(ids, start=world.EPOCH, step=1e-6)
    holder: dict = {}

    def fresh(backend):
        def setup():
            holder.pop("engine", None)
            gc.collect()
            holder["engine"] = world.make_engine(backend)
        return setup

    def run():
        _feed(holder["engine"], requests)

    ctx.say(group)
    _fixed(ctx, ctx.ours_label, run, n, group, unit, setup=fresh(ctx.ours), extra={"baseline": True})
    if ctx.ours == "core":
        _fixed(ctx, "hyperplane reference", run, n, group, unit, setup=fresh("reference"))
    holder.clear()
    kernel = (ctx.kernel or {}).get("new_flow")
    if kernel:
        ctx.suite.add(_from_rates("Linux kernel (every packet a new flow)", kernel, group, unit,
                                  {"note": f"{ctx.kernel.get('new_flow_count', 0):,} flows per pass, conntrack flushed"}))
    else:
        ctx.skip("Linux kernel (every packet a new flow)", ctx.kernel_reason or "not measured", group, unit)


def mixed(ctx: Context) -> None:
    """90 % established, 10 % new connections, 1 % dropped (SG egress), interleaved."""
    established_flows = 2_000 if ctx.quick else 10_000
    count = 5_000 if ctx.quick else 20_000
    group = f"mixed: 89% established, 10% new, 1% drops ({established_flows:,} flows)"
    unit = "packets"
    rng = np.random.default_rng(ctx.seed)
    state = {"next": established_flows, "clock": world.EPOCH + 1.0}

    def make_sample() -> world.Packets:
        kinds = rng.choice(3, size=count, p=[0.89, 0.10, 0.01])
        est = _established_traffic(established_flows, int((kinds == 0).sum()), int(rng.integers(1 << 30)))
        new_ids = np.arange(state["next"], state["next"] + int((kinds == 1).sum()))
        state["next"] += len(new_ids)
        new = world.requests(new_ids)
        src = world.SANDBOX_BASE + rng.integers(0, 65536, size=int((kinds == 2).sum()))
        drops = world.build(src.astype(np.uint32), world.INTERNET_BASE + 7, 40000, 23)
        merged = world.concat(world.take(est, np.arange(len(est))), new, drops)
        # put each packet back where its kind was drawn
        position = np.empty(count, dtype=np.int64)
        base = 0
        for k, part_len in ((0, len(est)), (1, len(new)), (2, len(drops))):
            position[np.flatnonzero(kinds == k)] = np.arange(base, base + part_len)
            base += part_len
        stamps = state["clock"] + np.arange(count) * 1e-6
        state["clock"] += count * 1e-6
        return world.Packets(merged.buffer, merged.offsets[position], merged.lengths[position], stamps)

    for label, backend, baseline in ((ctx.ours_label, ctx.ours, True),) + (
            (("hyperplane reference", "reference", False),) if ctx.ours == "core" else ()):
        ctx.say(f"{group}: {label}")
        engine, _, _ = _open_flows(backend, established_flows)
        box: dict = {}

        def setup():
            box["p"] = make_sample()

        def run():
            _feed(engine, box["p"])

        _fixed(ctx, label, run, count, group, unit, setup=setup, extra={"baseline": baseline})
        summary = engine.summary()
        ctx.data.setdefault("mixed", {})[backend] = {"drops": summary["drops"], "packets": summary["packets"]}
        engine = None


# --------------------------------------------------------------------------------------------
# route lookups
# --------------------------------------------------------------------------------------------

#: share of each prefix length, roughly the public IPv4 table (as benchmarks/bench_lpm.py)
LENGTHS = {8: 0.2, 12: 0.6, 14: 1.5, 16: 3.0, 18: 2.5, 19: 4.0, 20: 5.5, 21: 5.5, 22: 11.0, 23: 9.5,
           24: 50.0, 26: 0.5, 28: 0.4, 32: 0.2}


def make_prefixes(n: int, seed: int) -> list[tuple[int, int, int]]:
    """n distinct (prefix, length, value) triples, deterministic in seed."""
    rng = np.random.default_rng(seed)
    lengths = np.array(list(LENGTHS), dtype=np.int64)
    weights = np.array(list(LENGTHS.values()))
    weights = weights / weights.sum()
    seen: dict = {}
    while len(seen) < n:
        k = n - len(seen)
        addrs = rng.integers(0, 2**32, size=k, dtype=np.uint64).tolist()
        lens = rng.choice(lengths, size=k, p=weights).tolist()
        for a, length in zip(addrs, lens):
            seen.setdefault((a & ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF), length), len(seen) + 1)
    return [(p, length, v) for (p, length), v in seen.items()][:n]


def routes(ctx: Context) -> None:
    """Longest-prefix-match lookups: our compiled table against pytricia and py-radix."""
    lookups = 200_000 if ctx.quick else 1_000_000
    few = 20_000 if ctx.quick else 100_000
    unit = "lookups"
    for n in (1_000, 100_000):
        group = f"route lookups, {n // 1000}k prefixes"
        ctx.say(group)
        prefixes = make_prefixes(n, ctx.seed)
        rng = np.random.default_rng(ctx.seed + 1)
        table = np.array([(p, length) for p, length, _ in prefixes], dtype=np.uint64)
        pick = table[rng.integers(0, len(table), size=lookups)]
        host = rng.integers(0, 2**32, size=lookups, dtype=np.uint64) & ((np.uint64(1) << (np.uint64(32) - pick[:, 1])) - np.uint64(1))
        addrs = (pick[:, 0] | host).astype(np.uint32)
        sample = addrs[:few].tolist()
        try:
            from hyperplane import _core

            lpm = _core.Lpm4(16)
            for p, length, v in prefixes:
                lpm.insert(p, length, v)
            out = np.empty_like(addrs)
            ctx.suite.add(ctx.runner.measure("hyperplane Lpm4 lookup_batch (16-8-8)",
                                             lambda: lpm.lookup_batch(addrs, out), items=lookups, group=group,
                                             unit=unit, extra={"baseline": True,
                                                               "memory_bytes": getattr(lpm, "memory_bytes", None)}))
        except ImportError as exc:
            ctx.skip("hyperplane Lpm4 lookup_batch (16-8-8)", f"compiled core missing ({exc})", group, unit)
        try:
            import pytricia

            tri = pytricia.PyTricia(32)
            for p, length, v in prefixes:
                tri.insert(p, length, v)
            get = tri.get
            ctx.suite.add(ctx.runner.measure("pytricia get(), Python loop", lambda: [get(a) for a in sample],
                                             items=len(sample), group=group, unit=unit))
        except ImportError as exc:
            ctx.skip("pytricia get(), Python loop", f"not installed ({exc})", group, unit)
        try:
            import radix

            rdx = radix.Radix()
            for p, length, v in prefixes:
                rdx.add(f"{ipaddress.IPv4Address(p)}/{length}").data["v"] = v
            texts = [str(ipaddress.IPv4Address(a)) for a in sample]
            search = rdx.search_best
            ctx.suite.add(ctx.runner.measure("py-radix search_best(), Python loop", lambda: [search(t) for t in texts],
                                             items=len(texts), group=group, unit=unit))
        except ImportError as exc:
            ctx.skip("py-radix search_best(), Python loop", f"not installed ({exc})", group, unit)


# --------------------------------------------------------------------------------------------
# ports, flow logs, file-to-file replay
# --------------------------------------------------------------------------------------------


def ports(ctx: Context) -> None:
    """Port allocation near capacity, and connection churn overflowing ENIs."""
    from hyperplane.reference.ports import PortPool

    unit = "allocations"
    group = "port pool churn at 95% of one destination's ports"
    ctx.say(group)
    pool = PortPool(1024, 65535, seed=ctx.seed)
    dst = 0x0A00030A
    held = [pool.allocate(17, dst, 5432, hint=k) for k in range(int(pool.size * 0.95))]
    rng = np.random.default_rng(ctx.seed)
    victims = rng.integers(0, len(held), size=20_000).tolist()

    def churn():
        for k, v in enumerate(victims):
            pool.release(17, held[v], dst, 5432)
            held[v] = pool.allocate(17, dst, 5432, hint=k)

    ctx.suite.add(ctx.runner.measure("PortPool release + allocate", churn, items=len(victims), group=group, unit=unit,
                                     extra={"baseline": True, "note": f"{pool.count:,} of {pool.size:,} ports held"}))

    # churn through the engine: UDP flows expire after 30 s while new ones arrive; the arrival rate
    # keeps ~0.8x an ENI's capacity live for 40 s, then 3x for 40 s (overflow ENIs are made), then
    # 0.6x for 60 s (they drain)
    capacity = 1_000 if ctx.quick else 2_000
    phases = ((0.8, 40.0), (3.0, 40.0), (0.6, 60.0))
    stamps, t = [], 0.0
    for level, duration in phases:
        rate = level * capacity / 30.0
        count = int(rate * duration)
        stamps.append(t + np.arange(count) / rate)
        t += duration
    stamps = world.EPOCH + np.concatenate(stamps)
    total = len(stamps)
    group = f"connection churn with ENI overflow (capacity {capacity:,})"
    ctx.say(group)
    traffic = world.requests(np.arange(total, dtype=np.int64))
    traffic.timestamps = stamps
    timeline: list = []

    def run():
        engine = world.make_engine(ctx.ours, eni_capacity=capacity)
        timeline.clear()
        step = max(1, total // 200)
        for lo in range(0, total, step):
            hi = lo + step
            engine.process_batch(traffic.buffer, traffic.offsets[lo:hi], traffic.lengths[lo:hi], traffic.timestamps[lo:hi])
            enis = engine.counters["enis"]
            timeline.append((float(traffic.timestamps[min(hi, total) - 1] - world.EPOCH),
                             {eni: c["connections"] for eni, c in enis.items()}))
        box["summary"] = engine.summary()

    box: dict = {}
    m = _fixed(ctx, f"{ctx.ours_label}: open + expire, overflow ENIs", run, total, group, "connections",
               repeat=1 if ctx.quick else 3, extra={"baseline": True})
    enis = box["summary"]["enis"]
    m.extra["note"] = f"{len(enis)} ENIs, peaks {[e['peak_connections'] for e in enis]}"
    ctx.data["port_pool_timeline"] = {"capacity": capacity, "points": [{"t": t, "connections": c} for t, c in timeline]}


def flowlogs(ctx: Context) -> None:
    """Flow-log aggregation (packets into records) and writing records as text."""
    from hyperplane.flowlogs import FlowLogAggregator, write_flow_logs

    packets = 50_000 if ctx.quick else 200_000
    keys = 10_000
    group = f"flow-log aggregation, {packets:,} packets into {keys:,} records"
    ctx.say(group)
    rng = np.random.default_rng(ctx.seed)
    which = rng.integers(0, keys, size=packets).tolist()
    src, sport, dst, dport = (a.tolist() for a in world.flow_endpoints(np.arange(keys)))
    rows = [(src[k], dst[k], sport[k], dport[k]) for k in which]
    stamps = (world.EPOCH + np.arange(packets) * 1e-4).tolist()
    holder: dict = {}

    def aggregate():
        agg = FlowLogAggregator(600)
        add = agg.add
        for (s, d, sp, dp), ts in zip(rows, stamps):
            add("eni-0bench", s, d, sp, dp, 17, 60, ts, "ACCEPT")
        holder["agg"] = agg

    def plain_dict():
        table: dict = {}
        for (s, d, sp, dp), ts in zip(rows, stamps):
            key = ("eni-0bench", s, d, sp, dp, 17, "ACCEPT", int(ts) - int(ts) % 600)
            entry = table.get(key)
            if entry is None:
                table[key] = [1, 60, ts, ts]
            else:
                entry[0] += 1
                entry[1] += 60
                entry[3] = ts

    ctx.suite.add(ctx.runner.measure("hyperplane FlowLogAggregator.add", aggregate, items=packets, group=group,
                                     unit="packets", extra={"baseline": True}))
    ctx.suite.add(ctx.runner.measure("plain dict of counters (no records)", plain_dict, items=packets, group=group,
                                     unit="packets"))
    records = holder["agg"].flush()
    group = f"flow-log writing, {len(records):,} records"
    ctx.suite.add(ctx.runner.measure("write_flow_logs (AWS default format)",
                                     lambda: write_flow_logs(records, io.StringIO()), items=len(records), group=group,
                                     unit="records", extra={"baseline": True}))


def _replay_capture(folder: str, ctx: Context) -> tuple[str, int]:
    """A capture of UDP exchanges (5 per flow) plus 1 % SG-egress drops, in time order."""
    flows = 1_000 if ctx.quick else 4_000
    rounds = 5
    parts = []
    t = world.EPOCH
    for r in range(rounds):
        ids = np.arange(flows)
        parts.append(world.requests(ids, start=t, step=1e-4))
        t += flows * 1e-4
        parts.append(world.replies(ids, start=t, step=1e-4))
        t += flows * 1e-4
    drops = world.build((world.SANDBOX_BASE + np.arange(flows * rounds // 50)).astype(np.uint32),
                        world.INTERNET_BASE + 9, 41000, 23, timestamps=t + np.arange(flows * rounds // 50) * 1e-4)
    packets = world.concat(*parts, drops)
    path = os.path.join(folder, "bench-capture.pcap")
    world.write_pcap(path, packets)
    return path, len(packets)


def replay(ctx: Context) -> None:
    """File to file: pcap in; taps, drops, flow logs and summary out; 1 and 2 worker processes."""
    from hyperplane.parallel import run_parallel_replay
    from hyperplane.replay import ReplayConfig

    with tempfile.TemporaryDirectory(prefix="hyperplane-bench-replay-") as folder:
        capture, n = _replay_capture(folder, ctx)
        group = f"file-to-file replay, {n:,} packets"
        unit = "packets"
        model = world.load_model()

        def config(backend: str) -> ReplayConfig:
            return ReplayConfig(capture=capture, model=model, sandboxes=world.sandboxes(),
                                taps={"lambda": os.path.join(folder, "lambda.pcap"), "eni": os.path.join(folder, "eni.pcap")},
                                drops_path=os.path.join(folder, "drops.jsonl"),
                                flow_logs_path=os.path.join(folder, "flows.log"),
                                summary_path=os.path.join(folder, "summary.json"), backend=backend)

        repeat = 3 if ctx.quick else 5
        ctx.say(f"{group}: 1 worker")
        one = _fixed(ctx, f"{ctx.ours_label}, 1 process", lambda: run_parallel_replay(config(ctx.ours), 1), n, group,
                     unit, repeat=repeat, extra={"baseline": True})
        workers = 2
        if (os.cpu_count() or 1) >= 2:
            ctx.say(f"{group}: {workers} workers")
            stats: dict = {}
            par = _fixed(ctx, f"{ctx.ours_label}, {workers} worker processes",
                         lambda: run_parallel_replay(config(ctx.ours), workers, stats=stats), n, group, unit,
                         repeat=repeat)
            par.cpu_samples_ns = []  # this process's CPU time leaves the workers out: not shown
            cpu = sum(w["cpu_seconds"] for w in stats.get("per_worker", []))
            par.extra["note"] = (f"last run: workers' CPU {cpu:.2f} s in all, merge {stats.get('merge_seconds', 0):.2f} s; "
                                 f"1 process: CPU {n / one.cpu_rate:.2f} s" if one.cpu_rate else "")
            ctx.data["scaling"] = {"workers": [1, workers], "rate": [one.rate, par.rate],
                                   "min": [one.rate_min, par.rate_min], "max": [one.rate_max, par.rate_max]}
        else:
            ctx.skip(f"{ctx.ours_label}, 2 worker processes", "one CPU only", group, unit)
        if ctx.ours == "core":
            _fixed(ctx, "hyperplane reference, 1 process", lambda: run_parallel_replay(config("reference"), 1), n,
                   group, unit, repeat=repeat)
        try:
            from scapy.layers.inet import IP
            from scapy.utils import rdpcap, wrpcap
        except ImportError as exc:
            ctx.skip("scapy rdpcap, rewrite, wrpcap", f"scapy not installed ({exc})", group, unit)
            return
        limit = 2_000 if ctx.quick else 5_000
        table = _scapy_table(np.arange(1_000 if ctx.quick else 4_000))
        out_path = os.path.join(folder, "scapy-out.pcap")

        def scapy_file():
            pkts = rdpcap(capture, count=limit)
            out = []
            for raw in pkts:
                pkt = IP(bytes(raw))  # LINKTYPE_RAW records come back as Raw
                l4 = pkt.payload
                new = table.get((pkt.src, l4.sport, pkt.dst, l4.dport))
                if new is not None:
                    pkt.src, l4.sport = new
                del pkt.chksum, l4.chksum
                out.append(pkt)
            wrpcap(out_path, out, linktype=101)

        _fixed(ctx, "scapy rdpcap, rewrite, wrpcap", scapy_file, limit, group, unit, repeat=repeat,
               extra={"note": f"first {limit:,} packets"})


SCENARIOS: dict[str, Callable[[Context], None]] = {
    "established": established,
    "new-connections": new_connections,
    "mixed": mixed,
    "routes": routes,
    "ports": ports,
    "flowlogs": flowlogs,
    "replay": replay,
}
