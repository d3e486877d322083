"""The reference dataplane: the packet pipeline of the Lambda Hyperplane ENI, in plain Python.

This is the executable specification (``docs/dataplane.md`` describes it rule by rule, with the
AWS sources) and the fallback when the Cython core is not built. One packet goes through:

1. parse (``hyperplane.packet``); ``malformed`` when it does not parse, ``not-hyperplane`` for a
   frame that is not IP;
2. classify by address: from a sandbox (outbound), to a sandbox (a reply as the sandbox sees it),
   to a Hyperplane ENI address (VPC-side inbound), else ``not-hyperplane``;
3. protocol: TCP and UDP only (IPv4 UDP fragments follow their first fragment);
4. conntrack lookup; a hit is the fast path: the connection's cached path decisions (re-derived
   when the configuration changed), a state update, a rewrite with per-connection checksum deltas;
5. a miss on an outbound packet opens a connection: function state, the function's SG egress,
   ENI and port (V2N), then the steps of the path the route table chose (NACLs, the destination's
   SG, the NAT gateway, ...), each step able to drop the packet with its reason.

Every packet gets exactly one :class:`~hyperplane.engine.Result`.
"""
from __future__ import annotations

import copy
import functools
import heapq
import ipaddress
import socket
import struct
import types
import weakref
from typing import Optional

from hyperplane import packet as pk
from hyperplane.checksum import checksum, ones_sum
from hyperplane.codes import DropReason, Verdict
from hyperplane.control import ControlOptions, ControlPlane
from hyperplane.engine import Hop, Result, Trace
from hyperplane.flowlogs import V2_FIELDS, FlowLogAggregator
from hyperplane.reference.conntrack import ORIGINAL, REPLY, Conn, ConnTable
from hyperplane.reference.policy import Policy, PrefixMap, network_to_int
from hyperplane.reference.ports import NatPortPool, PortPool

R = DropReason
#: The drop reasons as plain ints, for the tuples kept per connection (ints keep those tuples out
#: of the garbage collector's sight; DropReason members would not).
I = types.SimpleNamespace(**{r.name: int(r) for r in DropReason})
FORWARDED = Verdict.FORWARDED
#: ``DropReason.NONE`` once: reaching an enum member through its class costs ~70 ns in 3.11.
NO_DROP = DropReason.NONE
DROPPED = Verdict.DROPPED
TCP, UDP = 6, 17
_NO_TAPS: dict = {}

#: Key tags of the connection table: a connection is stored under its sandbox-side forward key,
#: its sandbox-side reply key and its VPC-side reply key.
K_OUT, K_REPLY, K_VPC = 0, 1, 2

#: Route targets whose connections AWS always tracks ("automatically tracked" [AWS-FACTS 2]).
AUTO_TRACKED_TARGETS = frozenset({"nat", "tgw", "eigw"})

#: How long a first IPv4 UDP fragment lets its later fragments through (Linux ipfrag_time: 30 s).
FRAGMENT_TIMEOUT = 30.0

#: The Lambda-owned public addresses of functions without VpcConfig come from TEST-NET-3
#: (RFC 5737): AWS does not publish them, and a documentation range can never be confused with a
#: real host in a capture.
LAMBDA_PUBLIC_NET = ipaddress.ip_network("203.0.113.0/24")

#: Addresses a function without VpcConfig cannot reach (not routed on the internet).
_NON_PUBLIC_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)

#: Where explain places a function that has no sandbox range (RFC 2544 benchmarking range).
EXPLAIN_SANDBOX_NET = ipaddress.ip_network("198.18.0.0/24")


# ------------------------------------------------------------------------------------------------
# per-connection rewrites (RFC 1624 with the deltas computed once per connection and direction)
# ------------------------------------------------------------------------------------------------


def _word_sum(value: int, nbytes: int) -> int:
    """The plain sum of the 16-bit words of an address (2 words for IPv4, 8 for IPv6)."""
    if nbytes == 4:
        return (value >> 16) + (value & 0xFFFF)
    total = 0
    for _ in range(nbytes // 2):
        total += value & 0xFFFF
        value >>= 16
    return total


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


class Rewrite:
    """Set one side's address (and port) of every packet of one connection direction.

    The incremental checksum update of RFC 1624 eqn. 3, ``HC' = ~(~HC + ~m + m')``, summed over
    the changed 16-bit words, is the same for every packet of the direction (the old address and
    port never change), so the sum is computed once, by :meth:`make`. :meth:`apply` gives the
    same bytes as :func:`hyperplane.checksum.rewrite_src` / ``rewrite_dst`` (the property tests
    check it): IPv4 header checksum fixed; TCP and UDP checksums fixed when captured; an IPv4 UDP
    checksum of 0 ("none") stays 0 and a UDP result of 0 is written 0xFFFF; non-first fragments
    get the address only.

    A rewrite is a plain tuple of ints and bytes, so the garbage collector stops tracking it: a
    dataplane holds several per connection, and tracked objects make every collection slower."""

    @staticmethod
    def make(version: int, dst: bool, old_addr: int, new_addr: int, old_port: int, new_port: int) -> tuple:
        nbytes = 4 if version == 4 else 16
        addr_at = (16 if dst else 12) if version == 4 else (24 if dst else 8)
        # sum of ~m (= 0xFFFF - m per word) over the old words, plus the new words
        addr_sum = 0xFFFF * (nbytes // 2) - _word_sum(old_addr, nbytes) + _word_sum(new_addr, nbytes)
        return (version, addr_at, new_addr.to_bytes(nbytes, "big"), 2 if dst else 0, new_port.to_bytes(2, "big"),
                addr_sum if version == 4 else 0, addr_sum + (~old_port & 0xFFFF) + new_port, addr_sum)

    @staticmethod
    def apply(rewrite: tuple, ip: bytes, p: pk.Parsed) -> bytes:
        """The rewritten copy of the IP packet ``ip`` (``p`` is its parse, offsets from ``p.l3``)."""
        version, at, addr, port_off, port, ip_sum, l4_sum, l4_sum_noport = rewrite
        buf = bytearray(ip)
        n = len(buf)
        buf[at : at + len(addr)] = addr
        if version == 4:
            hc = (buf[10] << 8) | buf[11]
            hc = ~_fold((~hc & 0xFFFF) + ip_sum) & 0xFFFF
            buf[10] = hc >> 8
            buf[11] = hc & 0xFF
        if p.l4 < 0:
            return bytes(buf)
        l4 = p.l4 - p.l3
        csum_at = l4 + (16 if p.proto == TCP else 6)
        port_at = l4 + port_off
        has_port = port_at + 2 <= n
        if has_port:
            buf[port_at : port_at + 2] = port
        if csum_at + 2 > n:
            return bytes(buf)
        hc = (buf[csum_at] << 8) | buf[csum_at + 1]
        if p.proto == UDP and hc == 0 and version == 4:
            return bytes(buf)
        hc = ~_fold((~hc & 0xFFFF) + (l4_sum if has_port else l4_sum_noport)) & 0xFFFF
        if p.proto == UDP and hc == 0:
            hc = 0xFFFF
        buf[csum_at] = hc >> 8
        buf[csum_at + 1] = hc & 0xFF
        return bytes(buf)


def _reply_rewrites(conn, make) -> tuple:
    """A connection's reply Rewrites, made by ``make`` (``Rewrite.make`` or its C twin) and kept
    on its path when its first reply comes: sandbox-view reply -> VPC form, VPC form -> sandbox
    view (both destination), and reply -> internet form when a NAT gateway translates it (else
    None)."""
    path = conn.path
    v = conn.version
    src, sport = conn.lambda_tuple[0], conn.lambda_tuple[1]
    eni_ip, port = conn.eni_tuple[0], conn.eni_tuple[1]
    nat_rev = None
    if path.nat_fwd is not None:
        nat_rev = make(4, True, eni_ip, path.nat_addr, port, path.nat_port)
    path.replies = (make(v, True, src, eni_ip, sport, port), make(v, True, eni_ip, src, port, sport),
                    nat_rev)
    return path.replies


@functools.lru_cache(maxsize=1 << 16)
def address_text(version: int, value: int) -> str:
    """An integer address as text (what flow logs print), without ipaddress objects. Memoised:
    every new connection logs a few addresses, mostly the same ones (its ENI, its destination)."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


# ------------------------------------------------------------------------------------------------
# synthetic packets (explain's probes, the NAT gateway's RST)
# ------------------------------------------------------------------------------------------------


def build_packet(version: int, src: int, dst: int, proto: int, sport: int, dport: int, flags: int = 0,
                 seq: int = 0, ack: int = 0, payload: bytes = b"", ident: int = 0) -> bytes:
    """A minimal, checksum-correct IPv4/IPv6 TCP or UDP packet."""
    if proto == TCP:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                                   flags, 65535, 0, 0) + payload)
        csum_at = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
        csum_at = 6
    if version == 4:
        s, d = src.to_bytes(4, "big"), dst.to_bytes(4, "big")
        pseudo = s + d + bytes((0, proto)) + len(l4).to_bytes(2, "big")
    else:
        s, d = src.to_bytes(16, "big"), dst.to_bytes(16, "big")
        pseudo = s + d + len(l4).to_bytes(4, "big") + bytes((0, 0, 0, proto))
    csum = checksum(bytes(l4), ones_sum(pseudo))
    if proto == UDP and csum == 0:
        csum = 0xFFFF
    l4[csum_at : csum_at + 2] = csum.to_bytes(2, "big")
    if version == 4:
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0x4000, 64, proto, 0, s, d))
        header[10:12] = checksum(bytes(header)).to_bytes(2, "big")
    else:
        header = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s, d))
    return bytes(header) + bytes(l4)


def _rst_for(ip: bytes, p: pk.Parsed) -> bytes:
    """The RST answering TCP segment ``ip`` (RFC 9293 3.10.7.1: with ACK set, ``seq = SEG.ACK``;
    otherwise ``seq = 0, ack = SEG.SEQ + SEG.LEN`` with ACK), from its destination to its source."""
    l4 = p.l4 - p.l3
    seg_seq = int.from_bytes(ip[l4 + 4 : l4 + 8], "big")
    seg_ack = int.from_bytes(ip[l4 + 8 : l4 + 12], "big")
    doff = (ip[l4 + 12] >> 4) * 4
    seg_len = max(0, p.ip_len - l4 - doff) + (1 if p.tcp_flags & pk.SYN else 0) + (1 if p.tcp_flags & pk.FIN else 0)
    if p.tcp_flags & pk.ACK:
        return build_packet(p.version, p.dst, p.src, TCP, p.dport, p.sport, pk.RST, seq=seg_ack)
    return build_packet(p.version, p.dst, p.src, TCP, p.dport, p.sport, pk.RST | pk.ACK, seq=0,
                        ack=seg_seq + seg_len)


# ------------------------------------------------------------------------------------------------
# paths: the steps a connection's packets take through the customer VPC
# ------------------------------------------------------------------------------------------------

# Step kinds (tuples; the first element is the kind):
#   ("sg", groups, egress, version, peer, port, reason, sticky)   security groups of an interface
#   ("sg-fn", ...)  the function's own egress check (done before the ENI is chosen; re-checked later)
#   ("block", reason, component, rule)                             the route decided a drop
#   ("nacl", subnet_id, egress, version, peer, port, reason)      the subnet's NACL; port None = NAT port
#   ("route", subnet_id, version, dst, target_id)                  the route must still exist
#   ("nat-alloc",)                                                  NAT gateway port (creation only)
#   ("nat-route", subnet_id, version, dst, private, nat_id)         NAT subnet route to an IGW
# NACLs and route tables are looked up from the subnet when a step runs, so a changed association
# applies to the next packet too.
#   ("log", eni_id, src, dst, sport, dport, direction, extra)       a flow-log point (port None = NAT;
#                                                                   src, dst as text once planned)
#   ("note", kind, component, decision, detail)                     trace only
# A port ENI_PORT stands for the connection's Hyperplane ENI port: the steps depend on the
# connection only through it and the NAT port, so connections to the same destination from the
# same ENI share one plan (Dataplane._plans).
S_SG, S_NACL, S_ROUTE, S_NAT_ALLOC, S_NAT_ROUTE, S_LOG, S_NOTE, S_SG_FN, S_BLOCK = range(9)
_SUBNET_STEPS = frozenset({S_NACL, S_ROUTE, S_NAT_ROUTE})
ENI_PORT = -1

#: Steps that a walk opening a connection passes over without effect when nothing is traced:
#: notes, the function's own SG egress (checked before the ENI was chosen) and the route (planned
#: under the same configuration a moment before; its subnet exists). See Dataplane._at_creation.
_IDLE_AT_CREATION = frozenset({S_NOTE, S_SG_FN, S_ROUTE})

#: What planning decides besides the steps (the Path attributes a cached plan restores).
_PLANNED = ("untracked", "target", "route_label", "dest_id", "kind", "internet", "nat_pool", "nat_id")

#: Plans kept per dataplane; past this many destinations the cache starts over (a capture that
#: scans the address space must not grow it without bound).
PLAN_CACHE_SIZE = 4096


class Path:
    """What a connection's packets meet, decided when it opened; the cached outcome of each leg
    (``out`` / ``back``: ``(block, logs)``) is re-derived when the configuration changes."""

    __slots__ = ("gen", "kind", "proto", "version", "eni_id", "subnet_id", "eni_ip", "eni_port", "target", "route_label",
                 "out_steps", "back_steps", "out", "back", "pool", "slot", "nat_id", "nat_pool",
                 "nat_addr", "nat_port", "nat_expired", "eni_tap", "internet", "fwd", "nat_fwd", "replies",
                 "dest_id", "untracked")

    def __init__(self, kind: str):
        self.gen = -1
        self.kind = kind
        self.proto = 0
        self.version = 4
        self.eni_id = None
        self.subnet_id = None
        self.eni_ip = 0
        self.eni_port = 0
        self.target = None
        self.route_label = None
        self.out_steps: list = []
        self.back_steps: list = []
        self.out = (None, ())
        self.back = (None, ())
        self.pool = None
        self.slot = False
        self.nat_id = None
        self.nat_pool = None
        self.nat_addr = None
        self.nat_port = None
        self.nat_expired = False
        self.eni_tap = True
        self.internet = False
        self.fwd = None  # Rewrite: sandbox form -> VPC form (source)
        self.nat_fwd = None  # Rewrite: VPC form -> internet form (source)
        self.replies = None  # the reply Rewrites, made at the first reply (_reply_rewrites)
        self.dest_id = None
        self.untracked = False


def restore_plan(path: Path, plan: tuple) -> tuple:
    """Give ``path`` the steps and planned attributes a kept plan holds (``Dataplane._plan``);
    returns the plan's two legs as the opening walks need them (``Dataplane._at_creation``)."""
    (path.out_steps, path.back_steps, out_create, back_create, path.untracked, path.target, path.route_label,
     path.dest_id, path.kind, path.internet, path.nat_pool, path.nat_id) = plan
    return out_create, back_create


def vpc_keys(proto: int, src: int, sport: int, dst: int, dport: int, eni_ip: int, port: int) -> tuple:
    """The conntrack keys of a connection through a Hyperplane ENI: the sandbox's packet, a reply
    in the sandbox's view, a reply in its VPC form."""
    return (K_OUT, proto, src, sport, dst, dport), (K_REPLY, proto, dst, dport, src, sport), \
           (K_VPC, proto, dst, dport, eni_ip, port)


def _texted(steps: list, version: int) -> tuple:
    """The steps with the addresses of their log points as flow logs print them (made once per
    plan, not per connection)."""
    return tuple((s[0], s[1], address_text(version, s[2]), address_text(version, s[3])) + s[4:] if s[0] == S_LOG
                 else s for s in steps)


class _Block(Exception):
    """A drop decided while opening a connection (reason, component, rule)."""

    def __init__(self, reason: DropReason, component: Optional[str], rule: Optional[str] = None):
        super().__init__(reason.label)
        self.reason = reason
        self.component = component
        self.rule = rule


# ------------------------------------------------------------------------------------------------
# the dataplane
# ------------------------------------------------------------------------------------------------


class _WeakMembers:
    """``Policy``'s ``extra_members`` callback: the dataplane's ``_hp_members`` through a weak
    reference, so the dataplane and its policy form no reference cycle (a cycle would keep a
    finished engine, with every connection it tracked, alive until a full garbage collection).
    A deep copy (explain's throwaway state) calls the copy of the dataplane."""

    __slots__ = ("_ref",)

    def __init__(self, dataplane: "Dataplane"):
        self._ref = weakref.ref(dataplane)

    def __call__(self, group_id: str):
        dataplane = self._ref()
        return () if dataplane is None else dataplane._hp_members(group_id)

    def __deepcopy__(self, memo):
        return _WeakMembers(copy.deepcopy(self._ref(), memo))


class Dataplane:
    """The reference backend of :class:`hyperplane.engine.Engine` (same methods)."""

    def __init__(self, model, sandboxes, options, port_pool=PortPool, nat_port_pool=NatPortPool, parse=pk.parse,
                 rewrite=Rewrite):
        """``port_pool`` / ``nat_port_pool``: the classes of the ENIs' and NAT gateways' port pools
        (:mod:`hyperplane.reference.ports`, or the C twins the core backend passes, which give the
        same ports for the same calls: tests/unit/test_core_ports.py); ``parse``: the packet
        parser (:func:`hyperplane.packet.parse`, or the equal C one); ``rewrite``: what makes and
        applies the per-connection rewrites (:class:`Rewrite`, or the C twin with the same
        tuples and bytes: tests/unit/test_core_rewrite.py)."""
        self.options = options
        self._parse = parse
        self._make, self._apply = rewrite.make, rewrite.apply
        self._port_pool, self._nat_port_pool = port_pool, nat_port_pool
        self.model = model
        self.strict = bool(options.tcp_strict)
        self.flow_log_fields = tuple(options.flow_log_fields or V2_FIELDS)
        self._extra_fields = any(f not in V2_FIELDS for f in self.flow_log_fields)
        self.control: Optional[ControlPlane] = None
        self.table = ConnTable(options.timeouts, options.max_connections)
        self.flowlog = FlowLogAggregator(options.flow_log_interval, model.account_id(), self.flow_log_fields)
        self.gen = 0
        self._now = None
        self.last_parsed: Optional[pk.Parsed] = None  # the last packet process() parsed (the core reuses it)
        self.trace: Optional[list] = None  # explain's hop list while a probe runs
        self._leg = "request"
        self._ports: dict[str, PortPool] = {}
        self._nat_pools: dict[tuple[str, bool], NatPortPool] = {}
        self._nat_idle: dict[str, int] = {}
        self._nat_heap: list = []
        self._nat_seq = 0
        self._lambda_pools: dict[str, tuple[int, PortPool]] = {}
        self._hp_addresses: dict[tuple[int, int], str] = {}
        self._plans: dict[tuple, tuple] = {}  # see _plan
        self._egress: dict[tuple, tuple] = {}  # see _decide_egress
        self._known_enis: set[str] = set()
        self._frags: dict = {}
        self._frag_heap: list = []
        self.packets = 0
        self.forwarded = 0
        self.drops = [0] * len(DropReason)
        self.connections_opened = 0
        self._sandboxes = {4: PrefixMap(4), 6: PrefixMap(6)}
        self._sandbox_list = []
        for sb in sandboxes:
            self._add_sandbox(sb.function, sb.network, sb.subnet_id)
        self._non_public = PrefixMap(4)
        for cidr in _NON_PUBLIC_V4:
            v, n, p = network_to_int(ipaddress.ip_network(cidr))
            self._non_public.add(n, p, True)
        self.policy = Policy(model, _WeakMembers(self))

    # --- setup ----------------------------------------------------------------------------------
    def _add_sandbox(self, function: str, network, subnet_id: Optional[str]) -> None:
        if function not in self.model.functions:
            known = ", ".join(sorted(self.model.functions)) or "none"
            raise ValueError(f"sandbox {network}: unknown function {function!r} (functions in the configuration: {known})")
        fn = self.model.functions[function]
        if subnet_id is not None and subnet_id not in fn.subnet_ids:
            raise ValueError(f"sandbox {network}: subnet {subnet_id} is not in function {function!r}'s VpcConfig "
                             f"({', '.join(fn.subnet_ids) or 'none'})")
        v, n, p = network_to_int(network)
        self._sandboxes[v].add(n, p, (function, subnet_id), replace=True)
        self._sandbox_list.append((function, network, subnet_id))

    def _start(self, now: float) -> None:
        """Create the control plane: every function Active, its ENIs created, before the first
        packet (AWS creates them when the function is created or configured) [AWS-FACTS 1]."""
        opts = self.options
        self.control = ControlPlane(
            self.model,
            ControlOptions(eni_capacity=opts.eni_capacity, enis_per_vpc=opts.enis_per_vpc, creation_delay=0.0,
                           seed=opts.seed),
            now=now,
        )
        self._now = now
        self._refresh_enis()

    def _refresh_enis(self) -> None:
        """Index the addresses of the Hyperplane ENIs (new overflow ENIs included)."""
        changed = False
        for eni in self.control.enis():
            if eni.id in self._known_enis and eni.live:
                continue
            changed = True
            self._known_enis.add(eni.id)
            for address in eni.addresses:
                key = (address.version, int(address))
                if eni.live:
                    self._hp_addresses[key] = eni.id
                elif self._hp_addresses.get(key) == eni.id:
                    del self._hp_addresses[key]
        if changed:
            self.policy.invalidate_members()
            self._plans = {}
            self._egress = {}

    def _hp_members(self, group_id: str):
        if self.control is None:
            return ()
        return [int(a) for a in self.control.members_of(group_id)]

    # --- bookkeeping ----------------------------------------------------------------------------
    def _drop(self, reason: DropReason, component=None, rule=None, taps=_NO_TAPS, direction=None,
              function=None, eni_id=None, emitted=()) -> Result:
        self.drops[reason] += 1
        if self.trace is not None:
            self._hop("verdict", component or "-", "drop", reason.label, rule)
        return Result(DROPPED, reason, component, rule, taps, eni_id, direction, function, emitted)

    def _hop(self, kind: str, component: str, decision: str, detail: str = "", rule=None) -> None:
        self.trace.append(Hop(self._leg, kind, str(component), decision, detail, rule))

    def _advance(self, ts: float) -> float:
        """Move time to ``ts`` (never backwards), firing the timers due by then in their own time
        order: connection expiry, NAT idle, fragments. A NAT mapping idle since ``D`` is
        forgotten at ``D`` (IdleTimeoutCount + 1) even when its connection's timer ran out too
        before the next packet (that timer fires after it). So moving time once over a stretch
        without packets does what moving it at every packet of the stretch would (the core
        backend's fast path relies on it: it runs the timers at its next slow-path packet)."""
        now = self._now
        if now is None:
            self._start(ts)
            now = ts
        if ts <= now:
            return now
        self._now = ts
        table = self.table
        heap = self._nat_heap
        idle = self.options.nat_idle_timeout
        while heap and heap[0][0] <= ts:
            when, _, conn = heap[0]
            path = conn.path
            if not conn.alive or path.nat_expired or path.nat_pool is None:
                heapq.heappop(heap)
                continue
            deadline = conn.nat_last_seen + idle
            if deadline > when:  # used since it was queued: due later
                self._nat_seq += 1
                heapq.heapreplace(heap, (deadline, self._nat_seq, conn))
                continue
            for ended in table.expire(when):  # connection timers due first (ties too)
                self._release(ended)
            heapq.heappop(heap)
            if conn.alive:
                self._nat_expire(conn)
        for conn in table.expire(ts):
            self._release(conn)
        if self._frag_heap and self._frag_heap[0][0] <= ts:
            while self._frag_heap and self._frag_heap[0][0] <= ts:
                _, key = heapq.heappop(self._frag_heap)
                entry = self._frags.get(key)
                if entry is not None and entry[2] <= ts:
                    del self._frags[key]
        return ts

    def next_timer(self) -> float:
        """The earliest time :meth:`_advance` has a timer to fire at (``inf`` when none): moving
        the clock to an earlier time fires nothing."""
        due = self.table.next_timer()
        if self._nat_heap and self._nat_heap[0][0] < due:
            due = self._nat_heap[0][0]
        if self._frag_heap and self._frag_heap[0][0] < due:
            due = self._frag_heap[0][0]
        return due

    def _nat_queue(self, conn: Conn, now: float) -> None:
        """Start the NAT idle timer of a connection opened at ``now`` through a NAT gateway."""
        self._nat_seq += 1
        heapq.heappush(self._nat_heap, (now + self.options.nat_idle_timeout, self._nat_seq, conn))

    def _nat_expire(self, conn: Conn) -> None:
        """The NAT gateway forgets an idle flow (350 s without a packet): IdleTimeoutCount + 1,
        its port is free again [AWS-FACTS 5]."""
        path = conn.path
        path.nat_expired = True
        self._nat_idle[path.nat_id] = self._nat_idle.get(path.nat_id, 0) + 1
        dst, dport = conn.eni_tuple[2], conn.eni_tuple[3]
        path.nat_pool.release(path.nat_addr, conn.proto, path.nat_port, dst, dport)

    def _release(self, conn: Conn) -> None:
        """Give back what a finished connection held: its source port, its ENI slot and its NAT
        gateway port (conntrack expiry frees them all)."""
        path = conn.path
        eni_ip, eni_port, dst, dport = conn.eni_tuple
        if path.pool is not None:
            path.pool.release(conn.proto, eni_port, dst, dport)
        if path.slot:
            self.control.close_connection(path.eni_id)
        if path.nat_pool is not None and not path.nat_expired:
            path.nat_pool.release(path.nat_addr, conn.proto, path.nat_port, dst, dport)
            path.nat_expired = True

    # --- the pipeline ---------------------------------------------------------------------------
    def process(self, data, ts: float, linktype: int = pk.RAW) -> Result:
        self.packets += 1
        now = self._advance(ts)
        p = self.last_parsed = self._parse(data, linktype)
        if not p.ok:
            return self._drop(R.NOT_HYPERPLANE if p.not_ip else R.MALFORMED, None, p.error or None)
        ip = bytes(data[p.l3 : p.l3 + p.ip_len])
        v = p.version
        sandbox = self._sandboxes[v].lookup(p.src)
        if sandbox is not None:
            return self._from_sandbox(p, ip, now, ts, sandbox)
        sandbox = self._sandboxes[v].lookup(p.dst)
        if sandbox is not None:
            return self._to_sandbox(p, ip, now, ts, sandbox[0])
        eni_id = self._hp_addresses.get((v, p.dst))
        if eni_id is not None:
            return self._to_eni(p, ip, now, ts, eni_id)
        return self._drop(R.NOT_HYPERPLANE)

    def _protocol_ok(self, p: pk.Parsed) -> Optional[DropReason]:
        """TCP and UDP only; fragments of TCP are refused [AWS-FACTS 1, 5]; IPv4 UDP fragments
        pass (a non-first one with its first fragment's connection); IPv6 fragments do not."""
        proto = p.proto
        if proto != TCP and proto != UDP:
            return R.UNSUPPORTED_PROTOCOL
        if p.fragment and (proto == TCP or p.version == 6):
            return R.UNSUPPORTED_PROTOCOL
        return None

    def _fragment_conn(self, p: pk.Parsed, ip: bytes):
        """The connection and direction a non-first IPv4 UDP fragment belongs to."""
        ident = (ip[4] << 8) | ip[5]
        entry = self._frags.get((p.src, p.dst, ident))
        if entry is None or not entry[0].alive:
            return None, None
        return entry[0], entry[1]

    def _note_fragment(self, p: pk.Parsed, ip: bytes, conn: Conn, direction: str, now: float) -> None:
        if p.fragment and p.l4 >= 0:
            key = (p.src, p.dst, (ip[4] << 8) | ip[5])
            self._frags[key] = (conn, direction, now + FRAGMENT_TIMEOUT)
            heapq.heappush(self._frag_heap, (now + FRAGMENT_TIMEOUT, key))

    # --- outbound -------------------------------------------------------------------------------
    def _from_sandbox(self, p: pk.Parsed, ip: bytes, now: float, ts: float, sandbox) -> Result:
        function, pinned = sandbox
        bad = self._protocol_ok(p)
        if bad is not None:
            return self._drop(bad, function, None, direction="outbound", function=function)
        if p.l4 < 0:  # a later UDP fragment
            conn, direction = self._fragment_conn(p, ip)
            if conn is None:
                return self._drop(R.UNSUPPORTED_PROTOCOL, function, None, direction="outbound", function=function)
            if direction == "reply":
                return self._reply(conn, p, ip, now, ts, vpc_form=False)
            return self._established(conn, p, ip, now, ts)
        key = (K_OUT, p.proto, p.src, p.sport, p.dst, p.dport)
        conn = self.table.get(key)
        if conn is not None:
            return self._established(conn, p, ip, now, ts)
        if self._sandboxes[p.version].lookup(p.dst) is not None:  # a sandbox answering a sandbox
            conn = self.table.get((K_REPLY, p.proto, p.src, p.sport, p.dst, p.dport))
            if conn is not None:
                return self._reply(conn, p, ip, now, ts, vpc_form=False)
        return self._open(p, ip, now, ts, function, pinned)

    def _established(self, conn: Conn, p: pk.Parsed, ip: bytes, now: float, ts: float) -> Result:
        """The fast path of a sandbox packet on a tracked connection."""
        path = conn.path
        if path.gen != self.gen:
            self._recheck(conn)
        function = conn.function
        if path.nat_pool is not None and (path.nat_expired or now - conn.nat_last_seen >= self.options.nat_idle_timeout):
            return self._nat_timed_out(conn, p, ip, now, sandbox_side=True)
        block, logs = path.out
        eni_ip = self._apply(path.fwd, ip, p) if path.fwd is not None else ip
        taps = {"lambda": ip}
        if path.eni_tap:
            taps["eni"] = eni_ip
        if block is not None:
            self._log(logs, p, ts)
            return self._drop(R(block[0]), block[1], block[2], taps, "outbound", function, path.eni_id)
        reopened = conn.generation
        accepted, _ = self.table.update(conn, ORIGINAL, p.tcp_flags, now, self.strict, p.ip_len)
        if not accepted:
            return self._drop(R.INVALID_STATE, path.eni_id or function, None, taps, "outbound", function, path.eni_id)
        if conn.generation != reopened:  # a SYN reopened a TIME_WAIT/CLOSE tuple: SGs evaluated again
            self._recheck(conn, skip_sticky=False)
            block, logs = path.out
            if block is not None:
                self._log(logs, p, ts)
                self.table.remove(conn)
                self._release(conn)
                return self._drop(R(block[0]), block[1], block[2], taps, "outbound", function, path.eni_id)
        conn.nat_last_seen = now
        if path.internet:
            taps["internet"] = self._apply(path.nat_fwd, eni_ip, p) if path.nat_fwd is not None else eni_ip
        self._log(logs, p, ts)
        self._note_fragment(p, ip, conn, "out", now)
        self.forwarded += 1
        return Result(FORWARDED, R.NONE, None, None, taps, path.eni_id, "outbound", function)

    def _open(self, p: pk.Parsed, ip: bytes, now: float, ts: float, function: str, pinned) -> Result:
        """A sandbox packet matching no connection: try to open one."""
        trace = self.trace
        control = self.control
        v, proto, src, sport, dst, dport = p.version, p.proto, p.src, p.sport, p.dst, p.dport
        taps = {"lambda": ip}
        if trace is not None:
            self._hop("sandbox", function, "send", f"{pk.int_to_ip(src, v)}:{sport} -> {pk.int_to_ip(dst, v)}:{dport}")
        ok, status = control.invoke(function, now)
        if not ok:
            if trace is not None:
                self._hop("function", function, "deny", f"state {status.state.value}")
            return self._drop(R.FUNCTION_NOT_ACTIVE, function, None, taps, "outbound", function)
        fn = control.function(function)
        if trace is not None:
            self._hop("function", function, "allow", "state Active")
        initial = ConnTable.initial_state(proto, p.tcp_flags, self.strict)
        if initial is None:
            return self._drop(R.INVALID_STATE, function, None, taps, "outbound", function)
        if self.table.full:
            return self._drop(R.CONNTRACK_FULL, function, None, taps, "outbound", function)
        if not fn.in_vpc:
            return self._open_lambda_vpc(p, ip, now, ts, function, initial, taps)
        subnet_id = control.subnet_for(function, src, pinned)
        subnet = self.policy.subnets[subnet_id]
        if v == 6 and not (fn.ipv6_allowed_for_dual_stack and subnet.dual_stack):
            if trace is not None:
                self._hop("function", function, "drop", "IPv6 needs Ipv6AllowedForDualStack and a dual-stack subnet")
            return self._drop(R.NO_ROUTE, function, None, taps, "outbound", function)
        groups, exempt, rule = (self._egress.get((fn.security_group_ids, v, proto, dst, dport))
                                or self._decide_egress(fn, v, proto, dst, dport))
        if exempt:
            if trace is not None:
                self._hop("security-group", ",".join(groups), "pass", "Amazon-provided service: not filtered")
        else:
            if trace is not None:
                self._hop("security-group", ",".join(groups), "allow" if rule else "deny",
                          "egress " + ("matched" if rule else "no rule allows it"), rule)
            if rule is None:
                self._log_sg_egress_reject(function, subnet_id, p, ts)
                return self._drop(R.SG_EGRESS, groups[0] if groups else function, None, taps, "outbound", function)
        # ENI and source port (V2N) [AWS-FACTS 1]
        eni = control.open_connection(function, subnet_id, now, functools.partial(self._port_free, proto, dst, dport),
                                      commit=False)
        if eni is None:
            refusal = control.last_refusal
            detail = refusal.reason.value if refusal is not None else ""
            full = [e.id for e in control.enis_of(function) if e.subnet_id == subnet_id]
            component = full[0] if full else subnet_id
            if trace is not None:
                self._hop("hyperplane-eni", component, "drop", f"no connection slot ({detail})")
            return self._drop(R.PORT_EXHAUSTION, component, detail or None, taps, "outbound", function)
        eni_id = eni.id
        if eni_id not in self._known_enis:
            self._refresh_enis()
        pool = self._ports[eni_id]
        port = pool.allocate(proto, dst, dport, hint=(src << 16) | sport)
        eni_addr = eni.private_ip if v == 4 else eni.ipv6_address
        if eni_addr is None:  # a dual-stack subnet whose ENI got no IPv6 address
            pool.release(proto, port, dst, dport)
            control.close_connection(eni_id)
            return self._drop(R.NO_ROUTE, eni_id, None, taps, "outbound", function)
        eni_ip = int(eni_addr)
        path = Path("exempt" if exempt else "vpc")
        path.proto, path.version = proto, v
        path.eni_id, path.subnet_id, path.eni_ip, path.eni_port = eni_id, subnet_id, eni_ip, port
        path.pool, path.slot = pool, True
        path.fwd = self._make(v, False, src, eni_ip, sport, port)
        if trace is not None:
            self._hop("hyperplane-eni", eni_id, "translate", f"source -> {eni_addr}:{port} (V2N)")
        eni_form = self._apply(path.fwd, ip, p)
        taps["eni"] = eni_form
        try:
            # an exempt destination has no steps (the path's lists stay empty)
            out_create, back_create = ((), ()) if exempt else self._plan(path, groups, p, eni_ip)
            block, logs = self._walk(path, out_create if trace is None else path.out_steps, create=True)
            if block is not None:
                self._log(logs, p, ts)
                raise _Block(R(block[0]), block[1], block[2])
        except _Block as blocked:
            self._undo(path, proto, dst, dport)
            return self._drop(blocked.reason, blocked.component, blocked.rule, taps, "outbound", function, eni_id)
        self.trace = None  # the reply leg is traced when a reply comes
        path.back = self._walk(path, back_create, create=True)
        self.trace = trace
        path.gen = self.gen
        path.out = (None, logs)
        conn = Conn(proto, v, function, eni_id, initial, (src, sport, dst, dport), (eni_ip, port, dst, dport), now,
                    p.ip_len, p.tcp_flags)
        conn.path = path
        conn.untracked = path.untracked
        conn.dest_interface_id = path.dest_id
        self.table.add(conn, vpc_keys(proto, src, sport, dst, dport, eni_ip, port))
        control.commit_connection(eni)
        self.connections_opened += 1
        if path.nat_pool is not None:
            self._nat_queue(conn, now)
        if path.internet:
            taps["internet"] = self._apply(path.nat_fwd, eni_form, p) if path.nat_fwd is not None else eni_form
        if trace is not None and exempt:
            self._hop("service", pk.int_to_ip(dst, v), "forward", "Amazon-provided service")
        self._log(logs, p, ts)
        if p.fragment:
            self._note_fragment(p, ip, conn, "out", now)
        self.forwarded += 1
        if trace is not None:
            self._hop("verdict", "-", "forward", "request delivered")
        return Result(FORWARDED, NO_DROP, None, None, taps, eni_id, "outbound", function)

    def _decide_egress(self, fn, v: int, proto: int, dst: int, dport: int) -> tuple:
        """The function's own side of a new connection, ``(groups, exempt, rule)``: its security
        groups (each once, in order), whether the destination is an Amazon-provided service that
        security groups do not filter, and else the groups' egress rule that allows the connection
        (None: refused). Kept in ``_egress`` per security groups and destination: the answer
        depends only on the configuration and on group membership (``Policy.members``), so
        ``_egress`` is emptied with the plans, when either changes (``update_config``,
        ``_refresh_enis``)."""
        groups = tuple(dict.fromkeys(fn.security_group_ids))
        exempt = self.policy.is_exempt(v, dst, proto, dport)
        rule = None if exempt else self.policy.sg_match(groups, True, proto, v, dst, dport)
        if len(self._egress) >= PLAN_CACHE_SIZE:
            self._egress = {}
        decided = self._egress[fn.security_group_ids, v, proto, dst, dport] = (groups, exempt, rule)
        return decided

    def _port_free(self, proto: int, dst: int, dport: int, eni) -> bool:
        """``open_connection``'s ``accept`` (bound to the connection by a partial): the ENI's
        source-port pool, made on first use, has a port left for this destination."""
        pool = self._ports.get(eni.id)
        if pool is None:
            lo, hi = self.options.port_range
            pool = self._ports[eni.id] = self._port_pool(lo, hi, self.options.seed)
        return pool.can_allocate(proto, dst, dport)

    def _undo(self, path: Path, proto: int, dst: int, dport: int) -> None:
        """Give back the port, slot and NAT port of a connection that was refused on its path."""
        path.pool.release(proto, path.eni_port, dst, dport)
        self.control.close_connection(path.eni_id)
        if path.nat_pool is not None and path.nat_port is not None:
            path.nat_pool.release(path.nat_addr, proto, path.nat_port, dst, dport)

    def _open_lambda_vpc(self, p, ip, now, ts, function, initial, taps) -> Result:
        """A function without VpcConfig: it reaches the internet from the Lambda-owned VPC
        through a Lambda-owned public address and no private address [AWS-FACTS 1, DESIGN §3]."""
        v, proto, src, sport, dst, dport = p.version, p.proto, p.src, p.sport, p.dst, p.dport
        if v == 6 or self._non_public.lookup(dst) is not None or self.policy.vpc_of(v, dst) is not None:
            if self.trace is not None:
                self._hop("function", function, "drop", "no VpcConfig: only internet destinations")
            return self._drop(R.NO_ROUTE, function, None, taps, "outbound", function)
        entry = self._lambda_pools.get(function)
        if entry is None:
            import zlib

            host = 1 + zlib.crc32(f"{self.options.seed}:{function}".encode()) % 254
            lo, hi = self.options.port_range
            entry = self._lambda_pools[function] = (int(LAMBDA_PUBLIC_NET.network_address) + host,
                                                    self._port_pool(lo, hi, self.options.seed))
        public, pool = entry
        port = pool.allocate(proto, dst, dport, hint=(src << 16) | sport)
        if port is None:
            return self._drop(R.PORT_EXHAUSTION, function, None, taps, "outbound", function)
        path = Path("lambda-vpc")
        path.eni_ip, path.eni_port, path.pool = public, port, pool
        path.fwd = self._make(v, False, src, public, sport, port)
        path.eni_tap, path.internet, path.gen = False, True, self.gen
        conn = Conn(proto, v, function, "", initial, (src, sport, dst, dport), (public, port, dst, dport), now,
                    p.ip_len, p.tcp_flags)
        conn.path = path
        self.table.add(conn, ((K_OUT, proto, src, sport, dst, dport), (K_REPLY, proto, dst, dport, src, sport)))
        self.connections_opened += 1
        taps["internet"] = self._apply(path.fwd, ip, p)
        if self.trace is not None:
            self._hop("lambda-vpc", function, "translate", f"source -> {pk.int_to_ip(public)}:{port} (Lambda-owned)")
        self.forwarded += 1
        return Result(FORWARDED, R.NONE, None, None, taps, None, "outbound", function)

    # --- planning a path ------------------------------------------------------------------------
    def _plan(self, path: Path, groups: tuple, p: pk.Parsed, eni_ip: int) -> tuple:
        """Give ``path`` its steps and planned attributes: those of an earlier connection from
        the same ENI (which fixes the subnet and, per IP version, the address ``eni_ip``) and
        groups to the same destination, else newly laid out. The plans are dropped with the
        configuration and when the Hyperplane ENIs change. Returns the two legs' steps as the
        untraced walks that open the connection need them (:meth:`_at_creation`)."""
        key = (path.eni_id, groups, p.version, p.proto, p.dst, p.dport)
        plan = self._plans.get(key)
        if plan is None:
            self._lay_out(path, groups, p, eni_ip, ENI_PORT)
            path.out_steps, path.back_steps = _texted(path.out_steps, p.version), _texted(path.back_steps, p.version)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans = {}
            plan = self._plans[key] = (path.out_steps, path.back_steps, self._at_creation(path.out_steps, p.proto, True),
                                       self._at_creation(path.back_steps, p.proto)) + tuple(
                                           getattr(path, a) for a in _PLANNED)
            return plan[2], plan[3]
        return restore_plan(path, plan)

    def _at_creation(self, steps: tuple, proto: int, request: bool = False) -> tuple:
        """A leg's steps as the untraced walk opening a connection (``create=True``) needs them,
        under the current configuration: without the steps that walk passes over
        (``_IDLE_AT_CREATION``), the NACL checks that allow the connection whatever its ports
        (any port its ENI's or NAT gateway's pool hands out), and a NAT gateway subnet route that
        leads out. A step that passes changes nothing in a walk without a trace, so the rest gives
        the leg's block and logs. The NACL and route decisions depend on the configuration only
        (no group membership, no port, no time): they hold as long as the plan that keeps them
        (plans are dropped with the configuration).

        On the ``request`` leg, a security-group check with a fixed port that only log points
        precede is decided here too, when it allows: the opening walk, which runs right after the
        planning, would decide it before anything could stop it, reading the same group
        memberships (``Policy.members``). Those stay cached as long as the plan lives (both are
        dropped when the Hyperplane ENIs or the configuration change), so every later walk of
        the plan would decide it the same."""
        policy = self.policy
        subnets = policy.subnets
        kept = []
        for step in steps:
            kind = step[0]
            if kind in _IDLE_AT_CREATION:
                continue
            if kind == S_NACL and step[1] in subnets:
                _, subnet_id, egress, v, peer, port, _reason = step
                acl_id = subnets[subnet_id].nacl_id
                if port is None:  # the NAT gateway's port: any its pools hand out
                    decision = policy.nacl_ports(acl_id, egress, proto, v, peer, *self.options.nat_port_range)
                elif port == ENI_PORT:  # the ENI's port: any its pool hands out
                    decision = policy.nacl_ports(acl_id, egress, proto, v, peer, *self.options.port_range)
                else:
                    decision = policy.nacl_check(acl_id, egress, proto, v, peer, port)
                if decision is not None and decision.allow:
                    continue
            elif kind == S_NAT_ROUTE and step[1] in subnets and self._nat_route(step)[2] is None:
                continue
            elif (kind == S_SG and request and step[5] != ENI_PORT and all(s[0] == S_LOG for s in kept)
                  and policy.sg_match(step[1], step[2], proto, step[3], step[4], step[5]) is not None):
                continue
            kept.append(step)
        return tuple(kept)

    def _lay_out(self, path: Path, groups: tuple, p: pk.Parsed, eni_ip: int, port: int) -> None:
        """Choose the route and lay out the steps of both legs [AWS-FACTS 2-6]: the function's SG
        egress, the ENI subnet's NACL when the packet leaves the subnet, the route, then the
        destination stage. A drop the route decides is a final ``block`` step, so the NACL in
        front of it still speaks first. ``port`` is the ENI port (the marker ENI_PORT)."""
        policy = self.policy
        v, proto, dst, dport = p.version, p.proto, p.dst, p.dport
        path.proto = proto
        subnet = policy.subnets[path.subnet_id]
        eni_id = path.eni_id
        hit = policy.route(subnet.route_table_id, v, dst)
        kind = hit.kind if hit is not None else None
        untracked = kind not in AUTO_TRACKED_TARGETS and policy.sg_untracked(groups, True, proto, v, dport)
        path.untracked = untracked
        out, back = path.out_steps, path.back_steps
        out.append((S_SG_FN, groups, True, v, dst, dport, I.SG_EGRESS, not untracked))
        hp_out = (S_LOG, eni_id, eni_ip, dst, port, dport, "egress", self._extra(path, "egress", kind or "local"))
        hp_in = (S_LOG, eni_id, dst, eni_ip, dport, port, "ingress", self._extra(path, "ingress", kind or "local"))
        leaves = policy.subnet_of(v, dst) != path.subnet_id
        if kind == "local":
            iface = policy.interface_at(v, dst)
            if iface is not None and iface.interface_type != "lambda":
                leaves = iface.subnet_id != path.subnet_id
        elif kind == "nat" and hit.target_id in self.model.nat_gateways:
            # the packet leaves the subnet only if the NAT gateway is in another one
            leaves = self.model.nat_gateways[hit.target_id].subnet_id != path.subnet_id
        nacl_out = [(S_NACL, path.subnet_id, True, v, dst, dport, I.NACL_EGRESS)] if leaves else []
        out += nacl_out
        out.append(hp_out)
        route_note = (S_NOTE, "route-table", subnet.route_table_id or "-",
                      "drop" if hit is None or hit.blackhole else "forward",
                      "no route" if hit is None else ("blackhole" if hit.blackhole else f"to {hit.target_id}"),
                      hit.label if hit is not None else None)
        out.append(route_note)
        if hit is None:
            out.append((S_BLOCK, I.NO_ROUTE, subnet.route_table_id or subnet.id, None))
            return
        if hit.blackhole:
            out.append((S_BLOCK, I.BLACKHOLE_ROUTE, hit.table_id, hit.label))
            return
        out.append((S_ROUTE, path.subnet_id, v, dst, hit.target_id))
        path.target, path.route_label = hit.target_id, hit.label
        back_in = [(S_SG, groups, False, v, dst, port, I.SG_INGRESS, False)] if untracked else [
            (S_NOTE, "security-group", ",".join(groups), "stateful", "reply of a tracked connection", None)]
        if kind == "local":
            iface = policy.interface_at(v, dst)
            if iface is None:
                owner = self._hp_addresses.get((v, dst))
                if owner is not None:  # another Hyperplane ENI: V2N carries nothing inbound
                    out.append((S_BLOCK, I.UNSOLICITED_INBOUND, owner, None))
                else:
                    out.append((S_BLOCK, I.UNKNOWN_DESTINATION, policy.subnet_of(v, dst) or subnet.vpc_id, hit.label))
                return
            if iface.interface_type == "lambda":
                out.append((S_BLOCK, I.UNSOLICITED_INBOUND, iface.id, None))
                return
            path.dest_id = path.target = iface.id
            dest = policy.subnets[iface.subnet_id]
            cross = iface.subnet_id != path.subnet_id
            has_sg = iface.has_security_groups
            dest_untracked = has_sg and policy.sg_untracked(iface.group_ids, False, proto, v, dport)
            if cross:
                out.append((S_NACL, dest.id, False, v, eni_ip, dport, I.NACL_INGRESS))
            if has_sg:
                out.append((S_SG, iface.group_ids, False, v, eni_ip, dport, I.SG_INGRESS, not dest_untracked))
            out.append((S_LOG, iface.id, eni_ip, dst, port, dport, "ingress", self._extra(path, "ingress", kind, iface)))
            out.append((S_NOTE, "network-interface", iface.id, "deliver", iface.interface_type, None))
            if has_sg and dest_untracked:
                back.append((S_SG, iface.group_ids, True, v, eni_ip, port, I.SG_EGRESS, False))
            elif has_sg:
                back.append((S_NOTE, "security-group", ",".join(iface.group_ids), "stateful",
                             "reply of a tracked connection", None))
            if cross:
                back.append((S_NACL, dest.id, True, v, eni_ip, port, I.NACL_EGRESS))
            back.append((S_LOG, iface.id, dst, eni_ip, dport, port, "egress", self._extra(path, "egress", kind, iface)))
            if cross:
                back.append((S_NACL, path.subnet_id, False, v, dst, port, I.NACL_INGRESS))
            back += back_in + [hp_in]
            return
        if kind == "nat":
            self._plan_nat(path, hit, groups, p, eni_ip, port, hp_in, leaves)
            return
        if kind in ("igw", "eigw") and v == 4:
            # Hyperplane ENIs never have a public IPv4 address [AWS-FACTS 1]
            out.append((S_BLOCK, I.NO_PUBLIC_IP, eni_id, hit.label))
            return
        # IPv6 to an (egress-only) internet gateway, a gateway endpoint, peering, transit
        # gateway, virtual private gateway or an ENI target: delivered out of the subnet.
        path.kind = kind
        path.internet = kind in ("igw", "eigw")
        out.append((S_NOTE, {"vpce": "vpc-endpoint", "igw": "internet-gateway", "eigw": "internet-gateway"}.get(
            kind, "gateway"), hit.target_id, "forward", "out of the VPC" if not path.internet else "to the internet", None))
        if leaves:
            back.append((S_NACL, path.subnet_id, False, v, dst, port, I.NACL_INGRESS))
        back += back_in + [hp_in]

    def _plan_nat(self, path, hit, groups, p, eni_ip, port, hp_in, leaves) -> None:
        """Through a NAT gateway: its subnet's NACL on the way in, its translation, its subnet's
        route to an internet gateway, its subnet's NACL on the way out; replies the same way back
        [AWS-FACTS 5]."""
        policy = self.policy
        v, proto, dst, dport = p.version, p.proto, p.dst, p.dport
        out, back = path.out_steps, path.back_steps
        nat = self.model.nat_gateways.get(hit.target_id)
        if nat is None or nat.state != "available" or v != 4:
            out.append((S_BLOCK, I.BLACKHOLE_ROUTE, hit.table_id, hit.label))
            return
        path.kind = "nat"
        path.nat_id = nat.id
        nat_subnet = policy.subnets[nat.subnet_id]
        cross = nat.subnet_id != path.subnet_id
        nat_eni = nat.network_interface_id or nat.id
        nat_priv = int(nat.private_ip) if nat.private_ip is not None else 0
        nat_hit = policy.route(nat_subnet.route_table_id, v, dst)
        public = nat.connectivity == "public" and nat_hit is not None and nat_hit.kind == "igw"
        pool = self._nat_pools.get((nat.id, public))
        if pool is None:
            addresses = [int(a) for a in nat.public_ips] if public else [nat_priv]
            lo, hi = self.options.nat_port_range
            pool = self._nat_pools[(nat.id, public)] = self._nat_port_pool(
                addresses, lo, hi, self.options.nat_connections_per_destination, self.options.seed)
        path.nat_pool = pool
        path.internet = public
        if cross:
            out.append((S_NACL, nat_subnet.id, False, v, eni_ip, dport, I.NACL_INGRESS))
        out += [
            (S_LOG, nat_eni, eni_ip, dst, port, dport, "ingress", self._extra(path, "ingress", "local")),
            (S_NAT_ALLOC, nat.id, proto, dst, dport),
            (S_NAT_ROUTE, nat_subnet.id, v, dst, nat.connectivity == "private", nat.id),
            (S_NACL, nat_subnet.id, True, v, dst, dport, I.NACL_EGRESS),
            (S_LOG, nat_eni, nat_priv, dst, None, dport, "egress", self._extra(path, "egress", "igw")),
        ]
        if public:
            out.append((S_NOTE, "internet-gateway", nat_hit.target_id, "forward", "to the internet", None))
        else:
            out.append((S_NOTE, "gateway", nat_hit.target_id if nat_hit else "-", "forward", "out of the VPC", None))
        back += [
            (S_NACL, nat_subnet.id, False, v, dst, None, I.NACL_INGRESS),
            (S_LOG, nat_eni, dst, nat_priv, dport, None, "ingress", self._extra(path, "ingress", "igw")),
            (S_NOTE, "nat-gateway", nat.id, "translate", "destination -> the Hyperplane ENI", None),
        ]
        if cross:
            back.append((S_NACL, nat_subnet.id, True, v, eni_ip, port, I.NACL_EGRESS))
        back.append((S_LOG, nat_eni, dst, eni_ip, dport, port, "egress", self._extra(path, "egress", "local")))
        if cross:
            back.append((S_NACL, path.subnet_id, False, v, dst, port, I.NACL_INGRESS))
        back += [(S_NOTE, "security-group", ",".join(groups), "stateful", "reply of a tracked connection", None),
                 hp_in]

    def _extra(self, path: Path, direction: str, kind: str, iface=None) -> Optional[dict]:
        """The v3-v5 flow-log fields of a log point (only when the format asks for them)."""
        if not self._extra_fields:
            return None
        subnet_id = iface.subnet_id if iface is not None else path.subnet_id
        info = self.policy.subnets.get(subnet_id)
        traffic = {"local": 1, "nat": 1, "igw": 2, "eigw": 2, "vpce": 2, "vgw": 3, "pcx": 4}.get(kind, 1)
        extra = {"vpc_id": info.vpc_id if info else None, "subnet_id": subnet_id, "flow_direction": direction}
        if direction == "egress":
            extra["traffic_path"] = traffic
        return extra

    # --- walking the steps ----------------------------------------------------------------------
    def _walk(self, path: Path, steps: list, create: bool = False, skip_sticky: bool = False):
        """Evaluate the steps of one leg: ``(block, logs)`` where ``block`` is the first failing
        step's ``(reason, component, rule)`` or None, and ``logs`` the flow-log records the leg
        produces: ACCEPT at each log point passed, REJECT at the log point after an SG or NACL
        refusal (an SG reject is logged once; a NACL reject of a reply beside the ACCEPT of the
        request) [AWS-FACTS 8].

        ``create``: the connection is being opened (the NAT gateway allocates its port; the
        function's egress check, already done before the ENI was chosen, and the route check,
        done by the planning under the same configuration, are not repeated).
        ``skip_sticky``: a re-check of a live connection; security-group checks of tracked
        flows are skipped (tracked connections survive rule changes)."""
        policy = self.policy
        trace = self.trace
        logs = []
        block = None
        subnets = policy.subnets
        for step in steps:
            kind = step[0]
            if kind == S_LOG:  # the commonest step first
                _, eni_id, src, dst, sport, dport, direction, extra = step
                if sport is None:
                    sport = path.nat_port
                elif sport == ENI_PORT:
                    sport = path.eni_port
                if dport is None:
                    dport = path.nat_port
                elif dport == ENI_PORT:
                    dport = path.eni_port
                logs.append((eni_id, src, dst, sport, dport, "REJECT" if block else "ACCEPT", extra))
                if block is not None:
                    break
                continue
            if kind == S_NOTE:
                if trace is not None and block is None:
                    self._hop(step[1], step[2], step[3], step[4], step[5])
                continue
            if kind in _SUBNET_STEPS and step[1] not in subnets:  # the subnet left the configuration
                return (I.NO_ROUTE, step[1], None), tuple(logs)
            if block is not None:
                continue  # looking for the log point that records the reject
            if kind == S_NACL:
                _, subnet_id, egress, v, peer, port, reason = step
                acl_id = subnets[subnet_id].nacl_id
                if port is None:
                    port = path.nat_port
                elif port == ENI_PORT:
                    port = path.eni_port
                decision = policy.nacl_check(acl_id, egress, path.proto, v, peer, port)
                if trace is not None:
                    self._hop("network-acl", acl_id, "allow" if decision.allow else "deny",
                              f"{'outbound' if egress else 'inbound'} {pk.int_to_ip(peer, v)} port {port}", decision.rule)
                if not decision.allow:
                    block = (reason, acl_id, decision.rule)
            elif kind == S_SG or kind == S_SG_FN:
                if kind == S_SG_FN and create:
                    continue
                _, groups, egress, v, peer, port, reason, sticky = step
                if port == ENI_PORT:
                    port = path.eni_port
                if sticky and skip_sticky:
                    if trace is not None:
                        self._hop("security-group", ",".join(groups), "stateful", "tracked connection")
                    continue
                rule = policy.sg_match(groups, egress, path.proto, v, peer, port)
                if trace is not None:
                    self._hop("security-group", ",".join(groups), "allow" if rule else "deny",
                              f"{'egress' if egress else 'ingress'} {pk.int_to_ip(peer, v)} port {port}", rule)
                if rule is None:
                    block = (reason, groups[0] if groups else "-", None)
            elif kind == S_ROUTE:
                if create:
                    continue  # planned under this configuration a moment ago: the route exists
                _, subnet_id, v, dst, target = step
                table_id = policy.subnets[subnet_id].route_table_id
                hit = policy.route(table_id, v, dst)
                if hit is None:
                    return (I.NO_ROUTE, table_id, None), tuple(logs)
                if hit.blackhole:
                    return (I.BLACKHOLE_ROUTE, table_id, hit.label), tuple(logs)
            elif kind == S_NAT_ALLOC:
                if not create:
                    continue
                _, nat_id, proto, dst, dport = step
                got = path.nat_pool.allocate(proto, dst, dport, (path.eni_ip << 16) | path.eni_port)
                if got is None:
                    if trace is not None:
                        self._hop("nat-gateway", nat_id, "drop", "no port for this destination (ErrorPortAllocation)")
                    return (I.NAT_PORT_EXHAUSTION, nat_id, None), tuple(logs)
                path.nat_addr, path.nat_port = got
                path.nat_fwd = self._make(4, False, path.eni_ip, got[0], path.eni_port, got[1])
                if trace is not None:
                    self._hop("nat-gateway", nat_id, "translate", f"source -> {pk.int_to_ip(got[0])}:{got[1]}")
            elif kind == S_NAT_ROUTE:
                table_id, hit, refused = self._nat_route(step)
                if trace is not None:
                    self._hop("route-table", table_id, "drop" if hit is None or hit.blackhole else "forward",
                              "NAT gateway subnet: " + ("no route" if hit is None else f"to {hit.target_id}"),
                              hit.label if hit else None)
                if refused is not None:
                    return refused, tuple(logs)
            elif kind == S_BLOCK:
                return (step[1], step[2], step[3]), tuple(logs)
        return block, tuple(logs)

    def _nat_route(self, step: tuple) -> tuple:
        """A ``nat-route`` step: ``(route table id, route hit or None, block or None)``: the NAT
        gateway's subnet must route the destination out (not local, not to a NAT gateway, not a
        blackhole; a private NAT gateway not to an internet gateway)."""
        _, subnet_id, v, dst, private, nat_id = step
        policy = self.policy
        table_id = policy.subnets[subnet_id].route_table_id or subnet_id
        hit = policy.route(table_id, v, dst)
        if hit is None or hit.kind in ("local", "nat"):
            return table_id, hit, (I.NO_ROUTE, table_id, hit.label if hit else None)
        if hit.blackhole:
            return table_id, hit, (I.BLACKHOLE_ROUTE, table_id, hit.label)
        if hit.kind == "igw" and private:
            # "Private NAT gateway traffic sent to an internet gateway is dropped" [AWS-FACTS 5]
            return table_id, hit, (I.NO_PUBLIC_IP, nat_id, hit.label)
        return table_id, hit, None

    def _recheck(self, conn: Conn, skip_sticky: bool = True) -> None:
        """Re-derive a connection's cached decisions under the current configuration: NACLs and
        routes apply to the next packet; security groups only for untracked flows (tracked
        connections survive rule changes) or when a SYN reopens the tuple [AWS-FACTS 2, 3]."""
        path = conn.path
        if path.kind == "lambda-vpc" or path.kind == "exempt":
            path.gen = self.gen
            return
        path.out = self._walk(path, path.out_steps, skip_sticky=skip_sticky)
        path.back = self._walk(path, path.back_steps, skip_sticky=skip_sticky)
        path.gen = self.gen

    def _log(self, logs, p: pk.Parsed, ts: float) -> None:
        if logs:
            self.flowlog.add_all(logs, p.proto, p.ip_len, ts, p.tcp_flags)

    def _log_sg_egress_reject(self, function: str, subnet_id: str, p: pk.Parsed, ts: float) -> None:
        """An SG egress refusal is logged once, as REJECT, on the function's ENI in the subnet
        (with the sandbox's source port: no port is allocated for a refused packet)."""
        for eni in self.control.enis_of(function):
            if eni.subnet_id == subnet_id and eni.live:
                addr = eni.private_ip if p.version == 4 else eni.ipv6_address
                if addr is None:
                    return
                self.flowlog.add(eni.id, str(addr), address_text(p.version, p.dst), p.sport, p.dport, p.proto, p.ip_len, ts, "REJECT",
                                 p.tcp_flags)
                return

    # --- replies --------------------------------------------------------------------------------
    def _to_sandbox(self, p: pk.Parsed, ip: bytes, now: float, ts: float, function: str) -> Result:
        """A packet to a sandbox address: a reply as the sandbox sees it (src = the remote)."""
        bad = self._protocol_ok(p)
        if bad is not None:
            return self._drop(bad, function, None, direction="reply", function=function)
        if p.l4 < 0:
            conn, direction = self._fragment_conn(p, ip)
            if conn is None or direction != "reply":
                return self._drop(R.UNSUPPORTED_PROTOCOL, function, None, direction="reply", function=function)
            return self._reply(conn, p, ip, now, ts, vpc_form=False)
        conn = self.table.get((K_REPLY, p.proto, p.src, p.sport, p.dst, p.dport))
        if conn is None:
            # V2N is one-way: nothing opens a connection toward a sandbox [AWS-FACTS 1]
            return self._drop(R.UNSOLICITED_INBOUND, function, None, direction="reply", function=function)
        return self._reply(conn, p, ip, now, ts, vpc_form=False)

    def _to_eni(self, p: pk.Parsed, ip: bytes, now: float, ts: float, eni_id: str) -> Result:
        """A packet to a Hyperplane ENI address: a reply in its VPC form, or unsolicited."""
        bad = self._protocol_ok(p)
        if bad is not None:
            return self._drop(bad, eni_id, None, {"eni": ip}, "inbound", eni_id=eni_id)
        if p.l4 < 0:
            conn, direction = self._fragment_conn(p, ip)
            if conn is None or direction != "vpc-reply":
                return self._drop(R.UNSUPPORTED_PROTOCOL, eni_id, None, {"eni": ip}, "inbound", eni_id=eni_id)
            return self._reply(conn, p, ip, now, ts, vpc_form=True)
        conn = self.table.get((K_VPC, p.proto, p.src, p.sport, p.dst, p.dport))
        if conn is None:
            if not self.policy.is_exempt(p.version, p.src, p.proto, p.sport):
                self.flowlog.add(eni_id, address_text(p.version, p.src), address_text(p.version, p.dst), p.sport, p.dport, p.proto, p.ip_len, ts, "REJECT", p.tcp_flags)
            return self._drop(R.UNSOLICITED_INBOUND, eni_id, None, {"eni": ip}, "inbound", eni_id=eni_id)
        return self._reply(conn, p, ip, now, ts, vpc_form=True)

    def _reply(self, conn: Conn, p: pk.Parsed, ip: bytes, now: float, ts: float, vpc_form: bool) -> Result:
        path = conn.path
        function = conn.function
        if path.gen != self.gen:
            self._recheck(conn)
        taps = {}
        rev, to_sandbox, nat_rev = path.replies or _reply_rewrites(conn, self._make)
        if vpc_form:
            eni_form = ip
            sandbox_form = self._apply(to_sandbox, ip, p)
        else:
            sandbox_form = ip
            eni_form = self._apply(rev, ip, p)
        if path.internet:
            if nat_rev is not None:
                taps["internet"] = self._apply(nat_rev, eni_form, p)
            else:
                taps["internet"] = eni_form
        if path.eni_tap:
            taps["eni"] = eni_form
        if path.nat_pool is not None and (path.nat_expired or now - conn.nat_last_seen >= self.options.nat_idle_timeout):
            if not path.nat_expired:
                self._nat_expire(conn)
            return self._drop(R.NAT_IDLE_TIMEOUT, path.nat_id, None, taps, "reply", function, path.eni_id)
        block, logs = path.back
        if self.trace is not None:
            self._leg = "reply"
            self._walk(path, path.back_steps, skip_sticky=True)
        if block is not None:
            self._log(logs, p, ts)
            return self._drop(R(block[0]), block[1], block[2], taps, "reply", function, path.eni_id)
        accepted, _ = self.table.update(conn, REPLY, p.tcp_flags, now, self.strict, p.ip_len)
        if not accepted:
            return self._drop(R.INVALID_STATE, path.eni_id or function, None, taps, "reply", function, path.eni_id)
        conn.nat_last_seen = now
        taps["lambda"] = sandbox_form
        self._log(logs, p, ts)
        self._note_fragment(p, ip, conn, "vpc-reply" if vpc_form else "reply", now)
        self.forwarded += 1
        if self.trace is not None:
            self._hop("verdict", "-", "forward", "reply delivered to the sandbox")
        return Result(FORWARDED, R.NONE, None, None, taps, path.eni_id, "reply", function)

    def _nat_timed_out(self, conn: Conn, p: pk.Parsed, ip: bytes, now: float, sandbox_side: bool) -> Result:
        """A sandbox packet of a flow the NAT gateway forgot (idle >= 350 s): dropped, and the
        gateway "returns an RST packet to any resources behind the NAT gateway that attempt to
        continue the connection" [AWS-FACTS 5]. The connection is over on both devices."""
        path = conn.path
        if not path.nat_expired:
            self._nat_expire(conn)
        taps = {"lambda": ip}
        eni_form = self._apply(path.fwd, ip, p)
        if path.eni_tap:
            taps["eni"] = eni_form
        emitted = ()
        if p.proto == TCP and not p.tcp_flags & pk.RST:
            rst_lambda = _rst_for(ip, p)
            rst_eni = _rst_for(eni_form, pk.parse(eni_form))
            emitted = (("eni", rst_eni), ("lambda", rst_lambda))
        self.table.remove(conn)
        self._release(conn)
        return self._drop(R.NAT_IDLE_TIMEOUT, path.nat_id, None, taps, "outbound", conn.function, path.eni_id,
                          emitted)

    # --- reports --------------------------------------------------------------------------------
    def counters(self) -> dict:
        dropped = sum(self.drops)
        nat = {}
        for (nat_id, _public), pool in sorted(self._nat_pools.items()):
            entry = nat.setdefault(nat_id, {"error_port_allocation": 0, "peak_connections": 0, "connections": 0,
                                            "idle_timeout_count": 0})
            entry["error_port_allocation"] += pool.error_port_allocation
            entry["peak_connections"] += pool.peak_connections
            entry["connections"] += pool.count
        for nat_id, count in self._nat_idle.items():
            nat.setdefault(nat_id, {"error_port_allocation": 0, "peak_connections": 0, "connections": 0,
                                    "idle_timeout_count": 0})["idle_timeout_count"] = count
        enis = {}
        if self.control is not None:
            for eni in self.control.enis():
                enis[eni.id] = {"connections": eni.connections, "peak_connections": eni.peak_connections}
        return {
            "packets": self.packets,
            "forwarded": self.forwarded,
            "dropped": dropped,
            "drops": {r.label: self.drops[r] for r in DropReason if r and self.drops[r]},
            "connections_opened": self.connections_opened,
            "connections_live": len(self.table),
            "connections_peak": self.table.peak,
            "enis": enis,
            "nat_gateways": nat,
        }

    def summary(self) -> dict:
        if self.control is None:
            self._start(0.0)
        counters = self.counters()
        nat_gateways = []
        for nat in sorted(self.model.nat_gateways.values(), key=lambda n: n.id):
            c = counters["nat_gateways"].get(nat.id, {})
            public = nat.public_ips[0] if nat.public_ips else nat.private_ip
            nat_gateways.append({"id": nat.id, "public_ip": str(public) if public is not None else None,
                                 "peak_connections": c.get("peak_connections", 0),
                                 "error_port_allocation": c.get("error_port_allocation", 0)})
        return {
            "packets": self.packets,
            "forwarded": self.forwarded,
            "dropped": counters["dropped"],
            "drops": counters["drops"],
            "connections": self.connections_opened,
            "enis": [eni.summary() for eni in self.control.enis()],
            "nat_gateways": nat_gateways,
        }

    def flow_logs(self, flush: bool = True, before: Optional[float] = None):
        if flush:
            return self.flowlog.flush(before)
        return self.flowlog.pending()

    def flow_log_lines(self, before: Optional[float] = None):
        return self.flowlog.flush_lines(before)

    def write_flow_logs(self, write, before: Optional[float] = None) -> int:
        return self.flowlog.write_lines(write, before)

    def connections(self) -> list:
        return list(self.table)

    # --- configuration changes ------------------------------------------------------------------
    def update_config(self, model) -> None:
        """A new configuration from the next packet on. Routes and NACLs apply at once to every
        connection's next packet; security-group changes re-evaluate untracked flows only
        [AWS-FACTS 2]. Functions whose VpcConfig changed are updated in the control plane."""
        self.model = model
        self.policy = Policy(model, _WeakMembers(self))
        self.gen += 1
        self._plans = {}
        self._egress = {}
        if self.control is not None:
            self.control.update_model(model, self._now)
            self._refresh_enis()

    # --- explain --------------------------------------------------------------------------------
    def explain(self, function: str, dst_ip, dst_port: int, proto) -> Trace:
        proto_num = {"tcp": TCP, "udp": UDP, 6: TCP, 17: UDP}.get(proto if isinstance(proto, int) else str(proto).lower())
        if proto_num is None:
            raise ValueError(f"protocol {proto!r}: explain traces tcp or udp")
        if function not in self.model.functions:
            known = ", ".join(sorted(self.model.functions)) or "none"
            raise ValueError(f"unknown function {function!r} (functions in the configuration: {known})")
        dst = ipaddress.ip_address(str(dst_ip))
        if self.control is None:
            self._start(0.0)
        # A throwaway copy of the whole state; the immutable model is shared, not copied.
        probe = copy.deepcopy(self, {id(self.model): self.model})
        return probe._explain(function, dst, dst_port, proto_num)

    def _explain(self, function: str, dst, dport: int, proto: int) -> Trace:
        v = dst.version
        sandbox = None
        for name, network, _subnet in self._sandbox_list:
            if name == function and network.version == v:
                sandbox = network
                break
        if sandbox is None:
            sandbox = EXPLAIN_SANDBOX_NET if v == 4 else ipaddress.ip_network("fd00:198:18::/64")
            self._add_sandbox(function, sandbox, None)
        src = int(sandbox.network_address) + (1 if sandbox.num_addresses > 2 else 0)
        sport = 49152
        while self.table.get((K_OUT, proto, src, sport, int(dst), dport)) is not None:
            sport += 1
        now = self._now or 0.0
        self.trace = []
        self._leg = "request"
        flags = pk.SYN if proto == TCP else 0
        request = self.process(build_packet(v, src, int(dst), proto, sport, dport, flags, seq=1000), now)
        reply = None
        if request.forwarded:
            self._leg = "reply"
            reply_flags = (pk.SYN | pk.ACK) if proto == TCP else 0
            reply = self.process(build_packet(v, int(dst), src, proto, dport, sport, reply_flags, seq=5000, ack=1001),
                                 now)
        final = reply if reply is not None else request
        hint = None if final.forwarded else self._hint(final, function, dst, dport, proto)
        return Trace(function, str(dst), dport, "tcp" if proto == TCP else "udp", final.verdict, final.reason,
                     final.component, final.rule, hint, self.trace, request, reply)

    def _hint(self, result: Result, function: str, dst, dport: int, proto: int) -> str:
        """One line saying how to fix the drop."""
        P = "TCP" if proto == TCP else "UDP"
        c, reason = result.component, result.reason
        fn = self.model.functions[function]
        lo, hi = self.options.port_range
        conn_eni = result.eni_id
        eni_subnet = None
        if conn_eni and self.control is not None:
            try:
                eni_subnet = self.control.get_eni(conn_eni).subnet_id
            except ValueError:
                eni_subnet = None
        if reason == R.SG_EGRESS:
            if result.direction == "reply":
                return f"add an outbound rule to {c} allowing {P} {lo}-{hi} to the function's subnet"
            return f"add an outbound rule to {c} allowing {P} {dport} to {dst}/{dst.max_prefixlen}"
        if reason == R.SG_INGRESS:
            if result.direction == "reply":
                return f"add an inbound rule to {c} allowing {P} {lo}-{hi} from {dst}/{dst.max_prefixlen}"
            groups = ", ".join(fn.security_group_ids) or "the function's security group"
            return f"add an inbound rule to {c} allowing {P} {dport} from {groups} (the function's security group)"
        if reason in (R.NACL_EGRESS, R.NACL_INGRESS):
            direction = "outbound" if reason == R.NACL_EGRESS else "inbound"
            word = "to" if reason == R.NACL_EGRESS else "from"
            acl_subnets = self._subnets_of_acl(c)
            if result.direction == "reply":
                ports = f"{lo}-{hi}"
                if eni_subnet is not None and eni_subnet in acl_subnets:
                    peer = "0.0.0.0/0" if self.policy.vpc_of(dst.version, int(dst)) is None else f"{dst}/{dst.max_prefixlen}"
                else:
                    peer = self._cidr_of(eni_subnet) or "the function's subnets"
            else:
                ports = str(dport)
                if eni_subnet is not None and eni_subnet in acl_subnets:
                    peer = "0.0.0.0/0" if self.policy.vpc_of(dst.version, int(dst)) is None else f"{dst}/{dst.max_prefixlen}"
                else:
                    peer = self._cidr_of(eni_subnet) or "the function's subnets"
                    if direction == "outbound":
                        peer = "0.0.0.0/0" if self.policy.vpc_of(dst.version, int(dst)) is None else f"{dst}/{dst.max_prefixlen}"
            before = "" if result.rule in (None, "*") else f" numbered below {result.rule}"
            return f"add an {direction} rule to {c}{before} allowing {P} {ports} {word} {peer}"
        if reason == R.NO_PUBLIC_IP:
            if c and c.startswith("nat-"):
                return (f"{c} is a private NAT gateway: route 0.0.0.0/0 of the function's subnets to a public NAT "
                        f"gateway instead")
            return ("Hyperplane ENIs never get public IP addresses: place the function in private subnets whose route "
                    "table sends 0.0.0.0/0 to a NAT gateway in a public subnet")
        if reason == R.NO_ROUTE:
            if c == function:
                if not fn.in_vpc:
                    return "a function without VpcConfig reaches only the internet: attach it to the VPC"
                return "enable Ipv6AllowedForDualStack and use dual-stack subnets for IPv6"
            return f"add a route to {dst} in {c}"
        if reason == R.BLACKHOLE_ROUTE:
            return f"route {result.rule} in {c} is a blackhole (its target is gone): point it at a live target"
        if reason == R.UNKNOWN_DESTINATION:
            return f"no network interface in the configuration has address {dst}: check the address"
        if reason == R.UNSOLICITED_INBOUND:
            return "Hyperplane ENIs accept no inbound connections (V2N is one-way): the function must open them"
        if reason == R.FUNCTION_NOT_ACTIVE:
            status = self.control.status(function)
            code = f" ({status.state_reason_code.value})" if status.state_reason_code else ""
            return f"the function is {status.state.value}{code}: it sends nothing until it is Active"
        if reason == R.PORT_EXHAUSTION:
            return "no ENI slot or port left: raise the ENI quota or free addresses in the subnet"
        if reason == R.NAT_PORT_EXHAUSTION:
            return f"{c} has no port left for this destination: add secondary IP addresses to the NAT gateway"
        if reason == R.NAT_IDLE_TIMEOUT:
            return "keep connections through a NAT gateway active (TCP keepalive below 350 s)"
        return reason.label

    def _subnets_of_acl(self, acl_id) -> set:
        return {s.id for s in self.policy.subnets.values() if s.nacl_id == acl_id}

    def _cidr_of(self, subnet_id) -> Optional[str]:
        subnet = self.model.subnets.get(subnet_id) if subnet_id else None
        return str(subnet.cidr) if subnet is not None else None
