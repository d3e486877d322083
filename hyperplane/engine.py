"""The engine facade: one API over the dataplane backends.

``Engine(vpc, sandboxes, options, backend)`` picks the backend: ``"auto"`` takes the Cython core
when it provides an engine and the pure-Python reference otherwise, ``"reference"`` forces the
reference, ``"core"`` insists on the core (a clear :class:`RuntimeError` when it is not there).
Both backends return the same :class:`Result` objects, so callers (the CLI, the replay library,
the tests) never know which one ran. The semantics are in ``docs/dataplane.md``.
"""
from __future__ import annotations

import gc
import ipaddress
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from hyperplane import limits
from hyperplane.codes import DropReason, Verdict, explanation_code
from hyperplane.packet import RAW

__all__ = [
    "Engine", "EngineOptions", "Sandbox", "Result", "BatchResult", "Hop", "Trace", "BACKENDS",
    "available_backends",
]

#: Backend names accepted by :class:`Engine`.
BACKENDS = ("auto", "reference", "core")
TAPS = ("lambda", "eni", "internet")


# --------------------------------------------------------------------------------------------
# options and sandboxes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOptions:
    """Everything configurable about the dataplane; defaults from :mod:`hyperplane.limits`.

    - ``eni_capacity``: concurrent connections per Hyperplane ENI (65,000 [AWS-FACTS 1]);
    - ``port_range``: the ENIs' source ports, inclusive (1024-65535 [AWS-FACTS 1]);
    - ``timeouts``: the conntrack timeout table (``limits.timeouts(**overrides)``); a partial
      mapping ``{"udp": 45}`` is completed from the defaults and validated against AWS's ranges;
    - ``seed``: ENI ids, port choice; the same seed and input give the same output;
    - ``tcp_strict``: refuse mid-stream TCP pickup and invalid transitions (``invalid-state``);
    - ``flow_log_interval`` (600 or 60 s) and ``flow_log_fields`` (default format or custom);
    - ``enis_per_vpc``: the Lambda ENI quota per VPC (250);
    - ``nat_idle_timeout`` (350 s), ``nat_connections_per_destination`` (55,000) and
      ``nat_port_range`` (1024-65535) of the NAT gateways [AWS-FACTS 5];
    - ``max_connections``: tracked connections before ``conntrack-full`` (None: unlimited).
    """

    eni_capacity: int = limits.ENI_CAPACITY
    port_range: tuple[int, int] = limits.PORT_RANGE
    timeouts: Mapping = field(default_factory=lambda: dict(limits.TIMEOUTS))
    seed: int = 0
    tcp_strict: bool = False
    flow_log_interval: int = limits.FLOW_LOG_INTERVAL
    flow_log_fields: Optional[Sequence[str]] = None
    enis_per_vpc: int = limits.ENIS_PER_VPC
    nat_idle_timeout: float = limits.NAT_IDLE_TIMEOUT
    nat_connections_per_destination: int = limits.NAT_CONNECTIONS_PER_DESTINATION
    nat_port_range: tuple[int, int] = limits.NAT_PORT_RANGE
    max_connections: Optional[int] = None

    def __post_init__(self) -> None:
        lo, hi = self.port_range
        if not (1 <= int(lo) <= int(hi) <= 65535):
            raise ValueError(f"port_range {lo}-{hi}: ports must satisfy 1 <= low <= high <= 65535")
        object.__setattr__(self, "port_range", (int(lo), int(hi)))
        nlo, nhi = self.nat_port_range
        if not (1 <= int(nlo) <= int(nhi) <= 65535):
            raise ValueError(f"nat_port_range {nlo}-{nhi}: ports must satisfy 1 <= low <= high <= 65535")
        object.__setattr__(self, "nat_port_range", (int(nlo), int(nhi)))
        overrides = {}
        for key, value in dict(self.timeouts).items():
            name = key.value if isinstance(key, limits.Timeout) else str(key)
            try:
                default = limits.TIMEOUTS[limits.Timeout(name)]
            except ValueError:
                default = None
            if default is None or float(value) != default:
                overrides[name] = value
        object.__setattr__(self, "timeouts", limits.timeouts(**overrides))
        if self.flow_log_interval not in limits.FLOW_LOG_INTERVALS:
            raise ValueError(f"flow_log_interval must be one of {limits.FLOW_LOG_INTERVALS} s")
        if self.flow_log_fields is not None:
            from hyperplane.flowlogs import check_fields

            object.__setattr__(self, "flow_log_fields", check_fields(self.flow_log_fields))
        for name in ("eni_capacity", "enis_per_vpc", "nat_connections_per_destination"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be a positive integer or None")
        if not self.nat_idle_timeout > 0:
            raise ValueError("nat_idle_timeout must be positive")


@dataclass(frozen=True)
class Sandbox:
    """Execution environments of ``function`` live at the addresses of ``network``; with
    ``subnet_id`` they use the function's ENI in that subnet (else the control plane picks)."""

    function: str
    network: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
    subnet_id: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            try:
                net = ipaddress.ip_network(str(self.network), strict=False)
            except ValueError:
                raise ValueError(f"{self.network!r} is not an IP address or CIDR") from None
            object.__setattr__(self, "network", net)
        if not self.function:
            raise ValueError("a sandbox needs a function name")

    @classmethod
    def parse(cls, spec: str) -> "Sandbox":
        """``FUNCTION=CIDR[@SUBNET_ID]`` (the CLI's ``--sandbox``), e.g. ``api=169.254.76.0/24@subnet-0a1``."""
        function, sep, rest = spec.partition("=")
        if not sep or not function or not rest:
            raise ValueError("expected FUNCTION=CIDR[@SUBNET_ID], e.g. api=169.254.76.0/24")
        cidr, at, subnet = rest.partition("@")
        if at and not subnet.startswith("subnet-"):
            raise ValueError(f"{subnet!r} is not a subnet id (subnet-...)")
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return cls(function, network, subnet or None)

    @staticmethod
    def normalise(sandboxes) -> list["Sandbox"]:
        """A list of Sandbox, or ``{cidr: function}`` / ``{cidr: (function, subnet)}``."""
        if isinstance(sandboxes, Sandbox):
            return [sandboxes]
        if isinstance(sandboxes, Mapping):
            out = []
            for cidr, value in sandboxes.items():
                if isinstance(value, (tuple, list)):
                    function, subnet = value
                else:
                    function, subnet = value, None
                out.append(Sandbox(function, cidr, subnet))
            return out
        out = []
        for item in sandboxes or ():
            out.append(Sandbox.parse(item) if isinstance(item, str) else item)
        return out


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


class Result:
    """The fate of one packet.

    - ``verdict`` (:class:`~hyperplane.codes.Verdict`), ``reason`` (:class:`DropReason`, NONE
      when forwarded), ``component`` (the blocking sg-/acl-/rtb-/nat-/eni-/vpc- id or the
      function name), ``rule`` (NACL rule number ``"100"``/``"*"``, SG rule id, route label),
      ``explanation_code`` (Reachability Analyzer code where one exists);
    - ``taps``: the IP packet as seen at each observation point it crossed (``lambda``: the
      sandbox's view; ``eni``: the customer-VPC side of the Hyperplane ENI; ``internet``: beyond
      the internet gateway);
    - ``eni_id``: the Hyperplane ENI carrying the flow; ``direction``: ``outbound``, ``reply`` or
      ``inbound`` (VPC-side, to an ENI address), None when unclassified; ``function``;
    - ``emitted``: packets the emulated network sends by itself because of this packet, as
      ``(tap, bytes)`` pairs: the NAT gateway's RST after its idle timeout, toward the sandbox.
    """

    __slots__ = ("verdict", "reason", "component", "rule", "taps", "eni_id", "direction", "function",
                 "emitted")

    def __init__(self, verdict: Verdict, reason: DropReason = DropReason.NONE, component: Optional[str] = None,
                 rule: Optional[str] = None, taps: Optional[dict] = None, eni_id: Optional[str] = None,
                 direction: Optional[str] = None, function: Optional[str] = None, emitted: tuple = ()):
        self.verdict = verdict
        self.reason = reason
        self.component = component
        self.rule = rule
        self.taps = taps if taps is not None else {}
        self.eni_id = eni_id
        self.direction = direction
        self.function = function
        self.emitted = emitted

    @property
    def explanation_code(self) -> Optional[str]:
        return explanation_code(self.reason)

    @property
    def forwarded(self) -> bool:
        return self.verdict == Verdict.FORWARDED

    @property
    def dropped(self) -> bool:
        return self.verdict == Verdict.DROPPED

    def to_scapy(self, tap: str = "lambda"):
        """The packet at ``tap`` as a scapy packet (``KeyError`` when it did not cross that tap)."""
        from hyperplane.packet import to_scapy

        return to_scapy(self.taps[tap])

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict.name.lower(),
            "reason": None if self.reason == DropReason.NONE else self.reason.label,
            "component": self.component,
            "rule": self.rule,
            "explanation_code": self.explanation_code,
            "eni_id": self.eni_id,
            "direction": self.direction,
        }

    def __repr__(self) -> str:
        if self.verdict == Verdict.FORWARDED:
            return f"Result(forwarded, {self.direction}, eni={self.eni_id}, taps={sorted(self.taps)})"
        return f"Result(dropped {self.reason.label}, component={self.component}, rule={self.rule})"


@dataclass
class BatchResult:
    """:meth:`Engine.process_batch`: per-packet numpy arrays plus the tap outputs.

    ``verdicts`` / ``reasons`` are uint8 arrays (codes of :mod:`hyperplane.codes`);
    ``components`` / ``rules`` list the blocking component / rule per packet (None when
    forwarded); ``taps[name]`` and ``emitted[name]`` are lists of ``(index, bytes)`` in packet
    order."""

    verdicts: Any
    reasons: Any
    components: list
    rules: list
    taps: dict
    emitted: dict

    def drop_records(self, base_index: int = 0) -> list[dict]:
        """The drops JSONL objects (DESIGN §4) of this batch; ``index`` counts from ``base_index``."""
        out = []
        for i, code in enumerate(self.reasons.tolist()):
            if code:
                reason = DropReason(code)
                out.append({"index": base_index + i, "reason": reason.label, "component": self.components[i],
                            "rule": self.rules[i], "explanation_code": explanation_code(reason)})
        return out


@dataclass(frozen=True)
class Hop:
    """One component a traced packet met: ``kind`` (sandbox, function, security-group,
    hyperplane-eni, network-acl, route-table, nat-gateway, internet-gateway, vpc-endpoint,
    network-interface, gateway, verdict), ``component`` id, ``decision`` (allow, deny, translate,
    forward, drop, pass, stateful), ``detail`` and the matched ``rule``; ``leg`` request/reply."""

    leg: str
    kind: str
    component: str
    decision: str
    detail: str = ""
    rule: Optional[str] = None

    def __str__(self) -> str:
        rule = f" [rule {self.rule}]" if self.rule is not None else ""
        detail = f" — {self.detail}" if self.detail else ""
        return f"{self.leg:7} {self.kind:17} {self.component:26} {self.decision:9}{rule}{detail}"


@dataclass
class Trace:
    """:meth:`Engine.explain`: can ``function`` reach ``destination:port/protocol``?

    ``verdict`` is FORWARDED when the request and its reply both pass; otherwise ``reason``,
    ``component`` and ``rule`` name what stopped it and ``hint`` says in one line how to fix it.
    ``hops`` lists every component met, request leg then reply leg."""

    function: str
    destination: str
    port: int
    protocol: str
    verdict: Verdict
    reason: DropReason
    component: Optional[str]
    rule: Optional[str]
    hint: Optional[str]
    hops: list[Hop]
    request: Optional[Result] = None
    reply: Optional[Result] = None

    @property
    def reachable(self) -> bool:
        return self.verdict == Verdict.FORWARDED

    @property
    def explanation_code(self) -> Optional[str]:
        return explanation_code(self.reason)

    def as_dict(self) -> dict:
        return {
            "function": self.function, "destination": self.destination, "port": self.port,
            "protocol": self.protocol, "reachable": self.reachable,
            "reason": None if self.reason == DropReason.NONE else self.reason.label,
            "component": self.component, "rule": self.rule, "explanation_code": self.explanation_code,
            "hint": self.hint,
            "hops": [{"leg": h.leg, "kind": h.kind, "component": h.component, "decision": h.decision,
                      "detail": h.detail, "rule": h.rule} for h in self.hops],
        }

    def __str__(self) -> str:
        head = f"{self.function} -> {self.destination}:{self.port}/{self.protocol}: "
        if self.reachable:
            head += "reachable"
        else:
            head += f"blocked ({self.reason.label}) by {self.component}"
            if self.rule is not None:
                head += f" rule {self.rule}"
        lines = [head] + [f"  {h}" for h in self.hops]
        if self.hint:
            lines.append(f"  fix: {self.hint}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the facade
# --------------------------------------------------------------------------------------------


@contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for one batch (as it was before, afterwards).

    A batch of new connections allocates many container objects (connections, paths, flow-log
    records) that live on; every young-generation collection walks them again, ~30 % of the slow
    path's time. The engines build no reference cycles per packet (their objects are freed by
    reference counting), so pausing the collector for a batch loses nothing: cycles created
    meanwhile elsewhere in the process are collected after it. Left alone when already off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def survivors_frozen():
    """For a long run of batches (a replay): yields ``tick``, to call after each batch.

    The objects a batch leaves alive are the engine's state (connections, paths, flow-log
    records: ~60 per new connection). Any collection walks every object allocated since the
    previous one, so collecting after each batch cost ~12 % of a replay of 100,000 new
    connections (2.3 of 18.9 s) and never found anything. Inside this context the automatic
    collector is off and ``tick()`` moves what the batch left alive out of the collector's sight
    (``gc.freeze``, O(1)); those objects are still freed by reference counting when they die.
    On exit they go back to the oldest generation (``gc.unfreeze``; left frozen when something
    else had frozen objects before, as a forked replay worker inherits), and the collector is
    as it was. A replay makes no garbage cycles per packet
    (tests/scenarios/test_behaviours.py), so nothing accumulates in between; a cycle made
    meanwhile elsewhere in the process is collected after the run. When the collector was off,
    ``tick`` does nothing."""
    if not gc.isenabled():
        yield lambda: None
        return
    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        yield gc.freeze
    finally:
        if frozen_before == 0:
            gc.unfreeze()
        gc.enable()


def _core_engine_class():
    """The Cython core's engine class, or None when the core provides none (yet)."""
    try:
        from hyperplane.core import CoreEngine
    except ImportError:  # the extension is not built: the reference is the fallback
        return None
    return CoreEngine


def available_backends() -> tuple[str, ...]:
    """The concrete backends usable here (``reference`` always)."""
    return ("reference", "core") if _core_engine_class() is not None else ("reference",)


class Engine:
    """Packets in, verdicts and translated packets out (see the module docstring).

    ``vpc`` is a :class:`~hyperplane.vpc.model.VpcModel`; ``sandboxes`` a list of
    :class:`Sandbox` (or ``FUNCTION=CIDR[@SUBNET]`` strings) or a dict ``{cidr: function}`` /
    ``{cidr: (function, subnet)}``."""

    def __init__(self, vpc, sandboxes, options: Optional[EngineOptions] = None, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        options = options or EngineOptions()
        sandboxes = Sandbox.normalise(sandboxes)
        core = _core_engine_class()
        if backend == "core" and core is None:
            raise RuntimeError("the Cython core engine is not available in this build "
                               "(hyperplane._core provides no Engine); use backend='reference'")
        if backend == "core" or (backend == "auto" and core is not None):
            self._impl = core(vpc, sandboxes, options)
            self.backend = "core"
        else:
            from hyperplane.reference.dataplane import Dataplane

            self._impl = Dataplane(vpc, sandboxes, options)
            self.backend = "reference"
        self.options = options
        self.sandboxes = sandboxes

    @property
    def model(self):
        return self._impl.model

    @property
    def flow_log_fields(self) -> tuple[str, ...]:
        return self._impl.flow_log_fields

    @property
    def control(self):
        """The control plane (ENIs, function states); created at the first packet."""
        return self._impl.control

    def process(self, packet, ts: float, linktype: int = RAW) -> Result:
        """One packet (raw bytes of ``linktype``, or a scapy packet) at time ``ts`` (seconds)."""
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            from hyperplane.packet import from_scapy

            packet, linktype = from_scapy(packet)
        return self._impl.process(packet, float(ts), linktype)

    def process_batch(self, buffer, offsets, lengths, timestamps, linktypes=None) -> BatchResult:
        """Packets ``buffer[offsets[i] : offsets[i] + lengths[i]]`` at ``timestamps[i]``."""
        if self.backend == "core":
            return self._impl.process_batch(buffer, offsets, lengths, timestamps, linktypes)
        with gc_paused():
            return self._reference_batch(buffer, offsets, lengths, timestamps, linktypes)

    def _reference_batch(self, buffer, offsets, lengths, timestamps, linktypes) -> BatchResult:
        import numpy as np

        offsets = np.asarray(offsets).tolist()
        lengths = np.asarray(lengths).tolist()
        stamps = np.asarray(timestamps, dtype=np.float64).tolist()
        n = len(offsets)
        if len(lengths) != n or len(stamps) != n:
            raise ValueError("offsets, lengths and timestamps differ in length")
        kinds = [RAW] * n if linktypes is None else np.asarray(linktypes).tolist()
        verdicts = np.zeros(n, dtype=np.uint8)
        reasons = np.zeros(n, dtype=np.uint8)
        components: list = [None] * n
        rules: list = [None] * n
        taps: dict = {t: [] for t in TAPS}
        emitted: dict = {t: [] for t in TAPS}
        view = memoryview(buffer)
        process = self._impl.process
        for i in range(n):
            off = offsets[i]
            result = process(bytes(view[off : off + lengths[i]]), stamps[i], kinds[i])
            verdicts[i] = result.verdict
            reasons[i] = result.reason
            if result.reason:
                components[i] = result.component
                rules[i] = result.rule
            for tap, data in result.taps.items():
                taps[tap].append((i, data))
            for tap, data in result.emitted:
                emitted[tap].append((i, data))
        return BatchResult(verdicts, reasons, components, rules, taps, emitted)

    def explain(self, function: str, dst_ip, dst_port: int, proto="tcp") -> Trace:
        """Can ``function`` reach ``dst_ip:dst_port``? A synthetic SYN (or UDP request) and its
        reply run through a throwaway copy of the state; the engine itself is not changed."""
        return self._impl.explain(function, dst_ip, int(dst_port), proto)

    def summary(self) -> dict:
        """DESIGN §4 summary (without ``capture_truncated``, which the replay adds)."""
        return self._impl.summary()

    @property
    def counters(self) -> dict:
        """Packets per verdict and reason, connections, ENI and NAT gateway counters."""
        return self._impl.counters()

    def flow_logs(self, flush: bool = True, before: Optional[float] = None):
        """Flow-log records so far; with ``flush`` they are removed (all of them, or with
        ``before`` those whose window ended at or before that time: what a replay writes as it
        goes). Ordered by window, then by the arrival of each record's first packet."""
        if before is not None and not flush:
            raise ValueError("flow_logs: 'before' needs flush=True")
        return self._impl.flow_logs(flush, before)

    def flow_log_lines(self, before: Optional[float] = None) -> tuple:
        """Flush the flow-log records (all, or those whose window ended by ``before``) as
        ``(lines, windows, starts)``: lines of the engine's format, each record's window and start
        second (int64 arrays), in flush order: what a file writer needs, without record objects
        (the parallel replay merges its workers' files with them)."""
        return self._impl.flow_log_lines(before)

    def write_flow_logs(self, write, before: Optional[float] = None) -> int:
        """Flush the flow-log records as :meth:`flow_log_lines` does, their lines handed to
        ``write`` as UTF-8 bytes-like pieces of whole lines, each line ending in a newline: the
        core writes them from one reused buffer (a piece is valid only during the call), so the
        lines are never all in memory. ``FlowLogWriter.write_bytes`` takes them (the replay
        writes its flow logs with it). Returns how many records were flushed."""
        return self._impl.write_flow_logs(write, before)

    def core_stats(self) -> Optional[dict]:
        """The core backend's own account (None with the reference backend): its C tables'
        sizes, why its fast loop stopped, and where its time went (``fast_seconds`` in the C
        loop; ``slow_seconds`` over ``slow_packets`` punted to the slow path). See
        :meth:`hyperplane.core.CoreEngine.core_stats`."""
        stats = getattr(self._impl, "core_stats", None)
        return stats() if stats is not None else None

    def update_config(self, model) -> None:
        """Apply a changed configuration from the next packet on: SG changes keep tracked
        connections and re-evaluate untracked flows; NACL and route changes apply at once."""
        self._impl.update_config(model)

    def connections(self) -> list:
        """The live tracked connections (reference: :class:`~hyperplane.reference.conntrack.Conn`)."""
        return self._impl.connections()
