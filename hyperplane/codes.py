"""Verdicts, drop reasons and explanation codes: the one list.

Every drop the dataplane reports carries one :class:`DropReason`. The string values are a stable
external contract (drops JSONL, summaries, the CLI); the integer values are what the Cython core
returns in its numpy arrays. Both backends read this module, so they cannot drift.

Where AWS Reachability Analyzer has an explanation code for the same cause, it is given in
``EXPLANATION_CODES``.
"""
from __future__ import annotations

import enum


class Verdict(enum.IntEnum):
    FORWARDED = 0
    DROPPED = 1


class DropReason(enum.IntEnum):
    """Why a packet was dropped. ``NONE`` (0) is the reason of a forwarded packet."""

    NONE = 0
    MALFORMED = 1
    NOT_HYPERPLANE = 2
    UNSUPPORTED_PROTOCOL = 3
    FUNCTION_NOT_ACTIVE = 4
    SG_EGRESS = 5
    NACL_EGRESS = 6
    NO_ROUTE = 7
    BLACKHOLE_ROUTE = 8
    NO_PUBLIC_IP = 9
    UNKNOWN_DESTINATION = 10
    NACL_INGRESS = 11
    SG_INGRESS = 12
    UNSOLICITED_INBOUND = 13
    INVALID_STATE = 14
    PORT_EXHAUSTION = 15
    NAT_PORT_EXHAUSTION = 16
    NAT_IDLE_TIMEOUT = 17
    CONNTRACK_FULL = 18

    @property
    def label(self) -> str:
        """The stable string used in files and on the command line (e.g. ``sg-ingress``)."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, label: str) -> "DropReason":
        try:
            return cls[label.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(f"unknown drop reason {label!r}") from None


#: Reachability Analyzer explanation codes for the causes that have one.
EXPLANATION_CODES: dict[DropReason, str] = {
    DropReason.SG_EGRESS: "ENI_SG_RULES_MISMATCH",
    DropReason.SG_INGRESS: "ENI_SG_RULES_MISMATCH",
    DropReason.NACL_EGRESS: "SUBNET_ACL_RESTRICTION",
    DropReason.NACL_INGRESS: "SUBNET_ACL_RESTRICTION",
    DropReason.NO_ROUTE: "NO_ROUTE_TO_DESTINATION",
    DropReason.BLACKHOLE_ROUTE: "BAD_STATE_ROUTE",
    DropReason.NO_PUBLIC_IP: "IGW_PUBLIC_IP_ASSOCIATION",
    DropReason.UNKNOWN_DESTINATION: "NO_ROUTE_TO_DESTINATION",
}


def explanation_code(reason: DropReason) -> str | None:
    return EXPLANATION_CODES.get(reason)


#: Every drop reason string, in code order (excluding NONE): what users may see.
DROP_REASON_LABELS: tuple[str, ...] = tuple(r.label for r in DropReason if r is not DropReason.NONE)
