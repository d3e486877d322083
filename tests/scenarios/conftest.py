"""Fixtures of the scenario tests: engines for every available backend (the checks every result
must pass are in ``result_checks.py``)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from hyperplane.engine import Engine, EngineOptions, available_backends  # noqa: E402

#: The sandbox range of the standard function ``fn``.
SANDBOX_NET = "169.254.76.0/24"
SANDBOX = "169.254.76.5"


@pytest.fixture(params=available_backends())
def backend(request):
    return request.param


@pytest.fixture
def make_engine(backend):
    """``make_engine(vpc, sandboxes=None, **options)``: an Engine on the parametrised backend;
    the default sandboxes map 169.254.76.0/24 to ``fn``."""

    def make(vpc, sandboxes=None, **options):
        return Engine(vpc, sandboxes if sandboxes is not None else {SANDBOX_NET: "fn"}, EngineOptions(**options),
                      backend=backend)

    return make
