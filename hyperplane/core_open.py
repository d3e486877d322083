"""The core backend's planned open: a sandbox's new connection opened without the slow path.

The reference opens a connection in :meth:`Dataplane._open
<hyperplane.reference.dataplane.Dataplane._open>` (the executable specification): the function's
state, its egress decision, an ENI slot and source port, the path's plan, the walks of both legs,
the connection, its flow-log records. Once a destination has been planned from an ENI, most of
that is a decision already made and kept (``Dataplane._egress``, ``Dataplane._plans``): what is
left for the next connection to the same destination is allocating its ports and writing it
down. :class:`Opener` does just that, for the case where every remaining step of both opening
legs is a flow-log point or the NAT gateway's port allocation (the demo's and the benchmark's
paths; a plan with a NACL or security-group check left on a leg is not compiled), and the
connection it makes is the one the reference makes: the same ENI, ports, ``Conn`` and ``Path``
(once adopted), flow-log records and packets, in the same order (the backends' differential test
compares them).

The opening packet itself is not counted or rendered here: the connection is taught to the C
table (its sandbox kind, and its reply kind ahead, as after a slow-path open) in the state and
with the timer that packet leaves it in (a TCP packet whose transition would change the state is
declined), and the fast loop then forwards and counts it as the slow path would have, into the
flow-log records made here. Nor does the slow path get the connection yet: its ``Path`` and
conntrack entry are made only when Python needs them (:func:`adopt`); until then the C table
times it, and an expired one is released without them (:func:`release`).

Before making the connection in Python it arms the destination's template in the fast loop
(:meth:`Opener._arm`, ``_core.Opens``, ``ext/hp_open.h``) and lets it open this packet's
connection (``CoreEngine._open_in_loop``): the same decisions in C, and the loop then opens the
next first packets to that destination from that sandbox prefix and subnet without stopping.
Python makes the connection itself only when the template cannot be armed or declines.

It declines (returns False, having changed nothing but the clock and the timers due by then,
which the slow path would move and fire first too) whenever anything else could happen: a packet
that is not a sandbox's IPv4 TCP/UDP first packet of a connection, a control-plane timer due, a
function not Active, no usable ENI slot (a new ENI, a refusal), a destination not planned yet, a
NAT gateway out of ports. The slow path then handles the packet as before.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

from hyperplane import _core, tcpstate
from hyperplane import packet as pk
from hyperplane.reference.conntrack import ORIGINAL, PROTO_TCP, PROTO_UDP, Conn, ConnTable
from hyperplane.reference.dataplane import (ENI_PORT, K_OUT, PLAN_CACHE_SIZE, S_LOG, S_NAT_ALLOC, Path,
                                            restore_plan, vpc_keys)

__all__ = ["Opened", "Opener", "Template", "adopt", "keyed", "kind_flags", "release"]


def kind_flags(eni: bool, internet: bool, nat: bool) -> int:
    """A learned kind's tap flags: which taps it reaches, and whether its internet form crosses
    the NAT gateway's translation (``nat``: the path has one; it translates both directions)."""
    return ((_core.FLOW_K_ENI if eni else 0) | (_core.FLOW_K_INET if internet else 0)
            | (_core.FLOW_K_NATRW if nat else 0))


def keyed(p) -> bool:
    """Whether a parsed packet is one the C flow table keys (and the fast loop may forward): IPv4
    TCP or UDP, parsed cleanly, not a fragment."""
    return p.ok and p.version == 4 and not p.fragment and p.l4 >= 0 and (p.proto == PROTO_TCP or p.proto == PROTO_UDP)


def _opening_state(proto: int, flags: int, strict: bool):
    """The state a connection opened by a packet with these TCP flags starts in
    (``ConnTable.initial_state``), or None when it opens none, or when the fast loop, forwarding
    that packet, would move the connection out of that state."""
    initial = ConnTable.initial_state(proto, flags, strict)
    if initial is None or (proto == PROTO_TCP and tcpstate.transition(ORIGINAL, flags, initial) != initial):
        return None
    return initial


class Opened(NamedTuple):
    """What a planned open decided for a connection that the slow path has not adopted yet."""

    plan: tuple  # the reference's plan (Dataplane._plans): steps and planned Path attributes
    subnet_id: str
    pool: object  # the ENI's source-port pool
    nat_addr: Optional[int]  # the NAT gateway's address and port (None: no NAT gateway)
    nat_port: Optional[int]
    out_points: tuple  # the legs' log points, ports as planned (see _logs)
    back_points: tuple
    gen: int  # the configuration generation it was planned under
    back_interned: object  # back_points interned by the flow-log table (FlowLogTable.points)


class Template(NamedTuple):
    """What the engine keeps of a template armed in the fast loop (``_core.Opens.arm``): the
    facts an open it made shares with every other, for adopting or releasing its connections."""

    function: str
    eni_id: str
    subnet_id: str
    pool: object  # the ENI's source-port pool
    plan: tuple
    nat_alloc: bool  # a NAT gateway port is allocated (plan[10] is its pool)
    out_points: tuple
    back_points: tuple
    gen: int
    back_interned: object


def _logs(steps, nat=None) -> Optional[tuple]:
    """The flow-log points of a leg whose steps are all log points and at most one NAT port
    allocation: ``(points, nat step)``, each point ``(eni_id, src, dst, sport, dport, extra)``
    with the ports as planned (``ENI_PORT``, None for the NAT gateway's port). None when another
    step is left, or a point names the NAT gateway's port before it is allocated (``nat``: the
    allocation of an earlier leg)."""
    points = []
    for step in steps:
        kind = step[0]
        if kind == S_LOG:
            _, eni_id, src, dst, sport, dport, _direction, extra = step
            if nat is None and (sport is None or dport is None):
                return None
            points.append((eni_id, src, dst, sport, dport, extra))
        elif kind == S_NAT_ALLOC and nat is None:
            nat = step
        else:
            return None
    return tuple(points), nat


def _accepted(points: tuple, eni_port: int, nat_port) -> tuple:
    """The ACCEPT records of ``points`` for a connection with these ports (as ``Dataplane._walk``
    writes them)."""
    out = []
    for eni_id, src, dst, sport, dport, extra in points:
        if sport is None:
            sport = nat_port
        elif sport == ENI_PORT:
            sport = eni_port
        if dport is None:
            dport = nat_port
        elif dport == ENI_PORT:
            dport = eni_port
        out.append((eni_id, src, dst, sport, dport, "ACCEPT", extra))
    return tuple(out)


class Opener:
    """Opens planned connections for a :class:`~hyperplane.core.CoreEngine`'s slow path
    (``dp``). ``compiled`` keeps, per plan key, the plan it was compiled from and what the opens
    need of it (None: not compilable): the ENI's address, each leg's log points (also interned
    by the flow-log table) and the NAT port allocation; an entry is used only while
    ``Dataplane._plans`` still holds that very plan."""

    __slots__ = ("dp", "compiled", "initial", "armed")

    def __init__(self, dp):
        self.dp = dp
        self.compiled: dict = {}
        # by protocol and TCP flags: the state a connection this packet opens starts in, or None
        # (it opens none, or forwarding it would change that state: the fast loop forwards it)
        self.initial = {proto: tuple(_opening_state(proto, flags, dp.strict) for flags in range(256))
                        for proto in (PROTO_TCP, PROTO_UDP)}
        self.armed: dict = {}  # by template match: (the engine's arming epoch, ENI, plan) it was armed with

    def _compile(self, key: tuple, plan: tuple, eni) -> Optional[tuple]:
        out = _logs(plan[2])
        back = None if out is None else _logs(plan[3], out[1])
        done = None
        if back is not None and back[1] is out[1] and eni.private_ip is not None:
            intern = self.dp.flowlog.table.points
            done = (plan, int(eni.private_ip), out[0], out[1], back[0], intern(out[0], ENI_PORT),
                    intern(back[0], ENI_PORT))
        if len(self.compiled) >= PLAN_CACHE_SIZE:
            self.compiled = {}
        self.compiled[key] = (plan, done)
        return done

    def open(self, engine, frame: bytes, ts: float, linktype: int) -> bool:
        """Open the connection ``frame`` starts, as the slow path would, and teach it to the C
        table, whose fast loop then forwards ``frame`` (True); or decline (False; see the module
        docstring)."""
        p = pk.Parsed(*_core.parse(frame, linktype))
        if not keyed(p):
            return False
        src, dst, proto, sport, dport = p.src, p.dst, p.proto, p.sport, p.dport
        dp = self.dp
        now = dp._now
        if now is None or not ts >= now or ts < 0:
            return False
        sandbox = self._sandbox(src, dst)
        if sandbox is None:
            return False
        engine._expire_timed(ts)
        ft = engine.ft
        if ft.earlier or dp.next_timer() <= ts:
            # the fast path's changes first: expiry reads the connections, and a timer the fast
            # path moved earlier reaches the slow path's heap (ConnTable.reschedule) only so
            engine._sync()
            dp._advance(ts)
        else:
            if ft.dirty > 2 * len(ft) + 4096:
                engine._sync()  # the list of changed entries stays bounded
            dp._now = ts  # all Dataplane._advance does when no timer is due
        table = dp.table
        if table.get((K_OUT, proto, src, sport, dst, dport)) is not None or table.full:
            return False
        initial = self.initial[proto][p.tcp_flags]
        if initial is None:
            return False
        function, pinned = sandbox
        planned = self._planned(proto, src, dst, dport, function, pinned, ts)
        if planned is None:
            return False
        control = dp.control
        subnet_id, eni, plan, done = planned
        _, eni_ip, out_points, nat, back_points, out_interned, back_interned = done
        nat_pool = plan[10]
        if nat is not None and not nat_pool.can_allocate(nat[2], nat[3], nat[4]):
            return False
        # --- from here on, what Dataplane.process / _open do for this packet, but for counting
        # and forwarding it, which the fast loop does next (in the connection's opening state),
        # and for the Path and the conntrack entry (``adopt``), which wait until Python needs them
        events = engine.ft.take_events()  # records of first packets the fast loop forwarded come first
        if events:
            engine._first_packets(events)
        if (engine.open_in_loop and table.max_connections is None
                and self._arm(engine, proto, src, dst, dport, function, pinned, subnet_id, eni, done)
                and engine._open_in_loop(frame, ts, linktype)):
            return True  # the template did it, as below
        control.open_on(eni, function, ts)
        eni_id = eni.id
        pool = dp._ports[eni_id]
        port = pool.allocate(proto, dst, dport, hint=(src << 16) | sport)
        nat_addr = nat_port = None
        if nat is not None:
            _, _nat_id, nat_proto, nat_dst, nat_dport = nat
            nat_addr, nat_port = nat_pool.allocate(nat_proto, nat_dst, nat_dport, (eni_ip << 16) | port)
        conn = Conn(proto, 4, function, eni_id, initial, (src, sport, dst, dport), (eni_ip, port, dst, dport), ts)
        conn.packets_orig = 0  # the fast loop counts the packet
        control.commit_connection(eni)
        dp.connections_opened += 1
        records = dp.flowlog.table.record_points(out_interned, proto, port, nat_port or 0, ts) if out_points else []
        engine._teach_opened(conn, Opened(plan, subnet_id, pool, nat_addr, nat_port, out_points, back_points, dp.gen,
                                          back_interned), records, ts)
        return True

    def _planned(self, proto, src, dst, dport, function, pinned, ts) -> Optional[tuple]:
        """What a planned open from ``src`` (a sandbox of ``function``) to ``dst``:``dport`` at
        ``ts`` would use, as ``(subnet id, ENI, plan, compiled plan)``, or None when it would
        decline: the function is not in a VPC, its egress is not decided and allowed yet, no ENI
        slot is usable, the destination is not planned from that ENI, or the plan keeps a check."""
        dp = self.dp
        control = dp.control
        fn = control.function(function)
        if not fn.in_vpc:
            return None
        egress = dp._egress.get((fn.security_group_ids, 4, proto, dst, dport))
        if egress is None or egress[1] or egress[2] is None:
            return None
        subnet_id = control.subnet_for(function, src, pinned)
        eni = control.usable_eni(function, subnet_id, ts, partial(dp._port_free, proto, dst, dport))
        if eni is None or eni.id not in dp._known_enis:
            return None
        key = (eni.id, egress[0], 4, proto, dst, dport)
        plan = dp._plans.get(key)
        if plan is None:
            return None
        got = self.compiled.get(key)
        done = got[1] if got is not None and got[0] is plan else self._compile(key, plan, eni)
        return None if done is None else (subnet_id, eni, plan, done)

    def arm_after_open(self, engine, parsed, ts: float) -> None:
        """The slow path just opened the connection of ``parsed`` (its first packet) at ``ts``:
        arm the template its destination's next first packets will open from in the fast loop,
        when a planned open would make them."""
        dp = self.dp
        if not engine.open_in_loop or dp.table.max_connections is not None or not keyed(parsed):
            return
        sandbox = self._sandbox(parsed.src, parsed.dst)
        if sandbox is None:
            return
        function, pinned = sandbox
        planned = self._planned(parsed.proto, parsed.src, parsed.dst, parsed.dport, function, pinned, ts)
        if planned is not None:
            subnet_id, eni, _, done = planned
            self._arm(engine, parsed.proto, parsed.src, parsed.dst, parsed.dport, function, pinned, subnet_id, eni,
                      done)

    def _sandbox(self, src: int, dst: int):
        """The sandbox ``(function, pinned subnet)`` an IPv4 packet from ``src`` to ``dst`` leaves,
        or None (not a sandbox's, or to another sandbox: the slow path's)."""
        sandboxes = self.dp._sandboxes[4]
        sandbox = sandboxes.lookup(src)
        return None if sandbox is None or sandboxes.lookup(dst) is not None else sandbox

    def _arm(self, engine, proto, src, dst, dport, function, pinned, subnet_id, eni, done) -> bool:
        """Arm the template for first packets like this one (same protocol, destination, sandbox
        and subnet) on this ENI, unless armed already: the fast loop opens them as :meth:`open`
        would, while the engine's facts hold (see ``ext/hp_open.h``). False when it cannot be
        armed: the sandbox's prefix holds another sandbox, the ENI's group or a leg is too long."""
        dp = self.dp
        span = dp._sandboxes[4].range_of(src)
        if span is None:
            return False
        control = dp.control
        modulus = control.subnet_modulus(function, pinned)
        match = (proto, dst, dport, span, modulus, src % modulus if modulus else 0)
        plan = done[0]
        armed = self.armed.get(match)
        if armed is not None and armed[0] == engine._arm_epoch and armed[1] is eni and armed[2] is plan:
            return True
        earlier = control.earlier_enis(function, subnet_id, eni)
        if earlier is None:
            return False
        _, eni_ip, out_points, nat, back_points, out_interned, back_interned = done
        slots = [engine._eni_slot(other) for other in earlier]
        flags = kind_flags(True, plan[9], nat is not None)
        tid = engine.opens_arm(function, dp.gen, proto, dst, dport, span[0], span[1], modulus, match[5],
                               engine._eni_slot(eni), slots, eni_ip, flags, plan[10] is not None, dp._ports[eni.id],
                               plan[10] if nat is not None else None, nat[2:] if nat is not None else None,
                               out_interned, back_interned, self.initial[proto])
        if tid is None:
            return False
        engine._templates[tid] = Template(function, eni.id, subnet_id, dp._ports[eni.id], plan, nat is not None,
                                          out_points, back_points, dp.gen, back_interned)
        if len(self.armed) >= PLAN_CACHE_SIZE:
            self.armed = {}
        self.armed[match] = (engine._arm_epoch, eni, plan)
        return True


def adopt(dp, conn, opened: Opened) -> None:
    """Give a connection a planned open made (``opened``: what it decided) the ``Path`` and the
    conntrack entry ``Dataplane._open`` gives it (keys, timer, NAT idle timer): the reference's
    state for the connection from then on. ``conn`` holds the connection's current state."""
    plan, subnet_id, pool, nat_addr, nat_port, out_points, back_points, gen, _ = opened
    proto = conn.proto
    src, sport, dst, dport = conn.lambda_tuple
    eni_ip, port = conn.eni_tuple[0], conn.eni_tuple[1]
    make = dp._make
    path = Path("vpc")
    path.proto, path.version = proto, 4
    path.eni_id, path.subnet_id, path.eni_ip, path.eni_port = conn.eni_id, subnet_id, eni_ip, port
    path.pool, path.slot = pool, True
    path.fwd = make(4, False, src, eni_ip, sport, port)
    restore_plan(path, plan)
    if nat_addr is not None:
        path.nat_addr, path.nat_port = nat_addr, nat_port
        path.nat_fwd = make(4, False, eni_ip, nat_addr, port, nat_port)
    path.back = (None, _accepted(back_points, port, nat_port))
    path.gen = gen
    path.out = (None, _accepted(out_points, port, nat_port))
    conn.path = path
    conn.untracked = path.untracked
    conn.dest_interface_id = path.dest_id
    expires = conn.expires
    table = dp.table
    table.add(conn, vpc_keys(proto, src, sport, dst, dport, eni_ip, port))
    if conn.expires != expires:  # add starts the timer from the state: the fast path may have kept it
        conn.expires = expires
        table.reschedule(conn)
    if path.nat_pool is not None:
        dp._nat_queue(conn, conn.nat_last_seen)


def release(dp, conn, opened: Opened) -> None:
    """``Dataplane._release`` for a connection a planned open made that expired before anything
    adopted it: its source port, ENI slot and NAT gateway port are free again."""
    plan, _subnet_id, pool, nat_addr, nat_port = opened[:5]  # Opened
    eni_ip, eni_port, dst, dport = conn.eni_tuple
    pool.release(conn.proto, eni_port, dst, dport)
    dp.control.close_connection(conn.eni_id)
    if nat_addr is not None:
        plan[10].release(nat_addr, conn.proto, nat_port, dst, dport)
