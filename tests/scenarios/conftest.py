"""Fixtures of the scenario tests: engines for every available backend, packet helpers, and the
checks every result must pass (checksums of every tap packet, exactly one verdict)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from hyperplane.checksum import verify  # noqa: E402
from hyperplane.codes import DropReason, Verdict  # noqa: E402
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


def check_result(result) -> None:
    """What holds for every result: one verdict, a reason exactly when dropped, valid checksums
    on every packet it put on a tap or emitted (fragments excepted: their L4 checksum cannot be
    checked alone)."""
    assert result.verdict in (Verdict.FORWARDED, Verdict.DROPPED)
    assert (result.reason == DropReason.NONE) == (result.verdict == Verdict.FORWARDED)
    for tap, data in list(result.taps.items()) + list(result.emitted):
        assert tap in ("lambda", "eni", "internet")
        if not _is_fragment(data):
            assert verify(data), f"bad checksum on the {tap} tap"


def _is_fragment(data: bytes) -> bool:
    return data[0] >> 4 == 4 and (((data[6] << 8) | data[7]) & 0x3FFF) != 0
