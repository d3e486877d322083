"""``hyperplane replay`` on the bundled demo with every flag of DESIGN §4: the exit status, the
summary, drops, flow-log and tap files as users and their tools read them, and the errors."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest

from e2e_support import DEMO, ROOT, assert_one_clear_line, cli, cli_subprocess
from hyperplane.codes import DROP_REASON_LABELS
from hyperplane.flowlogs import V2_FIELDS, read_flow_logs
from hyperplane.io import CaptureTruncatedWarning, open_capture

SUMMARY_KEYS = {"packets", "forwarded", "dropped", "drops", "connections", "enis", "nat_gateways",
                "capture_truncated"}
ENI_KEYS = {"id", "subnet_id", "security_group_ids", "private_ip", "functions", "peak_connections"}
NAT_KEYS = {"id", "public_ip", "peak_connections", "error_port_allocation"}


def read_jsonl(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def capture_packets(path: str) -> list[tuple[bytes, float, int]]:
    out = []
    with warnings.catch_warnings(), open_capture(path) as reader:
        warnings.simplefilter("ignore", CaptureTruncatedWarning)
        for batch in reader:
            for off, n, ts, lt in zip(batch.offsets.tolist(), batch.lengths.tolist(), batch.timestamps.tolist(),
                                      batch.linktypes.tolist()):
                out.append((batch.buffer[off:off + n], ts, lt))
    return out


# --- the demo, every flag ---------------------------------------------------------------------
def test_replay_exits_0_and_writes_every_output(demo_replay):
    assert demo_replay.run.exit_code == 0, demo_replay.run.stderr
    assert demo_replay.run.exception is None
    for name in ("lambda.pcap", "eni.pcap", "internet.pcap", "drops.jsonl", "flow-logs.log", "summary.json"):
        assert os.path.getsize(demo_replay.path(name)) > 0, name
    # the table printed at the end names the counts
    assert "1404" in demo_replay.run.stdout and "nacl-ingress" in demo_replay.run.stdout


def test_summary_has_exactly_the_documented_shape(demo_replay, demo_manifest):
    with open(demo_replay.path("summary.json")) as fh:
        summary = json.load(fh)
    expect = demo_manifest["expect"]
    assert set(summary) == SUMMARY_KEYS
    assert summary["packets"] == summary["forwarded"] + summary["dropped"]
    assert (summary["packets"], summary["forwarded"], summary["dropped"]) == (
        expect["packets"], expect["forwarded"], expect["dropped"])
    assert summary["drops"] == expect["drops"]
    assert sum(summary["drops"].values()) == summary["dropped"]
    assert set(summary["drops"]) <= set(DROP_REASON_LABELS)
    assert summary["capture_truncated"] is False
    assert isinstance(summary["connections"], int) and summary["connections"] > 0

    assert len(summary["enis"]) == expect["enis"]["total"]
    for eni in summary["enis"]:
        assert set(eni) == ENI_KEYS
        assert eni["id"].startswith("eni-") and eni["subnet_id"].startswith("subnet-")
        assert eni["security_group_ids"] and all(g.startswith("sg-") for g in eni["security_group_ids"])
        ipaddress.ip_address(eni["private_ip"])
        assert isinstance(eni["functions"], list) and eni["functions"]
        assert 0 <= eni["peak_connections"] <= demo_manifest["options"]["eni_capacity"]
    assert summary["enis"][0]["peak_connections"] == expect["enis"]["first_eni_peak_connections"]
    per_function = {}
    for eni in summary["enis"]:
        for fn in eni["functions"]:
            per_function[fn] = per_function.get(fn, 0) + 1
    assert per_function == expect["enis"]["by_function"]

    assert [n["id"] for n in summary["nat_gateways"]] == [n["id"] for n in expect["nat_gateways"]]
    for nat, want in zip(summary["nat_gateways"], expect["nat_gateways"]):
        assert set(nat) == NAT_KEYS
        assert nat["public_ip"] == want["public_ip"]
        assert nat["error_port_allocation"] == want["error_port_allocation"]
        assert nat["peak_connections"] >= 1  # orders-api and report-worker both went out through it


def test_drops_jsonl_matches_the_manifest(demo_replay, demo_manifest):
    drops = read_jsonl(demo_replay.path("drops.jsonl"))
    expected = {}
    for detail in demo_manifest["expect"]["drop_details"]:
        for index in detail["indices"]:
            expected[index] = {"index": index, "reason": detail["reason"], "component": detail["component"],
                               "rule": detail["rule"], "explanation_code": detail["explanation_code"]}
    assert all(set(d) == {"index", "reason", "component", "rule", "explanation_code"} for d in drops)
    assert {d["index"]: d for d in drops} == expected
    assert [d["index"] for d in drops] == sorted(expected)  # one line per drop, in capture order


def test_flow_logs_read_back_field_by_field(demo_replay, demo_manifest):
    path = demo_replay.path("flow-logs.log")
    with open(path) as fh:
        assert fh.readline().split() == list(V2_FIELDS)
    records = read_flow_logs(path)
    assert records
    with open(demo_replay.path("summary.json")) as fh:
        summary = json.load(fh)
    hyperplane_enis = {e["id"] for e in summary["enis"]}
    t0 = capture_packets(os.path.join(DEMO, demo_manifest["capture"]))[0][1]
    for r in records:
        assert list(r) == list(V2_FIELDS)
        assert r["version"] == 2
        assert r["account-id"] == "123456789012"
        assert r["interface-id"].startswith("eni-")
        ipaddress.ip_address(r["srcaddr"]), ipaddress.ip_address(r["dstaddr"])
        assert 0 <= r["srcport"] <= 65535 and 0 <= r["dstport"] <= 65535
        assert r["protocol"] in (6, 17)
        assert r["packets"] >= 1 and r["bytes"] >= 20 * r["packets"]
        assert int(t0) <= r["start"] <= r["end"] <= int(t0) + 60
        assert r["end"] // 60 == r["start"] // 60  # --flow-log-interval 60: one window per record
        assert r["action"] in ("ACCEPT", "REJECT")
        assert r["log-status"] == "OK"
    # the Hyperplane ENIs log their traffic; the NACL drops appear as REJECT on report-worker's ENI
    assert hyperplane_enis <= {r["interface-id"] for r in records}
    rejected = [r for r in records if r["action"] == "REJECT"]
    assert {(r["srcaddr"], r["srcport"]) for r in rejected} >= {("203.0.113.20", 443)}
    # DNS to the Amazon resolver is never flow-logged
    assert not [r for r in records if r["dstaddr"] == "10.0.0.2" or r["srcaddr"] == "10.0.0.2"]


def test_taps_are_raw_ip_pcaps_with_the_capture_timestamps(demo_replay, demo_manifest):
    source = capture_packets(os.path.join(DEMO, demo_manifest["capture"]))
    stamps = {round(ts, 6) for _, ts, _ in source}
    counts = {}
    for tap in ("lambda", "eni", "internet"):
        packets = capture_packets(demo_replay.path(f"{tap}.pcap"))
        counts[tap] = len(packets)
        assert packets, tap
        assert {lt for _, _, lt in packets} == {101}
        assert {round(ts, 6) for _, ts, _ in packets} <= stamps
        assert [ts for _, ts, _ in packets] == sorted(ts for _, ts, _ in packets)
        for data, _, _ in packets:
            assert data[0] >> 4 in (4, 6)
    summary = json.load(open(demo_replay.path("summary.json")))
    # the sandbox sees everything it sent plus the replies that got through
    assert counts["lambda"] == summary["packets"] - summary["drops"].get("nacl-ingress", 0)
    # only the NAT gateway's traffic crosses the internet gateway: fewer than on the ENI side
    assert 0 < counts["internet"] < counts["eni"]


def test_eni_tap_on_the_vpc_side_carries_eni_addresses(demo_replay):
    from hyperplane.packet import int_to_ip, parse

    summary = json.load(open(demo_replay.path("summary.json")))
    eni_ips = {e["private_ip"] for e in summary["enis"]}
    seen = set()
    for data, _, lt in capture_packets(demo_replay.path("eni.pcap")):
        p = parse(data, lt)
        assert p.ok
        seen |= {int_to_ip(p.src, p.version), int_to_ip(p.dst, p.version)}
    assert eni_ips <= seen
    assert not any(ip.startswith("169.254.7") for ip in seen)  # sandbox addresses never leave V2N


def test_pcapng_tap_carries_a_verdict_comment_per_packet(tmp_path, demo_args, demo_manifest, tshark):
    out = tmp_path / "eni.pcapng"
    run = cli("replay", *demo_args, "--tap", f"eni={out}", "--quiet")
    assert run.exit_code == 0, run.stderr
    comments = []
    for field in ("frame.comment", "pkt_comment"):  # the field's name before Wireshark 4.2 / after
        proc = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-e", field], capture_output=True, text=True)
        if proc.returncode == 0:
            comments = proc.stdout.splitlines()
            break
    assert len(comments) == demo_manifest["expect"]["packets"]
    expected = ["forwarded"] * len(comments)
    for detail in demo_manifest["expect"]["drop_details"]:
        rule = f" rule {detail['rule']}" if detail["rule"] is not None else ""
        for index in detail["indices"]:
            expected[index] = f"dropped {detail['reason']} by {detail['component']}{rule}"
    assert comments == expected


def test_replay_in_a_real_process_matches_the_in_process_run(tmp_path, demo_args, demo_replay):
    proc = cli_subprocess("replay", *demo_args, "--summary", tmp_path / "s.json", "--drops", tmp_path / "d.jsonl",
                          "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet, and no progress bar in a pipe
    assert "Traceback" not in proc.stderr
    assert json.load(open(tmp_path / "s.json")) == json.load(open(demo_replay.path("summary.json")))
    assert read_jsonl(tmp_path / "d.jsonl") == read_jsonl(demo_replay.path("drops.jsonl"))


def test_eni_capacity_and_port_range_change_the_outcome(tmp_path, demo_manifest):
    capture = os.path.join(DEMO, demo_manifest["capture"])
    base = [capture, "--vpc", os.path.join(DEMO, "vpc")] + sum((["--sandbox", s] for s in demo_manifest["sandboxes"]), [])
    run = cli("replay", *base, "--summary", tmp_path / "default.json", "-q")
    assert run.exit_code == 0, run.stderr
    default = json.load(open(tmp_path / "default.json"))
    assert len(default["enis"]) == 2  # 65,000 per ENI: no overflow ENI
    run = cli("replay", *base, "--eni-capacity", "20", "--port-range", "20000-20999", "--tcp-strict",
              "--flow-logs", tmp_path / "f.log", "--summary", tmp_path / "small.json", "-q")
    assert run.exit_code == 0, run.stderr
    small = json.load(open(tmp_path / "small.json"))
    orders = [e for e in small["enis"] if "orders-api" in e["functions"]]
    assert len(orders) == 5  # 81 concurrent connections at 20 per ENI
    assert max(e["peak_connections"] for e in small["enis"]) == 20
    eni_ips = {e["private_ip"] for e in small["enis"]}
    for r in read_flow_logs(tmp_path / "f.log"):
        if r["srcaddr"] in eni_ips and r["protocol"] == 6:
            assert 20000 <= r["srcport"] <= 20999


def test_reference_backend_gives_the_same_files(tmp_path, demo_args, demo_replay):
    run = cli("replay", *demo_args, "--backend", "reference", "--drops", tmp_path / "d.jsonl",
              "--flow-logs", tmp_path / "f.log", "--flow-log-interval", "60", "-q")
    assert run.exit_code == 0, run.stderr
    assert read_jsonl(tmp_path / "d.jsonl") == read_jsonl(demo_replay.path("drops.jsonl"))
    assert read_flow_logs(tmp_path / "f.log") == read_flow_logs(demo_replay.path("flow-logs.log"))


# --- truncated and unreadable captures ----------------------------------------------------------
def test_truncated_capture_replays_every_complete_record(tmp_path, demo_args, capinfos):
    from e2e_support import capinfos_count

    source = demo_args[0]
    cut = tmp_path / "cut.pcap"
    data = open(source, "rb").read()
    cut.write_bytes(data[:50_000])
    readable = capinfos_count(capinfos, str(cut))
    assert readable and readable < 1404
    run = cli("replay", cut, *demo_args[1:], "--summary", tmp_path / "s.json", "-q")
    assert run.exit_code == 0, run.stderr
    summary = json.load(open(tmp_path / "s.json"))
    assert summary["capture_truncated"] is True
    assert summary["packets"] == readable == summary["forwarded"] + summary["dropped"]
    warnings = [line for line in run.stderr.splitlines() if "truncated" in line]
    assert len(warnings) == 1, run.stderr
    # the warning names the file and the byte offset where the last complete record ends
    offset = 24 + sum(16 + len(p) for p, _, _ in capture_packets(str(cut)))
    assert str(cut) in warnings[0] and str(offset) in warnings[0]
    assert "Traceback" not in run.stderr and "warnings.warn" not in run.stderr and "for batch" not in run.stderr


@pytest.mark.parametrize("content", [b"hello, this is not a capture\n", b"", b"\xd4\xc3\xb2"])
def test_a_file_that_is_not_a_capture_exits_3(tmp_path, demo_args, content):
    bogus = tmp_path / "bogus.pcap"
    bogus.write_bytes(content)
    assert_one_clear_line(cli("replay", bogus, *demo_args[1:]), 3, str(bogus))


def test_not_a_capture_in_a_real_process(tmp_path):
    bogus = tmp_path / "notes.pcap"
    bogus.write_text("meeting notes\n")
    proc = cli_subprocess("replay", bogus, "--vpc", os.path.join(DEMO, "vpc"))
    assert_one_clear_line(proc, 3, str(bogus))


# --- usage errors: exit 2, one line, no traceback -------------------------------------------
def _capture():
    return os.path.join(DEMO, "capture.pcap")


@pytest.mark.parametrize("extra, fragments", [
    (["--sandbox", "orders-api"], ["--sandbox orders-api", "FUNCTION=CIDR"]),
    (["--sandbox", "orders-api=not-an-address"], ["--sandbox", "not-an-address"]),
    (["--sandbox", "orders-api=169.254.76.0/24@app-a"], ["app-a", "subnet"]),
    (["--port-range", "1024"], ["--port-range 1024", "LOW-HIGH"]),
    (["--port-range", "9000-80"], ["--port-range 9000-80"]),
    (["--port-range", "0-65536"], ["--port-range 0-65536"]),
    (["--tap", "wan=out.pcap"], ["--tap wan=out.pcap", "lambda, eni, internet"]),
    (["--tap", "eni"], ["--tap eni", "NAME=FILE"]),
    (["--flow-log-interval", "300"], ["300"]),
    (["--eni-capacity", "0"], ["--eni-capacity"]),
    (["--backend", "gpu"], ["gpu"]),
])
def test_bad_options_exit_2_with_one_line(extra, fragments):
    run = cli("replay", _capture(), "--vpc", os.path.join(DEMO, "vpc"), *extra)
    assert_one_clear_line(run, 2, *fragments)


def test_missing_vpc_file_exits_2(tmp_path):
    missing = tmp_path / "nowhere" / "vpc.json"
    assert_one_clear_line(cli("replay", _capture(), "--vpc", missing), 2, str(missing))


def test_missing_capture_is_a_capture_that_cannot_be_read(tmp_path):
    # DESIGN §4: 3 for a capture that cannot be read at all (a missing file included)
    missing = tmp_path / "nothing.pcap"
    assert_one_clear_line(cli("replay", missing, "--vpc", os.path.join(DEMO, "vpc")), 3, str(missing))


def test_broken_vpc_json_exits_2_naming_the_file(tmp_path):
    folder = tmp_path / "vpc"
    shutil.copytree(os.path.join(DEMO, "vpc"), folder)
    (folder / "subnets.json").write_text('{"Subnets": [ {"SubnetId": "subnet-1", ')
    assert_one_clear_line(cli("replay", _capture(), "--vpc", folder), 2, "subnets.json")


def test_invalid_vpc_field_exits_2_naming_the_field(tmp_path):
    folder = tmp_path / "vpc"
    shutil.copytree(os.path.join(DEMO, "vpc"), folder)
    subnets = json.load(open(folder / "subnets.json"))
    subnets["Subnets"][0]["CidrBlock"] = "10.0.0.0/33"
    (folder / "subnets.json").write_text(json.dumps(subnets))
    line = assert_one_clear_line(cli("replay", _capture(), "--vpc", folder), 2, "subnets.json")
    assert "CidrBlock" in line or "10.0.0.0/33" in line


def test_unwritable_output_exits_2(tmp_path):
    target = tmp_path / "no-such-dir" / "summary.json"
    run = cli("replay", _capture(), "--vpc", os.path.join(DEMO, "vpc"), "--summary", target, "-q")
    assert_one_clear_line(run, 2, "no-such-dir")


def test_usage_error_in_a_real_process():
    proc = cli_subprocess("replay", _capture(), "--vpc", os.path.join(DEMO, "vpc"), "--sandbox", "bad")
    assert_one_clear_line(proc, 2, "--sandbox bad")


@pytest.mark.parametrize("flags, fragments", [
    (["--tap", "eni={capture}"], ["--tap eni", "the capture"]),
    (["--tap", "eni={out}/a.pcap", "--flow-logs", "{out}/a.pcap"], ["--flow-logs", "--tap eni", "a.pcap"]),
    (["--summary", "{out}/s.json", "--drops", "{out}/./s.json"], ["--drops", "--summary"]),
])
def test_an_output_that_is_the_capture_or_another_output_exits_2(tmp_path, flags, fragments):
    # checked before anything is opened: the capture and the other output are left as they were
    capture = tmp_path / "capture.pcap"
    shutil.copy(_capture(), capture)
    before = capture.read_bytes()
    args = [f.format(capture=capture, out=tmp_path) for f in flags]
    assert_one_clear_line(cli("replay", capture, "--vpc", os.path.join(DEMO, "vpc"), *args), 2, *fragments)
    assert capture.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["capture.pcap"]


def test_a_second_replay_over_longer_old_outputs_writes_the_same_files(tmp_path, demo_args, demo_replay):
    # outputs are overwritten in place (hyperplane/io/output.py): what is left of the old contents
    # is cut off, so a rerun over bigger files gives exactly the files of a first run
    names = ("eni.pcap", "drops.jsonl", "flow-logs.log", "summary.json")
    for name in names:
        (tmp_path / name).write_bytes(b"\xff" * (os.path.getsize(demo_replay.path(name)) + 100_000))
    run = cli("replay", *demo_args, "--tap", f"eni={tmp_path}/eni.pcap", "--drops", f"{tmp_path}/drops.jsonl",
              "--flow-logs", f"{tmp_path}/flow-logs.log", "--flow-log-interval", "60",
              "--summary", f"{tmp_path}/summary.json", "--port-range", "1024-65535", "-q")
    assert run.exit_code == 0, run.stderr
    for name in names:
        with open(tmp_path / name, "rb") as got, open(demo_replay.path(name), "rb") as want:
            assert got.read() == want.read(), name


def _has_open(pid: int, path) -> bool:
    """Process ``pid`` holds ``path`` open (Linux's /proc)."""
    folder = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(os.path.join(folder, fd)) == str(path) for fd in os.listdir(folder))
    except OSError:  # a descriptor closed meanwhile
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
def test_sigterm_closes_the_outputs_cut_to_what_was_written(tmp_path):
    # The capture comes through a FIFO that the test keeps open after more than the reader's first
    # chunk, so the replay has opened its tap and is waiting for more when SIGTERM arrives: it
    # exits 143 without a traceback, its tap a whole pcap cut to what it wrote (none of the old
    # file's bytes left after it).
    from hyperplane.io import DEFAULT_CHUNK_SIZE

    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    tap = tmp_path / "eni.pcap"
    old_size = 4 * DEFAULT_CHUNK_SIZE
    tap.write_bytes(b"\xff" * old_size)
    with open(_capture(), "rb") as capture:
        demo = capture.read()
    copies = DEFAULT_CHUNK_SIZE // (len(demo) - 24) + 2
    records = demo[24:] * copies  # the demo's records, again and again
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "hyperplane", "replay", str(fifo), "--vpc",
                             os.path.join(DEMO, "vpc"), "--sandbox", "orders-api=169.254.76.0/24",
                             "--tap", f"eni={tap}", "-q"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "wb") as feed:
            feed.write(demo[:24] + records)
            feed.flush()
            deadline = time.monotonic() + 120
            while not _has_open(proc.pid, tap):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the replay never opened its tap"
                time.sleep(0.02)
            time.sleep(0.5)  # it reads and replays what it was given, then waits for more
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    size = os.path.getsize(tap)
    assert size < old_size
    with open(tap, "rb") as fh:
        assert not fh.read().endswith(b"\xff" * 64)
    with open_capture(str(tap)) as reader:  # the packets replayed before the signal, if any
        assert sum(len(batch) for batch in reader) <= copies * len(capture_packets(_capture()))
        assert not reader.truncated
