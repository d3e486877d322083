"""The TCP connection-tracking state machine, as data.

This is the one definition of how a tracked TCP connection moves between states; the pure-Python
reference dataplane reads :data:`TRANSITIONS` directly and the Cython core reads the same table
flattened by :func:`table_as_array`, so the two cannot disagree.

The model is Linux netfilter's (``net/netfilter/nf_conntrack_proto_tcp.c``, ``tcp_conntracks``,
AWS-FACTS 10): a table indexed by packet *direction* (ORIGINAL = sandbox -> destination, the side
that opened the connection; REPLY = destination -> sandbox), the packet's *flag class* (which of
SYN / SYN-ACK / FIN / ACK / RST / none it carries, in netfilter's precedence) and the connection's
current *state*. Each cell holds the new state, or one of two marks:

``IV`` (invalid)
    The packet makes no sense in this state (a SYN-ACK sent by the client, a FIN before the
    handshake, ...). The state does not change and the timer is not refreshed. Under
    ``tcp_strict`` the dataplane drops it as ``invalid-state``; otherwise (the default, like Linux
    with liberal pickup and an accept policy) it passes without changing the state.
    :func:`is_invalid` answers the question for one packet.
``IG`` (ignore)
    The packet may be valid or not (a retransmitted SYN-ACK, a late SYN): it passes, the state
    does not change and, as in Linux, the timer is not refreshed.

AWS documents no state machine for security-group connection tracking; Linux's is the reference
AWS-FACTS section 10 compares AWS's timeouts to, and AWS's documented TCP-established timeout
(432,000 s) equals Linux's. Sequence-number window tracking (Linux's ``tcp_in_window``) is not
modelled: the emulator sees captures, often partial, and judges packets by flags only.

Deviations from Linux: none in the table (it is the modern kernel's table cell for cell). The
one behavioural choice is :func:`pickup_state`: Linux's ``tcp_loose=1`` mid-stream pickup is the
default (captures often start mid-connection) and ``strict`` refuses it.
"""
from __future__ import annotations

import enum

from hyperplane.limits import Timeout


class TcpState(enum.IntEnum):
    """Conntrack TCP states (Linux names and numbering; ``SYN_SENT2`` is Linux's simultaneous-open
    state, formerly ``LISTEN``)."""

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9


class Mark(enum.IntEnum):
    """The two cell values that are not states (values chosen above every state, uint8-safe)."""

    IV = 0xFE  # invalid: no state change; dropped under tcp_strict, passed otherwise
    IG = 0xFF  # ignore: passed, no state change


class FlagClass(enum.IntEnum):
    """What a packet's flags mean to the state machine (netfilter's ``tcp_bit_set`` order)."""

    SYN = 0
    SYNACK = 1
    FIN = 2
    ACK = 3
    RST = 4
    NONE = 5


class Direction(enum.IntEnum):
    """ORIGINAL: sandbox -> destination (the opener); REPLY: destination -> sandbox."""

    ORIGINAL = 0
    REPLY = 1


# TCP header flag bits (RFC 9293).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

IV = Mark.IV
IG = Mark.IG
N_STATES = len(TcpState)
N_FLAG_CLASSES = len(FlagClass)


def _classify(flags: int) -> FlagClass:
    """netfilter's ``get_conntrack_index``: RST wins over everything, then SYN (SYN-ACK when ACK
    is also set), then FIN, then ACK; a packet with none of the four is class NONE. PSH, URG,
    ECE and CWR do not matter."""
    if flags & RST:
        return FlagClass.RST
    if flags & SYN:
        return FlagClass.SYNACK if flags & ACK else FlagClass.SYN
    if flags & FIN:
        return FlagClass.FIN
    if flags & ACK:
        return FlagClass.ACK
    return FlagClass.NONE


#: The flag class of every possible flags byte, precomputed (the per-packet lookup).
FLAG_CLASS: tuple[FlagClass, ...] = tuple(_classify(f) for f in range(256))


def flag_class(flags: int) -> FlagClass:
    """The :class:`FlagClass` of a TCP flags byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 ...)."""
    return FLAG_CLASS[flags & 0xFF]


# Short names for the table below, as in netfilter.
sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 = TcpState

# Each row lists the new state for the current states in TcpState order:
#   NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2
# NONE is the "no connection yet" column: it decides what a first packet may open (pickup_state).
# FIN_WAIT / CLOSE_WAIT / LAST_ACK are netfilter's, not RFC 793's: FIN_WAIT = a FIN seen (either
# side), CLOSE_WAIT = that FIN acknowledged, LAST_ACK = FINs seen from both sides.

_ORIGINAL_SYN = (
    sSS,  # NONE: a SYN from the sandbox opens a new connection.
    sSS,  # SYN_SENT: retransmitted SYN.
    IG,   # SYN_RECV: a SYN after the server answered: may be a retransmission crossing the SYN-ACK.
    IG,   # ESTABLISHED: in-window SYN on a live connection: the receiver answers with RST/ACK; let it.
    IG,   # FIN_WAIT: same as ESTABLISHED: the peer decides, we keep the state.
    IG,   # CLOSE_WAIT: same.
    IG,   # LAST_ACK: same.
    sSS,  # TIME_WAIT: the client reopens the connection on the same tuple (RFC 1122 4.2.2.13).
    sSS,  # CLOSE: a new connection reusing the tuple of a reset one.
    sS2,  # SYN_SENT2: late retransmitted SYN during a simultaneous open.
)
_ORIGINAL_SYNACK = (
    IV,   # NONE: a SYN-ACK from the sandbox answers nothing: V2N never carries inbound opens.
    IV,   # SYN_SENT: the client sent a SYN; it cannot also send the SYN-ACK.
    IG,   # SYN_RECV: SYN-ACK answering an ignored SYN of the other side; harmless, keep state.
    IG,   # ESTABLISHED: late or out-of-sync SYN-ACK; the peer resets it if it is wrong.
    IG,   # FIN_WAIT: same.
    IG,   # CLOSE_WAIT: same.
    IG,   # LAST_ACK: same.
    IG,   # TIME_WAIT: same.
    IG,   # CLOSE: same.
    sSR,  # SYN_SENT2: simultaneous open: the sandbox answers the destination's SYN.
)
_ORIGINAL_FIN = (
    IV,   # NONE: a FIN opens nothing (no pickup of a closing connection).
    IV,   # SYN_SENT: the client may not close before the SYN-ACK arrived.
    sFW,  # SYN_RECV: close started right after the handshake.
    sFW,  # ESTABLISHED: close started by the sandbox.
    sLA,  # FIN_WAIT: FINs now seen in both directions (or a retransmitted FIN): wait for the last ACK.
    sLA,  # CLOSE_WAIT: the other half closes too: wait for the last ACK.
    sLA,  # LAST_ACK: retransmitted FIN.
    sTW,  # TIME_WAIT: retransmitted FIN after the close; stay.
    sCL,  # CLOSE: FIN after a reset; stay closed.
    IV,   # SYN_SENT2: no FIN during a simultaneous open.
)
_ORIGINAL_ACK = (
    sES,  # NONE: mid-stream pickup: assume an established connection (refused under tcp_strict).
    IV,   # SYN_SENT: an ACK before any SYN-ACK was seen acknowledges nothing.
    sES,  # SYN_RECV: the third packet of the handshake: established.
    sES,  # ESTABLISHED: data / acknowledgements.
    sCW,  # FIN_WAIT: the FIN is acknowledged.
    sCW,  # CLOSE_WAIT: more data or ACKs on the half-open connection.
    sTW,  # LAST_ACK: the last ACK: the connection is closed.
    sTW,  # TIME_WAIT: retransmitted last ACK.
    sCL,  # CLOSE: stray ACK after a reset; stay closed.
    IV,   # SYN_SENT2: an ACK without a SYN-ACK during a simultaneous open.
)
_ORIGINAL_RST = (
    IV,   # NONE: a RST opens nothing.
    sCL,  # SYN_SENT: the client aborts its open.
    sCL,  # SYN_RECV: the client refuses the handshake.
    sCL,  # ESTABLISHED: the sandbox resets the connection.
    sCL,  # FIN_WAIT: reset during the close.
    sCL,  # CLOSE_WAIT: same.
    sCL,  # LAST_ACK: same.
    sCL,  # TIME_WAIT: same.
    sCL,  # CLOSE: repeated RST.
    sCL,  # SYN_SENT2: reset during a simultaneous open.
)
_REPLY_SYN = (
    IV,   # NONE: never reached: a reply always belongs to a connection.
    sS2,  # SYN_SENT: the destination sends its own SYN: simultaneous open.
    IV,   # SYN_RECV: the server already sent its SYN-ACK; a bare SYN is invalid.
    IV,   # ESTABLISHED: the server may not open on a live connection.
    IV,   # FIN_WAIT: same.
    IV,   # CLOSE_WAIT: same.
    IV,   # LAST_ACK: same.
    IV,   # TIME_WAIT: only the client reopens; V2N carries no opens from the VPC side either.
    IV,   # CLOSE: same.
    sS2,  # SYN_SENT2: retransmitted simultaneous SYN.
)
_REPLY_SYNACK = (
    IV,   # NONE: never reached.
    sSR,  # SYN_SENT: the standard answer to the sandbox's SYN.
    IG,   # SYN_RECV: retransmitted SYN-ACK.
    IG,   # ESTABLISHED: late retransmitted SYN-ACK.
    IG,   # FIN_WAIT: may answer a SYN we ignored; keep the state.
    IG,   # CLOSE_WAIT: same.
    IG,   # LAST_ACK: same.
    IG,   # TIME_WAIT: same.
    IG,   # CLOSE: same.
    sSR,  # SYN_SENT2: simultaneous open: the destination answers the sandbox's SYN.
)
_REPLY_FIN = (
    IV,   # NONE: never reached.
    IV,   # SYN_SENT: the server may not close before its SYN-ACK.
    sFW,  # SYN_RECV: close started by the server right after its SYN-ACK.
    sFW,  # ESTABLISHED: close started by the destination.
    sLA,  # FIN_WAIT: FINs seen in both directions: wait for the last ACK.
    sLA,  # CLOSE_WAIT: the other half closes too.
    sLA,  # LAST_ACK: retransmitted FIN.
    sTW,  # TIME_WAIT: retransmitted FIN; stay.
    sCL,  # CLOSE: FIN after a reset; stay closed.
    IV,   # SYN_SENT2: no FIN during a simultaneous open.
)
_REPLY_ACK = (
    IV,   # NONE: never reached.
    IG,   # SYN_SENT: an ACK answering a SYN (half-open connection on the server); let the peer sort it.
    sSR,  # SYN_RECV: may acknowledge a late retransmitted SYN; stay.
    sES,  # ESTABLISHED: data / acknowledgements.
    sCW,  # FIN_WAIT: the destination acknowledges the sandbox's FIN.
    sCW,  # CLOSE_WAIT: more data or ACKs on the half-open connection.
    sTW,  # LAST_ACK: the last ACK: closed.
    sTW,  # TIME_WAIT: retransmitted last ACK.
    sCL,  # CLOSE: stray ACK after a reset; stay closed.
    IG,   # SYN_SENT2: an ACK during a simultaneous open; let the peer sort it.
)
_REPLY_RST = (
    IV,   # NONE: never reached.
    sCL,  # SYN_SENT: connection refused (RST answering the SYN).
    sCL,  # SYN_RECV: the server aborts the handshake.
    sCL,  # ESTABLISHED: the destination resets the connection.
    sCL,  # FIN_WAIT: reset during the close.
    sCL,  # CLOSE_WAIT: same.
    sCL,  # LAST_ACK: same.
    sCL,  # TIME_WAIT: same.
    sCL,  # CLOSE: repeated RST.
    sCL,  # SYN_SENT2: reset during a simultaneous open.
)
# A packet with none of SYN, FIN, ACK, RST is never a valid TCP segment after the first SYN
# (RFC 9293: every segment after the SYN carries ACK), in any state and either direction.
_NO_FLAGS = (IV,) * N_STATES

#: ``TRANSITIONS[direction][flag_class][state]`` -> new :class:`TcpState`, ``IV`` or ``IG``.
TRANSITIONS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (_ORIGINAL_SYN, _ORIGINAL_SYNACK, _ORIGINAL_FIN, _ORIGINAL_ACK, _ORIGINAL_RST, _NO_FLAGS),
    (_REPLY_SYN, _REPLY_SYNACK, _REPLY_FIN, _REPLY_ACK, _REPLY_RST, _NO_FLAGS),
)


def transition(direction: int, flags: int, state: int) -> int:
    """The cell for one packet: the new state, ``IV`` or ``IG``."""
    return TRANSITIONS[direction][FLAG_CLASS[flags & 0xFF]][state]


def is_invalid(direction: int, flags: int, state: int) -> bool:
    """True when the packet is invalid in this state (the ``IV`` cell). The dataplane drops such a
    packet as ``invalid-state`` only under ``tcp_strict``; otherwise it passes it unchanged and
    the connection keeps its state (Linux with liberal pickup and an accept policy)."""
    return TRANSITIONS[direction][FLAG_CLASS[flags & 0xFF]][state] == IV


#: The NONE column of the ORIGINAL rows (what pickup_state reads), by flag class.
_PICKUP = tuple(row[TcpState.NONE] for row in TRANSITIONS[Direction.ORIGINAL])


def pickup_state(flags: int, strict: bool = False) -> TcpState | None:
    """The state a connection starts in when a sandbox packet with these flags matches no tracked
    connection, or ``None`` when it cannot start one (the dataplane: ``invalid-state``).

    Read from the table's NONE column in the ORIGINAL direction, as Linux's ``tcp_new`` does:

    - SYN -> SYN_SENT, in both modes;
    - an ACK-class packet (ACK, PSH-ACK: data) -> ESTABLISHED: mid-stream pickup, allowed by
      default because captures often start in the middle of a connection (Linux ``tcp_loose=1``),
      refused under ``strict``;
    - FIN, RST, SYN-ACK and flagless packets -> ``None`` in both modes (Linux: "invalid new"): a
      connection that is being torn down is not worth a port, and a RST or FIN answered by no
      one would only hold the tuple until its timer runs out.
    """
    new = _PICKUP[FLAG_CLASS[flags & 0xFF]]
    if new == sSS:
        return sSS
    if new == sES and not strict:
        return sES
    return None


def is_reopen(old_state: int, new_state: int) -> bool:
    """True when a transition starts a new connection on the tuple of a finished one (a SYN in
    TIME_WAIT or CLOSE): the dataplane treats it as a new connection (security groups are
    evaluated again; counters start over)."""
    return new_state == sSS and (old_state == sTW or old_state == sCL)


#: The timeout-table key of each state (index = state). NONE has none: nothing is stored in it.
TIMEOUT_KEYS: tuple[Timeout | None, ...] = (
    None,                     # NONE
    Timeout.TCP_SYN_SENT,     # SYN_SENT
    Timeout.TCP_SYN_RECV,     # SYN_RECV
    Timeout.TCP_ESTABLISHED,  # ESTABLISHED
    Timeout.TCP_FIN_WAIT,     # FIN_WAIT
    Timeout.TCP_CLOSE_WAIT,   # CLOSE_WAIT
    Timeout.TCP_LAST_ACK,     # LAST_ACK
    Timeout.TCP_TIME_WAIT,    # TIME_WAIT
    Timeout.TCP_CLOSE,        # CLOSE
    Timeout.TCP_SYN_SENT,     # SYN_SENT2: Linux gives it SYN_SENT's 120 s
)


def timeout_key(state: int) -> Timeout:
    """The :class:`hyperplane.limits.Timeout` key giving the idle timeout of a TCP state."""
    key = TIMEOUT_KEYS[state]
    if key is None:
        raise ValueError("a connection is never stored in state NONE; it has no timeout")
    return key


def table_as_array():
    """The table as a numpy ``uint8`` array of shape ``(2, 6, N_STATES)`` for the Cython core:
    ``a[direction, flag_class, state]``; ``IV`` is 254 and ``IG`` 255."""
    import numpy as np

    return np.array(TRANSITIONS, dtype=np.uint8)


def flag_class_array():
    """:data:`FLAG_CLASS` as a numpy ``uint8`` array of 256 entries (index = flags byte)."""
    import numpy as np

    return np.array(FLAG_CLASS, dtype=np.uint8)


def _cell_name(cell: int) -> str:
    return Mark(cell).name if cell in (IV, IG) else TcpState(cell).name


def render_markdown() -> str:
    """The transition table as Markdown (one row per direction and flag class, one column per
    current state). ``docs/conntrack.md`` embeds this exact text; a test keeps them equal."""
    header = "| direction | flags | " + " | ".join(s.name for s in TcpState) + " |"
    rule = "|---|---|" + "---|" * N_STATES
    lines = [header, rule]
    for direction in Direction:
        for cls in FlagClass:
            cells = " | ".join(_cell_name(c) for c in TRANSITIONS[direction][cls])
            lines.append(f"| {direction.name} | {cls.name} | {cells} |")
    return "\n".join(lines) + "\n"
