"""Hypothesis strategies and helpers for property-testing VPC configurations with hyperplane.

Configurations (:mod:`~hyperplane.testing.documents`)::

    vpcs(**knobs)      # AWS-shaped documents: {"Vpcs": [...], "Subnets": [...], ...}
    models(**knobs)    # the same, loaded into a VpcModel
    load_documents(*documents)

Traffic (:mod:`~hyperplane.testing.traffic`), ``(bytes, timestamp)`` pairs, scapy on request::

    packets()  tcp_sessions()  udp_exchanges()  traffic(model)

Questions (:mod:`~hyperplane.testing.properties`, :mod:`~hyperplane.testing.oracle`)::

    can_reach(model, "orders-api", "10.0.3.10", 5432)          # Engine.explain's Trace
    session_succeeds(model, "orders-api", "10.0.3.10", 5432)   # a whole TCP session replayed
    inbound_decision(model, "8.8.8.8", "10.0.3.10", 5432)      # the internet -> an interface

See ``docs/testing.md`` for examples and the knobs.
"""
from hyperplane.testing.documents import ACCOUNT, INTERNET_HOSTS, load_documents, models, vpcs
from hyperplane.testing.oracle import is_exempt, nacl_allows, nacl_decision, route_for, sg_allows
from hyperplane.testing.properties import (
    InboundDecision, can_reach, engine_for, inbound_decision, replay, session_succeeds,
)
from hyperplane.testing.traffic import (
    EPOCH, TCP_KINDS, TIMEOUT_GAPS, Flow, Packet, Traffic, packets, sandbox_ranges, tcp_sessions, traffic,
    udp_exchanges,
)
from hyperplane.testing.wire import ip_packet, tcp_packet, to_scapy, udp_packet

__all__ = [
    "ACCOUNT", "EPOCH", "INTERNET_HOSTS", "TCP_KINDS", "TIMEOUT_GAPS",
    "vpcs", "models", "load_documents",
    "packets", "tcp_sessions", "udp_exchanges", "traffic", "sandbox_ranges", "Traffic", "Flow", "Packet",
    "engine_for", "replay", "can_reach", "session_succeeds", "inbound_decision", "InboundDecision",
    "sg_allows", "nacl_allows", "nacl_decision", "route_for", "is_exempt",
    "ip_packet", "tcp_packet", "udp_packet", "to_scapy",
]
