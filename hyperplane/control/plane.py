"""The control plane: Lambda functions, their Hyperplane ENIs and the function lifecycle.

Behaviour implemented, with its AWS source [AWS-FACTS 1 unless noted]:

- One Hyperplane ENI per (subnet, sorted security-group set); functions whose VpcConfig yields the
  same pair share it, without limit. A function with N subnets uses N ENIs.
- Each ENI holds up to ``eni_capacity`` concurrent connections; when the ENIs of a pair are full
  (or the dataplane's ``accept`` finds no port there) Lambda "creates a new Hyperplane ENI". The
  oldest ENI with room is always chosen first, so placement is deterministic.
- Quotas: "Elastic network interfaces per VPC" (``enis_per_vpc``) -> ``EniLimitExceeded``; no free
  subnet address -> ``SubnetOutOfIPAddresses``; a role without ec2:CreateNetworkInterface ->
  ``InsufficientRolePermissions``.
- States: Pending (creating resources; invocations fail) -> Active; Active -> Inactive (idle for
  ``idle_reclaim``, ENIs reclaimed unless shared); Inactive + invocation -> the invocation fails and
  the function goes Pending/Restoring (back to Inactive with the failure's code if that fails).
- Updates: ``LastUpdateStatus`` InProgress while the new ENIs are created; invocations keep using
  the old ENIs until then; moving to another VPC (or out of VPCs) ends the old connectivity when
  the update completes. A failed update keeps the previous configuration.
- Removal: an ENI no function uses any more is deleted ``deletion_delay`` later ("up to 20
  minutes"); deletion uses the execution role, so with the role deleted first it is left behind,
  orphaned, until deleted by hand.

Time is passed in by the caller (simulated seconds) and never goes backwards: an earlier ``now``
than the last one seen is treated as the last one (captures are not always in order).
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import ipaddress
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

from hyperplane import limits
from hyperplane.control.addresses import AddressPool
from hyperplane.control.eni import EniState, HyperplaneEni
from hyperplane.control.ids import IdFactory
from hyperplane.control.options import ControlOptions
from hyperplane.control.status import (
    FunctionStatus,
    LastUpdateStatus,
    RefusalReason,
    State,
    StateReasonCode,
    reason_text,
)
from hyperplane.vpc.model import Function, IPAddress, NetworkInterface, VpcModel

Key = tuple[str, tuple[str, ...]]  # (subnet id, sorted security group ids)
AddressLike = Union[str, int, IPAddress]

# The states the dataplane's calls test once per new connection, held once: reaching an enum
# member through its class costs ~70 ns in Python 3.11.
_ACTIVE = State.ACTIVE
_IN_USE = EniState.IN_USE
_ATTACHING = EniState.ATTACHING


class ResourceConflictError(ValueError):
    """An update while the function is Pending or another update is in progress (Lambda answers
    ``ResourceConflictException``)."""


@dataclass(frozen=True)
class ControlEvent:
    """Something the control plane did, at simulated ``time``: ``eni-created``, ``eni-ready``,
    ``eni-deletion-scheduled``, ``eni-deleted``, ``eni-orphaned``, ``function-state``,
    ``update-completed``, ``connectivity-ended`` (``subject`` = function, ``detail`` = ENI ids)."""

    time: float
    kind: str
    subject: str
    detail: str = ""


@dataclass(frozen=True)
class Refusal:
    """Why the last :meth:`ControlPlane.open_connection` returned ``None``."""

    time: float
    function: str
    subnet_id: str
    reason: RefusalReason


class _Failure(Exception):
    def __init__(self, code: StateReasonCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class _Plan:
    """A validated VpcConfig: the keys in subnet order and the VPC."""

    keys: tuple[Key, ...]
    vpc_id: Optional[str]

    @functools.cached_property
    def subnets(self) -> tuple[str, ...]:
        return tuple(k[0] for k in self.keys)


_NO_VPC = _Plan((), None)


class _KeyGroup:
    """The live, Lambda-managed ENIs of one (subnet, SG set) in creation order, and the functions
    using that pair (shared with the ENIs, which read it as their ``functions``)."""

    __slots__ = ("key", "vpc_id", "enis", "holders")

    def __init__(self, key: Key, vpc_id: str) -> None:
        self.key = key
        self.vpc_id = vpc_id
        self.enis: list[HyperplaneEni] = []
        self.holders: set[str] = set()


class _FunctionRecord:
    __slots__ = (
        "fn", "plan", "serving", "target", "target_plan", "state", "code", "detail", "update_status",
        "update_code", "update_detail", "pending", "ready_at", "last_used", "role_deleted", "token",
        "idle_token", "snapshot", "snapshot_generation",
    )

    def __init__(self, fn: Function, now: float) -> None:
        self.fn = fn  # the configuration in effect (the one invocations use)
        self.plan = _NO_VPC
        self.serving: dict[str, Key] = {}  # subnet -> key of the configuration in effect
        self.target: Optional[Function] = None  # an update in progress
        self.target_plan = _NO_VPC
        self.state = State.PENDING
        self.code: Optional[StateReasonCode] = StateReasonCode.CREATING
        self.detail = ""
        self.update_status = LastUpdateStatus.SUCCESSFUL
        self.update_code: Optional[StateReasonCode] = None
        self.update_detail = ""
        self.pending: Optional[str] = None  # "create" | "restore" | "update"
        self.ready_at: Optional[float] = None
        self.last_used = now
        self.role_deleted = False
        self.token = 0  # invalidates completion timers of superseded operations
        self.idle_token = 0
        self.snapshot: Optional[FunctionStatus] = None  # cached status, valid for one generation
        self.snapshot_generation = -1

    @property
    def held_keys(self) -> set[Key]:
        return set(self.plan.keys) | set(self.target_plan.keys)


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _ip(value: AddressLike) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value)


class ControlPlane:
    """Hyperplane ENI manager and Lambda function lifecycle for one VPC configuration.

    ``ControlPlane(model, options, now)`` creates every function of ``model`` at ``now`` (with
    their ENIs, before the first packet, as AWS does at function creation).
    """

    def __init__(self, model: VpcModel, options: Optional[ControlOptions] = None, now: float = 0.0) -> None:
        self.model = model
        self.options = options or ControlOptions()
        self._now = float(now)
        self._ids = IdFactory(self.options.seed, taken=set(model.network_interfaces))
        self._held4: dict[str, set[IPAddress]] = {}
        self._held6: dict[str, set[IPAddress]] = {}
        self._pools4: dict[str, AddressPool] = {}
        self._pools6: dict[str, AddressPool] = {}
        self._groups: dict[Key, _KeyGroup] = {}
        self._enis: dict[str, HyperplaneEni] = {}
        self._by_ip: dict[IPAddress, HyperplaneEni] = {}
        self._by_group: dict[str, dict[str, HyperplaneEni]] = {}
        self._live_per_vpc: Counter[str] = Counter()
        self._adoptable: dict[Key, list[NetworkInterface]] = {}
        self._functions: dict[str, _FunctionRecord] = {}
        self._timers: list[tuple[float, int, str, object, int]] = []
        self._seq = itertools.count()
        self._generation = 0  # bumped by every change a FunctionStatus could show
        self.events: list[ControlEvent] = []
        self.refusals: Counter[RefusalReason] = Counter()
        self.last_refusal: Optional[Refusal] = None
        self._index_configuration()
        for fn in model.functions.values():
            self.create_function(fn, self._now)

    # ------------------------------------------------------------------------------------------
    # configuration the manager must respect
    # ------------------------------------------------------------------------------------------
    def _index_configuration(self) -> None:
        """Addresses already held in each subnet (network interfaces, NAT gateway private IPs),
        and the Lambda ENIs an export already lists (``InterfaceType`` ``lambda``): those are
        adopted, with their id and address, when a function needs their (subnet, SG set)."""
        model = self.model
        for iface in model.network_interfaces.values():
            for ip in iface.private_ips + iface.ipv6_addresses:
                subnet = model.subnets.get(iface.subnet_id)
                net = None if subnet is None else (subnet.cidr if ip.version == 4 else subnet.ipv6_cidr)
                if net is None or ip not in net:
                    subnet = model.subnet_of(ip)
                if subnet is not None:
                    (self._held4 if ip.version == 4 else self._held6).setdefault(subnet.id, set()).add(ip)
            if iface.interface_type == "lambda" and iface.private_ips and iface.subnet_id in model.subnets:
                key = (iface.subnet_id, tuple(sorted(set(iface.group_ids))))
                self._adoptable.setdefault(key, []).append(iface)
                self._live_per_vpc[model.subnets[iface.subnet_id].vpc_id] += 1
        for nat in model.nat_gateways.values():
            if nat.private_ip is not None and nat.subnet_id in model.subnets:
                self._held4.setdefault(nat.subnet_id, set()).add(nat.private_ip)

    def _pool4(self, subnet_id: str) -> AddressPool:
        pool = self._pools4.get(subnet_id)
        if pool is None:
            subnet = self.model.subnets[subnet_id]
            pool = self._pools4[subnet_id] = AddressPool(subnet.cidr, self._held4.get(subnet_id, ()))
        return pool

    def _pool6(self, subnet_id: str) -> Optional[AddressPool]:
        subnet = self.model.subnets[subnet_id]
        if subnet.ipv6_cidr is None:
            return None
        pool = self._pools6.get(subnet_id)
        if pool is None:
            pool = self._pools6[subnet_id] = AddressPool(subnet.ipv6_cidr, self._held6.get(subnet_id, ()))
        return pool

    # ------------------------------------------------------------------------------------------
    # time
    # ------------------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return self._now

    def advance(self, now: float) -> float:
        """Apply every time-based transition up to ``now`` in time order (ENIs becoming usable,
        functions becoming Active, updates completing, idle reclaims, deletions); returns the
        effective time (never earlier than the last one seen)."""
        now = float(now)
        if now < self._now:  # max(now, self._now)
            now = self._now
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, kind, ref, token = heapq.heappop(timers)
            self._now = max(self._now, at)
            getattr(self, f"_on_{kind}")(ref, token, at)
        self._now = now
        return now

    def _schedule(self, at: float, kind: str, ref: object, token: int = 0) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), kind, ref, token))

    def _event(self, at: float, kind: str, subject: str, detail: str = "") -> None:
        self._generation += 1
        self.events.append(ControlEvent(at, kind, subject, detail))

    # ------------------------------------------------------------------------------------------
    # function lifecycle (the Lambda API side)
    # ------------------------------------------------------------------------------------------
    def create_function(self, function: Function, now: float) -> FunctionStatus:
        """CreateFunction: a VPC function is Pending (Creating) until an ENI of each of its
        subnets is usable, then Active; without VpcConfig it is Active at once, with no ENI."""
        now = self.advance(now)
        if function.name in self._functions:
            raise ValueError(f"function {function.name!r} already exists")
        rec = self._functions[function.name] = _FunctionRecord(function, now)
        self._start(rec, function, now, "create")
        return self._status(rec)

    def update_function(self, function: Function, now: float) -> FunctionStatus:
        """UpdateFunctionConfiguration with a new VpcConfig (the function is named by
        ``function.name``). Refused while the function is Pending or another update runs."""
        now = self.advance(now)
        rec = self._record(function.name)
        if rec.state is State.PENDING or rec.update_status is LastUpdateStatus.IN_PROGRESS:
            raise ResourceConflictError(
                f"function {function.name!r} cannot be updated now: state {rec.state.value}, "
                f"last update {rec.update_status.value}"
            )
        if rec.state in (State.FAILED, State.INACTIVE):
            # Nothing serves: configure afresh, as an update that runs through Pending.
            self._start(rec, function, now, "create", updating=True)
            return self._status(rec)
        try:
            plan = self._plan(function, rec)
            ready = self._reserve(plan, function.name, now)
        except _Failure as failure:  # the previous configuration stays in effect
            self._set_update(rec, LastUpdateStatus.FAILED, failure.code, failure.detail, now)
            return self._status(rec)
        rec.target, rec.target_plan = function, plan
        rec.pending, rec.ready_at = "update", ready
        rec.token += 1
        self._set_update(rec, LastUpdateStatus.IN_PROGRESS, None, "", now)
        self._finish_or_schedule(rec, ready, now)
        return self._status(rec)

    def update_model(self, model: VpcModel, now: float) -> list[FunctionStatus]:
        """A changed configuration (the dataplane's ``update_config``): subnets, groups and network
        interfaces of ``model`` become known (addresses new interfaces hold are never handed out),
        functions new in ``model`` are created, functions whose VpcConfig changed are updated
        (UpdateFunctionConfiguration; refused updates keep the running configuration, as AWS
        does), and functions absent from ``model`` are deleted. Returns the statuses touched."""
        now = self.advance(now)
        old, self.model = self.model, model
        for iface in model.network_interfaces.values():
            if iface.id in old.network_interfaces:
                continue
            for ip in iface.private_ips + iface.ipv6_addresses:
                subnet = model.subnet_of(ip)
                if subnet is None:
                    continue
                (self._held4 if ip.version == 4 else self._held6).setdefault(subnet.id, set()).add(ip)
                pool = (self._pools4 if ip.version == 4 else self._pools6).get(subnet.id)
                if pool is not None and pool.is_free(ip):
                    pool.hold(ip)
        touched: list[FunctionStatus] = []
        for name, fn in model.functions.items():
            before = old.functions.get(name)
            if name not in self._functions:
                touched.append(self.create_function(fn, now))
            elif before is None or (before.subnet_ids, before.security_group_ids) != (
                fn.subnet_ids, fn.security_group_ids
            ):
                try:
                    touched.append(self.update_function(fn, now))
                except ResourceConflictError:
                    touched.append(self._status(self._record(name)))
        for name in [n for n in self._functions if n not in model.functions]:
            self.delete_function(name, now)
        return touched

    def remove_vpc_config(self, function: str, now: float) -> FunctionStatus:
        """UpdateFunctionConfiguration with an empty VpcConfig."""
        rec = self._record(function)
        bare = dataclasses.replace(rec.fn, vpc_id=None, subnet_ids=(), security_group_ids=())
        return self.update_function(bare, now)

    def delete_function(self, function: str, now: float) -> None:
        """DeleteFunction: its ENIs are deleted ``deletion_delay`` later unless still used."""
        now = self.advance(now)
        rec = self._record(function)
        self._release(rec, rec.held_keys, now)
        del self._functions[function]
        self._event(now, "function-state", function, "Deleted")

    def delete_role(self, function: str) -> None:
        """The function's execution role is deleted: Lambda can no longer create ENIs for it,
        nor delete the ENIs it leaves behind (they become orphaned)."""
        self._record(function).role_deleted = True

    def invoke(self, function: str, now: float) -> tuple[bool, FunctionStatus]:
        """May this function send now? Only an Active function may (during an update it uses the
        previous configuration). Invoking an Inactive function fails and starts restoring it."""
        now = self.advance(now)
        rec = self._functions.get(function) or self._record(function)  # _record raises for an unknown function
        if rec.state is _ACTIVE:
            rec.last_used = now
            return True, self._status(rec)
        if rec.state is State.INACTIVE:
            self._start(rec, rec.fn, now, "restore")
        return False, self._status(rec)

    # --- lifecycle machinery -------------------------------------------------------------------
    def _start(self, rec: _FunctionRecord, function: Function, now: float, mode: str, updating: bool = False) -> None:
        """Create (or restore) the function's ENIs for ``function``'s VpcConfig."""
        rec.fn = function
        rec.token += 1
        try:
            plan = self._plan(function, rec)
            ready = self._reserve(plan, function.name, now)
        except _Failure as failure:
            rec.plan, rec.serving, rec.pending = _NO_VPC, {}, None
            failed = State.INACTIVE if mode == "restore" else State.FAILED
            self._set_state(rec, failed, failure.code, failure.detail, now)
            if updating:
                self._set_update(rec, LastUpdateStatus.FAILED, failure.code, failure.detail, now)
            return
        rec.plan, rec.serving = plan, dict(zip(plan.subnets, plan.keys))
        rec.pending, rec.ready_at = mode, ready
        if updating:
            self._set_update(rec, LastUpdateStatus.IN_PROGRESS, None, "", now)
        code = StateReasonCode.RESTORING if mode == "restore" else StateReasonCode.CREATING
        self._set_state(rec, State.PENDING, code, "", now)
        self._finish_or_schedule(rec, ready, now)

    def _finish_or_schedule(self, rec: _FunctionRecord, ready: float, now: float) -> None:
        if ready <= now:
            self._complete(rec, now)
        else:
            self._schedule(ready, "function_ready", rec, rec.token)

    def _on_function_ready(self, rec: _FunctionRecord, token: int, at: float) -> None:
        if rec.token == token and rec.pending is not None and self._functions.get(rec.fn.name) is rec:
            self._complete(rec, at)

    def _complete(self, rec: _FunctionRecord, at: float) -> None:
        mode, rec.pending, rec.ready_at = rec.pending, None, None
        if mode == "update":
            old_plan, old_vpc = rec.plan, rec.plan.vpc_id
            rec.fn, rec.plan = rec.target, rec.target_plan
            rec.serving = dict(zip(rec.plan.subnets, rec.plan.keys))
            rec.target, rec.target_plan = None, _NO_VPC
            dropped = set(old_plan.keys) - set(rec.plan.keys)
            ended = [e.id for k in old_plan.keys for e in self._groups[k].enis]
            self._release(rec, dropped, at)
            if old_vpc is not None and old_vpc != rec.plan.vpc_id:
                self._event(at, "connectivity-ended", rec.fn.name, " ".join(ended))
            self._set_update(rec, LastUpdateStatus.SUCCESSFUL, None, "", at)
            self._event(at, "update-completed", rec.fn.name)
            if rec.plan.keys != old_plan.keys:
                rec.last_used = max(rec.last_used, at)  # the idle clock of new ENIs starts now
            return
        if rec.update_status is LastUpdateStatus.IN_PROGRESS:
            self._set_update(rec, LastUpdateStatus.SUCCESSFUL, None, "", at)
        rec.last_used = at
        self._set_state(rec, State.ACTIVE, None, "", at)
        rec.idle_token += 1
        self._schedule(at + self.options.idle_reclaim, "idle", rec, rec.idle_token)

    def _on_idle(self, rec: _FunctionRecord, token: int, at: float) -> None:
        if token != rec.idle_token or rec.state is not State.ACTIVE or self._functions.get(rec.fn.name) is not rec:
            return
        due = rec.last_used + self.options.idle_reclaim
        if not rec.plan.keys:  # no VpcConfig in effect: no Hyperplane ENI to reclaim
            self._schedule(due if due > at else at + self.options.idle_reclaim, "idle", rec, token)
            return
        if rec.pending is not None:  # an update is running: look again once it is done
            self._schedule(max(due, rec.ready_at or at, at), "idle", rec, token)
            return
        if due > at:
            self._schedule(due, "idle", rec, token)
            return
        held = set(rec.plan.keys)
        rec.plan, rec.serving = _NO_VPC, {}
        self._release(rec, held, at, reclaim=True)
        self._set_state(rec, State.INACTIVE, StateReasonCode.IDLE, "", at)

    def _set_state(self, rec: _FunctionRecord, state: State, code: Optional[StateReasonCode], detail: str, at: float) -> None:
        self._generation += 1
        changed = (rec.state, rec.code) != (state, code)
        rec.state, rec.code, rec.detail = state, code, detail
        if changed:
            self._event(at, "function-state", rec.fn.name, state.value + (f" {code.value}" if code else ""))

    def _set_update(self, rec: _FunctionRecord, status: LastUpdateStatus, code: Optional[StateReasonCode], detail: str, at: float) -> None:
        self._generation += 1
        rec.update_status, rec.update_code, rec.update_detail = status, code, detail

    # --- validation and reservation -------------------------------------------------------------
    def _plan(self, function: Function, rec: _FunctionRecord) -> _Plan:
        """Validate a VpcConfig against the model (Lambda's InvalidSubnet / InvalidSecurityGroup /
        InsufficientRolePermissions checks) and derive its (subnet, SG set) keys."""
        subnets = _dedupe(function.subnet_ids)
        if not subnets:
            return _NO_VPC
        model = self.model
        if len(subnets) > limits.VPC_CONFIG_MAX_SUBNETS:
            raise _Failure(StateReasonCode.INVALID_SUBNET, f"{len(subnets)} subnets; a VpcConfig allows at most {limits.VPC_CONFIG_MAX_SUBNETS}.")
        missing = [s for s in subnets if s not in model.subnets]
        if missing:
            raise _Failure(StateReasonCode.INVALID_SUBNET, f"Unknown subnet {', '.join(missing)}.")
        vpcs = _dedupe(model.subnets[s].vpc_id for s in subnets)
        if len(vpcs) > 1:
            raise _Failure(StateReasonCode.INVALID_SUBNET, f"The subnets belong to different VPCs ({', '.join(vpcs)}).")
        vpc_id = vpcs[0]
        if function.vpc_id is not None and function.vpc_id != vpc_id:
            raise _Failure(StateReasonCode.INVALID_SUBNET, f"The subnets belong to {vpc_id}, not {function.vpc_id}.")
        groups = _dedupe(function.security_group_ids)
        if not groups:
            raise _Failure(StateReasonCode.INVALID_SECURITY_GROUP, "A VpcConfig with subnets needs at least one security group.")
        if len(groups) > limits.VPC_CONFIG_MAX_SECURITY_GROUPS:
            raise _Failure(StateReasonCode.INVALID_SECURITY_GROUP, f"{len(groups)} security groups; a VpcConfig allows at most {limits.VPC_CONFIG_MAX_SECURITY_GROUPS}.")
        for g in groups:
            sg = model.security_groups.get(g)
            if sg is None:
                raise _Failure(StateReasonCode.INVALID_SECURITY_GROUP, f"Unknown security group {g}.")
            if sg.vpc_id != vpc_id:
                raise _Failure(StateReasonCode.INVALID_SECURITY_GROUP, f"Security group {g} is in {sg.vpc_id}, not {vpc_id}.")
        if not function.role_can_create_enis or rec.role_deleted:
            raise _Failure(StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS, "")
        sg_key = tuple(sorted(groups))
        return _Plan(tuple((s, sg_key) for s in subnets), vpc_id)

    def _reserve(self, plan: _Plan, name: str, now: float) -> float:
        """Make ``name`` a user of every key of ``plan``, creating the ENIs that do not exist.
        All checks run before anything changes, so a failure leaves no trace. Returns the time
        at which every key has a usable ENI."""
        if not plan.keys:
            return now
        fresh = [k for k in plan.keys if not self._has_live(k) and not self._adoptable.get(k)]
        quota, used = self.options.enis_per_vpc, self._live_per_vpc[plan.vpc_id]
        if used + len(fresh) > quota:
            raise _Failure(StateReasonCode.ENI_LIMIT_EXCEEDED, f"{plan.vpc_id} has {used} of {quota} Hyperplane ENIs.")
        for subnet_id, _ in fresh:
            if not self._pool4(subnet_id).has_free():
                raise _Failure(StateReasonCode.SUBNET_OUT_OF_IP_ADDRESSES, f"Subnet {subnet_id} has no free address.")
        ready = now
        for key in plan.keys:
            group = self._join(key, plan.vpc_id, name, now)
            if not group.enis:
                self._new_eni(group, name, now)
            ready = max(ready, min(e.ready_at for e in group.enis))
        return ready

    def _has_live(self, key: Key) -> bool:
        group = self._groups.get(key)
        return group is not None and bool(group.enis)

    def _join(self, key: Key, vpc_id: str, name: str, now: float) -> _KeyGroup:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _KeyGroup(key, vpc_id)
        if not group.holders:  # reuse ENIs waiting for deletion
            for eni in group.enis:
                eni.delete_at = None
                eni.state = EniState.ATTACHING if eni.ready_at > now else EniState.IN_USE
        group.holders.add(name)
        for eni in group.enis:
            eni._note_holder(name)
        return group

    def _release(self, rec: _FunctionRecord, keys: Iterable[Key], now: float, reclaim: bool = False) -> None:
        """``rec`` stops using ``keys``; a key nobody uses any more has its ENIs deleted (at once
        for an idle reclaim, else after ``deletion_delay``), or orphaned if the role is gone."""
        name = rec.fn.name
        for key in sorted(keys):
            group = self._groups[key]
            group.holders.discard(name)
            if group.holders:
                continue
            for eni in list(group.enis):
                if rec.role_deleted:
                    group.enis.remove(eni)
                    eni.state, eni.orphaned = EniState.AVAILABLE, True
                    eni._detach_holders()
                    self._event(now, "eni-orphaned", eni.id, f"role of {name} deleted before the ENI")
                elif reclaim or self.options.deletion_delay == 0:
                    self._delete(eni, now)
                else:
                    eni.state = EniState.AVAILABLE
                    eni.delete_at = now + self.options.deletion_delay
                    self._schedule(eni.delete_at, "eni_delete", eni)
                    self._event(now, "eni-deletion-scheduled", eni.id, f"at {eni.delete_at:g}")

    # --- ENIs -------------------------------------------------------------------------------------
    def _new_eni(self, group: _KeyGroup, creator: str, now: float) -> HyperplaneEni:
        """Create (or adopt from the configuration) one ENI for ``group``. The caller checked the
        quota and the subnet's free addresses."""
        subnet_id, sg_ids = group.key
        subnet = self.model.subnets[subnet_id]
        adopt = self._adoptable.get(group.key)
        uuid = self._ids.description_uuid()
        adopted = bool(adopt)
        if adopted:
            iface = adopt.pop(0)
            eni_id, ip = iface.id, iface.primary_ip
            ipv6 = iface.ipv6_addresses[0] if iface.ipv6_addresses else None
            description = iface.description or f"AWS Lambda VPC ENI-{creator}-{uuid}"
            ready_at = now  # it already exists
        else:
            ip = self._pool4(subnet_id).allocate()
            if ip is None:  # pragma: no cover - callers check has_free() first
                raise RuntimeError(f"no free address in {subnet_id}")
            pool6 = self._pool6(subnet_id)
            ipv6 = pool6.allocate() if pool6 is not None else None
            eni_id = self._ids.eni_id()
            description = f"AWS Lambda VPC ENI-{creator}-{uuid}"
            ready_at = now + self.options.creation_delay
            self._live_per_vpc[group.vpc_id] += 1
        vpc = self.model.vpcs.get(group.vpc_id)
        owner = subnet.owner_id or (vpc.owner_id if vpc else None) or self.model.account_id()
        fn = self._functions.get(creator)
        role = (fn.fn.role if fn else None) or creator
        eni = HyperplaneEni(
            id=eni_id,
            subnet_id=subnet_id,
            vpc_id=group.vpc_id,
            security_group_ids=sg_ids,
            group_names=tuple(self.model.security_groups[g].name for g in sg_ids),
            private_ip=ip,
            ipv6_address=ipv6,
            availability_zone=subnet.availability_zone,
            owner_id=owner,
            description=description,
            attachment_id=self._ids.attachment_id(),
            mac_address=self._ids.mac_address(),
            requester_id=f"{self._ids.role_id(role)}:{owner}",
            created_at=now,
            ready_at=ready_at,
            holders=group.holders,
            adopted=adopted,
        )
        group.enis.append(eni)
        self._enis[eni.id] = eni
        for address in eni.addresses:
            self._by_ip[address] = eni
        for g in sg_ids:
            self._by_group.setdefault(g, {})[eni.id] = eni
        self._event(now, "eni-created", eni.id, f"{subnet_id} {','.join(sg_ids)} {ip}")
        if eni.state is EniState.ATTACHING:
            self._schedule(ready_at, "eni_ready", eni)
        return eni

    def _on_eni_ready(self, eni: HyperplaneEni, token: int, at: float) -> None:
        if eni.state is EniState.ATTACHING and eni.ready_at <= at:
            eni.state = EniState.IN_USE
            self._event(at, "eni-ready", eni.id)

    def _on_eni_delete(self, eni: HyperplaneEni, token: int, at: float) -> None:
        if eni.state is EniState.AVAILABLE and not eni.orphaned and eni.delete_at is not None and eni.delete_at <= at:
            self._delete(eni, at)

    def _delete(self, eni: HyperplaneEni, at: float) -> None:
        group = self._groups.get(eni.key)
        if group is not None and eni in group.enis:
            group.enis.remove(eni)
        eni.state, eni.deleted_at, eni.delete_at = EniState.DELETED, at, None
        eni._detach_holders()
        self._pool4(eni.subnet_id).release(eni.private_ip)
        pool6 = self._pool6(eni.subnet_id)
        if eni.ipv6_address is not None and pool6 is not None:
            pool6.release(eni.ipv6_address)
        for address in eni.addresses:
            if self._by_ip.get(address) is eni:
                del self._by_ip[address]
        for g in eni.security_group_ids:
            self._by_group.get(g, {}).pop(eni.id, None)
        self._live_per_vpc[eni.vpc_id] -= 1
        self._event(at, "eni-deleted", eni.id)

    def delete_eni(self, eni_id: str, now: float) -> None:
        """DeleteNetworkInterface by hand: only for an ENI no function uses (e.g. orphaned)."""
        now = self.advance(now)
        eni = self._eni(eni_id)
        if not eni.live:
            raise ValueError(f"{eni_id} is already deleted")
        if eni.functions:
            raise ValueError(f"{eni_id} is in use by {', '.join(eni.functions)}; it cannot be deleted")
        self._delete(eni, now)

    # ------------------------------------------------------------------------------------------
    # the dataplane side
    # ------------------------------------------------------------------------------------------
    def subnet_for(self, function: str, sandbox_ip: AddressLike, pinned: Optional[str] = None) -> Optional[str]:
        """The subnet an execution environment at ``sandbox_ip`` uses: ``pinned`` when given (it
        must be one of the function's subnets), else the subnet at index ``int(sandbox_ip) mod
        len(subnets)`` in the order the VpcConfig lists them. ``None`` for a function without
        VpcConfig. AWS does not document how it picks; this choice is stable across runs."""
        rec = self._functions.get(function) or self._record(function)  # _record raises for an unknown function
        plan = rec.plan
        subnets = plan.subnets if plan.keys else _dedupe(rec.fn.subnet_ids)
        if not subnets:
            return None
        if pinned is not None:
            if pinned in subnets:
                return pinned
            if pinned not in rec.target_plan.subnets:  # else: the update is not in effect yet
                raise ValueError(
                    f"subnet {pinned} is not one of function {function!r}'s subnets ({', '.join(subnets)})"
                )
        value = sandbox_ip if type(sandbox_ip) is int else int(_ip(sandbox_ip))
        return subnets[value % len(subnets)]

    def open_connection(
        self,
        function: str,
        subnet_id: str,
        now: float,
        accept: Optional[Callable[[HyperplaneEni], bool]] = None,
        commit: bool = True,
    ) -> Optional[HyperplaneEni]:
        """Take a connection slot on an ENI of (``subnet_id``, the function's SG set): the oldest
        usable ENI with fewer than ``eni_capacity`` connections for which ``accept(eni)`` holds
        (the dataplane checks its port pool there); if none, a new (overflow) ENI. ``None`` when
        no slot can be had; ``last_refusal`` says why (the dataplane reports ``port-exhaustion``).
        ``accept`` must accept an ENI without connections. With ``commit=False`` the slot is
        taken but the ENI's peak is not raised until :meth:`commit_connection` (a dataplane that
        may still refuse the connection on its path calls that once the connection exists, so a
        refused connection never shows in ``peak_connections``)."""
        if now > self._now:
            now = self.advance(now)
        else:
            now = self._now
        rec = self._functions.get(function) or self._record(function)  # _record raises for an unknown function
        if rec.state is not _ACTIVE:
            return self._refuse(function, subnet_id, RefusalReason.FUNCTION_NOT_ACTIVE, now)
        key = rec.serving.get(subnet_id)
        if key is None:
            raise ValueError(
                f"subnet {subnet_id} is not in function {function!r}'s VpcConfig in effect "
                f"({', '.join(rec.serving) or 'no VpcConfig'})"
            )
        group = self._groups[key]
        eni = self._usable(group, accept)
        if eni is not None:
            return self._take(eni, rec, now, commit)
        if any(eni.state is _ATTACHING for eni in group.enis):
            return self._refuse(function, subnet_id, RefusalReason.ENI_CREATING, now)
        if self._live_per_vpc[group.vpc_id] >= self.options.enis_per_vpc and not self._adoptable.get(key):
            return self._refuse(function, subnet_id, RefusalReason.ENI_LIMIT_EXCEEDED, now)
        if not self._adoptable.get(key) and not self._pool4(subnet_id).has_free():
            return self._refuse(function, subnet_id, RefusalReason.SUBNET_OUT_OF_IP_ADDRESSES, now)
        eni = self._new_eni(group, function, now)
        if eni.state is EniState.ATTACHING:
            return self._refuse(function, subnet_id, RefusalReason.ENI_CREATING, now)
        if accept is not None and not accept(eni):
            return self._refuse(function, subnet_id, RefusalReason.REJECTED, now)
        return self._take(eni, rec, now, commit)

    def _usable(self, group: _KeyGroup, accept: Optional[Callable[[HyperplaneEni], bool]]) -> Optional[HyperplaneEni]:
        """The oldest ENI of ``group`` in use with a free slot that ``accept`` accepts, else None."""
        capacity = self.options.eni_capacity
        for eni in group.enis:
            if eni.state is _IN_USE and eni.connections < capacity and (accept is None or accept(eni)):
                return eni
        return None

    def usable_eni(self, function: str, subnet_id: str, now: float,
                   accept: Optional[Callable[[HyperplaneEni], bool]] = None) -> Optional[HyperplaneEni]:
        """The ENI on which :meth:`invoke` then :meth:`open_connection` (same arguments) would
        take a slot at ``now`` with nothing else happening first: no timer is due by ``now``,
        the function is Active, and an ENI of the pair has a slot ``accept`` accepts. ``None``
        in every other case (a timer would fire, the open would be refused or would create an
        ENI). Changes nothing; :meth:`open_on` then takes the slot."""
        timers = self._timers
        if (timers and timers[0][0] <= now) or now < self._now:
            return None
        rec = self._functions.get(function)
        if rec is None or rec.state is not _ACTIVE:
            return None
        key = rec.serving.get(subnet_id)
        return None if key is None else self._usable(self._groups[key], accept)

    def earlier_enis(self, function: str, subnet_id: str, eni: HyperplaneEni) -> Optional[list]:
        """The ENIs in use that :meth:`usable_eni` tries before ``eni`` for the function in
        ``subnet_id`` (``eni`` is the one it gives when each of them is full or refused), or None
        when ``eni`` is not one of that pair's. Valid until the next timer or model change."""
        rec = self._functions.get(function)
        key = None if rec is None else rec.serving.get(subnet_id)
        if key is None:
            return None
        earlier = []
        for other in self._groups[key].enis:
            if other is eni:
                return earlier
            if other.state is _IN_USE:
                earlier.append(other)
        return None

    def subnet_modulus(self, function: str, pinned: Optional[str] = None) -> int:
        """How :meth:`subnet_for` picks the function's subnet: 0 when every address gets the same
        one (``pinned``, or a single subnet), else the number of subnets (address mod it)."""
        rec = self._functions.get(function) or self._record(function)
        plan = rec.plan
        subnets = plan.subnets if plan.keys else _dedupe(rec.fn.subnet_ids)
        if len(subnets) <= 1 or (pinned is not None and pinned in subnets):
            return 0
        return len(subnets)

    @property
    def generation(self) -> int:
        """Counts the changes of the functions' and ENIs' states (every event, every state or
        update change): what a caller that keeps :meth:`usable_eni`'s answers must watch."""
        return self._generation

    def next_timer(self) -> float:
        """The time of the next control-plane timer (``inf`` when none)."""
        return self._timers[0][0] if self._timers else float("inf")

    def opened_on(self, function: str, now: float) -> None:
        """Connections were opened for ``function`` up to ``now``, each as :meth:`open_on` with
        no timer due, their ENI slots taken and counted in the peak by the caller: the clock and
        the function's last use move to ``now``."""
        self._now = now
        self._functions[function].last_used = now

    def open_on(self, eni: HyperplaneEni, function: str, now: float) -> HyperplaneEni:
        """What :meth:`invoke` then :meth:`open_connection` (``commit=False``) do when
        :meth:`usable_eni` gave ``eni`` for them at ``now``: the clock moves to ``now``, the
        function is used, and ``eni`` gives it a slot (:meth:`commit_connection` counts it in the
        peak once the connection exists)."""
        self._now = now  # usable_eni: no timer due by now, and now is not earlier
        return self._take(eni, self._functions[function], now, commit=False)

    def _take(self, eni: HyperplaneEni, rec: _FunctionRecord, now: float, commit: bool = True) -> HyperplaneEni:
        eni.connections += 1
        if commit:
            self.commit_connection(eni)
        rec.last_used = now
        return eni

    @staticmethod
    def commit_connection(eni: HyperplaneEni) -> None:
        """The connection holding a slot taken with ``commit=False`` exists: count it in the peak."""
        if eni.connections > eni.peak_connections:
            eni.peak_connections = eni.connections

    def _refuse(self, function: str, subnet_id: str, reason: RefusalReason, now: float) -> None:
        self.refusals[reason] += 1
        self.last_refusal = Refusal(now, function, subnet_id, reason)
        return None

    def close_connection(self, eni_id: str) -> None:
        """Free one connection slot of ``eni_id`` (also valid after the ENI was deleted)."""
        eni = self._eni(eni_id)
        if eni.connections <= 0:
            raise ValueError(f"{eni_id} has no open connection to close")
        eni.connections -= 1

    # ------------------------------------------------------------------------------------------
    # queries (the ENI finder)
    # ------------------------------------------------------------------------------------------
    def enis(self) -> list[HyperplaneEni]:
        """Every Hyperplane ENI that ever existed, in creation order (see ``state``)."""
        return list(self._enis.values())

    def live_enis(self) -> list[HyperplaneEni]:
        return [e for e in self._enis.values() if e.live]

    def orphaned_enis(self) -> list[HyperplaneEni]:
        return [e for e in self._enis.values() if e.orphaned and e.live]

    def get_eni(self, eni_id: str) -> HyperplaneEni:
        return self._eni(eni_id)

    def enis_of(self, function: str) -> list[HyperplaneEni]:
        """The ENIs the function's invocations use now (all ENIs of its pairs, overflow included)."""
        rec = self._record(function)
        return [e for k in rec.plan.keys for e in self._groups[k].enis]

    def functions_using(self, eni_id: str) -> tuple[str, ...]:
        return self._eni(eni_id).functions

    def eni_at(self, ip: AddressLike) -> Optional[HyperplaneEni]:
        """The live Hyperplane ENI holding ``ip`` (IPv4 or IPv6), or ``None``."""
        return self._by_ip.get(_ip(ip))

    def members_of(self, group_id: str) -> tuple[IPAddress, ...]:
        """Private addresses (IPv4 and IPv6) of the live Hyperplane ENIs in ``group_id``: what a
        security-group rule referencing that group matches, besides the configuration's own
        interfaces (``VpcModel.members_of``)."""
        return tuple(a for e in self._by_group.get(group_id, {}).values() for a in e.addresses)

    def last_used(self, function: str) -> float:
        """Simulated time of the function's last invocation or connection (its idle clock)."""
        return self._record(function).last_used

    def functions(self) -> tuple[str, ...]:
        return tuple(self._functions)

    def function(self, name: str) -> Function:
        """The model Function whose configuration is in effect."""
        return (self._functions.get(name) or self._record(name)).fn

    def status(self, function: str) -> FunctionStatus:
        return self._status(self._record(function))

    def statuses(self) -> dict[str, FunctionStatus]:
        return {name: self._status(rec) for name, rec in self._functions.items()}

    def enis_in_vpc(self, vpc_id: str) -> int:
        """Live Hyperplane ENIs counted against the VPC's quota."""
        return self._live_per_vpc[vpc_id]

    # --- helpers -----------------------------------------------------------------------------------
    def _record(self, function: str) -> _FunctionRecord:
        rec = self._functions.get(function)
        if rec is None:
            known = ", ".join(self._functions) or "none"
            raise ValueError(f"unknown function {function!r} (known: {known})")
        return rec

    def _eni(self, eni_id: str) -> HyperplaneEni:
        eni = self._enis.get(eni_id)
        if eni is None:
            raise ValueError(f"unknown Hyperplane ENI {eni_id!r}")
        return eni

    def _status(self, rec: _FunctionRecord) -> FunctionStatus:
        if rec.snapshot is not None and rec.snapshot_generation == self._generation:
            return rec.snapshot  # the hot path: invoke() once per new connection
        fn = rec.fn
        rec.snapshot_generation = self._generation
        rec.snapshot = FunctionStatus(
            name=fn.name,
            state=rec.state,
            state_reason_code=rec.code,
            state_reason=reason_text(rec.code, rec.detail),
            last_update_status=rec.update_status,
            last_update_status_reason_code=rec.update_code,
            last_update_status_reason=reason_text(rec.update_code, rec.update_detail),
            vpc_id=rec.plan.vpc_id or fn.vpc_id,
            subnet_ids=_dedupe(fn.subnet_ids),
            security_group_ids=_dedupe(fn.security_group_ids),
            ipv6_allowed_for_dual_stack=fn.ipv6_allowed_for_dual_stack,
            eni_ids=tuple(e.id for e in self.enis_of(fn.name)),
        )
        return rec.snapshot
