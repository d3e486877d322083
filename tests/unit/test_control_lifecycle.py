"""Function lifecycle: states, reason codes, updates, idle reclaim, removal, orphaned ENIs."""
from __future__ import annotations

import dataclasses

import pytest

from hyperplane.control import (
    ControlOptions, ControlPlane, EniState, LastUpdateStatus, RefusalReason, ResourceConflictError, State,
    StateReasonCode,
)
from test_control_world import fn, world

DAY = 86400.0
SLOW = ControlOptions(creation_delay=90, idle_reclaim=14 * DAY, deletion_delay=1200)


def state(cp, name):
    s = cp.status(name)
    return s.state, s.state_reason_code


# --- creation ------------------------------------------------------------------------------------
def test_creation_is_pending_until_the_eni_exists_then_active():
    cp = ControlPlane(world(fn("f")), SLOW, now=0)
    assert state(cp, "f") == (State.PENDING, StateReasonCode.CREATING)
    assert cp.enis_of("f")[0].state is EniState.ATTACHING
    ok, status = cp.invoke("f", 89.9)
    assert not ok and status.state is State.PENDING
    ok, status = cp.invoke("f", 90)
    assert ok and status.state is State.ACTIVE and status.state_reason_code is None
    assert cp.enis_of("f")[0].state is EniState.IN_USE


def test_replay_default_starts_active():
    cp = ControlPlane(world(fn("f")))
    assert state(cp, "f") == (State.ACTIVE, None)
    assert cp.invoke("f", 0)[0]


def test_second_function_joining_an_existing_eni_needs_no_new_eni():
    cp = ControlPlane(world(fn("f1")), SLOW)
    cp.advance(100)
    cp.create_function(fn("f2"), 100)
    assert state(cp, "f2") == (State.ACTIVE, None)
    assert len(cp.live_enis()) == 1


@pytest.mark.parametrize(
    "function, code, detail",
    [
        (fn("f", subnets=("subnet-nope",)), StateReasonCode.INVALID_SUBNET, "Unknown subnet subnet-nope"),
        (fn("f", subnets=("subnet-a", "subnet-other")), StateReasonCode.INVALID_SUBNET, "different VPCs"),
        (fn("f", vpc_id="vpc-2"), StateReasonCode.INVALID_SUBNET, "belong to vpc-1, not vpc-2"),
        (fn("f", groups=("sg-nope",)), StateReasonCode.INVALID_SECURITY_GROUP, "Unknown security group sg-nope"),
        (fn("f", groups=("sg-other",)), StateReasonCode.INVALID_SECURITY_GROUP, "sg-other is in vpc-2"),
        (fn("f", groups=()), StateReasonCode.INVALID_SECURITY_GROUP, "at least one security group"),
        (fn("f", groups=tuple(f"sg-{i}" for i in range(6))), StateReasonCode.INVALID_SECURITY_GROUP, "at most 5"),
        (fn("f", role_can_create_enis=False), StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS, "ec2:CreateNetworkInterface"),
    ],
)
def test_invalid_configuration_fails_the_function(function, code, detail):
    cp = ControlPlane(world(function))
    s = cp.status("f")
    assert (s.state, s.state_reason_code) == (State.FAILED, code)
    assert detail in s.state_reason
    assert cp.live_enis() == []
    assert cp.invoke("f", 1) == (False, cp.status("f"))
    assert s.to_lambda()["StateReasonCode"] == code.value


def test_subnet_out_of_addresses_at_creation():
    groups = {f"sg-{i}": "vpc-1" for i in range(12)}
    functions = [fn(f"f{i}", subnets=("subnet-small",), groups=(f"sg-{i}",)) for i in range(12)]
    cp = ControlPlane(world(*functions, groups=groups))
    assert [cp.status(f"f{i}").state for i in range(11)] == [State.ACTIVE] * 11
    assert state(cp, "f11") == (State.FAILED, StateReasonCode.SUBNET_OUT_OF_IP_ADDRESSES)


def test_quota_failure_is_atomic_across_subnets():
    cp = ControlPlane(world(fn("f1"), fn("f2", subnets=("subnet-b", "subnet-v6"))), ControlOptions(enis_per_vpc=2))
    assert state(cp, "f2") == (State.FAILED, StateReasonCode.ENI_LIMIT_EXCEEDED)
    assert [e.subnet_id for e in cp.live_enis()] == ["subnet-a"]


def test_to_lambda_uses_get_function_configuration_names():
    cp = ControlPlane(world(fn("f", subnets=("subnet-a", "subnet-b"), groups=("sg-1",))))
    assert cp.status("f").to_lambda() == {
        "FunctionName": "f", "State": "Active", "LastUpdateStatus": "Successful",
        "VpcConfig": {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"], "VpcId": "vpc-1",
                      "Ipv6AllowedForDualStack": False},
    }


# --- idle reclaim and restore --------------------------------------------------------------------------
def test_idle_function_goes_inactive_and_its_eni_is_reclaimed():
    cp = ControlPlane(world(fn("f")), ControlOptions(idle_reclaim=14 * DAY, creation_delay=90))
    cp.invoke("f", 100)
    eni = cp.enis_of("f")[0]
    cp.advance(100 + 14 * DAY - 1)
    assert state(cp, "f") == (State.ACTIVE, None)
    cp.advance(100 + 14 * DAY)
    assert state(cp, "f") == (State.INACTIVE, StateReasonCode.IDLE)
    assert eni.state is EniState.DELETED and cp.enis_of("f") == []


def test_invoking_an_inactive_function_fails_and_restores_it():
    t0 = 14 * DAY + 100  # Active at 90 (creation delay), idle from 90 + 14 days
    cp = ControlPlane(world(fn("f")), ControlOptions(idle_reclaim=14 * DAY, creation_delay=90))
    cp.advance(t0)
    ok, status = cp.invoke("f", t0)
    assert not ok and (status.state, status.state_reason_code) == (State.PENDING, StateReasonCode.RESTORING)
    assert cp.invoke("f", t0 + 89)[0] is False
    assert cp.invoke("f", t0 + 90)[0] is True
    assert cp.enis_of("f")[0].private_ip == cp.eni_at("10.0.1.4").private_ip  # address reused


def test_restore_failure_returns_to_inactive_with_the_reason():
    cp = ControlPlane(world(fn("f")), ControlOptions(idle_reclaim=DAY))
    cp.advance(DAY)
    cp.delete_role("f")
    ok, status = cp.invoke("f", DAY + 1)
    assert not ok
    assert (status.state, status.state_reason_code) == (State.INACTIVE, StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS)


def test_shared_eni_survives_when_one_function_goes_idle():
    cp = ControlPlane(world(fn("f1"), fn("f2")), ControlOptions(idle_reclaim=DAY))
    eni = cp.enis_of("f1")[0]
    for t in range(0, 3 * int(DAY), 3600):
        cp.invoke("f2", t)
    assert state(cp, "f1") == (State.INACTIVE, StateReasonCode.IDLE)
    assert eni.state is EniState.IN_USE and eni.functions == ("f2",)


def test_connections_count_as_use():
    cp = ControlPlane(world(fn("f")), ControlOptions(idle_reclaim=DAY))
    cp.open_connection("f", "subnet-a", DAY - 1)
    cp.advance(DAY + 10)
    assert cp.status("f").state is State.ACTIVE


# --- updates -----------------------------------------------------------------------------------------------
def test_update_keeps_the_old_eni_until_the_new_one_is_active():
    cp = ControlPlane(world(fn("f")), ControlOptions(creation_delay=60, deletion_delay=1200))
    cp.advance(60)
    old = cp.enis_of("f")[0]
    s = cp.update_function(fn("f", subnets=("subnet-b",)), 100)
    assert s.state is State.ACTIVE and s.last_update_status is LastUpdateStatus.IN_PROGRESS
    assert cp.invoke("f", 120)[0]
    assert cp.open_connection("f", "subnet-a", 120) is old
    assert cp.subnet_for("f", "169.254.0.1", pinned="subnet-b") == "subnet-a"  # not in effect yet
    with pytest.raises(ResourceConflictError, match="cannot be updated now"):
        cp.update_function(fn("f", subnets=("subnet-v6",)), 130)
    cp.advance(160)
    s = cp.status("f")
    assert s.last_update_status is LastUpdateStatus.SUCCESSFUL and s.subnet_ids == ("subnet-b",)
    (new,) = cp.enis_of("f")
    assert new.subnet_id == "subnet-b" and cp.open_connection("f", "subnet-b", 161) is new
    assert old.state is EniState.AVAILABLE and old.delete_at == 160 + 1200
    assert not any(e.kind == "connectivity-ended" for e in cp.events)  # same VPC
    cp.advance(160 + 1200)
    assert old.state is EniState.DELETED


def test_moving_to_another_vpc_ends_the_old_connectivity_when_the_update_completes():
    cp = ControlPlane(world(fn("f")), ControlOptions(creation_delay=60))
    cp.advance(60)
    old = cp.enis_of("f")[0]
    cp.update_function(fn("f", subnets=("subnet-other",), groups=("sg-other",)), 100)
    assert [e for e in cp.events if e.kind == "connectivity-ended"] == []
    cp.advance(160)
    (ended,) = [e for e in cp.events if e.kind == "connectivity-ended"]
    assert (ended.time, ended.subject, ended.detail) == (160, "f", old.id)
    assert cp.status("f").vpc_id == "vpc-2"


def test_failed_update_keeps_the_previous_configuration():
    cp = ControlPlane(world(fn("f")))
    s = cp.update_function(fn("f", subnets=("subnet-nope",)), 5)
    assert s.state is State.ACTIVE
    assert (s.last_update_status, s.last_update_status_reason_code) == (LastUpdateStatus.FAILED, StateReasonCode.INVALID_SUBNET)
    assert s.subnet_ids == ("subnet-a",) and cp.invoke("f", 6)[0]
    assert s.to_lambda()["LastUpdateStatusReasonCode"] == "InvalidSubnet"


def test_update_of_a_failed_function_runs_through_pending():
    cp = ControlPlane(world(fn("f", role_can_create_enis=False)), ControlOptions(creation_delay=30))
    assert cp.status("f").state is State.FAILED
    s = cp.update_function(fn("f"), 10)
    assert (s.state, s.state_reason_code, s.last_update_status) == (State.PENDING, StateReasonCode.CREATING, LastUpdateStatus.IN_PROGRESS)
    cp.advance(40)
    s = cp.status("f")
    assert (s.state, s.last_update_status) == (State.ACTIVE, LastUpdateStatus.SUCCESSFUL)


def test_update_while_pending_is_a_conflict():
    cp = ControlPlane(world(fn("f")), ControlOptions(creation_delay=30))
    with pytest.raises(ResourceConflictError, match="state Pending"):
        cp.update_function(fn("f", subnets=("subnet-b",)), 1)


# --- removal ----------------------------------------------------------------------------------------------
def test_removing_the_vpc_config_deletes_the_eni_after_the_delay():
    cp = ControlPlane(world(fn("f")), ControlOptions(deletion_delay=1200))
    eni = cp.enis_of("f")[0]
    s = cp.remove_vpc_config("f", 100)
    assert s.state is State.ACTIVE and s.subnet_ids == () and cp.enis_of("f") == []
    assert eni.state is EniState.AVAILABLE and eni.functions == ()
    cp.advance(1299)
    assert eni.state is EniState.AVAILABLE and cp.eni_at("10.0.1.4") is eni
    cp.advance(1300)
    assert eni.state is EniState.DELETED and cp.eni_at("10.0.1.4") is None
    assert eni.to_ec2()["Status"] == "deleted"


def test_eni_used_by_another_function_is_not_deleted():
    cp = ControlPlane(world(fn("f1"), fn("f2")), ControlOptions(deletion_delay=60))
    eni = cp.enis_of("f1")[0]
    cp.delete_function("f1", 0)
    cp.advance(10_000)
    assert eni.state is EniState.IN_USE and eni.functions == ("f2",)


def test_eni_waiting_for_deletion_is_reused_by_a_new_function():
    cp = ControlPlane(world(fn("f1")), ControlOptions(deletion_delay=60))
    eni = cp.enis_of("f1")[0]
    cp.delete_function("f1", 0)
    cp.create_function(fn("f2"), 30)
    cp.advance(1000)
    assert cp.enis_of("f2") == [eni] and eni.state is EniState.IN_USE


def test_deleting_the_role_first_leaves_an_orphaned_eni():
    cp = ControlPlane(world(fn("f")), ControlOptions(deletion_delay=60, enis_per_vpc=1))
    eni = cp.enis_of("f")[0]
    cp.delete_role("f")
    assert cp.invoke("f", 1)[0]  # invoking needs no ENI permission
    cp.remove_vpc_config("f", 2)
    cp.advance(10_000)
    assert eni.orphaned and eni.state is EniState.AVAILABLE
    assert cp.orphaned_enis() == [eni] and cp.eni_at("10.0.1.4") is eni
    # it still counts against the quota until it is deleted by hand
    cp.create_function(fn("g"), 10_001)
    assert state(cp, "g") == (State.FAILED, StateReasonCode.ENI_LIMIT_EXCEEDED)
    cp.delete_eni(eni.id, 10_002)
    assert eni.state is EniState.DELETED and cp.enis_in_vpc("vpc-1") == 0


def test_delete_eni_in_use_is_refused():
    cp = ControlPlane(world(fn("f")))
    with pytest.raises(ValueError, match="in use by f"):
        cp.delete_eni(cp.enis_of("f")[0].id, 1)


def test_not_active_function_gets_no_connection():
    cp = ControlPlane(world(fn("f")), ControlOptions(creation_delay=30))
    assert cp.open_connection("f", "subnet-a", 1) is None
    assert cp.last_refusal.reason is RefusalReason.FUNCTION_NOT_ACTIVE


def test_time_never_goes_backwards():
    cp = ControlPlane(world(fn("f")), ControlOptions(creation_delay=30))
    cp.advance(40)
    assert cp.advance(10) == 40 and cp.status("f").state is State.ACTIVE


def test_unknown_function_and_duplicate_names():
    cp = ControlPlane(world(fn("f")))
    with pytest.raises(ValueError, match="unknown function 'g' \\(known: f\\)"):
        cp.invoke("g", 0)
    with pytest.raises(ValueError, match="function 'f' already exists"):
        cp.create_function(dataclasses.replace(fn("f")), 0)
