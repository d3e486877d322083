"""A small benchmark runner: warm-up, repetitions, median and spread, tables and JSON.

Timing uses ``time.perf_counter_ns`` (wall clock) and, beside it,
``time.process_time_ns`` (CPU time of this process): on a shared, noisy
machine the wall-clock rate drops whenever another process takes the core,
while the CPU-time rate does not (cache and memory-bandwidth contention
still show in both).  Each *sample* runs the measured callable
``number`` times (calibrated so that a sample lasts at least ``min_sample_s``),
and a measurement keeps ``repeat`` samples after ``warmup`` discarded ones.
Rates are reported as items per second, where a callable declares how many
items (lookups, packets, ...) one call processes.

Ratios: against the measurement named ``baseline`` in each group or, without a
name, against the one each group marks with ``extra={"baseline": True}``.

Nothing here asserts on time: the figures are for reading, with their spread,
next to baselines measured in the same run.  Dependencies: numpy is not needed,
rich only for :func:`print_table`.

Typical use::

    runner = Runner(repeat=7)
    suite = Suite("route lookups")
    suite.add(runner.measure("ours", lambda: table.lookup_batch(addrs), items=len(addrs),
                             group="100k prefixes", unit="lookups"))
    suite.add(Measurement.skipped_because("py-radix", "not installed", group="100k prefixes"))
    print_table(suite, baseline="pytricia")
    print(suite.to_json())
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Measurement:
    """The samples of one benchmark and the statistics derived from them.

    ``samples_ns`` holds the duration of each kept sample; a sample processed
    ``items_per_sample`` items.  ``skipped`` carries the reason when the
    benchmark could not run (a missing baseline, for instance).
    """

    name: str
    group: str = ""
    unit: str = "ops"
    items_per_sample: int = 1
    samples_ns: list[int] = field(default_factory=list)
    cpu_samples_ns: list[int] = field(default_factory=list)
    number: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @classmethod
    def skipped_because(cls, name: str, reason: str, *, group: str = "", unit: str = "ops",
                        extra: dict[str, Any] | None = None) -> "Measurement":
        return cls(name=name, group=group, unit=unit, skipped=reason, extra=dict(extra or {}))

    @property
    def ok(self) -> bool:
        return self.skipped is None and bool(self.samples_ns)

    def _rates(self) -> list[float]:
        return sorted(self.items_per_sample * 1e9 / ns for ns in self.samples_ns if ns > 0)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def rate(self) -> float:
        """Items per second at the median sample duration."""
        return self.items_per_sample * 1e9 / self.median_ns

    @property
    def cpu_rate(self) -> float | None:
        """Items per CPU-second of this process, at the median sample CPU time."""
        cpu = [ns for ns in self.cpu_samples_ns if ns > 0]
        if not cpu:
            return None
        return self.items_per_sample * 1e9 / statistics.median(cpu)

    @property
    def rate_min(self) -> float:
        return self._rates()[0]

    @property
    def rate_max(self) -> float:
        return self._rates()[-1]

    @property
    def rate_q1(self) -> float:
        return _quantile(self._rates(), 0.25)

    @property
    def rate_q3(self) -> float:
        return _quantile(self._rates(), 0.75)

    @property
    def iqr_fraction(self) -> float:
        """Interquartile range of the rates divided by the median rate."""
        return (self.rate_q3 - self.rate_q1) / self.rate

    @property
    def ns_per_item(self) -> float:
        return self.median_ns / self.items_per_sample

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        if self.ok:
            out.update(
                rate_median=self.rate, rate_min=self.rate_min, rate_max=self.rate_max,
                rate_q1=self.rate_q1, rate_q3=self.rate_q3, ns_per_item=self.ns_per_item,
                cpu_rate_median=self.cpu_rate,
            )
        return out


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": platform.processor() or "",
    }
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    return info


@dataclass
class Suite:
    """A titled list of measurements plus the machine they ran on."""

    title: str
    measurements: list[Measurement] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine_info)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        return m

    def find(self, name: str, group: str = "") -> Measurement | None:
        for m in self.measurements:
            if m.name == name and m.group == group:
                return m
        return None

    def groups(self) -> list[str]:
        seen: list[str] = []
        for m in self.measurements:
            if m.group not in seen:
                seen.append(m.group)
        return seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "started": self.started,
            "machine": self.machine,
            "notes": list(self.notes),
            "measurements": [m.summary() for m in self.measurements],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)


class Runner:
    """Measures callables.

    ``repeat`` samples are kept after ``warmup`` discarded ones.  When ``number``
    is not given, it is calibrated: the callable is run once and ``number`` is
    chosen so that one sample lasts about ``min_sample_s``.
    """

    def __init__(self, repeat: int = 7, warmup: int = 1, min_sample_s: float = 0.05,
                 clock: Callable[[], int] = time.perf_counter_ns,
                 cpu_clock: Callable[[], int] | None = time.process_time_ns):
        if repeat < 1 or warmup < 0:
            raise ValueError("repeat must be >= 1 and warmup >= 0")
        self.repeat = repeat
        self.warmup = warmup
        self.min_sample_s = min_sample_s
        self.clock = clock
        self.cpu_clock = cpu_clock

    def _sample(self, fn: Callable[[], Any], number: int) -> tuple[int, int]:
        """(wall ns, CPU ns) of ``number`` calls; CPU ns is 0 without a CPU clock."""
        clock, cpu_clock = self.clock, self.cpu_clock
        cpu_start = cpu_clock() if cpu_clock else 0
        start = clock()
        for _ in range(number):
            fn()
        wall = clock() - start
        return wall, (cpu_clock() - cpu_start) if cpu_clock else 0

    def calibrate(self, fn: Callable[[], Any]) -> int:
        """Calls per sample so that a sample lasts at least ``min_sample_s``."""
        number = 1
        while True:
            elapsed = self._sample(fn, number)[0]
            if elapsed >= self.min_sample_s * 1e9 or number >= 1 << 30:
                return number
            # aim a little above the target; at least double
            guess = int(number * self.min_sample_s * 1.2e9 / max(elapsed, 1))
            number = max(number * 2, guess)

    def measure(self, name: str, fn: Callable[[], Any], *, items: int = 1, group: str = "",
                unit: str = "ops", number: int | None = None, setup: Callable[[], Any] | None = None,
                extra: dict[str, Any] | None = None) -> Measurement:
        """Times ``fn`` (one call processes ``items`` items); ``setup`` runs before each sample."""
        if items < 1:
            raise ValueError("items must be >= 1")
        if setup is not None:
            setup()
        if number is None:
            number = self.calibrate(fn)
        samples: list[int] = []
        cpu_samples: list[int] = []
        for k in range(self.warmup + self.repeat):
            if setup is not None:
                setup()
            ns, cpu_ns = self._sample(fn, number)
            if k >= self.warmup:
                samples.append(ns)
                if self.cpu_clock is not None:
                    cpu_samples.append(cpu_ns)
        return Measurement(name=name, group=group, unit=unit, items_per_sample=items * number,
                           samples_ns=samples, cpu_samples_ns=cpu_samples, number=number,
                           extra=dict(extra or {}))


def _si(value: float) -> str:
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {suffix}"
    return f"{value:.2f} "


def format_bytes(n: float | None) -> str:
    if n is None:
        return ""
    for threshold, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= threshold:
            return f"{n / threshold:.1f} {suffix}"
    return f"{int(n)} B"


def ratio_to(m: Measurement, baseline: Measurement | None) -> float | None:
    if baseline is None or not baseline.ok or not m.ok:
        return None
    return m.rate / baseline.rate


def group_baseline(suite: Suite, group: str) -> Measurement | None:
    """The measurement of ``group`` marked ``extra["baseline"]`` (the first one), if any: used
    for the ratios when no baseline name is given, so each group can have its own."""
    for m in suite.measurements:
        if m.group == group and m.extra.get("baseline"):
            return m
    return None


def table_rows(suite: Suite, baseline: str | None = None,
               memory_key: str = "memory_bytes") -> list[dict[str, str]]:
    """The rows print_table shows, as plain strings (also handy for Markdown)."""
    rows = []
    for group in suite.groups():
        base = suite.find(baseline, group) if baseline else group_baseline(suite, group)
        for m in (x for x in suite.measurements if x.group == group):
            row = {"group": group, "name": m.name}
            if m.ok:
                r = ratio_to(m, base)
                row.update(
                    rate=f"{_si(m.rate)}{m.unit}/s",
                    spread=f"{_si(m.rate_min).strip()} – {_si(m.rate_max).strip()}",
                    iqr=f"{100 * m.iqr_fraction:.1f}%",
                    ratio="" if r is None else f"{r:,.2f}x" if r < 100 else f"{r:,.0f}x",
                    cpu="" if m.cpu_rate is None else f"{_si(m.cpu_rate).strip()}/s",
                )
            else:
                row.update(rate="skipped", spread="", iqr="", ratio="", cpu="")
            row["memory"] = format_bytes(m.extra.get(memory_key))
            row["note"] = m.skipped or str(m.extra.get("note", ""))
            rows.append(row)
    return rows


COLUMNS = [("group", "group"), ("name", "benchmark"), ("rate", "median rate"), ("spread", "min – max"),
           ("iqr", "IQR/median"), ("ratio", "ratio"), ("cpu", "per CPU-s"),
           ("memory", "memory"), ("note", "note")]


def print_table(suite: Suite, baseline: str | None = None, console: Any = None,
                memory_key: str = "memory_bytes") -> None:
    """Prints the suite as a rich table, one section per group; ratios are against
    ``baseline`` in each group."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = suite.title + (f" — ratios vs {baseline}" if baseline else "")
    table = Table(title=title, show_lines=False)
    columns = [(k, h) for k, h in COLUMNS if k != "group"]
    for key, header in columns:
        justify = "right" if key in ("rate", "spread", "iqr", "ratio", "cpu", "memory") else "left"
        table.add_column(header, justify=justify, overflow="fold")
    previous = None
    for row in table_rows(suite, baseline, memory_key):
        if row["group"] != previous:
            if previous is not None:
                table.add_section()
            table.add_row(f"[bold]{row['group']}[/bold]", *([""] * (len(columns) - 1)))
            previous = row["group"]
        style = "dim" if row["rate"] == "skipped" else None
        table.add_row(*("  " + row[key] if key == "name" else row[key] for key, _ in columns), style=style)
    console.print(table)
    for note in suite.notes:
        console.print(f"[dim]• {note}[/dim]")


def markdown_table(suite: Suite, baseline: str | None = None, memory_key: str = "memory_bytes") -> str:
    """The same table in GitHub Markdown."""
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in table_rows(suite, baseline, memory_key):
        lines.append("| " + " | ".join(row[key] for key, _ in COLUMNS) + " |")
    return "\n".join(lines)
