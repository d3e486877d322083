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
