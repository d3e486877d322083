"""Parallel replay (hyperplane.parallel): sharding, resource splits, and the same verdicts as one worker."""
from __future__ import annotations

import ipaddress
import json
import os

import numpy as np
import pytest
import yaml

from hyperplane.engine import Sandbox
from hyperplane.parallel import Sharder, merge_summaries, port_slices, run_parallel_replay, shares
from hyperplane.replay import ReplayConfig
from hyperplane.vpc.loader import load_vpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "pcaps", "demo")
REAL = os.path.join(os.path.dirname(ROOT), "shared", "pcaps", "real")
REAL_CAPTURES = [
    "tcp-http-get-fin.pcap", "tcp-smtp-fin.pcap", "tcp-syn-flood-200.pcap", "tcplong-mixed-many-protocols.pcap",
    "udp-dns.pcap", "udp-sip-rtp-rtcp.pcap", "frag-ipv4-udp-nfs.pcap", "sll-mixed-tcp-udp.pcap",
    "ipv6-tcp-ftp.pcap", "pcapng-multi-if-dns.pcapng", "malformed-ipv4-frag-garbage.pcap",
    "trunc-snaplen-tcp-stream.pcap",
]


# ------------------------------------------------------------------------------------ splits


def test_port_slices_are_disjoint_and_cover_the_range():
    slices = port_slices((1024, 65535), 3)
    assert slices[0][0] == 1024 and slices[-1][1] == 65535
    for (lo_a, hi_a), (lo_b, _) in zip(slices, slices[1:]):
        assert lo_a <= hi_a and hi_a + 1 == lo_b
    assert port_slices((10, 10), 1) == [(10, 10)]
    with pytest.raises(ValueError):
        port_slices((10, 11), 3)


def test_shares_add_up_and_refuse_empty_shares():
    assert shares(50, 2) == [25, 25]
    assert shares(51, 2) == [26, 25]
    assert sum(shares(65000, 7)) == 65000
    with pytest.raises(ValueError):
        shares(1, 2)


# ------------------------------------------------------------------------------------ the hash


def _ipv4_tcp(src: str, sport: int, dst: str, dport: int) -> bytes:
    header = bytearray(20)
    header[0], header[3], header[8], header[9] = 0x45, 40, 64, 6
    header[12:16] = ipaddress.IPv4Address(src).packed
    header[16:20] = ipaddress.IPv4Address(dst).packed
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + bytes([0x50, 0x02]) + bytes(6)
    return bytes(header) + tcp


def _assign(sharder: Sharder, frames: list[bytes]) -> list[int]:
    buffer = b"".join(frames)
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    return sharder.assign(buffer, offsets, lengths, np.full(len(frames), 101, dtype=np.int64)).tolist()


def test_both_sandbox_side_directions_land_on_one_worker():
    sharder = Sharder(4, [Sandbox.parse("f=169.254.76.0/24")], (1024, 65535))
    out, back = [], []
    for k in range(200):
        out.append(_ipv4_tcp("169.254.76.10", 30000 + k, "10.0.3.10", 5432))
        back.append(_ipv4_tcp("10.0.3.10", 5432, "169.254.76.10", 30000 + k))
    a, b = _assign(sharder, out), _assign(sharder, back)
    assert a == b
    assert len(set(a)) == 4  # the flows spread over every worker


def test_vpc_side_packets_go_to_the_owner_of_the_destination_port():
    slices = port_slices((1024, 65535), 2)
    sharder = Sharder(2, [Sandbox.parse("f=169.254.76.0/24")], (1024, 65535))
    ports = [1024, slices[0][1], slices[1][0], 65535, 40000]
    got = _assign(sharder, [_ipv4_tcp("10.0.3.10", 5432, "10.0.1.4", p) for p in ports])
    assert got == [next(k for k, (lo, hi) in enumerate(slices) if lo <= p <= hi) for p in ports]


def test_malformed_frames_go_to_worker_zero():
    sharder = Sharder(3, [Sandbox.parse("f=169.254.76.0/24")])
    assert _assign(sharder, [b"\x45\x00", b"\x00" * 40]) == [0, 0]


def test_merge_summaries_adds_counts_and_peaks():
    eni = {"id": "eni-1", "subnet_id": "s", "security_group_ids": ["sg"], "private_ip": "10.0.0.4",
           "functions": ["a"], "peak_connections": 3}
    one = {"packets": 5, "forwarded": 4, "dropped": 1, "drops": {"sg-ingress": 1}, "connections": 2,
           "enis": [eni], "nat_gateways": [{"id": "nat-1", "public_ip": "x", "peak_connections": 1,
                                            "error_port_allocation": 0}]}
    two = {"packets": 3, "forwarded": 1, "dropped": 2, "drops": {"nacl-ingress": 2}, "connections": 1,
           "enis": [dict(eni, functions=["b"], peak_connections=2)],
           "nat_gateways": [{"id": "nat-1", "public_ip": "x", "peak_connections": 2, "error_port_allocation": 1}]}
    merged = merge_summaries([one, two])
    assert (merged["packets"], merged["forwarded"], merged["dropped"], merged["connections"]) == (8, 5, 3, 3)
    assert merged["drops"] == {"nacl-ingress": 2, "sg-ingress": 1}
    assert merged["enis"][0]["peak_connections"] == 5 and merged["enis"][0]["functions"] == ["a", "b"]
    assert merged["nat_gateways"][0]["peak_connections"] == 3
    assert merged["nat_gateways"][0]["error_port_allocation"] == 1


# ------------------------------------------------------------------------------------ replays


def _replay(tmp_path, name: str, workers: int, capture: str, model, sandboxes, **options) -> dict:
    out = tmp_path / f"{name}-{workers}"
    out.mkdir()
    cfg = ReplayConfig(capture=capture, model=model, sandboxes=sandboxes,
                       taps={"lambda": str(out / "lambda.pcap"), "eni": str(out / "eni.pcapng")},
                       drops_path=str(out / "drops.jsonl"), flow_logs_path=str(out / "flows.log"),
                       summary_path=str(out / "summary.json"), backend="reference", **options)
    summary = run_parallel_replay(cfg, workers)
    with open(out / "drops.jsonl") as fh:
        drops = [json.loads(line) for line in fh]
    with open(out / "flows.log") as fh:
        flows = fh.read().splitlines()
    with open(out / "summary.json") as fh:
        assert json.load(fh) == json.loads(json.dumps(summary))
    return {"summary": summary, "drops": drops, "flows": flows, "lambda": (out / "lambda.pcap").read_bytes(),
            "eni_size": os.path.getsize(out / "eni.pcapng")}


def _same_outcome(one: dict, two: dict) -> None:
    a, b = one["summary"], two["summary"]
    for key in ("packets", "forwarded", "dropped", "drops", "connections", "capture_truncated"):
        assert a[key] == b[key], key
    assert one["drops"] == two["drops"]  # every dropped packet: index, reason, component, rule, code
    assert one["lambda"] == two["lambda"]  # the sandbox's view does not depend on the ports chosen
    assert len(one["flows"]) == len(two["flows"])
    assert one["eni_size"] == two["eni_size"]  # same records and comments; only the ports differ


def test_demo_two_workers_same_verdicts_as_one(tmp_path):
    with open(os.path.join(DEMO, "demo.yaml")) as fh:
        manifest = yaml.safe_load(fh)
    model = load_vpc(os.path.join(DEMO, "vpc"))
    sandboxes = [Sandbox.parse(s) for s in manifest["sandboxes"]]
    capture = os.path.join(DEMO, manifest["capture"])
    capacity = manifest["options"]["eni_capacity"]
    one = _replay(tmp_path, "demo", 1, capture, model, sandboxes, eni_capacity=capacity)
    two = _replay(tmp_path, "demo", 2, capture, model, sandboxes, eni_capacity=capacity)
    _same_outcome(one, two)
    assert one["summary"]["packets"] == manifest["expect"]["packets"]
    # the first ENI is full in both runs (each shard fills its half of the capacity)
    assert two["summary"]["enis"][0]["peak_connections"] == manifest["expect"]["enis"]["first_eni_peak_connections"]
    assert len(two["summary"]["enis"]) == manifest["expect"]["enis"]["total"]
    # flow-log lines match once the ENI-side ports are set aside
    strip = lambda lines: sorted(" ".join(f for i, f in enumerate(l.split()) if i not in (5, 6)) for l in lines)
    assert strip(one["flows"]) == strip(two["flows"])


def test_the_tap_merge_in_small_steps_writes_the_same_files(tmp_path, monkeypatch):
    """The parent merges the workers' taps a chunk of capture packets at a time (its memory does
    not grow with the capture): chunks of 5 packets give the files one chunk gives, byte for byte."""
    import hyperplane.parallel as parallel

    with open(os.path.join(DEMO, "demo.yaml")) as fh:
        manifest = yaml.safe_load(fh)
    model = load_vpc(os.path.join(DEMO, "vpc"))
    sandboxes = [Sandbox.parse(spec) for spec in manifest["sandboxes"]]
    capture = os.path.join(DEMO, manifest["capture"])
    whole = _replay(tmp_path, "whole", 2, capture, model, sandboxes)
    monkeypatch.setattr(parallel, "MERGE_CHUNK", 5)
    steps = _replay(tmp_path, "steps", 2, capture, model, sandboxes)
    assert whole["lambda"] == steps["lambda"] and len(whole["lambda"]) > 24
    assert (tmp_path / "whole-2" / "eni.pcapng").read_bytes() == (tmp_path / "steps-2" / "eni.pcapng").read_bytes()
    assert whole["flows"] == steps["flows"] and whole["drops"] == steps["drops"]


def _client_address(path: str):
    """The source address of the capture's first IP packet: the 'sandbox' of the replay."""
    from hyperplane.io import open_capture
    from hyperplane.packet import parse

    with open_capture(path) as reader:
        for batch in reader:
            for off, length, lt in zip(batch.offsets.tolist(), batch.lengths.tolist(), batch.linktypes.tolist()):
                p = parse(batch.buffer[off:off + length], lt)
                if p.ok:
                    return ipaddress.ip_address(p.src)
    return None


@pytest.mark.parametrize("name", REAL_CAPTURES)
def test_real_capture_two_workers_same_verdicts_as_one(tmp_path, name):
    path = os.path.join(REAL, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not present")
    client = _client_address(path)
    if client is None:
        pytest.skip("no IP packet in the capture")
    model = load_vpc(os.path.join(DEMO, "vpc"))
    sandboxes = [Sandbox("orders-api", ipaddress.ip_network(client))]
    one = _replay(tmp_path, "real", 1, path, model, sandboxes)
    two = _replay(tmp_path, "real", 2, path, model, sandboxes)
    _same_outcome(one, two)


def test_replay_command_workers_option_gives_the_same_drops(tmp_path):
    """``hyperplane replay --workers 2`` on the demo: same drops file as one worker; a port range
    too small to split is a usage error (exit 2, one line)."""
    from click.testing import CliRunner

    from hyperplane.cli import main

    with open(os.path.join(DEMO, "demo.yaml")) as fh:
        manifest = yaml.safe_load(fh)
    args = [os.path.join(DEMO, manifest["capture"]), "--vpc", os.path.join(DEMO, manifest["vpc"]),
            "--eni-capacity", str(manifest["options"]["eni_capacity"]), "-q"]
    for spec in manifest["sandboxes"]:
        args += ["--sandbox", spec]
    drops = {}
    for workers in (1, 2):
        out = tmp_path / f"drops{workers}.jsonl"
        result = CliRunner().invoke(main, ["replay", *args, "--workers", str(workers), "--drops", str(out)])
        assert result.exit_code == 0, result.output
        drops[workers] = out.read_text()
    assert drops[1] == drops[2] and drops[1].count("\n") == manifest["expect"]["dropped"]
    bad = CliRunner().invoke(main, ["replay", *args, "--workers", "2", "--port-range", "1024-1024"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "fewer ports than the 2 workers" in bad.output
