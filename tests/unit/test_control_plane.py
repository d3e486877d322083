"""The Hyperplane ENI manager: sharing, addresses, capacity and overflow, quotas, queries."""
from __future__ import annotations

import ipaddress
import re

import pytest

from hyperplane import limits
from hyperplane.control import ControlOptions, ControlPlane, EniState, RefusalReason, State, StateReasonCode
from test_control_world import fn, interface, nat_gateway, world

IP = ipaddress.ip_address


def plane(*functions, options=None, **kw) -> ControlPlane:
    return ControlPlane(world(*functions, **kw), options or ControlOptions())


# --- sharing: one ENI per (subnet, SG set) ------------------------------------------------------
def test_functions_with_the_same_subnet_and_group_set_share_one_eni():
    cp = plane(fn("f1", groups=("sg-1", "sg-2")), fn("f2", groups=("sg-2", "sg-1", "sg-2")))
    (eni,) = cp.live_enis()
    assert eni.functions == ("f1", "f2")
    assert eni.security_group_ids == ("sg-1", "sg-2")
    assert cp.enis_of("f1") == cp.enis_of("f2") == [eni]
    assert cp.functions_using(eni.id) == ("f1", "f2")


def test_a_different_group_set_or_subnet_gets_its_own_eni():
    cp = plane(fn("f1"), fn("f2", groups=("sg-1", "sg-2")), fn("f3", subnets=("subnet-b",)))
    keys = {(e.subnet_id, e.security_group_ids) for e in cp.live_enis()}
    assert keys == {("subnet-a", ("sg-1",)), ("subnet-a", ("sg-1", "sg-2")), ("subnet-b", ("sg-1",))}


def test_a_function_with_n_subnets_has_n_enis():
    cp = plane(fn("f", subnets=("subnet-a", "subnet-b", "subnet-a")))
    assert [e.subnet_id for e in cp.enis_of("f")] == ["subnet-a", "subnet-b"]


def test_function_without_vpc_config_is_active_and_has_no_eni():
    cp = plane(fn("plain", subnets=(), groups=()))
    assert cp.status("plain").state is State.ACTIVE
    assert cp.enis() == [] and cp.enis_of("plain") == []
    assert cp.subnet_for("plain", "169.254.76.1") is None


# --- addresses ----------------------------------------------------------------------------------
def test_eni_takes_lowest_address_after_the_reserved_ones():
    cp = plane(fn("f"))
    assert cp.enis_of("f")[0].private_ip == IP("10.0.1.4")


def test_eni_skips_addresses_of_interfaces_and_nat_gateways():
    cp = plane(
        fn("f"),
        interfaces=[interface("eni-db", "subnet-a", "10.0.1.4", "10.0.1.5")],
        nat_gateways=[nat_gateway("nat-1", "subnet-a", "10.0.1.6")],
    )
    assert cp.enis_of("f")[0].private_ip == IP("10.0.1.7")


def test_dual_stack_subnet_gives_the_eni_an_ipv6_address_too():
    cp = plane(fn("f", subnets=("subnet-v6",)))
    eni = cp.enis_of("f")[0]
    assert eni.ipv6_address == IP("2600:1f18:1:2204::4")
    assert cp.eni_at("2600:1f18:1:2204::4") is eni
    assert eni.to_ec2()["Ipv6Addresses"] == [{"Ipv6Address": "2600:1f18:1:2204::4"}]


def test_freed_address_is_reused_lowest_first():
    opts = ControlOptions(deletion_delay=0)
    cp = plane(fn("f1"), fn("f2", groups=("sg-2",)), fn("f3", groups=("sg-3",)), options=opts)
    assert [str(cp.enis_of(n)[0].private_ip) for n in ("f1", "f2", "f3")] == ["10.0.1.4", "10.0.1.5", "10.0.1.6"]
    cp.delete_function("f1", 10)
    cp.create_function(fn("f4", groups=("sg-1", "sg-2")), 20)
    assert cp.enis_of("f4")[0].private_ip == IP("10.0.1.4")


def test_eni_at_and_members_of():
    cp = plane(fn("f1", groups=("sg-1", "sg-2")), fn("f2", subnets=("subnet-v6",), groups=("sg-2",)))
    e1, e2 = cp.enis_of("f1")[0], cp.enis_of("f2")[0]
    assert cp.eni_at("10.0.1.4") is e1 and cp.eni_at(IP("10.0.4.4")) is e2
    assert cp.eni_at("10.0.1.99") is None
    assert set(cp.members_of("sg-2")) == {e1.private_ip, e2.private_ip, e2.ipv6_address}
    assert cp.members_of("sg-1") == (e1.private_ip,)
    assert cp.members_of("sg-unknown") == ()


# --- capacity, overflow, reuse ------------------------------------------------------------------
@pytest.mark.parametrize("n, expected_enis", [(2, 1), (3, 1), (4, 2), (7, 3)])
def test_connections_beyond_capacity_open_an_overflow_eni(n, expected_enis):
    cp = plane(fn("f"), options=ControlOptions(eni_capacity=3))
    got = [cp.open_connection("f", "subnet-a", 1.0) for _ in range(n)]
    assert all(e is not None for e in got)
    assert len({e.id for e in got}) == expected_enis
    assert all(e.connections <= 3 for e in cp.enis())
    # the overflow ENI has the same pair, the next address, and is shared like the first
    ids = list(dict.fromkeys(e.id for e in got))
    for i, eni_id in enumerate(ids):
        eni = cp.get_eni(eni_id)
        assert eni.private_ip == IP(f"10.0.1.{4 + i}")
        assert eni.key == ("subnet-a", ("sg-1",)) and eni.functions == ("f",)


def test_freed_slots_are_reused_on_the_oldest_eni_first():
    cp = plane(fn("f"), options=ControlOptions(eni_capacity=2))
    a, a2, b = (cp.open_connection("f", "subnet-a", 0) for _ in range(3))
    assert a is a2 and b is not a
    cp.close_connection(a.id)
    assert cp.open_connection("f", "subnet-a", 1) is a
    assert a.connections == 2 and a.peak_connections == 2 and b.peak_connections == 1
    assert len(cp.live_enis()) == 2


def test_accept_callback_moves_the_connection_to_another_eni():
    cp = plane(fn("f"))
    first = cp.open_connection("f", "subnet-a", 0)
    second = cp.open_connection("f", "subnet-a", 0, accept=lambda e: e.id != first.id)
    assert second is not None and second is not first
    assert first.connections == 1 and second.connections == 1


def test_accept_rejecting_an_empty_eni_is_refused():
    cp = plane(fn("f"), options=ControlOptions(enis_per_vpc=2))
    assert cp.open_connection("f", "subnet-a", 0, accept=lambda e: False) is None
    assert cp.last_refusal.reason is RefusalReason.REJECTED


def test_eni_quota_refuses_the_overflow_connection():
    cp = plane(fn("f"), options=ControlOptions(eni_capacity=1, enis_per_vpc=2))
    assert cp.open_connection("f", "subnet-a", 0) is not None
    assert cp.open_connection("f", "subnet-a", 0) is not None
    assert cp.open_connection("f", "subnet-a", 0) is None
    assert cp.last_refusal.reason is RefusalReason.ENI_LIMIT_EXCEEDED
    assert cp.refusals[RefusalReason.ENI_LIMIT_EXCEEDED] == 1
    assert cp.enis_in_vpc("vpc-1") == 2
    assert cp.status("f").state is State.ACTIVE  # existing connections keep working


def test_small_subnet_runs_out_of_addresses_for_overflow_enis():
    # a /28 has 16 - 5 reserved = 11 usable addresses
    cp = plane(fn("f", subnets=("subnet-small",)), options=ControlOptions(eni_capacity=1))
    enis = [cp.open_connection("f", "subnet-small", 0) for _ in range(11)]
    assert [str(e.private_ip) for e in enis] == [f"10.0.3.{i}" for i in range(4, 15)]
    assert cp.open_connection("f", "subnet-small", 0) is None
    assert cp.last_refusal.reason is RefusalReason.SUBNET_OUT_OF_IP_ADDRESSES


def test_overflow_eni_waits_for_the_creation_delay():
    cp = plane(fn("f"), options=ControlOptions(eni_capacity=1, creation_delay=60))
    cp.advance(60)
    assert cp.open_connection("f", "subnet-a", 60) is not None
    assert cp.open_connection("f", "subnet-a", 61) is None
    assert cp.last_refusal.reason is RefusalReason.ENI_CREATING
    assert cp.open_connection("f", "subnet-a", 90) is None  # still creating: no second overflow
    assert len(cp.live_enis()) == 2
    second = cp.open_connection("f", "subnet-a", 121)
    assert second is not None and second.state is EniState.IN_USE


def test_close_connection_errors():
    cp = plane(fn("f"))
    eni = cp.enis_of("f")[0]
    with pytest.raises(ValueError, match="no open connection"):
        cp.close_connection(eni.id)
    with pytest.raises(ValueError, match="unknown Hyperplane ENI 'eni-nope'"):
        cp.close_connection("eni-nope")


def test_open_connection_on_a_subnet_the_function_does_not_use_is_an_error():
    cp = plane(fn("f"))
    with pytest.raises(ValueError, match="subnet-b is not in function 'f'"):
        cp.open_connection("f", "subnet-b", 0)
    with pytest.raises(ValueError, match="unknown function 'g'"):
        cp.open_connection("g", "subnet-a", 0)


# --- subnet choice --------------------------------------------------------------------------------
def test_subnet_for_is_deterministic_and_honours_pinning():
    cp = plane(fn("f", subnets=("subnet-b", "subnet-a")))
    assert cp.subnet_for("f", "169.254.0.10") == "subnet-b"  # int(ip) is even -> index 0
    assert cp.subnet_for("f", "169.254.0.11") == "subnet-a"
    assert cp.subnet_for("f", "169.254.0.11", pinned="subnet-b") == "subnet-b"
    with pytest.raises(ValueError, match="subnet-small is not one of function 'f'"):
        cp.subnet_for("f", "169.254.0.11", pinned="subnet-small")
    with pytest.raises(ValueError):
        cp.subnet_for("f", "not-an-ip")


# --- identity and export --------------------------------------------------------------------------
def test_to_ec2_has_the_lambda_eni_shape():
    cp = plane(fn("my-fn", groups=("sg-2", "sg-1"), role="arn:aws:iam::111122223333:role/r"))
    d = cp.enis_of("my-fn")[0].to_ec2()
    assert re.fullmatch(r"eni-[0-9a-f]{17}", d["NetworkInterfaceId"])
    assert d["InterfaceType"] == "lambda" and d["RequesterManaged"] is False
    assert re.fullmatch(r"AWS Lambda VPC ENI-my-fn-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", d["Description"])
    assert re.fullmatch(r"ela-attach-[0-9a-f]{17}", d["Attachment"]["AttachmentId"])
    assert re.fullmatch(r"AROA[0-9A-F]{17}:111122223333", d["RequesterId"])
    assert d["Groups"] == [{"GroupId": "sg-1", "GroupName": "name-of-sg-1"}, {"GroupId": "sg-2", "GroupName": "name-of-sg-2"}]
    assert (d["SubnetId"], d["VpcId"], d["AvailabilityZone"], d["Status"]) == ("subnet-a", "vpc-1", "us-east-1a", "in-use")
    assert d["PrivateIpAddress"] == "10.0.1.4"
    assert d["PrivateIpAddresses"] == [{"Primary": True, "PrivateIpAddress": "10.0.1.4"}]


def test_ids_depend_only_on_the_seed():
    def ids(seed):
        cp = plane(fn("f1"), fn("f2", subnets=("subnet-b",)), options=ControlOptions(seed=seed))
        return [(e.id, e.description, e.attachment_id) for e in cp.enis()]

    assert ids(7) == ids(7)
    assert ids(7) != ids(8)


def test_configured_lambda_interface_is_adopted_with_its_id_and_address():
    existing = interface("eni-0123456789abcdef0", "subnet-a", "10.0.1.77", groups=("sg-2", "sg-1"), kind="lambda")
    cp = plane(fn("f", groups=("sg-1", "sg-2")), interfaces=[existing])
    (eni,) = cp.enis_of("f")
    assert (eni.id, eni.private_ip, eni.adopted) == ("eni-0123456789abcdef0", IP("10.0.1.77"), True)
    assert cp.enis_in_vpc("vpc-1") == 1


def test_summary_entry_lists_every_function_that_used_the_eni():
    cp = plane(fn("f1"), fn("f2"), options=ControlOptions(deletion_delay=0))
    eni = cp.enis_of("f1")[0]
    cp.open_connection("f1", "subnet-a", 0)
    cp.delete_function("f1", 1)
    cp.delete_function("f2", 2)
    assert eni.state is EniState.DELETED and eni.functions == ()
    assert eni.summary() == {
        "id": eni.id, "subnet_id": "subnet-a", "security_group_ids": ["sg-1"], "private_ip": "10.0.1.4",
        "functions": ["f1", "f2"], "peak_connections": 1,
    }
    assert cp.enis() == [eni] and cp.live_enis() == []


# --- options ------------------------------------------------------------------------------------------
def test_options_default_to_the_limits_table():
    o = ControlOptions()
    assert (o.eni_capacity, o.enis_per_vpc, o.creation_delay, o.idle_reclaim, o.deletion_delay) == (
        limits.ENI_CAPACITY, limits.ENIS_PER_VPC, limits.ENI_CREATION_DELAY, limits.IDLE_RECLAIM_PERIOD,
        limits.ENI_DELETION_DELAY,
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"eni_capacity": 0}, "eni_capacity must be a positive integer"),
        ({"enis_per_vpc": 2.5}, "enis_per_vpc must be a positive integer"),
        ({"creation_delay": -1}, "creation_delay must not be negative"),
        ({"deletion_delay": float("nan")}, "deletion_delay must be a finite number"),
        ({"idle_reclaim": 0}, "idle_reclaim must be greater than 0"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_options_are_rejected_with_a_clear_message(kw, message):
    with pytest.raises(ValueError, match=message):
        ControlOptions(**kw)


def test_failure_reason_for_a_full_vpc_at_creation():
    cp = plane(fn("f1"), fn("f2", subnets=("subnet-b",)), options=ControlOptions(enis_per_vpc=1))
    assert cp.status("f1").state is State.ACTIVE
    s = cp.status("f2")
    assert (s.state, s.state_reason_code) == (State.FAILED, StateReasonCode.ENI_LIMIT_EXCEEDED)
    assert "vpc-1 has 1 of 1 Hyperplane ENIs" in s.state_reason


# --- configuration changes and uncommitted slots -------------------------------------------------
def test_update_model_creates_new_functions_updates_changed_ones_and_deletes_removed_ones():
    cp = plane(fn("keep"), fn("move"), fn("gone"))
    new = world(fn("keep"), fn("move", subnets=("subnet-b",)), fn("fresh", groups=("sg-3",)),
                interfaces=[interface("eni-new", "subnet-a", "10.0.1.5")])
    cp.update_model(new, now=10.0)
    cp.advance(10.0)
    assert {e.subnet_id for e in cp.enis_of("move")} == {"subnet-b"}
    assert [e.security_group_ids for e in cp.enis_of("fresh")] == [("sg-3",)]
    assert "gone" not in {f for e in cp.live_enis() for f in e.functions}
    with pytest.raises(ValueError, match="unknown function 'gone'"):
        cp.enis_of("gone")
    # an address a new interface holds is never handed to an ENI created afterwards
    opts = ControlOptions(eni_capacity=1)
    cp = ControlPlane(world(fn("f")), opts)
    cp.update_model(world(fn("f"), interfaces=[interface("eni-x", "subnet-a", "10.0.1.5")]), now=1.0)
    assert cp.open_connection("f", "subnet-a", 1.0) is not None
    overflow = cp.open_connection("f", "subnet-a", 1.0)
    assert overflow is not None and overflow.private_ip != IP("10.0.1.5")


def test_uncommitted_slot_does_not_raise_the_peak_until_committed():
    cp = plane(fn("f"))
    eni = cp.open_connection("f", "subnet-a", 0.0, commit=False)
    assert eni.connections == 1 and eni.peak_connections == 0
    cp.close_connection(eni.id)  # refused on its path: never existed
    assert eni.peak_connections == 0
    eni = cp.open_connection("f", "subnet-a", 0.0, commit=False)
    cp.commit_connection(eni)
    assert eni.peak_connections == 1
