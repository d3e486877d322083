"""Runs the scenario table (``table.py``) on every available backend."""
from __future__ import annotations

import pytest

from result_checks import check_result
from hyperplane import packet as pk
from hyperplane.codes import DROP_REASON_LABELS, DropReason
from table import ANY, SCENARIOS

RULES = tuple(f"rule-{n}" for n in range(1, 12))


def _endpoint(data: bytes, side: str):
    p = pk.parse(data)
    assert p.ok, p.error
    return (p.src_ip, p.sport) if side == "src" else (p.dst_ip, p.dport)


def _match(expected, actual) -> bool:
    return expected is ANY or expected == actual


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(make_engine, scenario):
    engine = make_engine(scenario.build(), scenario.sandboxes, **scenario.options)
    for index, (packet, ts, expect) in enumerate(scenario.steps):
        result = engine.process(packet, ts)
        where = f"step {index}: {result!r}"
        check_result(result)
        if expect.reason is None:
            assert result.reason == DropReason.NONE, where
        else:
            assert result.reason == DropReason.from_label(expect.reason), where
            assert _match(expect.component, result.component), where
            assert _match(expect.rule, result.rule), where
        if expect.taps is not None:
            assert set(result.taps) == set(expect.taps), where
        for side, wanted in (("src", expect.src), ("dst", expect.dst)):
            for tap, (address, port) in wanted.items():
                got_address, got_port = _endpoint(result.taps[tap], side)
                assert got_address == address, f"{where}: {tap} {side}"
                if port is ANY and tap in ("eni", "internet"):
                    assert 1024 <= got_port <= 65535, f"{where}: {tap} {side} port"
                elif port is not ANY:
                    assert got_port == port, f"{where}: {tap} {side} port"
        if expect.emitted is not None:
            assert tuple(tap for tap, _ in result.emitted) == expect.emitted, where
    summary = engine.summary()
    assert summary["packets"] == summary["forwarded"] + summary["dropped"] == len(scenario.steps)


def test_every_drop_reason_and_rule_has_a_scenario():
    covered = {c for s in SCENARIOS for c in s.covers}
    reasons = {e.reason for s in SCENARIOS for _, _, e in s.steps if e.reason}
    assert set(DROP_REASON_LABELS) <= reasons, set(DROP_REASON_LABELS) - reasons
    assert set(DROP_REASON_LABELS) <= covered | reasons
    assert set(RULES) <= covered, set(RULES) - covered


def test_the_lambda_tap_of_a_reply_is_the_input_byte_for_byte(make_engine):
    from table import DB, SB, std, tcp

    engine = make_engine(std())
    engine.process(tcp(SB, DB, 40000, 5432), 1.0)
    reply = bytes(tcp(DB, SB, 5432, 40000, "SA", ack=1001, payload=b"hello"))
    result = engine.process(reply, 1.1)
    assert result.taps["lambda"] == reply
