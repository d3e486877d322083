"""Port allocation near capacity and connection churn with ENI overflow (the 'ports' scenario of hyperplane bench).

    python -m benchmarks.bench_ports [--quick] [--json]

The scenario lives in the installed package (hyperplane/bench/scenarios.py) so that
``hyperplane bench --only ports`` runs the same code; this script is the stand-alone entry point.
"""
import sys

from hyperplane.bench import scenario_script

if __name__ == "__main__":
    sys.exit(scenario_script("ports", doc=__doc__))
