"""Connection tracking for the reference dataplane: the connection record and the table.

One :class:`Conn` per connection a sandbox opened, reachable under several keys (the dataplane
chooses them: typically the sandbox-side forward key, the sandbox-side reply key and the VPC-side
reply key), so every packet of the connection, in either direction and on either side of the
Hyperplane ENI, finds it with one dictionary lookup.

State rules:

- TCP follows :mod:`hyperplane.tcpstate` (netfilter's table). An ``IV`` cell is refused under
  ``strict`` and passed without a state change otherwise; ``IV`` and ``IG`` packets do not refresh
  the timer (Linux ``tcp_packet`` returns before ``nf_ct_refresh_acct`` for both). A SYN in
  TIME_WAIT or CLOSE reopens the connection on the same tuple (:attr:`Conn.generation` + 1).
- UDP has three states (:class:`UdpState`). AWS documents two timeouts (AWS-FACTS 2):
  ``UdpTimeout`` for "single direction or single request-response" flows and
  ``UdpStreamTimeout`` for "flows with >1 request-response". The exact rule used here: an
  *exchange* completes when a REPLY packet follows an ORIGINAL packet (the previous packet of the
  flow went the other way). No exchange yet: UNREPLIED; one exchange: REPLIED; two or more:
  STREAM, for good. UNREPLIED and REPLIED use ``udp``, STREAM uses ``udp_stream``. Several reply
  packets to one request (a fragmented DNS answer) are one exchange. Every UDP packet refreshes
  the timer.

Time: a connection is alive while ``now < expires``; :meth:`ConnTable.expire` returns those with
``expires <= now``. The table reads no clock and no RNG: times are passed in.

Observers: :attr:`ConnTable.listener` (None by default) is told of every :meth:`ConnTable.update`
(``listener.conn_updated(conn)``) and every removal (``listener.conn_removed(conn)``). The core
backend (``hyperplane/core.py``) uses it to keep its C flow table in step with this table. A
listener must not change the table: ``conn_removed`` is called from inside
:meth:`ConnTable.expire`.
"""
from __future__ import annotations

import enum
import math
from heapq import heappop, heappush
from typing import Hashable, Iterable, Iterator, Mapping

from hyperplane import limits, tcpstate
from hyperplane.limits import Timeout

PROTO_TCP = 6
PROTO_UDP = 17

ORIGINAL = tcpstate.Direction.ORIGINAL
REPLY = tcpstate.Direction.REPLY

_IV = tcpstate.IV
_IG = tcpstate.IG
_TRANSITIONS = tcpstate.TRANSITIONS
_FLAG_CLASS = tcpstate.FLAG_CLASS
_SYN_SENT, _TIME_WAIT, _CLOSE = tcpstate.sSS, tcpstate.sTW, tcpstate.sCL
_NONE = tcpstate.TcpState.NONE


class UdpState(enum.IntEnum):
    """UDP pseudo-states (see the module docstring for the rule)."""

    UNREPLIED = 0
    REPLIED = 1
    STREAM = 2


class ConntrackFull(Exception):
    """:meth:`ConnTable.add` on a table holding ``max_connections`` (``conntrack-full``)."""


class Conn:
    """One tracked connection. Addresses and ports are ints.

    ``lambda_tuple`` = (sandbox_ip, sandbox_port, dst_ip, dst_port) as the sandbox sees it;
    ``eni_tuple`` = (eni_ip, eni_port, dst_ip, dst_port) after V2N on the VPC side;
    ``nat`` = (nat_gateway_id, public_ip, public_port) when the flow crosses a NAT gateway, with
    ``nat_last_seen`` for its 350 s idle timeout. ``path`` is free for the dataplane's cached
    decisions (route, destination, SG result); the table never reads it.
    """

    __slots__ = (
        "proto", "version", "function", "eni_id", "state", "created", "last_seen", "expires",
        "lambda_tuple", "eni_tuple", "nat", "nat_last_seen", "dest_interface_id", "untracked",
        "replied", "packets_orig", "packets_reply", "bytes_orig", "bytes_reply", "flags_orig",
        "flags_reply", "exchanges", "generation", "path",
        "_last_dir", "_keys", "_queued",
    )

    def __init__(self, proto: int, version: int, function: str, eni_id: str, state: int,
                 lambda_tuple: tuple[int, int, int, int], eni_tuple: tuple[int, int, int, int],
                 now: float, nbytes: int = 0, tcp_flags: int = 0):
        """A connection opened by one ORIGINAL packet of ``nbytes`` (counted here) at ``now``.
        ``state`` is the TCP pickup state (:func:`hyperplane.tcpstate.pickup_state`) or
        ``UdpState.UNREPLIED``; see :meth:`ConnTable.initial_state`."""
        self.proto = proto
        self.version = version
        self.function = function
        self.eni_id = eni_id
        self.state = state
        self.created = now
        self.last_seen = now
        self.expires = now
        self.lambda_tuple = lambda_tuple
        self.eni_tuple = eni_tuple
        self.nat = None
        self.nat_last_seen = now
        self.dest_interface_id = None
        self.untracked = False
        self.replied = False
        self.packets_orig = 1
        self.packets_reply = 0
        self.bytes_orig = nbytes
        self.bytes_reply = 0
        self.flags_orig = tcp_flags
        self.flags_reply = 0
        self.exchanges = 0
        self.generation = 0
        self.path = None
        self._last_dir = ORIGINAL
        self._keys: tuple = ()
        self._queued = None  # time of this connection's live timer entry, None when not queued

    @property
    def alive(self) -> bool:
        """True while the connection is in a table."""
        return bool(self._keys)

    @property
    def keys(self) -> tuple:
        return self._keys

    def state_name(self) -> str:
        """``ESTABLISHED``, ``UNREPLIED``, ... for reports."""
        if self.proto == PROTO_TCP:
            return tcpstate.TcpState(self.state).name
        return UdpState(self.state).name

    def nat_idle(self, now: float, idle_timeout: float = limits.NAT_IDLE_TIMEOUT) -> bool:
        """True when the NAT gateway has forgotten this flow: no packet for ``idle_timeout``
        seconds (AWS-FACTS 5: 350 s, then a RST to the source side)."""
        return self.nat is not None and now - self.nat_last_seen >= idle_timeout

    def __repr__(self) -> str:
        return (f"Conn(proto={self.proto}, {self.function}, {self.eni_id}, {self.state_name()}, "
                f"lambda={self.lambda_tuple}, eni={self.eni_tuple}, expires={self.expires})")


def _timeout_table(timeouts: Mapping) -> dict[Timeout, float]:
    table = {}
    for key, value in timeouts.items():
        table[Timeout(key)] = float(value)
    missing = [k.value for k in Timeout if k not in table]
    if missing:
        raise ValueError(f"timeout table lacks {', '.join(missing)}")
    return table


class ConnTable:
    """The connections of one dataplane, their keys and their timers.

    Expiry uses timer entries with lazy invalidation: each connection has at most one *live*
    entry, at the time it was queued (``_queued``). Refreshing a timer to a later time queues
    nothing; when that entry comes due, the connection is re-queued at its current ``expires``. A
    timer moved *earlier* (ESTABLISHED -> CLOSE) queues a new entry and the old one becomes stale.
    Entries come due in time order, ties in the order they were queued (a stale entry keeps its
    place: one at the same time as the live entry stands for it).

    The entries are kept per time: ``_timers`` maps a time to the connections queued for it, in
    queue order, and ``_times`` is a heap of those times (each once). It gives the order of a heap
    of ``(time, sequence number, conn)``, but the heap compares floats only and holds one item per
    distinct time. So :meth:`expire` costs O(1) when nothing is due and O(log n) per time popped.
    """

    __slots__ = ("_by_key", "_conns", "_timers", "_times", "_tcp_timeout", "_udp_timeout",
                 "max_connections", "peak", "listener")

    def __init__(self, timeouts: Mapping = limits.TIMEOUTS, max_connections: int | None = None):
        table = _timeout_table(timeouts)
        self._tcp_timeout = tuple(0.0 if k is None else table[k] for k in tcpstate.TIMEOUT_KEYS)
        self._udp_timeout = (table[Timeout.UDP], table[Timeout.UDP], table[Timeout.UDP_STREAM])
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._by_key: dict[Hashable, Conn] = {}
        self._conns: dict[Conn, None] = {}  # insertion-ordered set: deterministic iteration
        self._timers: dict[float, list[Conn]] = {}  # time -> connections queued for it, in order
        self._times: list[float] = []  # heap of the times of _timers, each once
        self.peak = 0
        #: told of updates and removals (see the module docstring); None: nobody listens
        self.listener = None

    # --- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def get(self, key: Hashable) -> Conn | None:
        return self._by_key.get(key)

    @property
    def full(self) -> bool:
        """True when ``max_connections`` connections are tracked (new ones: ``conntrack-full``)."""
        return self.max_connections is not None and len(self._conns) >= self.max_connections

    def timeout_of(self, conn: Conn) -> float:
        """The idle timeout of the connection's current state, from the timeout table."""
        if conn.proto == PROTO_TCP:
            return self._tcp_timeout[conn.state]
        return self._udp_timeout[conn.state]

    @staticmethod
    def initial_state(proto: int, tcp_flags: int = 0, strict: bool = False) -> int | None:
        """The state a new connection opened by this ORIGINAL packet starts in, or ``None`` when
        the packet cannot open one (TCP only: see :func:`hyperplane.tcpstate.pickup_state`)."""
        if proto == PROTO_TCP:
            return tcpstate.pickup_state(tcp_flags, strict)
        if proto == PROTO_UDP:
            return UdpState.UNREPLIED
        raise ValueError(f"protocol {proto} is not tracked (TCP and UDP only)")

    # --- changes -----------------------------------------------------------------------------
    def add(self, conn: Conn, keys: Iterable[Hashable]) -> None:
        """Track ``conn`` under every key of ``keys`` and start its timer from its state.

        Raises :class:`ConntrackFull` when the table is full and ``ValueError`` when a key is
        already taken (two live connections may never share a tuple) or the connection is
        already tracked; nothing is changed then."""
        if conn._keys:
            raise ValueError("connection is already tracked")
        proto = conn.proto
        if proto != PROTO_TCP and proto != PROTO_UDP:
            raise ValueError(f"protocol {proto} is not tracked (TCP and UDP only)")
        if proto == PROTO_TCP and conn.state == _NONE:
            raise ValueError("a TCP connection cannot be stored in state NONE")
        if self.full:
            raise ConntrackFull(f"{self.max_connections} connections tracked")
        keys = keys if type(keys) is tuple else tuple(keys)
        if not keys:
            raise ValueError("a connection needs at least one key")
        # Claim every key with one lookup each (no key of an untracked connection maps to it, so
        # finding ``conn`` means this call claimed it); a taken key gives the claimed ones back.
        by_key = self._by_key
        before = len(by_key)
        claim = by_key.setdefault
        for key in keys:
            owner = claim(key, conn)
            if owner is not conn:
                for claimed in keys[: keys.index(key)]:
                    by_key.pop(claimed, None)
                raise ValueError(f"key {key!r} already belongs to {owner!r}")
        if len(by_key) - before != len(keys):  # a key given twice is kept once
            keys = tuple(dict.fromkeys(keys))
        conn._keys = keys
        conns = self._conns
        conns[conn] = None
        if len(conns) > self.peak:
            self.peak = len(conns)
        conn.expires = conn.last_seen + self.timeout_of(conn)
        self._queue(conn, conn.expires)

    def remove(self, conn: Conn) -> None:
        """Forget ``conn`` and all its keys (its timer entry goes stale). No-op if not tracked."""
        if not conn._keys or conn not in self._conns:
            return
        by_key = self._by_key
        for key in conn._keys:
            del by_key[key]  # every key of a tracked connection is its own (add refuses a taken key)
        del self._conns[conn]
        conn._keys = ()
        conn._queued = None
        if self.listener is not None:
            self.listener.conn_removed(conn)

    def update(self, conn: Conn, direction: int, tcp_flags: int, now: float,
               strict: bool = False, nbytes: int = 0) -> tuple[bool, int]:
        """Apply one packet of ``conn`` (``direction`` ORIGINAL or REPLY) at ``now``.

        Returns ``(accepted, new_state)``. ``accepted`` is False only for a TCP ``IV`` packet
        under ``strict``; such a packet changes nothing. Accepted packets are counted (packets,
        bytes, OR of TCP flags per direction) and set ``replied`` when they are replies; the
        timer is refreshed from the new state except for ``IV`` / ``IG`` TCP packets.
        """
        outcome = self._update(conn, direction, tcp_flags, now, strict, nbytes)
        if self.listener is not None:
            self.listener.conn_updated(conn)
        return outcome

    def _update(self, conn: Conn, direction: int, tcp_flags: int, now: float, strict: bool,
                nbytes: int) -> tuple[bool, int]:
        if conn.proto == PROTO_TCP:
            old = conn.state
            new = _TRANSITIONS[direction][_FLAG_CLASS[tcp_flags & 0xFF]][old]
            if new == _IV:
                if strict:
                    return False, old
                self._count(conn, direction, tcp_flags, nbytes, now)
                return True, old
            if new == _IG:
                self._count(conn, direction, tcp_flags, nbytes, now)
                return True, old
            if new == _SYN_SENT and (old == _TIME_WAIT or old == _CLOSE):
                self._reopen(conn, now)
            conn.state = new
            self._count(conn, direction, tcp_flags, nbytes, now)
            self._refresh(conn, now)
            return True, new
        # UDP
        if direction == REPLY and conn._last_dir == ORIGINAL:
            conn.exchanges += 1
            if conn.state != UdpState.STREAM:
                conn.state = UdpState.REPLIED if conn.exchanges == 1 else UdpState.STREAM
        conn._last_dir = direction
        self._count(conn, direction, tcp_flags, nbytes, now)
        self._refresh(conn, now)
        return True, conn.state

    def expire(self, now: float) -> list[Conn]:
        """Remove and return every connection whose timer ran out (``expires <= now``), in
        expiry order (ties: the order they were queued). The caller frees their ports and ENI
        slots."""
        times, timers = self._times, self._timers
        expired = []
        while times and times[0] <= now:
            when = heappop(times)
            for conn in timers.pop(when):
                if conn._queued != when or not conn._keys:
                    continue  # stale: removed, or re-queued at an earlier time
                if conn.expires > now:
                    self._queue(conn, conn.expires)  # refreshed since it was queued
                    continue
                self.remove(conn)
                expired.append(conn)
        return expired

    def next_timer(self) -> float:
        """The earliest time a timer is queued for (``inf`` when none): :meth:`expire` finds
        nothing before it."""
        times = self._times
        return times[0] if times else math.inf

    def reschedule(self, conn: Conn) -> None:
        """``conn.expires`` was set from outside :meth:`update` (the core's fast path folding its
        state back): queue it when that is earlier than its live timer entry, as a refresh would."""
        if conn._keys and (conn._queued is None or conn.expires < conn._queued):
            self._queue(conn, conn.expires)

    # --- internals ---------------------------------------------------------------------------
    def _queue(self, conn: Conn, when: float) -> None:
        """A new entry for ``conn`` at ``when``, after every entry already queued for that time."""
        conn._queued = when
        queued = self._timers.setdefault(when, [])
        if not queued:  # a time with no entry yet
            heappush(self._times, when)
        queued.append(conn)

    def _refresh(self, conn: Conn, now: float) -> None:
        expires = now + self.timeout_of(conn)
        conn.expires = expires
        if conn._keys and (conn._queued is None or expires < conn._queued):
            self._queue(conn, expires)

    @staticmethod
    def _count(conn: Conn, direction: int, tcp_flags: int, nbytes: int, now: float) -> None:
        conn.last_seen = now
        if direction == ORIGINAL:
            conn.packets_orig += 1
            conn.bytes_orig += nbytes
            conn.flags_orig |= tcp_flags
        else:
            conn.packets_reply += 1
            conn.bytes_reply += nbytes
            conn.flags_reply |= tcp_flags
            conn.replied = True

    @staticmethod
    def _reopen(conn: Conn, now: float) -> None:
        """A SYN on a TIME_WAIT / CLOSE connection: a new connection on the same tuple (RFC 1122
        4.2.2.13; Linux kills the old entry and creates a new one). Keys, ports and NAT mapping
        are kept; history and counters start over; the packet is counted by the caller."""
        conn.generation += 1
        conn.created = now
        conn.replied = False
        conn.packets_orig = conn.packets_reply = 0
        conn.bytes_orig = conn.bytes_reply = 0
        conn.flags_orig = conn.flags_reply = 0
        conn.exchanges = 0
        conn._last_dir = ORIGINAL
