"""Fixtures of the end-to-end tests: the bundled demo replayed with every flag, the scenario
capture, and the external tools (tshark, capinfos). Helpers are in e2e_support.py."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest
import yaml

from e2e_support import DEMO, Run, cli, scenario_packets, write_raw_capture


# --- the demo -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def demo_manifest() -> dict:
    with open(os.path.join(DEMO, "demo.yaml")) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="session")
def demo_args(demo_manifest) -> list[str]:
    """CAPTURE --vpc ... --sandbox ... --eni-capacity ... exactly as demo.yaml gives them."""
    args = [os.path.join(DEMO, demo_manifest["capture"]), "--vpc", os.path.join(DEMO, demo_manifest["vpc"])]
    for spec in demo_manifest["sandboxes"]:
        args += ["--sandbox", spec]
    args += ["--eni-capacity", str(demo_manifest["options"]["eni_capacity"])]
    return args


@dataclass
class DemoReplay:
    run: Run
    out: str

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)


@pytest.fixture(scope="session")
def demo_replay(tmp_path_factory, demo_args) -> DemoReplay:
    """The demo replayed once with every output flag of DESIGN §4."""
    out = str(tmp_path_factory.mktemp("demo-replay"))
    run = cli("replay", *demo_args,
              "--tap", f"lambda={out}/lambda.pcap", "--tap", f"eni={out}/eni.pcap",
              "--tap", f"internet={out}/internet.pcap",
              "--drops", f"{out}/drops.jsonl", "--flow-logs", f"{out}/flow-logs.log",
              "--flow-log-interval", "60", "--summary", f"{out}/summary.json",
              "--port-range", "1024-65535", "--backend", "auto")
    return DemoReplay(run, out)


@pytest.fixture(scope="session")
def scenario_capture(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("scenario") / "scenario.pcap")
    write_raw_capture(path, scenario_packets())
    return path


# --- tshark ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tshark() -> str:
    """The tshark binary; skipped when missing, except in CI (``CI`` set), where that fails."""
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is required in CI (apt-get install tshark)")
        pytest.skip("tshark is not installed")
    return path


@pytest.fixture(scope="session")
def capinfos() -> str:
    path = shutil.which("capinfos")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("capinfos is required in CI (apt-get install tshark)")
        pytest.skip("capinfos is not installed")
    return path
