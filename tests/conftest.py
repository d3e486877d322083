"""Shared test configuration: hypothesis profiles and the backend fixture."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
REAL_PCAPS = os.path.join(SHARED, "pcaps", "real")


@pytest.fixture(scope="session")
def real_pcaps_dir():
    if not os.path.isdir(REAL_PCAPS):
        pytest.skip("../shared/pcaps/real is not present beside the checkout")
    return REAL_PCAPS


@pytest.fixture(params=["compiled", "python"])
def io_backend(request, monkeypatch):
    """Run a capture I/O test with the compiled record scanners and builder (``hyperplane._core``,
    ext/scan.pxi) and again with their pure-Python twins."""
    import hyperplane.io.capture as capture_module
    import hyperplane.io.writer as writer_module

    if request.param == "python":
        monkeypatch.setattr(capture_module, "_native", None)
        monkeypatch.setattr(writer_module, "_native", None)
    elif capture_module._native is None or writer_module._native is None:
        pytest.skip("hyperplane._core has no record scanner (the extension is not built)")
    return request.param
