"""``hyperplane replay``: a capture through the emulated dataplane, with taps, drops, flow logs and a
summary (DESIGN §4 is the contract: flags, file formats, reason strings, exit statuses)."""
from __future__ import annotations

import sys
import warnings

import click

from hyperplane.errors import CaptureError, UserError
from hyperplane.commands.common import load_model, parse_port_range, parse_sandboxes, parse_taps
from hyperplane.limits import ENI_CAPACITY, FLOW_LOG_INTERVAL


@click.command()
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("--vpc", "vpc_paths", multiple=True, required=True, metavar="PATH",
              help="AWS describe-* JSON/YAML file or folder (several merge).")
@click.option("--sandbox", "sandbox_specs", multiple=True, metavar="FUNCTION=CIDR[@SUBNET_ID]",
              help="Execution-environment addresses of a function, optionally pinned to a subnet.")
@click.option("--tap", "tap_specs", multiple=True, metavar="lambda|eni|internet=FILE",
              help="Write the packets seen at a tap (pcap LINKTYPE_RAW; .pcapng adds verdict comments).")
@click.option("--drops", "drops_path", metavar="FILE.jsonl", help="One JSON line per dropped packet.")
@click.option("--flow-logs", "flow_logs_path", metavar="FILE", help="VPC Flow Log records (AWS default format).")
@click.option("--flow-log-interval", type=click.Choice(["600", "60"]), default=str(FLOW_LOG_INTERVAL),
              show_default=True, help="Flow-log aggregation interval in seconds.")
@click.option("--summary", "summary_path", metavar="FILE.json", help="Write the summary as JSON.")
@click.option("--eni-capacity", type=click.IntRange(min=1), default=ENI_CAPACITY, show_default=True,
              help="Concurrent connections per Hyperplane ENI before an overflow ENI is created.")
@click.option("--port-range", default="1024-65535", show_default=True, help="Source ports of the ENIs.")
@click.option("--tcp-strict", is_flag=True, help="Refuse mid-stream TCP pickup and invalid transitions.")
@click.option("--backend", type=click.Choice(["auto", "core", "reference"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, sharded by flow (docs/scaling.md).")
@click.option("--quiet", "-q", is_flag=True, help="No summary table on stdout.")
def command(capture, vpc_paths, sandbox_specs, tap_specs, drops_path, flow_logs_path, flow_log_interval,
            summary_path, eni_capacity, port_range, tcp_strict, backend, workers, quiet):
    """Replay CAPTURE (pcap or pcapng, as the sandboxes saw it) against a VPC configuration."""
    from hyperplane.replay import ReplayConfig, check_outputs, run_replay

    config = ReplayConfig(
        capture=capture,
        model=load_model(vpc_paths),
        sandboxes=parse_sandboxes(sandbox_specs),
        taps=parse_taps(tap_specs),
        drops_path=drops_path,
        flow_logs_path=flow_logs_path,
        flow_log_interval=int(flow_log_interval),
        summary_path=summary_path,
        eni_capacity=eni_capacity,
        port_range=parse_port_range(port_range),
        tcp_strict=tcp_strict,
        backend=backend,
        progress=sys.stderr.isatty(),
    )
    try:
        check_outputs(config)
    except ValueError as err:
        raise UserError(str(err)) from None
    from hyperplane.io import CaptureFormatError, CaptureTruncatedWarning

    # A truncated capture is a result, not an error: one "warning: ..." line (the reader's message
    # names the file and the byte offset), never Python's warning format with a source line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CaptureTruncatedWarning)
        try:
            if workers > 1:
                from hyperplane.parallel import ShardingError, run_parallel_replay

                try:
                    summary = run_parallel_replay(config, workers)
                except ShardingError as err:  # a capacity or port range too small to split
                    raise UserError(str(err)) from None
            else:
                summary = run_replay(config)
        except CaptureFormatError as err:
            raise CaptureError(str(err)) from None
        except OSError as err:
            raise UserError(f"{err.filename}: {err.strerror}") from None
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    if not quiet:
        from hyperplane.report import print_summary

        print_summary(summary)
