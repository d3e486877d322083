"""``hyperplane bench``: the microbenchmarks with their baselines, as a table (or JSON, or charts).

Figures are medians of repeated samples with their spread; ratios compare each row with the
group's engine row in the same run. Nothing is asserted on time."""
from __future__ import annotations

import json
import logging
import sys

import click


@click.command()
@click.option("--quick", is_flag=True, help="Smaller sizes and fewer repetitions (about a minute).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write PNG charts to DIR (needs matplotlib).")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Run only this scenario (repeatable): established, new-connections, mixed, routes, ports, "
                   "flowlogs, replay.")
@click.option("--no-kernel", is_flag=True, help="Leave out the Linux-kernel baseline (network namespaces).")
@click.option("--seed", type=int, default=2024, show_default=True, help="Seed of the generated traffic.")
def command(quick: bool, as_json: bool, plot_dir, only, no_kernel: bool, seed: int):
    """Run the benchmark suite and print packets/s, spreads and ratios to the baselines."""
    from rich.console import Console

    from hyperplane.bench import run_suite, scenario_names
    from hyperplane.bench.runner import print_table
    from hyperplane.cli import UserError

    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    names = []
    for item in only:
        names += [n for n in item.split(",") if n]
    unknown = [n for n in names if n not in scenario_names()]
    if unknown:
        raise UserError(f"--only {', '.join(unknown)}: unknown scenario; choose from {', '.join(scenario_names())}")
    err = Console(stderr=True)
    plot_problem = None
    if plot_dir:
        from hyperplane.bench.plots import matplotlib_missing

        plot_problem = matplotlib_missing()
    if as_json or not err.is_terminal:
        suite, data = run_suite(quick=quick, only=names or None, seed=seed, kernel=not no_kernel)
    else:
        with err.status("benchmarks") as status:
            suite, data = run_suite(quick=quick, only=names or None, seed=seed, kernel=not no_kernel,
                                    progress=lambda message: status.update(message))
    charts = []
    if plot_dir and plot_problem is None:
        from hyperplane.bench.plots import write_charts

        charts = write_charts(data, plot_dir)
    if as_json:
        out = suite.to_dict()
        out["data"] = data
        out["charts"] = charts
        if plot_problem:
            out["charts_missing"] = plot_problem
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        console = Console() if sys.stdout.isatty() else Console(width=180)
        print_table(suite, console=console)
        for path in charts:
            console.print(f"chart: {path}")
    if plot_problem:
        click.echo(f"no charts: {plot_problem}", err=True)
