"""The scenario table: ``(name, configuration, packets in, expected verdicts / reasons /
components / rewrites)``, at least one per drop reason and per numbered semantic rule of issue 4.

Each :class:`Scenario` names the rules it covers in ``covers`` (``"rule-5"``, ``"nacl-ingress"``);
``test_scenarios.py`` runs every step and checks that together they cover every drop reason and
every rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from builders import VpcBuilder, acl, rule, standard_vpc

ANY = object()
SB = "169.254.76.5"  # the sandbox of fn (conftest.SANDBOX)
DB = "10.0.2.15"  # eni-db
NET = "198.51.100.7"  # an internet host
ENI_IP = "10.0.1.4"  # the first free address of subnet-app: fn's Hyperplane ENI
NAT_PUBLIC = "203.0.113.10"


def tcp(src, dst, sport, dport, flags="S", seq=1000, ack=0, payload=b""):
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload


def udp(src, dst, sport, dport, payload=b"q"):
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


@dataclass
class Expect:
    """``reason`` None = forwarded. ``taps``: the exact set of taps crossed. ``src`` / ``dst``:
    expected ``(address, port)`` per tap (port ANY: any port of the ENI range)."""

    reason: Optional[str] = None
    component: object = ANY
    rule: object = ANY
    taps: Optional[tuple] = None
    src: dict = field(default_factory=dict)
    dst: dict = field(default_factory=dict)
    emitted: Optional[tuple] = None


@dataclass
class Scenario:
    name: str
    covers: tuple
    build: Callable
    steps: list  # (packet, ts, Expect)
    options: dict = field(default_factory=dict)
    sandboxes: Optional[dict] = None


def ok(**kw) -> Expect:
    return Expect(None, **kw)


def drop(reason, component=ANY, rule=ANY, **kw) -> Expect:
    return Expect(reason, component, rule, **kw)


# --- configurations ------------------------------------------------------------------------------


def std():
    return standard_vpc().build()


def with_nacl(subnets, ingress=(acl(100, "allow"),), egress=(acl(100, "allow"),), acl_id="acl-app"):
    def build():
        b = standard_vpc()
        b.nacl(acl_id, subnets, ingress=ingress, egress=egress)
        return b.build()

    return build


def no_egress_sg():
    b = standard_vpc()
    b.sg("sg-fn", egress=[])
    return b.build()


def two_groups():
    """fn has sg-a (egress only to 10.9.0.0/16) and sg-b (egress TCP 5432 to the VPC): union."""
    b = standard_vpc()
    b.sg("sg-a", egress=[rule("all", cidr="10.9.0.0/16")])
    b.sg("sg-b", egress=[rule("tcp", 5432, cidr="10.0.0.0/16")])
    b.sg("sg-db", ingress=[rule("tcp", 5432, group="sg-b")])
    b.function("fn", ["subnet-app"], ["sg-a", "sg-b"])
    return b.build()


def db_without_reference():
    b = standard_vpc()
    b.sg("sg-db", ingress=[rule("tcp", 5432, cidr="10.0.9.0/24")])
    return b.build()


def routes(*extra, prefix_lists=(), propagated=()):
    def build():
        b = standard_vpc()
        for pl_id, cidrs in prefix_lists:
            b.prefix_list(pl_id, cidrs)
        b.route_table("rtb-app", ["subnet-app", "subnet-db"], list(extra) + [("propagated",) + p for p in propagated])
        return b.build()

    return build


def public_subnet_function():
    b = standard_vpc()
    b.function("fn", ["subnet-pub"], ["sg-fn"])
    return b.build()


def gateway_endpoint():
    b = standard_vpc()
    b.prefix_list("pl-s3", ["52.216.0.0/15"])
    b.gateway_endpoint("vpce-s3", "com.amazonaws.us-east-1.s3", "pl-s3", ["rtb-app"])
    return b.build()


def private_nat():
    b = standard_vpc()
    b.nat("nat-priv", "subnet-pub", "10.0.0.11", connectivity="private")
    b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("0.0.0.0/0", "nat-priv")])
    return b.build()


def nat_subnet_without_igw():
    b = standard_vpc()
    b.route_table("rtb-pub", ["subnet-pub"], [])
    return b.build()


def failed_function():
    b = standard_vpc()
    b.function("fn", ["subnet-app"], ["sg-fn"], role_can_create_enis=False)
    return b.build()


def no_vpc_function():
    b = standard_vpc()
    b.function("fn")
    return b.build()


def dual_stack(ipv6_allowed=True):
    def build():
        b = VpcBuilder(ipv6_cidr="2600:1f18:1::/56")
        b.subnet("subnet-app", "10.0.1.0/24", ipv6_cidr="2600:1f18:1:1::/64")
        b.subnet("subnet-db", "10.0.2.0/24", ipv6_cidr="2600:1f18:1:2::/64")
        b.igw("igw-1")
        b.route_table("rtb-app", ["subnet-app", "subnet-db"], [("::/0", "eigw-1")])
        b.sg("sg-fn", egress=[rule("all", cidr="0.0.0.0/0"), rule("all", cidr="::/0")])
        b.sg("sg-db", ingress=[rule("tcp", 5432, group="sg-fn")])
        b.interface("eni-db", "subnet-db", "10.0.2.15", groups=["sg-db"], ipv6=["2600:1f18:1:2::15"])
        b.function("fn", ["subnet-app"], ["sg-fn"], ipv6=ipv6_allowed)
        return b.build()

    return build


def interface_endpoint():
    b = standard_vpc()
    b.sg("sg-vpce", ingress=[rule("tcp", 443, cidr="10.0.1.0/24")])
    b.interface("eni-vpce", "subnet-db", "10.0.2.50", groups=["sg-vpce"], interface_type="vpc_endpoint")
    return b.build()


def same_subnet_peer():
    """A database in the function's own subnet, whose NACL denies everything."""
    b = standard_vpc()
    b.nacl("acl-app", ["subnet-app"], ingress=(), egress=())
    b.interface("eni-peer", "subnet-app", "10.0.1.50", groups=["sg-db"])
    return b.build()


def custom_dns():
    b = VpcBuilder(dns_servers=["10.0.2.53"])
    src = standard_vpc()
    b.subnets, b.sgs, b.interfaces, b.functions = src.subnets, src.sgs, src.interfaces, src.functions
    b.nats, b.igws, b.tables = src.nats, src.igws, src.tables
    b.sg("sg-fn", egress=[rule("tcp", 443, cidr="0.0.0.0/0")])
    b.interface("eni-dns", "subnet-db", "10.0.2.53", groups=["sg-db"])
    return b.build()


# --- the table -------------------------------------------------------------------------------------

E_SRC = {"eni": (ENI_IP, ANY)}

SCENARIOS = [
    # 1. classification by address
    Scenario("outbound to a VPC database, reply as the sandbox sees it", ("rule-1", "rule-4", "rule-7"), std, [
        (tcp(SB, DB, 40000, 5432), 1.0, ok(taps=("lambda", "eni"), src=E_SRC, dst={"eni": (DB, 5432)})),
        (tcp(DB, SB, 5432, 40000, "SA", ack=1001), 1.1, ok(taps=("lambda", "eni"), dst={"eni": (ENI_IP, ANY),
                                                                                       "lambda": (SB, 40000)})),
        (tcp(SB, DB, 40000, 5432, "A", seq=1001, ack=1), 1.2, ok(src=E_SRC)),
    ]),
    Scenario("a packet neither from nor to a sandbox or an ENI", ("rule-1", "not-hyperplane"), std, [
        (tcp("10.0.2.15", "10.0.2.16", 1, 2), 1.0, drop("not-hyperplane", None, None, taps=())),
        (Ether() / ARP(), 1.0, drop("not-hyperplane", taps=())),
    ]),
    Scenario("bytes that are no IP packet", ("malformed",), std, [
        (b"\x45\x00\x00", 1.0, drop("malformed", None, taps=())),
        (b"\x60" + b"\x00" * 10, 1.0, drop("malformed", None, taps=())),
    ]),
    # 2. protocols
    Scenario("ICMP and TCP fragments do not cross", ("rule-2", "unsupported-protocol"), std, [
        (IP(src=SB, dst=DB) / ICMP(), 1.0, drop("unsupported-protocol", "fn", taps=())),
        (IP(src=SB, dst=DB, flags="MF") / TCP(sport=1, dport=5432), 1.0, drop("unsupported-protocol", "fn")),
        (IP(src=SB, dst=DB, frag=10) / (b"x" * 16), 1.0, drop("unsupported-protocol", "fn")),
    ]),
    Scenario("IPv6 for a dual-stack function", ("rule-2",), dual_stack(True), [
        (IPv6(src="fd00:76::5", dst="2600:1f18:1:2::15") / TCP(sport=40000, dport=5432, flags="S"), 1.0,
         ok(taps=("lambda", "eni"))),
        (IPv6(src="fd00:76::5", dst="2001:db8::1") / TCP(sport=40001, dport=443, flags="S"), 1.0,
         ok(taps=("lambda", "eni", "internet"))),
    ], sandboxes={"fd00:76::/64": "fn"}),
    Scenario("IPv6 without Ipv6AllowedForDualStack", ("rule-2", "no-route"), dual_stack(False), [
        (IPv6(src="fd00:76::5", dst="2600:1f18:1:2::15") / TCP(sport=40000, dport=5432, flags="S"), 1.0,
         drop("no-route", "fn")),
    ], sandboxes={"fd00:76::/64": "fn"}),
    # 3. function state
    Scenario("a Failed function sends nothing", ("rule-3", "function-not-active"), failed_function, [
        (tcp(SB, DB, 40000, 5432), 1.0, drop("function-not-active", "fn", None, taps=("lambda",))),
    ]),
    # 4. new outbound connections
    Scenario("no SG egress rule", ("rule-4", "sg-egress"), no_egress_sg, [
        (tcp(SB, DB, 40000, 5432), 1.0, drop("sg-egress", "sg-fn", None, taps=("lambda",))),
    ]),
    Scenario("SG egress is the union of the function's groups", ("rule-4",), two_groups, [
        (tcp(SB, DB, 40000, 5432), 1.0, ok(src=E_SRC)),
        (tcp(SB, DB, 40001, 22), 1.0, drop("sg-egress", "sg-a", None)),
    ]),
    Scenario("ports: the ENI overflows when its capacity is reached", ("rule-4",), std, [
        (tcp(SB, DB, 40000, 5432), 1.0, ok(src=E_SRC)),
        (tcp(SB, DB, 40001, 5432), 1.0, ok(src=E_SRC)),
        (tcp(SB, DB, 40002, 5432), 1.0, ok(src={"eni": ("10.0.1.5", ANY)})),
    ], options={"eni_capacity": 2}),
    Scenario("no slot and no ENI left", ("rule-4", "port-exhaustion"), std, [
        (tcp(SB, DB, 40000, 5432), 1.0, ok()),
        (tcp(SB, DB, 40001, 5432), 1.0, drop("port-exhaustion", ANY, "EniLimitExceeded")),
    ], options={"eni_capacity": 1, "enis_per_vpc": 1}),
    # 5. NACL of the ENI subnet
    Scenario("NACL egress denies the database subnet", ("rule-5", "nacl-egress"),
             with_nacl(["subnet-app"], egress=(acl(90, "deny", "all", "10.0.2.0/24"), acl(100, "allow")),
                       ingress=(acl(100, "allow"),)), [
        (tcp(SB, DB, 40000, 5432), 1.0, drop("nacl-egress", "acl-app", "90", taps=("lambda", "eni"))),
        (tcp(SB, NET, 40001, 443), 1.0, ok()),
    ]),
    Scenario("NACL without the ephemeral-port inbound rule blocks every reply", ("rule-5", "nacl-ingress"),
             with_nacl(["subnet-app"], ingress=(acl(100, "allow", "tcp", "0.0.0.0/0", 443),)), [
        (tcp(SB, NET, 40000, 443), 1.0, ok()),
        (tcp(NET, SB, 443, 40000, "SA", ack=1001), 1.1,
         drop("nacl-ingress", "acl-app", "*", taps=("eni", "internet"))),
    ]),
    Scenario("NACL rules: lowest number first, first match wins", ("rule-5",),
             with_nacl(["subnet-app"], egress=(acl(100, "allow", "tcp", "10.0.2.0/24", 5432),
                                               acl(110, "deny", "all", "10.0.2.0/24"), acl(120, "allow"))), [
        (tcp(SB, DB, 40000, 5432), 1.0, ok()),
        (tcp(SB, DB, 40001, 22), 1.0, drop("nacl-egress", "acl-app", "110")),
    ]),
    # 6. routes
    Scenario("no route to the destination", ("rule-6", "no-route"), routes(), [
        (tcp(SB, NET, 40000, 443), 1.0, drop("no-route", "rtb-app", None, taps=("lambda", "eni"))),
    ]),
    Scenario("blackhole route", ("rule-6", "blackhole-route"), routes(("0.0.0.0/0", "nat-gone", "blackhole")), [
        (tcp(SB, NET, 40000, 443), 1.0, drop("blackhole-route", "rtb-app", "0.0.0.0/0 -> nat-gone")),
    ]),
    Scenario("a function in a public subnet gets no public IP", ("rule-6", "no-public-ip"), public_subnet_function, [
        (tcp(SB, NET, 40000, 443), 1.0, drop("no-public-ip", ANY, "0.0.0.0/0 -> igw-1")),
    ]),
    Scenario("longest prefix wins; peering delivered out of the VPC", ("rule-6",),
             routes(("0.0.0.0/0", "nat-1"), ("198.51.100.0/24", "pcx-1")), [
        (tcp(SB, NET, 40000, 443), 1.0, ok(taps=("lambda", "eni"))),
        (tcp(SB, "192.0.2.1", 40001, 443), 1.0, ok(taps=("lambda", "eni", "internet"))),
    ]),
    Scenario("same prefix: static beats prefix list beats propagated", ("rule-6",),
             routes(("198.51.100.0/24", "tgw-static"), ("pl-x", "vpce-x"),
                    prefix_lists=[("pl-x", ["198.51.100.0/24", "192.0.2.0/24"])],
                    propagated=[("192.0.2.0/24", "vgw-1"), ("203.0.113.0/24", "vgw-1")]), [
        (tcp(SB, NET, 40000, 443), 1.0, ok(taps=("lambda", "eni"))),
        (tcp(SB, "192.0.2.1", 40001, 443), 1.0, ok(taps=("lambda", "eni"))),
        (tcp(SB, "203.0.113.1", 40002, 443), 1.0, ok(taps=("lambda", "eni"))),
    ]),
    Scenario("gateway endpoint by prefix-list route", ("rule-6",), gateway_endpoint, [
        (tcp(SB, "52.216.8.1", 40000, 443), 1.0, ok(taps=("lambda", "eni"), src=E_SRC)),
        (tcp("52.216.8.1", SB, 443, 40000, "SA", ack=1001), 1.1, ok(taps=("lambda", "eni"))),
    ]),
    # 7. destination in the VPC
    Scenario("an address in the VPC with no interface", ("rule-7", "unknown-destination"), std, [
        (tcp(SB, "10.0.2.99", 40000, 5432), 1.0, drop("unknown-destination", "subnet-db")),
    ]),
    Scenario("the database SG does not reference the function's group", ("rule-7", "sg-ingress"),
             db_without_reference, [
        (tcp(SB, DB, 40000, 5432), 1.0, drop("sg-ingress", "sg-db", None, taps=("lambda", "eni"))),
    ]),
    Scenario("destination subnet NACL inbound", ("rule-7", "nacl-ingress"),
             with_nacl(["subnet-db"], ingress=(acl(100, "deny", "tcp", "10.0.1.0/24", 5432), acl(200, "allow")),
                       acl_id="acl-db"), [
        (tcp(SB, DB, 40000, 5432), 1.0, drop("nacl-ingress", "acl-db", "100")),
    ]),
    Scenario("destination subnet NACL outbound blocks the reply", ("rule-7", "nacl-egress"),
             with_nacl(["subnet-db"], egress=(acl(100, "allow", "tcp", "10.0.1.0/24", 5432),), acl_id="acl-db"), [
        (tcp(SB, DB, 40000, 5432), 1.0, ok()),
        (tcp(DB, SB, 5432, 40000, "SA", ack=1001), 1.1, drop("nacl-egress", "acl-db", "*", taps=("eni",))),
    ]),
    Scenario("same subnet: no NACL on the way", ("rule-7",), same_subnet_peer, [
        (tcp(SB, "10.0.1.50", 40000, 5432), 1.0, ok(taps=("lambda", "eni"))),
        (tcp("10.0.1.50", SB, 5432, 40000, "SA", ack=1001), 1.1, ok()),
        (tcp(SB, DB, 40001, 5432), 1.0, drop("nacl-egress", "acl-app", "*")),
    ]),
    Scenario("an interface endpoint is a network interface with its SG", ("rule-7",), interface_endpoint, [
        (tcp(SB, "10.0.2.50", 40000, 443), 1.0, ok()),
        (tcp(SB, "10.0.2.50", 40001, 80), 1.0, drop("sg-ingress", "sg-vpce")),
    ]),
    # 8. NAT gateway
    Scenario("internet through the NAT gateway", ("rule-8",), std, [
        (tcp(SB, NET, 40000, 443), 1.0, ok(taps=("lambda", "eni", "internet"), src={
            "eni": (ENI_IP, ANY), "internet": (NAT_PUBLIC, ANY)})),
        (tcp(NET, SB, 443, 40000, "SA", ack=1001), 1.1, ok(taps=("lambda", "eni", "internet"), dst={
            "internet": (NAT_PUBLIC, ANY), "eni": (ENI_IP, ANY), "lambda": (SB, 40000)})),
    ]),
    Scenario("NAT gateway subnet NACL drops the reply", ("rule-8", "nacl-ingress"),
             with_nacl(["subnet-pub"], ingress=(acl(100, "allow", "all", "10.0.0.0/16"),), acl_id="acl-pub"), [
        (tcp(SB, NET, 40000, 443), 1.0, ok()),
        (tcp(NET, SB, 443, 40000, "SA", ack=1001), 1.1, drop("nacl-ingress", "acl-pub", "*")),
    ]),
    Scenario("NAT gateway port exhaustion", ("rule-8", "nat-port-exhaustion"), std, [
        (tcp(SB, NET, 40000, 443), 1.0, ok()),
        (tcp(SB, NET, 40001, 443), 1.0, drop("nat-port-exhaustion", "nat-1", None)),
        (tcp(SB, NET, 40002, 80), 1.0, ok()),
    ], options={"nat_connections_per_destination": 1}),
    Scenario("private NAT gateway to an internet gateway", ("rule-8", "no-public-ip"), private_nat, [
        (tcp(SB, NET, 40000, 443), 1.0, drop("no-public-ip", "nat-priv", "0.0.0.0/0 -> igw-1")),
    ]),
    Scenario("NAT gateway subnet without an internet route", ("rule-8", "no-route"), nat_subnet_without_igw, [
        (tcp(SB, NET, 40000, 443), 1.0, drop("no-route", "rtb-pub")),
    ]),
    Scenario("NAT idle timeout: drop and RST", ("rule-8", "nat-idle-timeout"), std, [
        (tcp(SB, NET, 40000, 443), 1.0, ok()),
        (tcp(NET, SB, 443, 40000, "SA", seq=7000, ack=1001), 1.1, ok()),
        (tcp(SB, NET, 40000, 443, "A", seq=1001, ack=7001), 1.2, ok()),
        (tcp(SB, NET, 40000, 443, "PA", seq=1001, ack=7001, payload=b"GET"), 400.0,
         drop("nat-idle-timeout", "nat-1", None, emitted=("eni", "lambda"))),
    ]),
    # 9. Amazon-provided services
    Scenario("Amazon DNS, metadata, time: not filtered", ("rule-9",),
             with_nacl(["subnet-app"], ingress=(), egress=()), [
        (udp(SB, "10.0.0.2", 40000, 53), 1.0, ok(taps=("lambda", "eni"))),
        (udp("10.0.0.2", SB, 53, 40000), 1.1, ok(taps=("lambda", "eni"))),
        (udp(SB, "169.254.169.253", 40001, 53), 1.0, ok()),
        (udp(SB, "169.254.169.123", 40002, 123), 1.0, ok()),
        (tcp(SB, "169.254.169.254", 40003, 80), 1.0, ok()),
        (tcp(SB, DB, 40004, 5432), 1.0, drop("nacl-egress", "acl-app", "*")),
    ]),
    Scenario("custom DNS servers are ordinary traffic", ("rule-9", "sg-egress"), custom_dns, [
        (udp(SB, "10.0.2.53", 40000, 53), 1.0, drop("sg-egress", "sg-fn")),
        (udp(SB, "10.0.0.2", 40001, 53), 1.0, ok()),
    ]),
    # 10. conntrack
    Scenario("mid-stream pickup is allowed by default", ("rule-10",), std, [
        (tcp(SB, DB, 40000, 5432, "A"), 1.0, ok()),
    ]),
    Scenario("strict TCP refuses mid-stream pickup and invalid packets", ("rule-10", "invalid-state"), std, [
        (tcp(SB, DB, 40000, 5432, "A"), 1.0, drop("invalid-state")),
        (tcp(SB, DB, 40001, 5432, "S"), 1.0, ok()),
        (tcp(SB, DB, 40001, 5432, "A"), 1.1, drop("invalid-state")),
    ], options={"tcp_strict": True}),
    Scenario("a FIN or RST opens nothing", ("rule-10", "invalid-state"), std, [
        (tcp(SB, DB, 40000, 5432, "F"), 1.0, drop("invalid-state")),
        (tcp(SB, DB, 40000, 5432, "R"), 1.0, drop("invalid-state")),
    ]),
    Scenario("conntrack table full", ("rule-10", "conntrack-full"), std, [
        (tcp(SB, DB, 40000, 5432), 1.0, ok()),
        (tcp(SB, DB, 40001, 5432), 1.0, drop("conntrack-full")),
    ], options={"max_connections": 1}),
    # 11. unsolicited inbound
    Scenario("nothing opens a connection toward a sandbox or an ENI", ("rule-11", "unsolicited-inbound"), std, [
        (tcp(DB, SB, 5432, 40000, "S"), 1.0, drop("unsolicited-inbound", "fn", None, taps=())),
        (tcp(SB, DB, 40000, 5432), 1.1, ok()),
        (tcp(DB, ENI_IP, 5432, 1024, "S"), 1.2, drop("unsolicited-inbound", ANY, None, taps=("eni",))),
    ]),
    # functions without VpcConfig
    Scenario("a function without VpcConfig reaches only the internet", ("no-vpc", "no-route"), no_vpc_function, [
        (tcp(SB, NET, 40000, 443), 1.0, ok(taps=("lambda", "internet"))),
        (tcp(NET, SB, 443, 40000, "SA", ack=1001), 1.1, ok(taps=("lambda", "internet"), dst={"lambda": (SB, 40000)})),
        (tcp(SB, DB, 40001, 5432), 1.0, drop("no-route", "fn")),
    ]),
]
