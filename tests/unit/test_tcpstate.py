"""The TCP state table: every cell, the main paths written out independently, pickup, timeouts,
the numeric export and the generated documentation."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hyperplane import limits, tcpstate
from hyperplane.tcpstate import (
    ACK, CWR, ECE, FIN, IG, IV, PSH, RST, SYN, URG, Direction, FlagClass, TcpState,
    TRANSITIONS, flag_class, is_invalid, is_reopen, pickup_state, render_markdown,
    table_as_array, timeout_key, transition,
)

O, R = Direction.ORIGINAL, Direction.REPLY
S = TcpState

#: One representative flags byte per flag class (with noise bits that must not matter).
REPRESENTATIVE = {
    FlagClass.SYN: SYN | ECE | CWR,
    FlagClass.SYNACK: SYN | ACK,
    FlagClass.FIN: FIN | ACK | PSH,
    FlagClass.ACK: ACK | PSH | URG,
    FlagClass.RST: RST | ACK,
    FlagClass.NONE: PSH,
}

CELLS = [(d, c, s) for d in Direction for c in FlagClass for s in TcpState]


@pytest.mark.parametrize("direction,cls,state", CELLS,
                         ids=[f"{d.name}-{c.name}-{s.name}" for d, c, s in CELLS])
def test_every_cell_is_a_state_or_a_mark_and_reached_by_its_flags(direction, cls, state):
    cell = TRANSITIONS[direction][cls][state]
    assert cell in (IV, IG) or cell in set(TcpState)
    assert transition(direction, REPRESENTATIVE[cls], state) == cell
    assert is_invalid(direction, REPRESENTATIVE[cls], state) == (cell == IV)
    assert table_as_array()[direction, cls, state] == cell
    # No cell ever leads back to NONE: NONE only means "not tracked yet".
    assert cell != TcpState.NONE


def test_table_shape():
    assert len(TRANSITIONS) == 2
    for per_direction in TRANSITIONS:
        assert len(per_direction) == 6
        for row in per_direction:
            assert len(row) == len(TcpState) == 10
    array = table_as_array()
    assert array.dtype == np.uint8 and array.shape == (2, 6, 10)


@pytest.mark.parametrize("flags,expected", [
    (SYN, FlagClass.SYN), (SYN | ECE | CWR, FlagClass.SYN), (SYN | ACK, FlagClass.SYNACK),
    (FIN, FlagClass.FIN), (FIN | ACK, FlagClass.FIN), (FIN | PSH | ACK, FlagClass.FIN),
    (ACK, FlagClass.ACK), (PSH | ACK, FlagClass.ACK), (RST, FlagClass.RST),
    (RST | ACK, FlagClass.RST), (RST | SYN, FlagClass.RST), (SYN | FIN, FlagClass.SYN),
    (0, FlagClass.NONE), (PSH, FlagClass.NONE), (URG, FlagClass.NONE), (0x100 | ACK, FlagClass.ACK),
])
def test_flag_class_follows_netfilter_precedence(flags, expected):
    assert flag_class(flags) == expected


def walk(steps, start=S.NONE):
    """Apply (direction, flags) steps; IG keeps the state; IV fails the test."""
    state = start
    seen = []
    for direction, flags in steps:
        cell = transition(direction, flags, state)
        assert cell != IV, f"{direction.name} {flags:#x} invalid in {S(state).name}"
        if cell != IG:
            state = cell
        seen.append(S(state))
    return seen


def test_handshake_data_and_close_initiated_by_the_sandbox():
    assert walk([
        (O, SYN), (R, SYN | ACK), (O, ACK), (O, PSH | ACK), (R, ACK),
        (O, FIN | ACK), (R, ACK), (R, FIN | ACK), (O, ACK),
    ]) == [S.SYN_SENT, S.SYN_RECV, S.ESTABLISHED, S.ESTABLISHED, S.ESTABLISHED,
           S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK, S.TIME_WAIT]


def test_half_close_initiated_by_the_destination():
    assert walk([(R, FIN | ACK), (O, ACK), (O, PSH | ACK), (O, FIN | ACK), (R, ACK)],
                start=S.ESTABLISHED) == [S.FIN_WAIT, S.CLOSE_WAIT, S.CLOSE_WAIT, S.LAST_ACK, S.TIME_WAIT]


def test_simultaneous_close():
    assert walk([(O, FIN | ACK), (R, FIN | ACK), (O, ACK), (R, ACK)], start=S.ESTABLISHED) == [
        S.FIN_WAIT, S.LAST_ACK, S.TIME_WAIT, S.TIME_WAIT]


@pytest.mark.parametrize("direction", [O, R])
@pytest.mark.parametrize("state", [S.SYN_SENT, S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT,
                                   S.CLOSE_WAIT, S.LAST_ACK, S.TIME_WAIT, S.CLOSE, S.SYN_SENT2])
def test_rst_from_either_side_closes(direction, state):
    assert transition(direction, RST, state) == S.CLOSE
    assert transition(direction, RST | ACK, state) == S.CLOSE


def test_retransmitted_syn_and_synack():
    assert walk([(O, SYN), (O, SYN), (R, SYN | ACK), (R, SYN | ACK), (O, ACK)]) == [
        S.SYN_SENT, S.SYN_SENT, S.SYN_RECV, S.SYN_RECV, S.ESTABLISHED]
    assert transition(R, SYN | ACK, S.ESTABLISHED) == IG


@pytest.mark.parametrize("state", [S.TIME_WAIT, S.CLOSE])
def test_syn_from_the_sandbox_reopens_a_finished_connection(state):
    new = transition(O, SYN, state)
    assert new == S.SYN_SENT
    assert is_reopen(state, new)
    # The destination cannot reopen (V2N is one-way).
    assert transition(R, SYN, state) == IV


def test_is_reopen_only_for_finished_connections():
    assert not is_reopen(S.SYN_SENT, S.SYN_SENT)
    assert not is_reopen(S.NONE, S.SYN_SENT)
    assert not is_reopen(S.TIME_WAIT, S.TIME_WAIT)


@pytest.mark.parametrize("state", [S.NONE, S.SYN_SENT])
def test_synack_from_the_sandbox_is_invalid(state):
    assert is_invalid(O, SYN | ACK, state)


def test_simultaneous_open():
    assert walk([(O, SYN), (R, SYN), (O, SYN | ACK), (R, ACK), (O, ACK)]) == [
        S.SYN_SENT, S.SYN_SENT2, S.SYN_RECV, S.SYN_RECV, S.ESTABLISHED]


def test_ack_before_synack_is_invalid_and_flagless_packets_always_are():
    assert is_invalid(O, ACK, S.SYN_SENT)
    assert is_invalid(O, FIN, S.SYN_SENT)
    for state in TcpState:
        assert is_invalid(O, PSH, state) and is_invalid(R, 0, state)


def test_pickup_loose_and_strict():
    assert pickup_state(SYN) == S.SYN_SENT
    assert pickup_state(SYN, strict=True) == S.SYN_SENT
    assert pickup_state(ACK) == S.ESTABLISHED
    assert pickup_state(PSH | ACK) == S.ESTABLISHED
    assert pickup_state(ACK, strict=True) is None
    for flags in (RST, RST | ACK, FIN, FIN | ACK, SYN | ACK, 0, PSH):
        assert pickup_state(flags) is None, hex(flags)
        assert pickup_state(flags, strict=True) is None


def test_every_stored_state_has_a_timeout_from_the_one_table():
    expected = {  # written out: which table key governs which state
        S.SYN_SENT: "tcp_syn_sent", S.SYN_RECV: "tcp_syn_recv", S.ESTABLISHED: "tcp_established",
        S.FIN_WAIT: "tcp_fin_wait", S.CLOSE_WAIT: "tcp_close_wait", S.LAST_ACK: "tcp_last_ack",
        S.TIME_WAIT: "tcp_time_wait", S.CLOSE: "tcp_close", S.SYN_SENT2: "tcp_syn_sent",
    }
    for state, key in expected.items():
        assert timeout_key(state) == limits.Timeout(key)
        assert limits.TIMEOUTS[timeout_key(state)] > 0
    assert limits.TIMEOUTS[timeout_key(S.ESTABLISHED)] == 432_000
    with pytest.raises(ValueError):
        timeout_key(S.NONE)


def test_flag_class_array_matches():
    array = tcpstate.flag_class_array()
    assert array.shape == (256,)
    assert all(array[f] == flag_class(f) for f in range(256))


def test_render_markdown_lists_every_row():
    text = render_markdown()
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 12
    assert "| ORIGINAL | SYN | SYN_SENT | SYN_SENT | IG |" in text
    assert "| REPLY | SYNACK | IV | SYN_RECV |" in text


def test_docs_embed_the_generated_table():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "conntrack.md")
    with open(path, encoding="utf-8") as fh:
        doc = fh.read()
    assert render_markdown() in doc, "docs/conntrack.md is out of date: paste tcpstate.render_markdown()"


def test_docs_list_the_timeouts_of_the_one_table():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "conntrack.md")
    with open(path, encoding="utf-8") as fh:
        doc = fh.read()
    for key, value in limits.TIMEOUTS.items():
        assert f"| {key.value} | {value:g} |" in doc
