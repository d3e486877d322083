"""The core backend: the reference dataplane as the slow path, a C flow table as the fast path.

VPP / Open vSwitch style split (DESIGN §6). :class:`CoreEngine` has the reference engine's API.

- **Slow path**: :class:`hyperplane.reference.dataplane.Dataplane`, unchanged but for the parts
  swapped for their C twins, which give the same results (proven by their tests): the port
  pools (``_core.PortPool`` / ``NatPortPool``), the packet parser (``_core.parse``), the
  per-connection rewrites (``_core.rewrite_make`` / ``rewrite_apply``) and the
  flow-log record store (``_core.FlowLogTable``, ``ext/hp_flowlog.h``: a record is an int id,
  ~80 bytes; FlowRecord objects are made only when records are read). It handles every
  packet the fast path cannot: new connections, unsolicited packets, malformed ones, drops,
  IPv6 (always: the C table keys IPv4 5-tuples only), fragments, NAT idle timeouts, TCP reopens,
  packets of a connection whose own timer ran out.
- **Planned opens**: a connection's first packet (a fast-loop ``miss``) to a destination already
  planned from the same ENI is opened from that plan without the slow path
  (:mod:`hyperplane.core_open`: the same ENI slot, ports and flow-log records as the reference's
  ``_open``), taught at once, and forwarded by the fast loop; anything else it declines to the
  slow path. The connection stays the C table's until Python needs it: its entry is *timed*
  (``FlowTable.set_timed``: the C table keeps its timer, the earlier of its expiry and its NAT
  idle deadline), and the slow path has no ``Path`` or conntrack entry for it. When its timer
  runs out (``FlowTable.take_due``, checked before every open and slow-path packet) it is
  released as the slow path releases an expired connection (``core_open.release``); before any
  slow-path packet, any read of the state but the flow logs, or when a NAT mapping of one went
  idle, every such connection is *adopted* in open order (``core_open.adopt``: the ``Path``,
  keys and timers ``_open`` gives it, from its current state), and the slow path owns it from
  then on. The conntrack table's peak counts them while unadopted. A planned open also arms a
  *template* (``_core.Opens``, ``ext/hp_open.h``): the fast loop's miss hook then opens the next
  first packets to that destination from that sandbox prefix and subnet itself, with the same
  ENI slot, ports, records, entry and timer, as long as the facts copied in before the run hold
  (``_push`` / ``_pull``: timers, clocks, ENI slot counts, conntrack count and peak; templates
  are dropped when the slow path's plans or the control plane's states change). Those connections are *C-opened*: their record ids
  and counted totals live in a C side record, an expired one is released in C, and adoption
  builds their ``Conn`` from the entry (``_adopt_opened``). A sandbox connection the slow path
  holds but did not teach gets a keyed, never-learned entry (``_block_untaught``), so the hook
  cannot open its tuple again.
- **Learning**: after the slow path forwarded a packet of a tracked IPv4 connection, the engine
  teaches the C table (``ext/hp_flow.h``) that connection's endpoints, state and timer, and for
  the packet's *key kind* (the sandbox's packet / a reply in the sandbox's view / a reply in VPC
  form) which taps it reaches and whether the internet form crosses the NAT gateway. Nothing is
  learned unless the C renderer reproduces the slow path's tap bytes exactly for that packet, and
  the flow-log calls it made are the plain per-packet kind (same bytes, flags, time). Learned
  facts hold for one configuration generation and one flow-log window; the next packet outside
  them goes to the slow path again and re-teaches. After the slow path opened a connection, its
  REPLY kind is taught *ahead* of the first reply, from the reply leg the slow path planned when it
  opened it (``path.back``; not when that leg is refused): the fast path forwards that first reply
  and reports it (``FlowTable.take_events``), and the engine makes its flow-log records from it
  (``_first_packets``), in packet order, before anything reads them.
- **Fast path**: ``FlowTable.run``, one nogil loop over the batch: parse, look up, state machine
  (the table of :func:`hyperplane.tcpstate.table_as_array`), timer from the same timeout table,
  counters, rewrites with incremental checksums into per-tap buffers. It stops at the first
  packet it cannot handle; that packet runs on the slow path and the loop resumes after it, so
  packets are handled in capture order.
- **Timers**: the slow path's timers (connection expiry, NAT idle, fragments) fire when its clock
  next moves: at its next packet, and before anything reads its state (summary, counters, flow
  logs, connections, explain, a configuration change: ``_catch_up``); not at the end of a batch,
  which would fold every connection the batch touched once more (3 folds per connection instead
  of 1 on the replay benchmark). The reference fires them in their own time order, so firing a
  stretch of them at once gives what firing them packet by packet would; and a packet of a
  connection whose own timer ran out (expired, or NAT mapping idle) stops the fast loop. So the
  fast loop never stops for another connection's timer.
- **State sync**: the C entry is the authority for what the fast path changes (state, timer,
  last seen, counters, UDP exchanges, flow-log counts). Before any Python code of the slow path
  runs (a punt, a report, a configuration change, explain) every entry the fast path changed is
  folded back into its :class:`~hyperplane.reference.conntrack.Conn` and flow-log records; after
  the slow path changed a connection its entry is reloaded; removing a connection removes its
  entry (``ConnTable.listener``).

Memory: the C side costs 80 bytes per entry plus 8-byte index slots (at most 3 per connection,
at most 3/4 full), grown by doubling; with timed entries 8 bytes more per entry (the time of its
heap item) and 12 bytes per heap item (one per timed entry, plus stale ones until they reach the
top); with planned opens a 96-byte side record per entry (C-opened connections: their records'
ids and counted totals); 80 bytes per flow-log record plus 8-byte index slots (at most half
full). The Python side keeps a ``Conn`` per connection the slow path or Python opened (and the
reference's ``Path`` and conntrack entry once adopted); a C-opened connection has none until
adopted.
``core_stats()`` reports the tables' sizes, the timed connections, the templates, why the fast
loop stopped and why its open hook declined.
"""
from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from typing import Optional
from time import perf_counter

import numpy as np

from hyperplane import _core, tcpstate
from hyperplane import packet as pk
from hyperplane.codes import DropReason, Verdict
from hyperplane.engine import TAPS, BatchResult, Result, gc_paused
from hyperplane.flowlogs import AWS_TCP_FLAGS, EXTRA_FIELDS, V2_FIELDS, FlowLogAggregator, format_records, joined_lines
from hyperplane.core_open import Opened, Opener, adopt, keyed, kind_flags, release
from hyperplane.limits import Timeout
from hyperplane.reference.conntrack import ORIGINAL, PROTO_UDP, REPLY, Conn
from hyperplane.reference.dataplane import K_OUT, K_REPLY, K_VPC, Dataplane

__all__ = ["CoreEngine", "TapOutput"]

_KIND_OUT, _KIND_REPLY, _KIND_VPC = _core.FLOW_KIND_OUT, _core.FLOW_KIND_REPLY, _core.FLOW_KIND_VPC
_DIRECTION = {_KIND_OUT: "outbound", _KIND_REPLY: "reply", _KIND_VPC: "reply"}


def _parse(data, linktype: int = pk.RAW) -> pk.Parsed:
    """The C parser's result as a Parsed: equal to hyperplane.packet.parse's (tests/unit/test_core_parse.py)."""
    return pk.Parsed(*_core.parse(data, linktype))


class _CRewrite:
    """The C twin of :class:`hyperplane.reference.dataplane.Rewrite` (same tuples, same bytes)."""

    make = staticmethod(_core.rewrite_make)
    apply = staticmethod(_core.rewrite_apply)


class _CoreFlowLog(FlowLogAggregator):
    """The slow path's flow-log aggregator in the core backend: the records live in C
    (``_core.FlowLogTable``: ~80 bytes a record, an int id for each; FlowRecord objects are made
    only for ``flush`` / ``pending``), and it notes the records each packet adds to, so the fast
    path can count later packets of the same connection into the same records."""

    __slots__ = ("table", "calls")

    def __init__(self, interval, account_id, fields):
        super().__init__(interval, account_id, fields)
        self.table = _core.FlowLogTable(self.interval, AWS_TCP_FLAGS, EXTRA_FIELDS)
        self.calls = None

    def __len__(self) -> int:
        return len(self.table)

    def add(self, eni_id, src, dst, sport, dport, proto, nbytes, ts, action, tcp_flags=0, **extra):
        return self.add_all(((eni_id, src, dst, sport, dport, action, extra or None),), proto, nbytes, ts, tcp_flags)[0]

    def add_all(self, logs, proto, nbytes, ts, tcp_flags=0):
        records = self.table.add_all(logs, proto, nbytes, ts, tcp_flags)
        if self.calls is not None:
            self.calls.append((records, nbytes, ts, tcp_flags))
        return records

    def record_all(self, logs, proto, ts):
        return self.table.record_all(logs, proto, ts)

    def flush(self, before=None):
        return self.table.flush(before).records(self.account_id)

    def pending(self):
        return self.table.flush(keep=True).records(self.account_id)

    def flush_lines(self, before=None):
        rows = self.table.flush(before)
        if self.fields == V2_FIELDS:  # composed in C
            lines = rows.lines_v2(self.account_id)
        else:
            lines = format_records(rows.records(self.account_id), self.fields)
        return lines, rows.windows, rows.starts

    def write_lines(self, write, before=None) -> int:
        rows = self.table.flush(before)
        if self.fields == V2_FIELDS:  # composed in C, in pieces of one reused buffer
            rows.write_v2(self.account_id, write)
        elif len(rows):
            write(joined_lines(format_records(rows.records(self.account_id), self.fields)))
        return len(rows)

    def __deepcopy__(self, memo):
        # explain's throwaway copy of the slow path: its records are never read
        return FlowLogAggregator(self.interval, self.account_id, self.fields)


class _Entry:
    """The Python side of one C flow-table entry: its connection, the flow-log record ids each
    key kind counts into, the (Conn.generation, Path.gen) it was taught under, and for a
    connection a planned open made that nothing adopted yet, what the open decided (``opened``,
    see :func:`hyperplane.core_open.adopt`; None once adopted)."""

    __slots__ = ("idx", "conn", "records", "taught", "opened")

    def __init__(self, idx: int, conn, taught: tuple, opened=None):
        self.idx = idx
        self.conn = conn
        self.records = [(), (), ()]
        self.taught = taught
        self.opened = opened


class _Listener:
    """``ConnTable.listener`` of the slow path: hands updated connections to the engine and frees
    the flow entry of a removed one (the engine is held weakly: it owns the slow path, and a cycle
    would keep a finished engine and every connection it tracked alive until a full garbage
    collection)."""

    __slots__ = ("engine",)

    def __init__(self, engine: "CoreEngine"):
        self.engine = weakref.ref(engine)

    def conn_updated(self, conn) -> None:
        self.engine()._touched.append(conn)

    def conn_removed(self, conn) -> None:
        """The connection left the table (expired, or closed by the slow path): its flow entry,
        if it has one, is free. Done here, not in an engine method: it runs for every connection."""
        engine = self.engine()
        if engine is None:  # an engine being freed releases its connections
            return
        entry = engine._entry_of.pop(conn, None)
        if entry is not None:
            idx = entry.idx
            engine.ft.release(idx)
            engine._entries[idx] = None
            engine._ahead.pop(idx, None)

    def __deepcopy__(self, memo):
        return None  # explain's throwaway copy of the slow path has no fast path


class TapOutput(Sequence):
    """One tap's packets of a batch: a sequence of ``(index, bytes)`` in packet order, equal to
    the reference's list, without a Python object per packet until an item is read.

    Row ``r`` is batch packet ``index[r]``, ``length`` bytes: its first ``head`` bytes are in
    the tap's own buffer (what was rewritten: IP and L4 headers), the rest is the input
    buffer's bytes from ``srcoff + head`` (a packet equal to the input, such as the lambda form
    of a sandbox's packet, has head 0: nothing was copied). ``buffer`` / ``offsets`` /
    ``lengths`` give the packets joined in one contiguous buffer
    (``buffer[offsets[r] : offsets[r] + lengths[r]]``), built on first use."""

    __slots__ = ("index", "_tap", "_src", "_off", "_srcoff", "_head", "_len", "_joined")

    def __init__(self, tap, src, index, off, srcoff, head, length):
        self.index = index
        self._tap = tap
        self._src = src
        self._off = off
        self._srcoff = srcoff
        self._head = head
        self._len = length
        self._joined = None

    def __len__(self) -> int:
        return len(self.index)

    def _item(self, r: int, i: int, off: int, srcoff: int, head: int, n: int):
        if head == n:
            return i, self._tap[off : off + n].tobytes()
        if head == 0:
            return i, bytes(self._src[srcoff : srcoff + n])
        return i, self._tap[off : off + head].tobytes() + bytes(self._src[srcoff + head : srcoff + n])

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[j] for j in range(*r.indices(len(self)))]
        r = range(len(self))[r]
        return self._item(r, int(self.index[r]), int(self._off[r]), int(self._srcoff[r]), int(self._head[r]),
                          int(self._len[r]))

    def __iter__(self):
        rows = zip(self.index.tolist(), self._off.tolist(), self._srcoff.tolist(), self._head.tolist(),
                   self._len.tolist())
        for r, (i, off, srcoff, head, n) in enumerate(rows):
            yield self._item(r, i, off, srcoff, head, n)

    def _join(self):
        if self._joined is None:
            self._joined = _core.flow_gather(self._tap, self._src, self.index, self._off, self._srcoff, self._head,
                                             self._len)
        return self._joined

    @property
    def buffer(self):
        """The packets joined in one uint8 array (built on first use)."""
        return self._join()[0]

    @property
    def offsets(self):
        return self._join()[1]

    @property
    def lengths(self):
        return self._len.astype(np.int64)

    def records(self, heads) -> bytes:
        """The packets as a capture writer's records: each after its row of ``heads`` (uint8, one
        row of header bytes per packet), joined in one pass from where the rows are (nothing is
        gathered first)."""
        return _core.flow_gather(self._tap, self._src, self.index, self._off, self._srcoff, self._head, self._len,
                                 heads)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"TapOutput({len(self)} packets)"


class CoreEngine:
    """The core backend of :class:`hyperplane.engine.Engine` (same methods as the reference
    ``Dataplane``). ``expected_connections`` sizes the C table up front (it grows anyway)."""

    def __init__(self, model, sandboxes, options, expected_connections: int = 1024):
        # the C port pools, parser and rewrites: the same results as the reference's, several times faster
        dp = self.dp = Dataplane(model, sandboxes, options, port_pool=_core.PortPool, nat_port_pool=_core.NatPortPool,
                                 parse=_parse, rewrite=_CRewrite)
        old = dp.flowlog
        dp.flowlog = _CoreFlowLog(old.interval, old.account_id, old.fields)
        dp.table.listener = _Listener(self)
        timeouts = {Timeout(k): float(v) for k, v in options.timeouts.items()}
        tcp_timeouts = [0.0 if key is None else timeouts[key] for key in tcpstate.TIMEOUT_KEYS]
        udp_timeouts = [timeouts[Timeout.UDP], timeouts[Timeout.UDP], timeouts[Timeout.UDP_STREAM]]
        self.ft = _core.FlowTable(
            expected=max(16, int(expected_connections)), interval=old.interval, strict=bool(options.tcp_strict),
            nat_idle=float(options.nat_idle_timeout), tcp_table=tcpstate.table_as_array(),
            flag_class=list(tcpstate.FLAG_CLASS), aws_flags=list(AWS_TCP_FLAGS), tcp_timeouts=tcp_timeouts,
            udp_timeouts=udp_timeouts,
        )
        self.ft.gen = dp.gen
        self.interval = old.interval
        self._entry_of: dict = {}  # Conn -> its _Entry (connections the slow path tracks)
        self._entries: list = []  # entry index -> _Entry (None when free)
        # entry index -> (kind, make, args) of a kind learned ahead: make(*args, ts) makes its records
        self._ahead: dict[int, tuple] = {}
        self._timed: dict[int, _Entry] = {}  # entries of planned opens not adopted yet (timed in C), in open order
        self._touched: list = []
        self._spare: list = []  # _Outputs reused across batches
        self.learned = 0
        # seconds in the fast loop; seconds and packets in the slow path; seconds in planned opens and the
        # connections they opened in Python; connections opened from templates (in the fast loop or for an open)
        self._clock = [0.0, 0.0, 0, 0.0, 0, 0]
        self._opener = Opener(dp)
        # the templates the fast loop opens connections from (ext/hp_open.h): their facts by id, the
        # ENIs they take slots of (by id: slot), and the plans they were armed under
        self.opens = _core.Opens(self.ft, dp.flowlog.table)
        self._templates: dict = {}
        self._eni_slots: dict = {}
        self._functions: list = []  # the functions templates account their opens to (Opens.pull's groups)
        self._armed_plans = None
        self._armed_control = None  # the control plane's generation they were armed under
        self._arm_epoch = 0  # counts disarms (core_open.Opener.armed holds the epoch of each arming)
        self.open_in_loop = True  # False: planned opens are made in Python only (tests compare both)
        self._advanced = None  # the time of the last miss the slow path's clock was moved to for the loop

    # --- the reference's attributes ---------------------------------------------------------
    @property
    def model(self):
        return self.dp.model

    @property
    def flow_log_fields(self):
        return self.dp.flow_log_fields

    @property
    def control(self):
        return self.dp.control

    # --- state sync -------------------------------------------------------------------------
    def _sync(self) -> None:
        """Fold every entry the fast path changed into its Conn and flow-log records."""
        ft = self.ft
        events = ft.take_events()
        if events:
            self._first_packets(events)
        if ft.dirty:
            ft.fold_into(self._entries, self.dp.table.reschedule, self.dp.flowlog.table, self.interval, ORIGINAL, REPLY)
        fast = ft.take_fast_packets()
        if fast:
            self.dp.packets += fast
            self.dp.forwarded += fast

    def _first_packets(self, events) -> None:
        """Make the flow-log records of kinds learned ahead whose first packet the fast path
        forwarded (in packet order, before anything else reads the records): those the slow path
        would have made for it; the fold counts the packet into them."""
        ahead, entries, opens = self._ahead, self._entries, self.opens
        for idx, kind, ts in events:
            entry = ahead.pop(idx, None)
            if entry is None and kind == _KIND_REPLY and opens.is_c(idx):
                opens.first(idx, ts)  # the first reply of a connection the fast loop opened
                continue
            if entry is None or entry[0] != kind:
                raise AssertionError(f"flow entry {idx}: a first packet of kind {kind} nobody expected")
            entries[idx].records[kind] = entry[1](*entry[2], ts)

    def _catch_up(self, adopt: bool = True) -> None:
        """Sync, and move the slow path's clock to the last packet the fast path saw: the timers
        due by then fire (in their time order, as packet by packet). ``adopt``: the connections
        planned opens made become the slow path's too (not needed to read the flow logs, the
        summary or the counters)."""
        self._expire_timed(self.ft.now)
        self._sync()
        if adopt:
            self._adopt_all()
        dp = self.dp
        if dp._now is not None and self.ft.now > dp._now:
            dp._advance(self.ft.now)

    def _load(self, entry: "_Entry", conn) -> None:
        """The slow path's view of ``conn`` into its entry."""
        idx = entry.idx
        path = conn.path
        s_ip, s_port, r_ip, r_port = conn.lambda_tuple
        e_ip, e_port = conn.eni_tuple[0], conn.eni_tuple[1]
        n_ip, n_port = (path.nat_addr, path.nat_port) if path.nat_fwd is not None else (0, 0)
        self.ft.set(idx, conn.state, conn.expires, conn.last_seen, (s_ip, r_ip, e_ip, n_ip),
                    (s_port, r_port, e_port, n_port), conn._last_dir == REPLY, path.nat_pool is not None, path.gen)
        # Reopened, or re-planned under a newer configuration: every key kind learned before was
        # decided under the old facts, so all of them are void (not only the one re-taught now).
        taught = (conn.generation, path.gen)
        if entry.taught != taught:
            self.ft.forget(idx)
            self._ahead.pop(idx, None)
            entry.taught = taught

    # --- the slow path ----------------------------------------------------------------------
    def _slow(self, frame: bytes, ts: float, linktype: int, why: str) -> Optional[Result]:
        """A packet the fast loop stopped at (``why``: its stop): a connection's first packet
        (a ``miss``) may be opened from its plan (:mod:`hyperplane.core_open`) and taught: None,
        the fast loop forwards it next. Else the slow path runs: its result."""
        clock = self._clock
        t0 = perf_counter()
        if why == "miss" and self._templates and ts != self._advanced and self.opens.last_decline == "time":
            # the loop's open waits for a timer of the slow path: fire it and let the loop open
            # the connection (once: a control-plane timer needs the slow path's open)
            self._advanced = ts
            self._advance_to(ts)
            clock[3] += perf_counter() - t0
            return None
        if why == "miss" and self._opener.open(self, frame, ts, linktype):
            clock[3] += perf_counter() - t0
            return None
        result = self._slow_path(frame, ts, linktype)
        clock[1] += perf_counter() - t0
        clock[2] += 1
        return result

    def _advance_to(self, ts: float) -> None:
        """Move the slow path's clock to ``ts`` as a planned open would first: the timed
        connections due and the fast path's changes before its own timers."""
        dp = self.dp
        self._expire_timed(ts)
        self._sync()
        if dp._now is not None and ts > dp._now:
            dp._advance(ts)

    def _slow_path(self, frame: bytes, ts: float, linktype: int) -> Result:
        dp = self.dp
        now = dp._now
        self._expire_timed(ts if now is None or ts > now else now)
        self._sync()
        self._adopt_all()
        calls: list = []
        dp.flowlog.calls = calls
        self._touched = []
        opened = dp.connections_opened
        try:
            result = dp.process(frame, ts, linktype)
        finally:
            dp.flowlog.calls = None
        self.ft.now = dp._now
        self._reload_touched()
        if result.verdict == Verdict.FORWARDED and not result.emitted:
            self._learn(frame, ts, result, calls)
        self._block_untaught(ts)
        if dp.connections_opened != opened and result.verdict == Verdict.FORWARDED:
            self._opener.arm_after_open(self, dp.last_parsed, ts)  # its next ones open in the loop
        return result

    def _block_untaught(self, ts: float) -> None:
        """A sandbox connection the slow path holds but did not teach (its packet's) gets an entry
        keyed by its sandbox tuple with nothing learned: its packets stop there (``unlearned``)
        instead of missing, so the fast loop's planned opens never open that tuple again."""
        p = self.dp.last_parsed
        if p is None or not keyed(p):
            return
        proto = p.proto
        conn = self.dp.table.get((K_OUT, proto, p.src, p.sport, p.dst, p.dport))
        if conn is None or conn in self._entry_of:
            return
        ft = self.ft
        idx = ft.alloc(proto)
        entry = self._entry_of[conn] = _Entry(idx, conn, None)
        entries = self._entries
        if idx >= len(entries):
            entries.extend([None] * (idx + 1 - len(entries)))
        entries[idx] = entry
        self._load(entry, conn)
        ft.learn(idx, _KIND_OUT, 0, int(ts // 1) // self.interval if ts >= 0 else 0)
        ft.forget(idx, _KIND_OUT)

    def _reload_touched(self) -> None:
        """Reload the entries of the connections the slow path changed."""
        for conn in self._touched:
            entry = self._entry_of.get(conn)
            if entry is not None and conn.alive:
                self._load(entry, conn)
        self._touched = []

    def _learn(self, frame: bytes, ts: float, result: Result, calls: list) -> None:
        """Teach the C table the connection of a packet the slow path forwarded (see the module
        docstring); silently nothing when any fact is outside what the fast path reproduces."""
        p = self.dp.last_parsed  # the slow path's parse of this frame
        proto = p.proto
        if not keyed(p) or not ts >= 0:
            return
        tuple_ = (proto, p.src, p.sport, p.dst, p.dport)
        get = self.dp.table.get
        direction = result.direction
        if direction == "outbound":
            kind, conn = _KIND_OUT, get((K_OUT,) + tuple_)
        elif direction == "reply":
            kind, conn = _KIND_REPLY, get((K_REPLY,) + tuple_)
            if conn is None:
                kind, conn = _KIND_VPC, get((K_VPC,) + tuple_)
        else:
            return
        if conn is None:
            return
        path = conn.path
        if (conn.version != 4 or path.gen != self.dp.gen or conn.last_seen != conn.nat_last_seen
                or (path.nat_pool is not None and path.nat_expired)
                or result.eni_id != path.eni_id or result.function != conn.function):
            return
        s_ip, s_port, r_ip, r_port = conn.lambda_tuple
        e_ip, e_port, r2_ip, r2_port = conn.eni_tuple
        if r2_ip != r_ip or r2_port != r_port:
            return
        if kind == _KIND_OUT:
            key = (proto, s_ip, s_port, r_ip, r_port)
        elif kind == _KIND_REPLY:
            key = (proto, r_ip, r_port, s_ip, s_port)
        else:
            key = (proto, r_ip, r_port, e_ip, e_port)
        if key != tuple_:
            return
        nbytes, flags = p.ip_len, p.tcp_flags
        records = []
        for recs, n, t, f in calls:  # records made for this packet's time: in its window
            if n != nbytes or t != ts or f != flags:
                return
            records += recs
        taps = result.taps
        lam = taps.get("lambda")
        eni, inet = taps.get("eni"), taps.get("internet")
        if lam is None or len(taps) != (1 + (eni is not None) + (inet is not None)):
            return
        self._teach(conn, kind, frame[p.l3 : p.l3 + nbytes], p.l4 - p.l3, lam, eni, inet, records, ts)

    def _teach(self, conn, kind: int, ip: bytes, l4: int, lam: bytes, eni, inet, records: list, ts: float) -> None:
        """Teach the C table ``kind`` of ``conn`` from one packet the slow path forwarded (``ip``,
        its L4 header at ``l4``) with these tap forms and flow-log records: nothing is learned
        unless the C table renders the same forms."""
        ft = self.ft
        path = conn.path
        entry = self._entry_of.get(conn)
        if entry is None:
            idx = ft.alloc(conn.proto)
            entry = self._entry_of[conn] = _Entry(idx, conn, (conn.generation, path.gen))
            entries = self._entries
            if idx >= len(entries):
                entries.extend([None] * (idx + 1 - len(entries)))
            entries[idx] = entry
        idx = entry.idx
        self._load(entry, conn)
        window = int(ts // 1) // self.interval
        ft.learn(idx, kind, kind_flags(eni is not None, inet is not None, path.nat_fwd is not None), window)
        if not ft.reproduces(idx, kind, ip, l4, lam, eni, inet):
            ft.forget(idx, kind)
            return
        entry.records[kind] = records
        self.learned += 1
        if kind == _KIND_OUT:
            self._learn_reply_ahead(idx, conn, window)
        else:
            self._ahead.pop(idx, None)  # learning a reply kind replaces (or owns over) one learned ahead

    def _teach_opened(self, conn, opened, records: list, ts: float) -> None:
        """Teach the C table a connection a planned open just made (:mod:`hyperplane.core_open`,
        ``opened``: what it decided), before its first packet, which the fast loop then forwards
        and counts as the slow path would have (the connection's opening state and timer are what
        that packet leaves): the sandbox kind with the flow-log records that packet counts into,
        and the reply kind ahead (its leg planned open; the remote is no sandbox), as after a
        slow-path open (:meth:`_teach`, :meth:`_learn_reply_ahead`). The entry is timed in C and
        the connection waits for adoption (:meth:`_adopt_all`, :meth:`_expire_timed`); with a
        conntrack limit it is adopted at once (the table counts what it holds)."""
        plan, nat_addr, nat_port, gen = opened.plan, opened.nat_addr, opened.nat_port, opened.gen
        proto = conn.proto
        s_ip, s_port, r_ip, r_port = conn.lambda_tuple
        e_ip, e_port = conn.eni_tuple[0], conn.eni_tuple[1]
        nat = nat_addr is not None
        table = self.dp.table
        timed = table.max_connections is None
        window = int(ts // 1) // self.interval
        internet, nat_pool = plan[9], plan[10]  # planned Path attributes (Dataplane._plan)
        flags = kind_flags(True, internet, nat)  # a VPC path reaches the eni tap
        conn.expires = ts + table.timeout_of(conn)  # as ConnTable.add starts it
        idx = self.ft.open(proto, conn.state, conn.expires, ts, (s_ip, r_ip, e_ip, nat_addr if nat else 0),
                           (s_port, r_port, e_port, nat_port if nat else 0), nat_pool is not None, gen, window, flags,
                           True, timed)
        self.opens.mark(idx)  # its place in the open order
        self._clock[4] += 1
        entry = _Entry(idx, conn, (conn.generation, gen), opened)
        entry.records[_KIND_OUT] = records
        entries = self._entries
        if idx >= len(entries):
            entries.extend([None] * (idx + 1 - len(entries)))
        entries[idx] = entry
        self._ahead[idx] = (_KIND_REPLY, self.dp.flowlog.table.record_points,
                            (opened.back_interned, proto, e_port, nat_port if nat else 0))
        self.learned += 2
        if timed:
            self._timed[idx] = entry
            live = len(table) + len(self._timed) + self.opens.live
            if live > table.peak:
                table.peak = live
        else:
            self._adopt(entry)

    def _adopt(self, entry: "_Entry") -> None:
        """A connection of a planned open (its state folded) becomes the slow path's: its Path,
        conntrack entry and timers (:func:`hyperplane.core_open.adopt`); the C table stops
        timing it."""
        adopt(self.dp, entry.conn, entry.opened)
        self._entry_of[entry.conn] = entry
        entry.opened = None
        self.ft.set_timed(entry.idx, False)

    def _adopt_all(self) -> None:
        """Adopt every connection planned opens made that is not adopted yet, in the order they
        opened (the conntrack table lists connections in that order). Their state must be folded."""
        opens = self.opens
        in_loop = opens.unadopted() if opens.live else ()
        if in_loop and self._timed:  # both kinds: by their numbers in the open order
            seq_of = opens.seq_of
            timed = self._timed
            for _, idx in sorted([(seq_of(idx), idx) for idx in timed] + [(seq_of(idx), idx) for idx in in_loop]):
                entry = timed.get(idx)
                if entry is None:
                    self._adopt_opened(idx)
                else:
                    self._adopt(entry)
        elif in_loop:
            for idx in in_loop:
                self._adopt_opened(idx)
        else:
            for entry in self._timed.values():
                self._adopt(entry)
        self._timed.clear()

    def _adopt_opened(self, idx: int) -> None:
        """Adopt a connection the fast loop opened (entry ``idx``, folded): its ``Conn``, from the
        entry and its side record, then as :meth:`_adopt`."""
        opens = self.opens
        tid, created, packets, nbytes, flags, exchanges, last_reply, out_records, back_records = opens.info(idx)
        t = self._templates[tid]
        got = self.ft.get(idx)
        proto = got["proto"]
        ips, ports = got["ips"], got["ports"]
        conn = Conn(proto, 4, t.function, t.eni_id, got["state"], (ips[0], ports[0], ips[1], ports[1]),
                    (ips[2], ports[2], ips[1], ports[1]), created)
        conn.expires = got["expires"]
        conn.last_seen = conn.nat_last_seen = got["last_seen"]
        conn.packets_orig, conn.packets_reply = packets
        conn.bytes_orig, conn.bytes_reply = nbytes
        conn.flags_orig, conn.flags_reply = flags
        conn.replied = packets[1] > 0
        if proto == PROTO_UDP:
            conn.exchanges = exchanges
            conn._last_dir = REPLY if last_reply else ORIGINAL
        nat_addr, nat_port = (ips[3], ports[3]) if t.nat_alloc else (None, None)
        opened = Opened(t.plan, t.subnet_id, t.pool, nat_addr, nat_port, t.out_points, t.back_points, t.gen,
                        t.back_interned)
        entry = _Entry(idx, conn, (conn.generation, t.gen), opened)
        entry.records[_KIND_OUT] = out_records
        if back_records is not None:
            entry.records[_KIND_REPLY] = back_records
        elif got["kinds"][_KIND_REPLY] & _core.FLOW_K_FIRST:  # its first reply is still to come
            self._ahead[idx] = (_KIND_REPLY, self.dp.flowlog.table.record_points,
                                (t.back_interned, proto, ports[2], ports[3] if t.nat_alloc else 0))
        entries = self._entries
        if idx >= len(entries):
            entries.extend([None] * (idx + 1 - len(entries)))
        entries[idx] = entry
        opens.adopted(idx)
        self._adopt(entry)

    def _expire_timed(self, now: float) -> None:
        """Fire the C table's timers of unadopted connections due by ``now`` (the first-packet
        records made first): a connection whose timer ran out has its last packets counted into
        its flow-log records, is released as the slow path releases an expired one
        (``Dataplane._release``; :func:`hyperplane.core_open.release`) and leaves the table; when
        a NAT mapping went idle first, the slow path takes every unadopted connection over (its
        NAT idle timer fires as it would have)."""
        opens = self.opens
        if not self._timed and not opens.live:
            return
        ft = self.ft
        due = ft.take_due(now)
        if not due:
            return
        events = ft.take_events()
        if events:
            self._first_packets(events)
        dp = self.dp
        timed, records, interval = self._timed, dp.flowlog.table, self.interval
        idle = False
        for idx, expired in due:
            if not expired:
                idle = True  # left in place: adopted below, with the others, in open order
                continue
            if opens.is_c(idx):  # opened by the fast loop: released there (ENI slot here)
                dp.control.close_connection(self._templates[opens.release(idx)].eni_id)
                continue
            entry = timed.pop(idx)
            ft.fold_counts(idx, entry.records, records, interval)  # the connection itself is dropped
            release(dp, entry.conn, entry.opened)
            ft.release(idx)
            self._entries[idx] = None
            self._ahead.pop(idx, None)
        if idle:
            self._sync()
            self._adopt_all()

    def _learn_reply_ahead(self, idx: int, conn, window: int) -> None:
        """Teach the REPLY kind of a connection that has had no reply yet, ahead of its first
        reply: the slow path decided that reply's outcome when it opened the connection (the
        reply leg of its path), and would forward it with the path's taps and flow-log records
        (made from the first reply when the fast path forwards it; see _first_packets). Not when
        the reply leg is refused, or when the remote is a sandbox address (its packets would be
        the sandbox's own, classified first as outbound)."""
        path = conn.path
        if conn.replied or path.back[0] is not None:
            return
        if self.dp._sandboxes[4].lookup(conn.lambda_tuple[2]) is not None:
            return
        flags = kind_flags(path.eni_tap, path.internet, path.nat_fwd is not None)
        self.ft.learn(idx, _KIND_REPLY, flags, window, first=True)
        self._ahead[idx] = (_KIND_REPLY, self.dp.flowlog.record_all, (path.back[1], conn.proto))
        self.learned += 1

    # --- the API ----------------------------------------------------------------------------
    def _outputs(self, rows: int, tap_bytes: int) -> "_Outputs":
        """Output arrays for a batch: a spare set whose previous results nobody holds any more
        (checked by reference counts), else a new one (kept as a spare for later batches)."""
        for out in self._spare:
            if out.rows >= rows and out.idle():
                out.reset()
                return out
        out = _Outputs(rows, tap_bytes)
        if len(self._spare) < 4:
            self._spare.append(out)
        return out

    def _run(self, batch, i):
        """The fast loop from packet i of ``batch`` (a :class:`_Bound`); grows the tap buffers
        when it ran out of room in them. Returns where it stopped and why (a ``FlowTable.run``
        stop name)."""
        clock = self._clock
        t0 = perf_counter()
        armed = self._templates and self._push()
        try:
            while True:
                if batch.version != batch.out.version:
                    batch.bind()  # a tap buffer was replaced by a larger one
                stop, why = self.ft.run_batch(batch.bound, i)
                if why != "space" or not batch.out.grow_if_short(_HEAD_ROOM):
                    clock[0] += perf_counter() - t0
                    return stop, why
                i = stop
        finally:
            if armed:
                self._pull()

    # --- the fast loop's planned opens (ext/hp_open.h) ----------------------------------------------
    def _eni_slot(self, eni) -> int:
        """The fast loop's slot for a Hyperplane ENI (made on first use)."""
        slot = self._eni_slots.get(eni.id)
        if slot is None:
            slot = self._eni_slots[eni.id] = self.opens.eni_slot(eni, self.dp.options.eni_capacity)
        return slot

    def opens_arm(self, function: str, *args):
        """``Opens.arm`` (core_open.Opener._arm) of a template of ``function``'s under the slow
        path's current plans: every template armed under older ones is disarmed first."""
        if self._armed_facts_changed() or self.opens.templates >= _core.OPEN_TEMPLATES_MAX:
            self._disarm()
        if function not in self._functions:
            self._functions.append(function)
        return self.opens.arm(*args, group=self._functions.index(function))

    def _armed_facts_changed(self) -> bool:
        """The templates were armed under other plans of the slow path (a configuration change, a
        new ENI) or another state of the control plane's functions and ENIs."""
        dp = self.dp
        return dp._plans is not self._armed_plans or dp.control.generation != self._armed_control

    def _disarm(self) -> None:
        self.opens.disarm_all()
        self._arm_epoch += 1
        self._armed_plans = self.dp._plans
        self._armed_control = self.dp.control.generation
        if not self.opens.templates:
            self._templates.clear()

    def _open_in_loop(self, frame: bytes, ts: float, linktype: int) -> bool:
        """Open ``frame``'s connection from its armed template now, as the fast loop would
        (``Opens.open``), the engine's facts copied in and the results back; False when it declined."""
        if not self._push():
            return False
        try:
            return self.opens.open(frame, ts, linktype)
        finally:
            self._pull()

    def _push(self) -> bool:
        """Before a run: the facts the templates rely on (the slow path's next timer and the
        control plane's, the clocks, the ENI slot counts, the conntrack count and peak). False
        when no template is left (the facts they came from changed: ``_armed_facts_changed``)."""
        dp = self.dp
        if self._armed_facts_changed():
            self._disarm()
            if not self.opens.live:
                return False
        control = dp.control
        until = dp.next_timer()
        cp = control.next_timer()
        table = dp.table
        since = control.now
        if dp._now is not None and dp._now > since:
            since = dp._now
        self.opens.push(cp if cp < until else until, since, len(table) + len(self._timed), table.peak,
                        table.max_connections is None)
        return True

    def _pull(self) -> None:
        """After a run: what the fast loop's opens changed of the slow path's and the control
        plane's state (ENI slot counts are copied back by ``Opens.pull``)."""
        got = self.opens.pull()
        if got is None:
            return
        peak, total, groups = got
        dp = self.dp
        table = dp.table
        if peak > table.peak:
            table.peak = peak
        if not total:
            return
        control, functions = dp.control, self._functions
        for group, last in groups:  # by time: the control plane's clock ends at the last
            control.opened_on(functions[group], last)
        last = groups[-1][1]
        if dp._now is None or last > dp._now:
            dp._now = last
        dp.connections_opened += total
        self.learned += 2 * total
        self._clock[5] += total

    def process(self, data, ts: float, linktype: int = pk.RAW) -> Result:
        """One packet: the fast path when it can, else the slow path."""
        frame = bytes(data)
        n = len(frame)
        out = self._outputs(1, max(n, _HEAD_ROOM))
        out.verdicts = np.zeros(1, np.uint8)
        out.reasons = np.zeros(1, np.uint8)
        batch = _Bound(out, frame if n else b"\0", np.zeros(1, np.int64), np.array([n], np.int64),
                       np.array([ts], np.float64), linktype)
        stop, why = self._run(batch, 0)
        while stop == 0:
            result = self._slow(frame, float(ts), linktype, why)
            if result is not None:
                return result
            # opened from its plan, or the slow path's clock moved for the loop to open it: again
            stop, why = self._run(batch, 0)
        del batch
        parsed = _core.parse(frame, linktype)
        idx, kind = self.ft.lookup(parsed[6], parsed[7], parsed[10], parsed[11], parsed[8])
        taps = {name: tap[0][1] for name, tap in out.taps(frame).items() if len(tap)}
        if self.opens.is_c(idx):  # opened by the fast loop, not adopted yet
            t = self._templates[self.opens.template_of(idx)]
            eni_id, function = t.eni_id, t.function
        else:
            conn = self._entries[idx].conn
            eni_id = conn.path.eni_id if conn.path is not None else conn.eni_id  # not adopted yet: an ENI's
            function = conn.function
        return Result(Verdict.FORWARDED, DropReason.NONE, None, None, taps, eni_id, _DIRECTION[kind], function)

    def process_batch(self, buffer, offsets, lengths, timestamps, linktypes=None) -> BatchResult:
        """Packets ``buffer[offsets[i] : offsets[i] + lengths[i]]`` at ``timestamps[i]``: the
        fast loop over the batch, the slow path for each packet it stops at, in order. ``taps``
        are :class:`TapOutput` sequences (the reference's ``(index, bytes)`` lists, buffered;
        they refer to ``buffer`` for bytes that were not rewritten, so a writable ``buffer`` is
        copied once first: later changes to it cannot change the result)."""
        with gc_paused():
            return self._batch(buffer, offsets, lengths, timestamps, linktypes)

    def _batch(self, buffer, offsets, lengths, timestamps, linktypes) -> BatchResult:
        view = memoryview(buffer).cast("B")
        if not view.readonly:
            view = memoryview(view.tobytes())
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        lens = np.ascontiguousarray(lengths, dtype=np.int64)
        stamps = np.ascontiguousarray(timestamps, dtype=np.float64)
        n = len(offs)
        if len(lens) != n or len(stamps) != n:
            raise ValueError("offsets, lengths and timestamps differ in length")
        if linktypes is None:
            lts = pk.RAW
        elif np.ndim(linktypes) == 0:
            lts = int(linktypes)
        else:
            lts = np.ascontiguousarray(linktypes, dtype=np.int32)
        out = self._outputs(n, n * _HEAD_BYTES)
        out.verdicts = np.zeros(n, np.uint8)
        out.reasons = np.zeros(n, np.uint8)
        components: list = [None] * n
        rules: list = [None] * n
        emitted: dict = {t: [] for t in TAPS}
        batch = _Bound(out, view, offs, lens, stamps, lts)
        i = 0
        while i < n:
            i, why = self._run(batch, i)
            if i >= n:
                break
            result = self._slow(*batch.bound.packet(i), why)
            if result is None:  # opened from its plan: the fast loop forwards it
                continue
            if result.reason:
                components[i] = result.component
                rules[i] = result.rule
            batch.put(i, result)
            for tap, data in result.emitted:
                emitted[tap].append((i, data))
            i += 1
        del batch  # its exports of the output arrays would keep them from being reused
        verdicts, reasons = out.verdicts, out.reasons
        out.verdicts = out.reasons = None
        return BatchResult(verdicts, reasons, components, rules, out.taps(view), emitted)

    def explain(self, function: str, dst_ip, dst_port: int, proto):
        self._catch_up()
        return self.dp.explain(function, dst_ip, dst_port, proto)

    def summary(self) -> dict:
        self._catch_up(adopt=False)  # it reads no connection
        return self.dp.summary()

    def counters(self) -> dict:
        self._catch_up(adopt=False)
        counters = self.dp.counters()
        counters["connections_live"] += len(self._timed) + self.opens.live  # the table holds the adopted ones
        return counters

    def flow_logs(self, flush: bool = True, before=None):
        self._catch_up(adopt=False)
        records = self.dp.flow_logs(flush, before)
        if flush:
            self._flushed(before, len(records))
        return records

    def flow_log_lines(self, before=None):
        self._catch_up(adopt=False)
        out = self.dp.flow_log_lines(before)
        self._flushed(before, len(out[1]))
        return out

    def write_flow_logs(self, write, before=None) -> int:
        self._catch_up(adopt=False)
        count = self.dp.write_flow_logs(write, before)
        self._flushed(before, count)
        return count

    def _flushed(self, before, count: int) -> None:
        """Records were flushed: the entries counting into them un-learn (their next packet
        takes the slow path and re-learns with new records)."""
        if before is None:
            self.ft.forget_all()
            self._ahead.clear()
        elif count:  # the entries of the flushed windows
            for idx in self.ft.forget_windows(min(int(before // self.interval), 0xFFFFFFFF)):  # C windows: uint32
                self._ahead.pop(idx, None)

    def connections(self) -> list:
        self._catch_up()
        return self.dp.connections()

    def update_config(self, model) -> None:
        self._catch_up()
        self.dp.update_config(model)
        self.ft.gen = self.dp.gen

    def core_stats(self) -> dict:
        """Sizes of the C tables (connections, flow-log records), why the fast loop stopped
        since the last call, and where the engine's time went since it was made: seconds in
        the fast loop (``fast_seconds``), seconds and packets in the slow path (``slow_seconds``,
        ``slow_packets``: everything a punted packet costs, state sync and learning included),
        seconds and connections opened from their plan without the slow path (``open_seconds``,
        ``opened``: :mod:`hyperplane.core_open`), and how many of those the slow path has not
        adopted yet (``timed``: the C table keeps their timers)."""
        ft, records = self.ft, self.dp.flowlog.table
        fast_seconds, slow_seconds, slow_packets, open_seconds, opened, opened_in_loop = self._clock
        return {
            "fast_seconds": fast_seconds, "slow_seconds": slow_seconds, "slow_packets": slow_packets,
            "open_seconds": open_seconds, "opened": opened + opened_in_loop, "opened_in_loop": opened_in_loop,
            "templates": self.opens.templates,
            "entries": len(ft), "keys": ft.keys, "slots": ft.slots, "capacity": ft.capacity,
            "memory_bytes": ft.memory_bytes + self.opens.memory_bytes, "entry_bytes": _core.FLOW_ENTRY_BYTES,
            "slot_bytes": _core.FLOW_SLOT_BYTES, "rehashes": ft.rehashes, "learned": self.learned,
            "flow_log_records": len(records), "flow_log_bytes": records.memory_bytes, "stops": ft.stops(),
            "open_declines": self.opens.declines(),
            "timed": len(self._timed) + self.opens.live, "timer_items": ft.timer_items,
        }


_HEAD_BYTES = 64  # tap bytes reserved per packet and tap (a fast-path packet stores its headers only)
_HEAD_ROOM = 128  # free bytes a tap buffer needs for any fast-path packet (IPv4 + TCP headers: <= 80)


class _Bound:
    """A batch's input and output arrays bound once for ``FlowTable.run_batch`` (the fast loop is
    resumed after every slow-path packet; binding ~20 arrays per resume cost ~6 us), bound again
    when a tap buffer of ``out`` was replaced (``_Outputs.version``)."""

    __slots__ = ("out", "args", "bound", "version")

    def __init__(self, out: "_Outputs", view, offs, lens, stamps, lts):
        self.out = out
        self.args = (view, offs, lens, stamps, lts)
        self.bind()

    def put(self, i: int, result: Result) -> None:
        """A slow-path packet's verdict, reason and tap forms (the outputs grow, and are bound
        again, when a tap buffer is full)."""
        taps = result.taps
        while True:
            short = self.bound.put(i, result.verdict, result.reason, taps)
            if short < 0:
                return
            if not self.out.grow_if_short(len(taps[TAPS[short]])):  # that tap's buffer grows to fit
                raise AssertionError("a grown tap buffer still lacks room")
            self.bind()

    def bind(self) -> None:
        out = self.out
        self.bound = _core.FlowBatch(*self.args, out.verdicts, out.reasons, out.bufs, out.idx, out.off, out.src,
                                     out.head, out.len, out.state)
        self.version = out.version


class _Outputs:
    """The output arrays the fast loop writes and the slow path appends to (see FlowTable.run),
    reused across batches once no result refers to them. ``version`` counts tap buffers replaced
    by larger ones."""

    __slots__ = ("rows", "verdicts", "reasons", "bufs", "idx", "off", "src", "head", "len", "state", "version")

    def __init__(self, rows: int, capacity: int):
        self.rows = rows
        self.verdicts = self.reasons = None
        self.bufs = [np.empty(max(capacity, _HEAD_ROOM), np.uint8) for _ in TAPS]
        self.idx = [np.empty(rows, np.int64) for _ in TAPS]
        self.off = [np.empty(rows, np.int64) for _ in TAPS]
        self.src = [np.empty(rows, np.int64) for _ in TAPS]
        self.head = [np.empty(rows, np.int32) for _ in TAPS]
        self.len = [np.empty(rows, np.int32) for _ in TAPS]
        self.state = np.zeros(6, np.int64)  # bytes used per tap, rows used per tap
        self.version = 0

    def _arrays(self):
        return (*self.bufs, *self.idx, *self.off, *self.src, *self.head, *self.len)

    def idle(self) -> bool:
        """No result (nor any view of these arrays) is alive: only our own lists hold them."""
        return all(sys.getrefcount(a) <= 2 for a in self._arrays())

    def reset(self) -> None:
        self.state[:] = 0

    def grow_if_short(self, room: int) -> bool:
        """Double every tap buffer with less than ``room`` bytes free; True when one grew."""
        grew = False
        for t in range(len(TAPS)):
            used = int(self.state[t])
            if len(self.bufs[t]) - used < room:
                grown = np.empty(max(2 * len(self.bufs[t]), used + room), np.uint8)
                grown[:used] = self.bufs[t][:used]
                self.bufs[t] = grown
                self.version += 1
                grew = True
        return grew

    def taps(self, source) -> dict:
        out = {}
        for t, name in enumerate(TAPS):
            rows = int(self.state[3 + t])
            out[name] = TapOutput(self.bufs[t], source, self.idx[t][:rows], self.off[t][:rows], self.src[t][:rows],
                                  self.head[t][:rows], self.len[t][:rows])
        return out
