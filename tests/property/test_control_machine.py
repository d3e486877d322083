"""A hypothesis state machine driving the control plane through every operation, checking the
manager's invariants after each step (addresses, capacity, quota, deletion, states)."""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hyperplane.control import (
    FAILURE_CODES, ControlOptions, ControlPlane, EniState, LastUpdateStatus, RefusalReason, ResourceConflictError,
    State, StateReasonCode,
)
from hyperplane.vpc.model import Function, NatGateway, NetworkInterface, SecurityGroup, Subnet, Vpc, VpcModel

net, addr = ipaddress.ip_network, ipaddress.ip_address

SUBNETS = {
    "subnet-a": Subnet("subnet-a", "vpc-1", net("10.0.1.0/28"), None, "us-east-1a"),
    "subnet-b": Subnet("subnet-b", "vpc-1", net("10.0.2.0/28"), net("2600:1f18::/64"), "us-east-1b"),
    "subnet-c": Subnet("subnet-c", "vpc-2", net("10.1.1.0/28"), None, "us-east-1a"),
}
MODEL = VpcModel(
    vpcs={"vpc-1": Vpc("vpc-1", "111122223333", (net("10.0.0.0/16"),), (net("2600:1f18::/56"),)),
          "vpc-2": Vpc("vpc-2", "111122223333", (net("10.1.0.0/16"),))},
    subnets=SUBNETS,
    security_groups={"sg-1": SecurityGroup("sg-1", "vpc-1"), "sg-2": SecurityGroup("sg-2", "vpc-1"),
                     "sg-9": SecurityGroup("sg-9", "vpc-2")},
    # configuration interfaces hold addresses the manager must never hand out
    network_interfaces={"eni-db": NetworkInterface(
        "eni-db", "vpc-1", "subnet-a", tuple(addr(f"10.0.1.{i}") for i in (5, 6, 7, 9)), (), ("sg-2",))},
    nat_gateways={"nat-1": NatGateway("nat-1", "vpc-1", "subnet-b", addr("10.0.2.4"), (addr("203.0.113.1"),))},
)
CONFIG_HELD = {addr("10.0.1.5"), addr("10.0.1.6"), addr("10.0.1.7"), addr("10.0.1.9"), addr("10.0.2.4")}

CONFIGS = [
    dict(subnet_ids=("subnet-a",), security_group_ids=("sg-1",)),
    dict(subnet_ids=("subnet-b",), security_group_ids=("sg-1",)),
    dict(subnet_ids=("subnet-a", "subnet-b"), security_group_ids=("sg-2", "sg-1")),
    dict(subnet_ids=("subnet-b",), security_group_ids=("sg-2",)),
    dict(subnet_ids=("subnet-c",), security_group_ids=("sg-9",)),
    dict(),  # no VpcConfig
    dict(subnet_ids=("subnet-zz",), security_group_ids=("sg-1",)),  # InvalidSubnet
    dict(subnet_ids=("subnet-a",), security_group_ids=("sg-1",), role_can_create_enis=False),
]
NAMES = st.sampled_from(["f0", "f1", "f2", "f3"])
DT = st.sampled_from([0.0, 1.0, 25.0, 60.0, 150.0, 600.0])


class ControlMachine(RuleBasedStateMachine):
    @initialize(
        capacity=st.sampled_from([1, 2, 3]), quota=st.sampled_from([2, 4, 16]),
        creation=st.sampled_from([0.0, 30.0]), deletion=st.sampled_from([0.0, 100.0]),
    )
    def setup(self, capacity, quota, creation, deletion):
        self.opts = ControlOptions(eni_capacity=capacity, enis_per_vpc=quota, creation_delay=creation,
                                   idle_reclaim=500.0, deletion_delay=deletion)
        self.cp = ControlPlane(MODEL, self.opts)
        self.t = 0.0
        self.open: list[str] = []  # ENI ids of the connections we hold

    def tick(self, dt):
        self.t += dt
        return self.t

    def exists(self, name):
        return name in self.cp.functions()

    # --- rules ---------------------------------------------------------------------------------
    @rule(name=NAMES, config=st.integers(0, len(CONFIGS) - 1), dt=DT)
    def create(self, name, config, dt):
        if not self.exists(name):
            status = self.cp.create_function(Function(name, **CONFIGS[config]), self.tick(dt))
            if config == 6:
                assert (status.state, status.state_reason_code) == (State.FAILED, StateReasonCode.INVALID_SUBNET)
            if config == 7:
                assert status.state_reason_code is StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS

    @rule(name=NAMES, config=st.integers(0, len(CONFIGS) - 1), dt=DT)
    def update(self, name, config, dt):
        if self.exists(name):
            self._update(lambda now: self.cp.update_function(Function(name, **CONFIGS[config]), now), name, dt)

    @rule(name=NAMES, dt=DT)
    def remove_vpc_config(self, name, dt):
        if self.exists(name):
            self._update(lambda now: self.cp.remove_vpc_config(name, now), name, dt)

    def _update(self, call, name, dt):
        now = self.cp.advance(self.tick(dt))
        before = self.cp.status(name)
        try:
            call(now)
        except ResourceConflictError:
            assert before.state is State.PENDING or before.last_update_status is LastUpdateStatus.IN_PROGRESS
        else:
            assert before.state is not State.PENDING and before.last_update_status is not LastUpdateStatus.IN_PROGRESS

    @rule(name=NAMES, dt=DT)
    def delete_function(self, name, dt):
        if self.exists(name):
            self.cp.delete_function(name, self.tick(dt))
            assert not any(name in e.functions for e in self.cp.enis())

    @rule(name=NAMES)
    def delete_role(self, name):
        if self.exists(name):
            self.cp.delete_role(name)

    @rule(name=NAMES, dt=DT)
    def invoke(self, name, dt):
        if not self.exists(name):
            return
        now = self.cp.advance(self.tick(dt))
        before = self.cp.status(name)
        ok, after = self.cp.invoke(name, now)
        assert ok == (before.state is State.ACTIVE)
        if before.state is State.INACTIVE:
            assert after.state in (State.PENDING, State.ACTIVE, State.INACTIVE)
            if after.state is State.PENDING:
                assert after.state_reason_code is StateReasonCode.RESTORING

    @rule(dt=DT)
    def advance(self, dt):
        self.cp.advance(self.tick(dt))

    @rule(name=NAMES, sandbox=st.integers(0, 2**32 - 1), dt=DT)
    def open_connection(self, name, sandbox, dt):
        self._open(name, sandbox, dt)

    @rule(name=NAMES, sandbox=st.integers(0, 2**32 - 1), count=st.integers(2, 14))
    def open_burst(self, name, sandbox, count):
        """Many connections at one instant: overflow ENIs, then the quota or the subnet runs out."""
        for _ in range(count):
            self._open(name, sandbox, 0.0)

    def _open(self, name, sandbox, dt):
        if not self.exists(name):
            return
        now = self.cp.advance(self.tick(dt))
        status = self.cp.status(name)
        subnet = self.cp.subnet_for(name, addr(sandbox))
        if status.state is not State.ACTIVE or subnet is None:
            return
        key = (subnet, tuple(sorted(set(self.cp.function(name).security_group_ids))))
        group = [e for e in self.cp.enis_of(name) if e.key == key]
        usable_with_room = [e for e in group if e.usable and e.connections < self.opts.eni_capacity]
        eni = self.cp.open_connection(name, subnet, now)
        if eni is None:
            reason = self.cp.last_refusal.reason
            assert not usable_with_room
            assert reason in (RefusalReason.ENI_LIMIT_EXCEEDED, RefusalReason.SUBNET_OUT_OF_IP_ADDRESSES,
                              RefusalReason.ENI_CREATING)
            if reason is RefusalReason.ENI_LIMIT_EXCEEDED:
                assert self.cp.enis_in_vpc(self.cp.get_eni(group[0].id).vpc_id) >= self.opts.enis_per_vpc
            return
        if usable_with_room:
            assert eni is usable_with_room[0]  # the oldest ENI with room, deterministically
        else:  # a new ENI only when every ENI of the pair was full
            assert eni not in group and all(e.connections == self.opts.eni_capacity for e in group if e.usable)
        assert eni.key == key and name in eni.functions
        self.open.append(eni.id)

    @precondition(lambda self: bool(self.open))
    @rule(index=st.integers(0, 1000))
    def close_connection(self, index):
        self.cp.close_connection(self.open.pop(index % len(self.open)))

    # --- invariants ----------------------------------------------------------------------------
    @invariant()
    def addresses_are_unique_valid_and_indexed(self):
        seen = set()
        for eni in self.cp.live_enis():
            subnet = SUBNETS[eni.subnet_id]
            assert eni.private_ip in subnet.cidr and eni.private_ip not in subnet.reserved_addresses
            if eni.ipv6_address is not None:
                assert eni.ipv6_address in subnet.ipv6_cidr
                assert int(eni.ipv6_address) - int(subnet.ipv6_cidr.network_address) >= 4
            for a in eni.addresses:
                assert a not in seen and a not in CONFIG_HELD
                seen.add(a)
                assert self.cp.eni_at(a) is eni

    @invariant()
    def capacity_and_quota_hold(self):
        live = Counter(e.vpc_id for e in self.cp.live_enis())
        for vpc_id in ("vpc-1", "vpc-2"):
            assert live[vpc_id] == self.cp.enis_in_vpc(vpc_id) <= self.opts.enis_per_vpc
        held = Counter(self.open)
        for eni in self.cp.enis():
            assert 0 <= eni.connections <= self.opts.eni_capacity
            assert eni.connections == held[eni.id] and eni.peak_connections >= eni.connections

    @invariant()
    def enis_are_deleted_only_when_unused(self):
        for eni in self.cp.enis():
            if eni.state is EniState.DELETED or eni.state is EniState.AVAILABLE:
                assert eni.functions == ()
            else:
                assert eni.functions and all(self.exists(f) for f in eni.functions)

    @invariant()
    def members_of_matches_the_live_enis(self):
        for group in ("sg-1", "sg-2", "sg-9"):
            expected = {a for e in self.cp.live_enis() if group in e.security_group_ids for a in e.addresses}
            assert set(self.cp.members_of(group)) == expected

    @invariant()
    def states_and_codes_follow_the_rules(self):
        by_key = defaultdict(list)
        for eni in self.cp.live_enis():
            by_key[eni.key].append(eni)
        for name, s in self.cp.statuses().items():
            if s.state is State.ACTIVE:
                assert s.state_reason_code is None
            elif s.state is State.PENDING:
                assert s.state_reason_code in (StateReasonCode.CREATING, StateReasonCode.RESTORING)
            elif s.state is State.INACTIVE:
                assert s.state_reason_code is StateReasonCode.IDLE or s.state_reason_code in FAILURE_CODES
            else:
                assert s.state_reason_code in FAILURE_CODES
            assert (s.last_update_status is LastUpdateStatus.FAILED) == (s.last_update_status_reason_code is not None)
            enis = self.cp.enis_of(name)
            assert s.eni_ids == tuple(e.id for e in enis)  # the cached status is never stale
            if s.state in (State.FAILED, State.INACTIVE):
                assert enis == []
            if s.state is State.ACTIVE:
                sgs = tuple(sorted(set(self.cp.function(name).security_group_ids)))
                for subnet in dict.fromkeys(self.cp.function(name).subnet_ids):
                    assert any(e.usable for e in by_key[(subnet, sgs)])  # it can send everywhere
                if enis and s.last_update_status is not LastUpdateStatus.IN_PROGRESS:
                    assert self.cp.last_used(name) + self.opts.idle_reclaim > self.cp.now  # else it is Inactive
            for eni in enis:
                assert eni.live and name in eni.functions


ControlMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestControlMachine = ControlMachine.TestCase
