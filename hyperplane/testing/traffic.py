"""Hypothesis strategies for traffic: single packets, TCP sessions, UDP exchanges, and whole
captures for a configuration.

Traffic is drawn *as the sandbox sees it* (the ``lambda`` observation point): packets from a
sandbox address to a destination, and the destination's replies addressed to the sandbox. That
view is fully known before the engine runs (the Hyperplane ENI's address and source port are the
engine's choice), and it is what a capture taken inside a function holds.

* :func:`packets` — one IP packet (IPv4/IPv6, TCP/UDP/ICMP/other, fragments, any TCP flags);
* :func:`tcp_sessions` — a TCP conversation: handshake, data both ways, then a FIN close, a
  half-close, a server close, a RST, a refused SYN, retransmitted unanswered SYNs, or nothing;
  duplicated segments (retransmissions) and time gaps across the conntrack timeouts;
* :func:`udp_exchanges` — UDP requests with or without answers, with gaps across the 30 s / 180 s
  UDP timeouts;
* :func:`traffic` — a :class:`Traffic` for a configuration: the sandbox ranges of its functions
  and interleaved sessions toward its interfaces, the Amazon DNS, the internet, the S3 prefix
  list, peered and unknown addresses, plus unsolicited inbound packets.

Everything is ``(bytes, timestamp)`` pairs; ``scapy=True`` (or :meth:`Traffic.scapy`) gives
scapy packets instead.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

from hypothesis import strategies as st

from hyperplane.testing.documents import INTERNET_HOSTS, MIDDLEBOX_CIDR, PEER_CIDR, S3_PREFIX_CIDRS, TGW_CIDR
from hyperplane.testing.wire import ACK, FIN, PSH, RST, SYN, TCP, UDP, ip_packet, to_scapy

__all__ = [
    "Packet", "Flow", "Traffic", "packets", "tcp_sessions", "udp_exchanges", "traffic", "sandbox_ranges",
    "TCP_KINDS", "TIMEOUT_GAPS", "EPOCH",
]

#: Timestamps start here (2023-11-14, a realistic Unix time for flow logs).
EPOCH = 1_700_000_000.0
#: Gaps that cross the conntrack, UDP and NAT gateway timeouts (seconds; each just past one).
TIMEOUT_GAPS = (10.5, 30.5, 60.5, 120.5, 180.5, 350.5, 600.5)
#: The shapes :func:`tcp_sessions` draws.
TCP_KINDS = ("close", "half-close", "server-close", "rst", "refused", "unanswered", "open")

Address = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Packet:
    """One packet of drawn traffic: ``data`` (raw IP), ``ts``, ``direction`` ``"out"`` (sandbox
    to remote), ``"in"`` (remote to sandbox, a reply) or ``"unsolicited"``; ``flow`` is the
    index of its :class:`Flow` in :attr:`Traffic.flows` (-1 for unsolicited packets)."""

    data: bytes
    ts: float
    direction: str
    flow: int = -1


@dataclass
class Flow:
    """One drawn conversation, in the sandbox's view."""

    kind: str
    proto: int
    sandbox: str
    sport: int
    dst: str
    dport: int
    packets: list = field(default_factory=list)  # list[Packet]
    function: Optional[str] = None

    def shifted(self, offset: float, index: int) -> "Flow":
        return Flow(self.kind, self.proto, self.sandbox, self.sport, self.dst, self.dport,
                    [Packet(p.data, p.ts + offset, p.direction, index) for p in self.packets], self.function)


@dataclass
class Traffic:
    """Drawn traffic for one configuration. Iterating gives ``(bytes, ts)`` pairs in time order.

    ``sandboxes`` maps each sandbox CIDR to its function (pass it to
    :class:`~hyperplane.engine.Engine`); ``packets`` are :class:`Packet` objects in time order;
    ``flows`` the conversations they came from."""

    sandboxes: dict
    packets: list
    flows: list

    def __iter__(self) -> Iterator[tuple[bytes, float]]:
        return ((p.data, p.ts) for p in self.packets)

    def __len__(self) -> int:
        return len(self.packets)

    def pairs(self) -> list[tuple[bytes, float]]:
        return [(p.data, p.ts) for p in self.packets]

    def scapy(self) -> list:
        """``(scapy packet, ts)`` pairs."""
        return [(to_scapy(p.data), p.ts) for p in self.packets]


# --------------------------------------------------------------------------------------------
# single packets
# --------------------------------------------------------------------------------------------

_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(str)


@st.composite
def packets(draw, src: Optional[Address] = None, dst: Optional[Address] = None, scapy: bool = False):
    """One IP packet as bytes (a scapy packet with ``scapy=True``): IPv4 or IPv6 (the family of
    ``src`` when given), TCP with any flags, UDP, ICMP or another protocol, sometimes an IPv4
    fragment. Checksums are correct."""
    if src is None:
        version = 4 if dst is None else ipaddress.ip_address(str(dst)).version
        src = draw(_V4 if version == 4 else _V6)
    src = str(src)
    version = ipaddress.ip_address(src).version
    if dst is None:
        dst = draw(_V4 if version == 4 else _V6)
    proto = draw(st.sampled_from([TCP, TCP, UDP, UDP, 1, 47, 132]))
    payload = draw(st.binary(max_size=64))
    fragment = version == 4 and draw(st.integers(0, 9)) == 0
    data = ip_packet(src, str(dst), proto, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                     flags=draw(st.integers(0, 255)), seq=draw(st.integers(0, 2**32 - 1)),
                     ack=draw(st.integers(0, 2**32 - 1)), payload=payload, ident=draw(st.integers(0, 65535)),
                     fragment_offset=draw(st.integers(0, 100)) if fragment else 0,
                     more_fragments=fragment and draw(st.booleans()))
    return to_scapy(data) if scapy else data


# --------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------

_EPHEMERAL = st.integers(32768, 60999)  # Linux's ephemeral range, as a sandbox uses


@st.composite
def _gap(draw, gaps: bool) -> float:
    if gaps and draw(st.integers(0, 11)) == 0:
        return draw(st.sampled_from(TIMEOUT_GAPS))
    return draw(st.sampled_from([0.0005, 0.001, 0.01, 0.05, 0.2, 1.0]))


class _Builder:
    """Accumulates the packets of one TCP conversation with consistent sequence numbers."""

    def __init__(self, client: str, sport: int, server: str, dport: int, iss: int, irs: int):
        self.client, self.sport, self.server, self.dport = client, sport, server, dport
        self.snd, self.rcv = iss, irs  # next sequence numbers of client and server
        self.items: list[tuple[bytes, str, float]] = []

    def out(self, flags: int, payload: bytes = b"", gap: float = 0.001) -> None:
        ack = self.rcv if flags & ACK else 0
        self.items.append((ip_packet(self.client, self.server, TCP, self.sport, self.dport, flags, self.snd, ack,
                                     payload), "out", gap))
        self.snd += len(payload) + (1 if flags & (SYN | FIN) else 0)

    def back(self, flags: int, payload: bytes = b"", gap: float = 0.001) -> None:
        ack = self.snd if flags & ACK else 0
        self.items.append((ip_packet(self.server, self.client, TCP, self.dport, self.sport, flags, self.rcv, ack,
                                     payload), "in", gap))
        self.rcv += len(payload) + (1 if flags & (SYN | FIN) else 0)


def _resolve(draw, value, strategy):
    return draw(strategy) if value is None else value


@st.composite
def tcp_sessions(draw, src: Optional[Address] = None, dst: Optional[Address] = None, sport: Optional[int] = None,
                 dport: Optional[int] = None, kinds: Sequence[str] = TCP_KINDS, gaps: bool = True,
                 retransmissions: bool = True, start: float = EPOCH) -> Flow:
    """A TCP conversation of one of ``kinds`` (:data:`TCP_KINDS`) between ``src:sport`` (the
    sandbox) and ``dst:dport``; unspecified endpoints are drawn. Packets are in the sandbox's
    view, time-ordered from ``start``; ``gaps`` adds pauses past the timeouts
    (:data:`TIMEOUT_GAPS`), ``retransmissions`` repeats some segments."""
    src = str(_resolve(draw, src, _V4))
    version = ipaddress.ip_address(src).version
    dst = str(_resolve(draw, dst, _V4 if version == 4 else _V6))
    sport = _resolve(draw, sport, _EPHEMERAL)
    dport = _resolve(draw, dport, st.sampled_from([22, 80, 443, 5432, 6379, 8080]) | st.integers(1, 65535))
    kind = draw(st.sampled_from(list(kinds)))
    b = _Builder(src, sport, dst, dport, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    gap = lambda: draw(_gap(gaps))  # noqa: E731

    def data_exchange() -> None:
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                b.out(PSH | ACK, draw(st.binary(min_size=1, max_size=48)), gap())
                b.back(ACK, gap=gap())
            else:
                b.back(PSH | ACK, draw(st.binary(min_size=1, max_size=48)), gap())
                b.out(ACK, gap=gap())

    b.out(SYN, gap=0.0)
    if kind == "unanswered":
        for wait in (1.0, 2.0, 4.0)[: draw(st.integers(1, 3))]:
            b.snd -= 1  # the same SYN again
            b.out(SYN, gap=wait)
    elif kind == "refused":
        b.back(RST | ACK, gap=gap())
    else:
        b.back(SYN | ACK, gap=gap())
        b.out(ACK, gap=gap())
        data_exchange()
        if kind == "close":
            b.out(FIN | ACK, gap=gap())
            b.back(FIN | ACK, gap=gap())
            b.out(ACK, gap=gap())
        elif kind == "half-close":
            b.out(FIN | ACK, gap=gap())
            b.back(ACK, gap=gap())
            b.back(PSH | ACK, draw(st.binary(min_size=1, max_size=48)), gap())
            b.out(ACK, gap=gap())
            b.back(FIN | ACK, gap=gap())
            b.out(ACK, gap=gap())
        elif kind == "server-close":
            b.back(FIN | ACK, gap=gap())
            b.out(ACK, gap=gap())
            b.out(FIN | ACK, gap=gap())
            b.back(ACK, gap=gap())
        elif kind == "rst":
            if draw(st.booleans()):
                b.out(RST | ACK, gap=gap())
            else:
                b.back(RST, gap=gap())
    items = list(b.items)
    if retransmissions and len(items) > 1 and draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(items) - 1))
        data, direction, _ = items[at]
        items.insert(at + 1, (data, direction, 0.2))  # the same segment again after an RTO
    ts = start
    out = []
    for data, direction, wait in items:
        ts += wait
        out.append(Packet(data, ts, direction))
    return Flow(kind, TCP, src, sport, dst, dport, out)


@st.composite
def udp_exchanges(draw, src: Optional[Address] = None, dst: Optional[Address] = None, sport: Optional[int] = None,
                  dport: Optional[int] = None, exchanges: tuple[int, int] = (1, 4), gaps: bool = True,
                  start: float = EPOCH) -> Flow:
    """UDP requests from ``src:sport`` (the sandbox) to ``dst:dport``, each answered or not
    (several answers sometimes), with gaps past the UDP timeouts when ``gaps``."""
    src = str(_resolve(draw, src, _V4))
    version = ipaddress.ip_address(src).version
    dst = str(_resolve(draw, dst, _V4 if version == 4 else _V6))
    sport = _resolve(draw, sport, _EPHEMERAL)
    dport = _resolve(draw, dport, st.sampled_from([53, 123, 514, 8125]) | st.integers(1, 65535))
    ts = start
    out = []
    for i in range(draw(st.integers(*exchanges))):
        ts += 0.0 if i == 0 else draw(_gap(gaps))
        out.append(Packet(ip_packet(src, dst, UDP, sport, dport, payload=draw(st.binary(min_size=1, max_size=64))),
                          ts, "out"))
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
            ts += draw(st.sampled_from([0.0005, 0.002, 0.03]))
            out.append(Packet(ip_packet(dst, src, UDP, dport, sport, payload=draw(st.binary(max_size=64))),
                              ts, "in"))
    return Flow("udp", UDP, src, sport, dst, dport, out)


# --------------------------------------------------------------------------------------------
# traffic for a configuration
# --------------------------------------------------------------------------------------------


def sandbox_ranges(model) -> dict[str, str]:
    """``{cidr: function}``: one /24 of 169.254.0.0/16 per function of ``model`` (sorted by name),
    starting at 169.254.76.0/24."""
    return {f"169.254.{76 + i}.0/24": name for i, name in enumerate(sorted(model.functions)[:150])}


def _destinations(model) -> list[tuple[str, int, int, str]]:
    """``(address, port, proto, what)`` worth sending to in ``model``."""
    out = []
    for eni in sorted(model.network_interfaces.values(), key=lambda e: e.id):
        ports = {5432, 443}
        for gid in eni.group_ids:
            group = model.security_groups.get(gid)
            for rule in group.ingress if group else ():
                if rule.protocol in (6, 17) and rule.from_port > 0:
                    ports.add(rule.from_port)
        for port in sorted(ports):
            out.append((str(eni.primary_ip), port, TCP, "interface"))
        out.append((str(eni.primary_ip), 53, UDP, "interface"))
    for vpc in model.vpcs.values():
        out.append((str(vpc.amazon_dns), 53, UDP, "amazon-dns"))
        base = vpc.cidrs[0].network_address
        out.append((str(base + 0x0C0A), 5432, TCP, "unknown"))  # no interface there
    for host in INTERNET_HOSTS[:3]:
        out.append((host, 443, TCP, "internet"))
        out.append((host, 53, UDP, "internet"))
    s3 = ipaddress.ip_network(S3_PREFIX_CIDRS[0])
    out.append((str(s3.network_address + 1234), 443, TCP, "s3"))
    for cidr, port in ((PEER_CIDR, 5432), (TGW_CIDR, 443), (MIDDLEBOX_CIDR, 80), ("192.0.2.0/24", 443)):
        out.append((str(ipaddress.ip_network(cidr).network_address + 9), port, TCP, "routed"))
    return out


def _hyperplane_candidates(model) -> list[str]:
    """Addresses where the control plane puts Hyperplane ENIs (the low free addresses)."""
    out = []
    for subnet in sorted(model.subnets.values(), key=lambda s: s.id):
        for k in (4, 5, 6):
            out.append(str(subnet.cidr.network_address + k))
    return out


@st.composite
def traffic(draw, vpc, *, flows: tuple[int, int] = (1, 6), unsolicited: bool = True, gaps: bool = True,
            tcp_kinds: Sequence[str] = TCP_KINDS, scapy: bool = False) -> Traffic:
    """Realistic traffic for the configuration ``vpc`` (a VpcModel, or a document that
    :func:`~hyperplane.testing.load_documents` loads): ``flows`` TCP sessions and UDP exchanges
    from the sandboxes of its functions (:func:`sandbox_ranges`) toward its interfaces, the
    Amazon DNS, the internet, the S3 prefix list, routed and unknown addresses, interleaved in
    time; with ``unsolicited``, SYNs and datagrams toward the sandboxes and the Hyperplane ENI
    addresses that nobody asked for. ``scapy=True`` turns every packet's ``data`` into a scapy
    packet."""
    if isinstance(vpc, dict):
        from hyperplane.testing.documents import load_documents

        vpc = load_documents(vpc)
    sandboxes = sandbox_ranges(vpc)
    destinations = _destinations(vpc)
    cidrs = sorted(sandboxes)
    drawn: list[Flow] = []
    start = EPOCH
    for index in range(draw(st.integers(*flows))):
        cidr = draw(st.sampled_from(cidrs))
        host = str(ipaddress.ip_network(cidr).network_address + draw(st.integers(2, 6)))
        address, port, proto, _what = draw(st.sampled_from(destinations))
        start += draw(st.sampled_from([0.0, 0.001, 0.5, 3.0]))
        if proto == TCP:
            flow = draw(tcp_sessions(host, address, None, port, kinds=tcp_kinds, gaps=gaps, start=start))
        else:
            flow = draw(udp_exchanges(host, address, None, port, gaps=gaps, start=start))
        flow.function = sandboxes[cidr]
        drawn.append(flow.shifted(0.0, index))
    all_packets = [p for f in drawn for p in f.packets]
    if unsolicited:
        remotes = [d[0] for d in destinations if ipaddress.ip_address(d[0]).version == 4]
        targets = [str(ipaddress.ip_network(c).network_address + 2) for c in cidrs] + _hyperplane_candidates(vpc)
        for _ in range(draw(st.integers(0, 3))):
            src, dst = draw(st.sampled_from(remotes)), draw(st.sampled_from(targets))
            proto = draw(st.sampled_from([TCP, UDP]))
            data = ip_packet(src, dst, proto, draw(st.sampled_from([443, 5432, 53])), draw(st.integers(1024, 65535)),
                             flags=SYN if proto == TCP else 0, seq=draw(st.integers(0, 2**32 - 1)),
                             payload=b"" if proto == TCP else b"hello")
            all_packets.append(Packet(data, EPOCH + draw(st.floats(0, max(1.0, start - EPOCH + 5))), "unsolicited"))
    all_packets.sort(key=lambda p: p.ts)
    if scapy:
        all_packets = [Packet(to_scapy(p.data), p.ts, p.direction, p.flow) for p in all_packets]
    return Traffic(sandboxes, all_packets, drawn)
