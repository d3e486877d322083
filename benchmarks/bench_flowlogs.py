"""Flow-log aggregation and writing (the 'flowlogs' scenario of hyperplane bench).

    python -m benchmarks.bench_flowlogs [--quick] [--json]

The scenario lives in the installed package (hyperplane/bench/scenarios.py) so that
``hyperplane bench --only flowlogs`` runs the same code; this script is the stand-alone entry point.
"""
import sys

from hyperplane.bench import scenario_script

if __name__ == "__main__":
    sys.exit(scenario_script("flowlogs", doc=__doc__))
