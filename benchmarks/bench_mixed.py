"""A mixed workload: 89 % established, 10 % new connections, 1 % drops (the 'mixed' scenario of hyperplane bench).

    python -m benchmarks.bench_mixed [--quick] [--json]

The scenario lives in the installed package (hyperplane/bench/scenarios.py) so that
``hyperplane bench --only mixed`` runs the same code; this script is the stand-alone entry point.
"""
import sys

from hyperplane.bench import scenario_script

if __name__ == "__main__":
    sys.exit(scenario_script("mixed", doc=__doc__))
