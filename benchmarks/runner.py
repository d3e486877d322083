"""Moved to :mod:`hyperplane.bench.runner` (the installed package), so ``hyperplane bench`` can use
it; this module re-exports it for the scripts in ``benchmarks/``."""
from hyperplane.bench.runner import *  # noqa: F401,F403
from hyperplane.bench.runner import _quantile, _si  # noqa: F401  (private helpers some scripts use)
