"""The benchmark suite behind ``hyperplane bench`` (installed with the package).

:func:`run_suite` runs the scenarios of :mod:`hyperplane.bench.scenarios` with their baselines and
returns the :class:`~hyperplane.bench.runner.Suite` (rows with medians and spreads) and the series
the charts use. ``benchmarks/`` in the source tree holds scripts that run parts of it on their own.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from hyperplane.bench.runner import Measurement, Runner, Suite, print_table

__all__ = ["run_suite", "scenario_names", "Suite", "Measurement", "Runner", "print_table"]


def scenario_names() -> list[str]:
    from hyperplane.bench.scenarios import SCENARIOS

    return list(SCENARIOS)


def _kernel_flows(quick: bool) -> tuple[int, ...]:
    return (1_000, 10_000) if quick else (1_000, 10_000, 100_000)


def run_suite(quick: bool = False, only: Optional[Iterable[str]] = None, seed: int = 2024, kernel: bool = True,
              progress: Optional[Callable[[str], None]] = None) -> tuple[Suite, dict]:
    """Run the scenarios (all, or those named in ``only``); returns (suite, chart data).

    ``kernel=False`` leaves the Linux-kernel baseline out (it needs root and builds network
    namespaces); when it cannot run, its rows say why."""
    from hyperplane.bench import scenarios
    from hyperplane.engine import available_backends

    names = list(only) if only else list(scenarios.SCENARIOS)
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(scenarios.SCENARIOS)}")
    say = progress or (lambda _m: None)
    ours = "core" if "core" in available_backends() else "reference"
    suite = Suite("hyperplane bench" + (" --quick" if quick else ""))
    runner = Runner(repeat=3 if quick else 7, warmup=1, min_sample_s=0.05 if quick else 0.2)
    ctx = scenarios.Context(quick=quick, seed=seed, suite=suite, runner=runner, ours=ours, say=say)
    if ours != "core":
        suite.notes.append("the core engine is unavailable in this build: the reference engine is measured "
                           "as 'ours' and the core rows are skipped")
    if kernel and ({"established", "new-connections"} & set(names)):
        from hyperplane.bench import kernel as kernel_mod

        reason = kernel_mod.unavailable()
        if reason is None:
            try:
                ctx.kernel = kernel_mod.measure(flow_counts=_kernel_flows(quick), new_flows=30_000 if quick else 200_000,
                                                repeat=3 if quick else 7, packets=100_000 if quick else 1_000_000,
                                                seed=seed, progress=say)
            except Exception as exc:  # the lab could not be built: a skipped baseline, not a failed run
                reason = f"the namespace lab failed: {exc}"
        ctx.kernel_reason = reason
    elif not kernel:
        ctx.kernel_reason = "left out (--no-kernel)"
    for name in names:
        scenarios.SCENARIOS[name](ctx)
    peak = scenarios.peak_rss_bytes()
    suite.notes.append(f"peak RSS of this run: {peak / 2**20:,.0f} MiB; memory column of the established rows: "
                       "RSS growth per tracked connection while the flows were opened")
    suite.notes.append(f"traffic: UDP, 60-byte IP packets, seed {seed}; ratio = row rate / the group's first "
                       "'hyperplane' row")
    ctx.data["peak_rss_bytes"] = peak
    ctx.data["ours"] = ours
    if ctx.kernel is not None:
        ctx.data["kernel"] = ctx.kernel
    return suite, ctx.data


def scenario_script(name: str, argv: Optional[list[str]] = None, doc: str = "") -> int:
    """The stand-alone entry point of one scenario (``python -m benchmarks.bench_<name>``): the
    same code ``hyperplane bench --only NAME`` runs, printed as a table or JSON."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.bench_{name}", description=doc.split("\n")[0] or None)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    suite, data = run_suite(quick=args.quick, only=[name], seed=args.seed, kernel=False)
    if args.json:
        out = suite.to_dict()
        out["data"] = data
        print(json.dumps(out, indent=2, default=str))
    else:
        from rich.console import Console

        print_table(suite, console=Console(width=160))
    return 0
