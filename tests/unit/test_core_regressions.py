"""Regressions of the core backend against the reference, each a sequence that once differed."""
from __future__ import annotations

import os
import sys

import pytest

from hyperplane.engine import available_backends
from hyperplane.testing import engine_for, load_documents

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "property"))
import test_stateful as ts  # noqa: E402  (the configuration-change scenario of the state machine)

pytestmark = pytest.mark.skipif("core" not in available_backends(), reason="the core backend is not built")


def _results(backend: str) -> list[str]:
    """A connection, then a NACL change denying requests, then request/reply exchanges: the
    reply re-teaches the fast path under the new configuration; the request kind it learned
    before the change must not stay valid."""
    engine = engine_for(load_documents(ts.documents()), {"169.254.76.0/24": "fn"}, backend=backend)
    now = [ts.EPOCH]

    def send(data):
        now[0] += 1.0
        return engine.process(data, now[0])

    out_pkt = ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.PSH | ts.ACK, 2, 501, b"select 1")
    reply_pkt = ts.ip_packet(ts.SERVERS[0], ts.SANDBOX, ts.TCP, 5432, 41000, ts.PSH | ts.ACK, 501, 10, b"1")
    seen = [send(ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.SYN, 1))]
    seen.append(send(ts.ip_packet(ts.SERVERS[0], ts.SANDBOX, ts.TCP, 5432, 41000, ts.SYN | ts.ACK, 500, 2)))
    seen.append(send(ts.ip_packet(ts.SANDBOX, ts.SERVERS[0], ts.TCP, 41000, 5432, ts.ACK, 2, 501)))
    seen += [send(out_pkt), send(reply_pkt)]
    engine.update_config(load_documents(ts.documents(server_sg_open=True, deny_requests=True, deny_replies=False)))
    for _ in range(3):
        seen += [send(out_pkt), send(reply_pkt)]
    return [repr(r) for r in seen]


def test_a_configuration_change_voids_every_learned_key_kind_of_a_connection():
    core, reference = _results("core"), _results("reference")
    assert core == reference
    assert reference[-2].startswith("Result(dropped nacl-ingress")


def _timer_run(backend: str):
    """Flow A (one UDP exchange) expires at t + 30 s while flow B keeps talking every 5 s: B's
    packet past A's expiry is a horizon stop of the fast loop. Then A's tuple opens again."""
    import numpy as np

    engine = engine_for(load_documents(ts.documents()), {"169.254.76.0/24": "fn"}, backend=backend)
    frames, stamps = [], []

    def add(t, data):
        frames.append(data)
        stamps.append(ts.EPOCH + t)

    server = ts.SERVERS[0]
    add(0.0, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41000, 53, payload=b"a?"))
    add(0.1, ts.ip_packet(server, ts.SANDBOX, ts.UDP, 53, 41000, payload=b"a!"))
    for k in range(20):
        add(0.5 + 5 * k, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41001, 53, payload=b"b?"))
        add(0.6 + 5 * k, ts.ip_packet(server, ts.SANDBOX, ts.UDP, 53, 41001, payload=b"b!"))
    add(101.0, ts.ip_packet(ts.SANDBOX, server, ts.UDP, 41000, 53, payload=b"a again"))
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.int64)
    batch = engine.process_batch(b"".join(frames), offsets, lengths, np.array(stamps))
    taps = {t: [(i, bytes(d)) for i, d in batch.taps[t]] for t in batch.taps}
    return batch.verdicts.tolist(), batch.reasons.tolist(), taps, engine.summary(), engine


def test_a_timer_due_mid_batch_runs_without_a_slow_path_packet_and_changes_nothing():
    *core, engine = _timer_run("core")
    *reference, _ = _timer_run("reference")
    assert core == reference
    assert engine._impl.core_stats()["timer_runs"] >= 1
    summary = reference[3]
    assert summary["forwarded"] == summary["packets"] == 43
