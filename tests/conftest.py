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
