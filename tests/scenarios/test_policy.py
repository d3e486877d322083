"""The compiled policy (``hyperplane.reference.policy``): route priorities, NACL order, the SG
untracked condition — the pieces behind the scenarios, checked directly."""
from __future__ import annotations

from builders import acl, rule, standard_vpc
from hyperplane.packet import ip_to_int
from hyperplane.reference.policy import Policy


def route_target(policy, table, ip):
    hit = policy.route(table, 4, ip_to_int(ip))
    return None if hit is None else hit.target_id


def test_route_priority_static_prefix_list_propagated():
    b = standard_vpc()
    b.prefix_list("pl-x", ["198.51.100.0/24", "192.0.2.0/24"])
    b.prefix_list("pl-a", ["192.0.2.0/24"])
    b.route_table("rtb-app", ["subnet-app"], [
        ("198.51.100.0/24", "tgw-static"), ("pl-x", "vpce-x"), ("pl-a", "vpce-a"),
        ("propagated", "192.0.2.0/24", "vgw-1"), ("propagated", "203.0.113.0/24", "vgw-1"),
        ("0.0.0.0/0", "nat-1"), ("198.51.100.128/25", "pcx-1"),
    ])
    policy = Policy(b.build())
    assert route_target(policy, "rtb-app", "198.51.100.7") == "tgw-static"  # static CIDR beats prefix list
    assert route_target(policy, "rtb-app", "198.51.100.200") == "pcx-1"  # more specific always wins
    assert route_target(policy, "rtb-app", "192.0.2.1") == "vpce-a"  # prefix list beats propagated; lowest id
    assert route_target(policy, "rtb-app", "203.0.113.1") == "vgw-1"
    assert route_target(policy, "rtb-app", "10.0.9.9") == "local"
    assert route_target(policy, "rtb-app", "8.8.8.8") == "nat-1"
    assert policy.route("rtb-main", 4, ip_to_int("8.8.8.8")) is None


def test_nacl_first_match_by_rule_number_and_star():
    b = standard_vpc()
    b.nacl("acl-x", ["subnet-app"], ingress=[acl(200, "allow"), acl(100, "deny", "tcp", "10.0.2.0/24", (0, 1023))])
    policy = Policy(b.build())
    check = lambda ip, port: policy.nacl_check("acl-x", False, 6, 4, ip_to_int(ip), port)  # noqa: E731
    assert (check("10.0.2.15", 22).allow, check("10.0.2.15", 22).rule) == (False, "100")
    assert (check("10.0.2.15", 5000).allow, check("10.0.2.15", 5000).rule) == (True, "200")
    out = policy.nacl_check("acl-x", True, 6, 4, ip_to_int("8.8.8.8"), 443)
    assert (out.allow, out.rule) == (False, "*")
    assert policy.subnet("subnet-app").nacl_id == "acl-x" and policy.subnet("subnet-db").nacl_id == "acl-default"


def test_nacl_ports_is_the_decision_of_every_port_of_the_range_or_none():
    """``nacl_ports`` (what a plan uses to leave out the NACL checks of the ports an ENI's or a
    NAT gateway's pool hands out) answers only when every port of the range gets that decision:
    a rule holding none of the range is passed over, one holding part of it leaves it open."""
    b = standard_vpc()
    b.nacl("acl-x", ["subnet-app"], ingress=[acl(100, "deny", "tcp", "10.0.2.0/24", (0, 1023)), acl(110, "allow", "udp"),
                                            acl(120, "deny", "tcp", "10.0.3.0/24", (5000, 6000)),
                                            acl(200, "allow", "tcp", "10.0.0.0/16")],
           egress=[acl(100, "allow", "tcp", "10.0.2.0/24", (1024, 65535))])
    policy = Policy(b.build())
    ranges = ((1024, 65535), (0, 1023), (0, 65535), (1000, 1100), (5432, 5432), (6001, 65535), (4000, 5000))
    for proto in (6, 17):
        for ip in ("10.0.2.15", "10.0.3.9", "10.0.9.9", "8.8.8.8"):
            for egress in (False, True):
                peer = ip_to_int(ip)
                for lo, hi in ranges:
                    every = {policy.nacl_check("acl-x", egress, proto, 4, peer, port)
                             for port in {lo, hi, (lo + hi) // 2, 1023, 1024, 5000, 6000, 6001} if lo <= port <= hi}
                    decision = policy.nacl_ports("acl-x", egress, proto, 4, peer, lo, hi)
                    assert decision is None or every == {decision}, (proto, ip, egress, lo, hi)
    ports = lambda egress, ip, lo, hi: policy.nacl_ports("acl-x", egress, 6, 4, ip_to_int(ip), lo, hi)  # noqa: E731
    assert ports(True, "10.0.2.15", 1024, 65535).allow  # the ENIs' ports: all of them allowed
    assert ports(True, "10.0.2.15", 0, 65535) is None  # ... but not every port is
    assert ports(False, "10.0.2.15", 1024, 65535).rule == "200"  # rule 100 holds none of them
    assert ports(False, "10.0.2.15", 1000, 1100) is None  # rule 100 holds some
    assert (ports(False, "10.0.2.15", 0, 1023).allow, ports(False, "10.0.2.15", 0, 1023).rule) == (False, "100")
    assert ports(False, "10.0.3.9", 1024, 65535) is None and ports(False, "10.0.3.9", 6001, 65535).rule == "200"
    udp = policy.nacl_ports("acl-x", False, 17, 4, ip_to_int("10.0.2.15"), 0, 65535)
    assert udp.rule == "110"  # a TCP port range says nothing about UDP
    assert (ports(False, "8.8.8.8", 0, 65535).allow, ports(False, "8.8.8.8", 0, 65535).rule) == (False, "*")
    assert policy.nacl_ports(None, True, 6, 4, 1, 1024, 65535).allow  # no NACL: everything passes


def test_sg_untracked_condition():
    b = standard_vpc()
    b.sg("sg-open", ingress=[rule("all", cidr="0.0.0.0/0")], egress=[rule("tcp", 443, cidr="0.0.0.0/0")])
    b.sg("sg-narrow", ingress=[rule("tcp", (0, 1023), cidr="0.0.0.0/0")], egress=[rule("all", cidr="0.0.0.0/0")])
    policy = Policy(b.build())
    assert policy.sg_untracked(("sg-open",), True, 6, 4, 443)  # all addresses out, all responses in
    assert not policy.sg_untracked(("sg-open",), True, 6, 4, 80)  # no rule opens port 80 to everyone
    assert not policy.sg_untracked(("sg-narrow",), True, 6, 4, 443)  # responses limited to ports 0-1023
    assert not policy.sg_untracked(("sg-fn",), True, 6, 4, 443)  # no inbound rule: tracked
    assert not policy.sg_untracked(("sg-open",), True, 6, 6, 443)  # per family: nothing for ::/0


def test_sg_group_reference_includes_hyperplane_enis():
    extra = {"sg-fn": [ip_to_int("10.0.1.4")]}
    policy = Policy(standard_vpc().build(), lambda g: extra.get(g, ()))
    assert policy.sg_match(("sg-db",), False, 6, 4, ip_to_int("10.0.1.4"), 5432) == "sg-db:ingress:0"
    assert policy.sg_match(("sg-db",), False, 6, 4, ip_to_int("10.0.1.9"), 5432) is None
    extra["sg-fn"].append(ip_to_int("10.0.1.9"))
    policy.invalidate_members()
    assert policy.sg_match(("sg-db",), False, 6, 4, ip_to_int("10.0.1.9"), 5432) == "sg-db:ingress:0"


def test_exempt_addresses():
    policy = Policy(standard_vpc().build())
    for ip, proto, port in (("10.0.0.2", 17, 53), ("169.254.169.253", 17, 53), ("169.254.169.254", 6, 80),
                            ("169.254.169.123", 17, 123), ("10.0.2.1", 6, 80), ("255.255.255.255", 17, 67)):
        assert policy.is_exempt(4, ip_to_int(ip), proto, port), ip
    assert not policy.is_exempt(4, ip_to_int("10.0.2.2"), 17, 53)  # only the VPC's base + 2
