"""hyperplane.bench: traffic generation, the runner's per-group baselines, the suite and the CLI.

Nothing here asserts on time: only on shapes, counts, correctness of generated packets and of the
table's bookkeeping."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hyperplane.bench import kernel, run_suite, scenario_names, world
from hyperplane.bench.runner import Measurement, Suite, group_baseline, table_rows
from hyperplane.packet import parse


def _checksum_ok(ip: bytes) -> bool:
    from hyperplane.checksum import checksum

    ihl = (ip[0] & 0x0F) * 4
    if checksum(ip[:ihl]) != 0:
        return False
    src, dst, proto = ip[12:16], ip[16:20], ip[9]
    l4 = ip[ihl:]
    pseudo = src + dst + bytes([0, proto]) + len(l4).to_bytes(2, "big")
    return checksum(pseudo + l4) == 0


def test_generated_packets_parse_and_carry_correct_checksums():
    flows = np.arange(300)
    for packets in (world.requests(flows), world.replies(flows),
                    world.build(np.full(5, world.SANDBOX_BASE + 1, dtype=np.uint32), world.INTERNET_BASE, 1234, 443,
                                proto=world.TCP, payload=3)):
        for frame in packets.frames():
            p = parse(frame)
            assert p.ok and p.version == 4
            assert _checksum_ok(frame)


def test_flows_are_distinct_and_deterministic():
    ids = np.arange(200_000)
    src, sport, dst, dport = world.flow_endpoints(ids)
    keys = set(zip(src.tolist(), sport.tolist(), dst.tolist(), dport.tolist()))
    assert len(keys) == len(ids)
    assert world.requests(ids[:50]).buffer == world.requests(ids[:50]).buffer


def test_the_bench_world_forwards_requests_and_replies_and_drops_telnet():
    engine = world.make_engine("reference")
    flows = np.arange(20)
    for packets in (world.requests(flows), world.replies(flows, start=world.EPOCH + 1)):
        for frame, ts in zip(packets.frames(), packets.timestamps.tolist()):
            assert engine.process(frame, ts).forwarded
    telnet = world.build(np.array([world.SANDBOX_BASE + 3], dtype=np.uint32), world.INTERNET_BASE + 1, 5555, 23)
    result = engine.process(telnet.frames()[0], world.EPOCH + 2)
    assert result.dropped and result.reason.label == "sg-egress"


def test_group_baselines_give_each_group_its_own_ratio():
    suite = Suite("t", machine={})

    def m(name, group, ns, baseline=False):
        return Measurement(name=name, group=group, unit="packets", items_per_sample=1000, samples_ns=[ns, ns, ns],
                           extra={"baseline": True} if baseline else {})

    suite.add(m("ours", "a", 1000, baseline=True))
    suite.add(m("other", "a", 4000))
    suite.add(m("ours", "b", 2000, baseline=True))
    suite.add(Measurement.skipped_because("kernel", "needs root", group="b", unit="packets"))
    assert group_baseline(suite, "a").name == "ours"
    rows = {(r["group"], r["name"]): r for r in table_rows(suite)}
    assert rows[("a", "ours")]["ratio"] == "1.00x"
    assert rows[("a", "other")]["ratio"] == "0.25x"
    assert rows[("b", "kernel")]["rate"] == "skipped" and rows[("b", "kernel")]["note"] == "needs root"


def test_run_suite_flowlogs_quick():
    suite, data = run_suite(quick=True, only=["flowlogs"], kernel=False)
    names = [m.name for m in suite.measurements]
    assert "hyperplane FlowLogAggregator.add" in names
    assert all(m.ok for m in suite.measurements)
    assert data["ours"] in ("core", "reference")
    assert data["peak_rss_bytes"] > 0
    with pytest.raises(ValueError):
        run_suite(quick=True, only=["no-such-scenario"], kernel=False)


def test_tcpreplay_output_is_read():
    text = "Actual: 300000 packets (18000000 bytes) sent in 5.03 seconds\nRated: 3571796.3 Bps"
    assert kernel._tcpreplay_seconds(text) == pytest.approx(5.03)
    assert kernel._tcpreplay_seconds("nothing") is None
    assert kernel.unavailable() is None or isinstance(kernel.unavailable(), str)


def _cli():
    from hyperplane.cli import main

    return main


def test_cli_rejects_an_unknown_scenario():
    result = CliRunner().invoke(_cli(), ["bench", "--only", "nope"])
    assert result.exit_code == 2
    assert "unknown scenario" in result.output
    assert set(scenario_names()) >= {"established", "new-connections", "mixed", "routes", "ports", "flowlogs",
                                     "replay"}


def test_cli_json_and_missing_matplotlib(monkeypatch, tmp_path):
    from hyperplane.bench import plots

    monkeypatch.setattr(plots, "matplotlib_missing", lambda: "matplotlib is not installed (test)")
    result = CliRunner().invoke(_cli(), ["bench", "--quick", "--only", "flowlogs", "--json", "--no-kernel",
                                         "--plot", str(tmp_path / "charts")])
    assert result.exit_code == 0, result.output
    body = result.stdout
    out = json.loads(body[body.index("{"):])
    assert out["charts"] == [] and "matplotlib" in out["charts_missing"]
    assert any(m["name"] == "hyperplane FlowLogAggregator.add" for m in out["measurements"])
    assert "no charts: matplotlib is not installed" in result.stderr


def test_charts_are_written_when_matplotlib_is_there(tmp_path):
    from hyperplane.bench import plots

    if plots.matplotlib_missing():
        pytest.skip("matplotlib is not installed")
    data = {"established": [{"flows": 1000, "rate": 5e5, "min": 4e5, "max": 6e5, "backend": "reference"},
                            {"flows": 10000, "rate": 4e5, "min": 3e5, "max": 5e5, "backend": "reference"}],
            "port_pool_timeline": {"capacity": 10, "points": [{"t": 0.0, "connections": {"eni-1": 3}},
                                                              {"t": 1.0, "connections": {"eni-1": 10, "eni-2": 2}}]},
            "scaling": {"workers": [1, 2], "rate": [1.0, 1.7], "min": [0.9, 1.5], "max": [1.1, 1.8]}}
    paths = plots.write_charts(data, str(tmp_path))
    assert len(paths) == 3
    for path in paths:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
