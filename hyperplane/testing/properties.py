"""Small helpers for writing properties about a VPC configuration.

* :func:`engine_for` — an :class:`~hyperplane.engine.Engine` with a sandbox range per function;
* :func:`replay` — run drawn :class:`~hyperplane.testing.traffic.Traffic` (or ``(bytes, ts)``
  pairs) through an engine, one :class:`~hyperplane.engine.Result` per packet;
* :func:`can_reach` — "can function F reach X:port?" through ``Engine.explain`` (a request and
  its reply through a throwaway copy of the state); the :class:`~hyperplane.engine.Trace` says
  which component and rule stops it;
* :func:`session_succeeds` — the same question answered by replaying a whole TCP session
  (handshake, data both ways, FIN close) or a UDP exchange through a fresh engine;
* :func:`inbound_decision` — "can a host outside the VPC (the internet) open a connection to
  the interface at X:port?": the destination subnet's route back to an internet gateway, its
  network ACL and the interface's security groups, evaluated with :mod:`~hyperplane.testing.oracle`.
  The engine emulates the traffic of Lambda functions only, so this one is a static check.

Example — "my function can always reach my database"::

    @given(st.integers(0, 2**16), ...)          # whatever varies in your setup
    def test_orders_api_reaches_the_database(...):
        model = load_vpc("infra/vpc-export")
        trace = can_reach(model, "orders-api", "10.0.3.10", 5432)
        assert trace.reachable, str(trace)
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, NamedTuple, Optional, Union

from hyperplane.testing import oracle
from hyperplane.testing.traffic import EPOCH, Traffic, sandbox_ranges
from hyperplane.testing.wire import ACK, FIN, PSH, SYN, TCP, UDP, ip_packet

__all__ = ["engine_for", "replay", "can_reach", "session_succeeds", "inbound_decision", "InboundDecision"]

_PROTOS = {"tcp": TCP, "udp": UDP, 6: TCP, 17: UDP}


def engine_for(model, sandboxes: Optional[dict] = None, backend: str = "auto", **options):
    """An Engine over ``model`` with ``sandboxes`` (default: :func:`sandbox_ranges`, one /24 per
    function) and :class:`~hyperplane.engine.EngineOptions` built from ``options``."""
    from hyperplane.engine import Engine, EngineOptions

    return Engine(model, sandboxes if sandboxes is not None else sandbox_ranges(model), EngineOptions(**options),
                  backend=backend)


def replay(engine, traffic: Union[Traffic, Iterable]) -> list:
    """Process every packet of ``traffic`` in order; the list of Results."""
    return [engine.process(data, ts) for data, ts in traffic]


def can_reach(model_or_engine, function: str, address, port: int, proto: str = "tcp"):
    """``Engine.explain``: the :class:`~hyperplane.engine.Trace` of a request from ``function``
    to ``address:port`` and its reply; ``trace.reachable`` is the answer, ``str(trace)`` the hops
    and the blocking rule. Takes a VpcModel or an Engine (whose connection state is not
    changed)."""
    engine = model_or_engine
    if not hasattr(engine, "explain"):
        engine = engine_for(model_or_engine)
    return engine.explain(function, str(address), int(port), proto)


def session_succeeds(model, function: str, address, port: int, proto: str = "tcp", at: float = EPOCH) -> bool:
    """Replay a complete conversation from a sandbox of ``function`` to ``address:port`` through
    a fresh engine: for TCP a handshake, a request, a response and a FIN close; for UDP a request
    and its answer. True when every packet was forwarded."""
    engine = engine_for(model)
    cidr = next(c for c, f in sandbox_ranges(model).items() if f == function)
    me = str(ipaddress.ip_network(cidr).network_address + 10)
    dst = str(address)
    p = _PROTOS[proto]
    if p == UDP:
        packets = [ip_packet(me, dst, UDP, 40000, port, payload=b"ping"),
                   ip_packet(dst, me, UDP, port, 40000, payload=b"pong")]
    else:
        c, s = 1000, 5000
        packets = [
            ip_packet(me, dst, TCP, 40000, port, SYN, c), ip_packet(dst, me, TCP, port, 40000, SYN | ACK, s, c + 1),
            ip_packet(me, dst, TCP, 40000, port, ACK, c + 1, s + 1),
            ip_packet(me, dst, TCP, 40000, port, PSH | ACK, c + 1, s + 1, b"request"),
            ip_packet(dst, me, TCP, port, 40000, PSH | ACK, s + 1, c + 8, b"response"),
            ip_packet(me, dst, TCP, 40000, port, FIN | ACK, c + 8, s + 9),
            ip_packet(dst, me, TCP, port, 40000, FIN | ACK, s + 9, c + 9),
            ip_packet(me, dst, TCP, 40000, port, ACK, c + 9, s + 10),
        ]
    return all(engine.process(data, at + 0.01 * i).forwarded for i, data in enumerate(packets))


class InboundDecision(NamedTuple):
    """:func:`inbound_decision`: ``allowed``, or the ``component`` (subnet, acl-, sg- id) and
    the ``reason`` that stops the connection."""

    allowed: bool
    component: Optional[str]
    reason: str


def inbound_decision(model, source, address, port: int, proto: str = "tcp") -> InboundDecision:
    """Could ``source`` (an address outside the VPC, e.g. on the internet) open a connection to
    the network interface at ``address:port``? Conservative: the interface is assumed to have a
    public address when its subnet routes to an internet gateway (exports do not always say).

    Checked in AWS's order: the destination's subnet must route ``source`` to an internet gateway
    (else no reply ever leaves: a private subnet), its network ACL must allow the packet in, and
    one of the interface's security groups must allow it."""
    p = _PROTOS[proto]
    iface = model.interface_at(address)
    if iface is None:
        return InboundDecision(False, None, f"no network interface has address {address}")
    route = oracle.route_for(model, iface.subnet_id, source)
    if route is None or route.target_kind != "igw" or route.state != "active":
        table = model.route_table_of(iface.subnet_id)
        return InboundDecision(False, table.id if table else iface.subnet_id,
                               "the subnet has no route to an internet gateway for that source")
    acl = oracle.nacl_decision(model, iface.subnet_id, False, p, source, int(port))
    if not acl.allow:
        return InboundDecision(False, acl.acl_id, f"network ACL rule {acl.rule} denies it")
    if not iface.group_ids:
        return InboundDecision(True, None, "the interface has no security groups")
    rule = oracle.sg_allows(model, iface.group_ids, False, p, source, int(port))
    if rule is None:
        return InboundDecision(False, iface.group_ids[0], "no security group rule allows it")
    return InboundDecision(True, None, f"allowed by {rule}")
