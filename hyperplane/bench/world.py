"""The benchmark world: one VPC configuration and deterministic traffic for it.

The VPC (AWS describe-* shapes, loaded with the real loader):

- ``10.0.0.0/16`` with subnets ``app`` (10.0.1.0/24, the function's), ``db`` (10.0.3.0/24) and
  ``public`` (10.0.0.0/24, a NAT gateway with public address 198.51.100.10 and an internet gateway);
- function ``bench-fn`` in ``app`` with group ``sg-bench``: egress UDP and TCP to the VPC, TCP 443 and
  UDP 53/443 to anywhere; nothing else (so a packet to port 23 is an ``sg-egress`` drop);
- :data:`DB_SERVERS` interfaces in ``db`` (group ``sg-db``: UDP/TCP 5432 from ``sg-bench``);
- default network ACLs (allow all), the app subnet routing ``0.0.0.0/0`` to the NAT gateway.

Sandboxes: ``bench-fn=169.254.0.0/16``. Flow ``i`` is ``169.254.(i mod 65536) : 1024 + i div 65536``
to ``DB_SERVERS[i mod len] : 5432`` (UDP unless said otherwise). Packets are built with numpy in one
buffer (IPv4 + UDP/TCP with correct checksums), so a million flows take about a second to build.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

ACCOUNT = "123456789012"
VPC_ID = "vpc-0bench00000000000"
SUBNET_APP, SUBNET_DB, SUBNET_PUBLIC = "subnet-0benchapp000000", "subnet-0benchdb0000000", "subnet-0benchpub000000"
SG_BENCH, SG_DB = "sg-0bench0000000000", "sg-0benchdb000000000"
NAT_ID, IGW_ID = "nat-0bench0000000000", "igw-0bench0000000000"
FUNCTION = "bench-fn"
SANDBOX_CIDR = "169.254.0.0/16"
SANDBOX_BASE = 0xA9FE0000  # 169.254.0.0
#: the database interfaces flows go to (10.0.3.10 ...)
DB_SERVERS = tuple(0x0A00030A + k for k in range(8))
DB_PORT = 5432
INTERNET_BASE = 0xCB007100  # 203.0.113.0
EPOCH = 1_700_000_000.0

UDP, TCP = 17, 6
SYN, ACK, PSH = 0x02, 0x10, 0x08


def _perm(protocol: str, lo: int, hi: int, cidr: str | None = None, group: str | None = None) -> dict:
    return {"IpProtocol": protocol, "FromPort": lo, "ToPort": hi,
            "IpRanges": [{"CidrIp": cidr}] if cidr else [], "Ipv6Ranges": [], "PrefixListIds": [],
            "UserIdGroupPairs": [{"GroupId": group, "UserId": ACCOUNT}] if group else []}


def _interface(eni_id: str, subnet: str, address: str, groups: list, kind: str, description: str) -> dict:
    return {"NetworkInterfaceId": eni_id, "SubnetId": subnet, "VpcId": VPC_ID, "OwnerId": ACCOUNT,
            "AvailabilityZone": "us-east-1a", "Description": description,
            "Groups": [{"GroupId": g, "GroupName": g} for g in groups], "InterfaceType": kind,
            "Ipv6Addresses": [], "MacAddress": "02:00:00:00:00:00", "PrivateIpAddress": address,
            "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": address}],
            "RequesterManaged": False, "SourceDestCheck": True, "Status": "in-use", "TagSet": []}


def documents() -> dict:
    """The VPC as one document holding every describe-* response."""
    def subnet(sid, cidr):
        return {"SubnetId": sid, "VpcId": VPC_ID, "CidrBlock": cidr, "AvailabilityZone": "us-east-1a",
                "OwnerId": ACCOUNT, "State": "available", "Ipv6CidrBlockAssociationSet": []}

    allow_all = [{"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": e, "CidrBlock": "0.0.0.0/0"}
                 for e in (False, True)]
    allow_all += [{"RuleNumber": 32767, "Protocol": "-1", "RuleAction": "deny", "Egress": e,
                   "CidrBlock": "0.0.0.0/0"} for e in (False, True)]
    db_ifaces = [_interface(f"eni-0benchdb{k:011d}", SUBNET_DB, f"10.0.3.{10 + k}", [SG_DB], "interface",
                            f"database {k}") for k in range(len(DB_SERVERS))]
    nat_iface = _interface("eni-0benchnat00000000", SUBNET_PUBLIC, "10.0.0.84", [], "nat_gateway",
                           f"Interface for NAT Gateway {NAT_ID}")
    nat_iface["Association"] = {"PublicIp": "198.51.100.10", "IpOwnerId": "amazon"}
    return {
        "Vpcs": [{"VpcId": VPC_ID, "CidrBlock": "10.0.0.0/16", "OwnerId": ACCOUNT, "State": "available",
                  "IsDefault": False, "DhcpOptionsId": "default",
                  "CidrBlockAssociationSet": [{"CidrBlock": "10.0.0.0/16", "CidrBlockState": {"State": "associated"}}]}],
        "Subnets": [subnet(SUBNET_PUBLIC, "10.0.0.0/24"), subnet(SUBNET_APP, "10.0.1.0/24"),
                    subnet(SUBNET_DB, "10.0.3.0/24")],
        "SecurityGroups": [
            {"GroupId": SG_BENCH, "GroupName": "bench", "VpcId": VPC_ID, "OwnerId": ACCOUNT, "Description": "bench",
             "IpPermissions": [],
             "IpPermissionsEgress": [_perm("udp", 0, 65535, "10.0.0.0/16"), _perm("tcp", 0, 65535, "10.0.0.0/16"),
                                     _perm("tcp", 443, 443, "0.0.0.0/0"), _perm("udp", 53, 53, "0.0.0.0/0"),
                                     _perm("udp", 443, 443, "0.0.0.0/0")]},
            {"GroupId": SG_DB, "GroupName": "db", "VpcId": VPC_ID, "OwnerId": ACCOUNT, "Description": "db",
             "IpPermissions": [_perm("udp", DB_PORT, DB_PORT, group=SG_BENCH), _perm("tcp", DB_PORT, DB_PORT, group=SG_BENCH)],
             "IpPermissionsEgress": [_perm("-1", 0, 0, "0.0.0.0/0")]},
        ],
        "NetworkAcls": [{"NetworkAclId": "acl-0bench0000000000", "VpcId": VPC_ID, "IsDefault": True,
                         "OwnerId": ACCOUNT, "Entries": allow_all, "Associations": []}],
        "RouteTables": [
            {"RouteTableId": "rtb-0benchmain0000000", "VpcId": VPC_ID, "OwnerId": ACCOUNT,
             "Associations": [{"Main": True, "RouteTableId": "rtb-0benchmain0000000"}],
             "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}]},
            {"RouteTableId": "rtb-0benchapp00000000", "VpcId": VPC_ID, "OwnerId": ACCOUNT,
             "Associations": [{"Main": False, "RouteTableId": "rtb-0benchapp00000000", "SubnetId": SUBNET_APP}],
             "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
                        {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": NAT_ID, "State": "active"}]},
            {"RouteTableId": "rtb-0benchpub00000000", "VpcId": VPC_ID, "OwnerId": ACCOUNT,
             "Associations": [{"Main": False, "RouteTableId": "rtb-0benchpub00000000", "SubnetId": SUBNET_PUBLIC}],
             "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
                        {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": IGW_ID, "State": "active"}]},
        ],
        "InternetGateways": [{"InternetGatewayId": IGW_ID, "OwnerId": ACCOUNT,
                              "Attachments": [{"State": "available", "VpcId": VPC_ID}]}],
        "NatGateways": [{"NatGatewayId": NAT_ID, "State": "available", "SubnetId": SUBNET_PUBLIC, "VpcId": VPC_ID,
                         "ConnectivityType": "public",
                         "NatGatewayAddresses": [{"NetworkInterfaceId": "eni-0benchnat00000000", "PrivateIp": "10.0.0.84",
                                                  "PublicIp": "198.51.100.10", "IsPrimary": True, "Status": "succeeded"}]}],
        "NetworkInterfaces": db_ifaces + [nat_iface],
        "Functions": [{"FunctionName": FUNCTION, "FunctionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{FUNCTION}",
                       "Role": f"arn:aws:iam::{ACCOUNT}:role/bench", "State": "Active",
                       "VpcConfig": {"SubnetIds": [SUBNET_APP], "SecurityGroupIds": [SG_BENCH], "VpcId": VPC_ID,
                                     "Ipv6AllowedForDualStack": False}}],
    }


def load_model():
    """The loaded :class:`~hyperplane.vpc.model.VpcModel` of :func:`documents`."""
    from hyperplane.vpc.loader import load_vpc

    with tempfile.TemporaryDirectory(prefix="hyperplane-bench-") as folder:
        path = os.path.join(folder, "bench-vpc.json")
        with open(path, "w") as fh:
            json.dump(documents(), fh)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_vpc(path)


def sandboxes() -> list:
    from hyperplane.engine import Sandbox

    return [Sandbox.parse(f"{FUNCTION}={SANDBOX_CIDR}")]


def make_engine(backend: str, **options):
    """A fresh engine on the bench world (``options``: :class:`EngineOptions` fields)."""
    from hyperplane.engine import Engine, EngineOptions

    return Engine(load_model(), sandboxes(), EngineOptions(**options), backend=backend)


# --------------------------------------------------------------------------------------------
# packets
# --------------------------------------------------------------------------------------------


@dataclass
class Packets:
    """Packets in one buffer: packet ``i`` is ``buffer[offsets[i] : offsets[i] + lengths[i]]``
    (LINKTYPE_RAW), at ``timestamps[i]``."""

    buffer: bytes
    offsets: np.ndarray
    lengths: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def frames(self) -> list[bytes]:
        buf = self.buffer
        return [buf[o:o + n] for o, n in zip(self.offsets.tolist(), self.lengths.tolist())]


def _fold(total: np.ndarray) -> np.ndarray:
    while True:
        high = total >> 16
        if not high.any():
            return total
        total = (total & 0xFFFF) + high


def build(src, dst, sport, dport, proto=UDP, payload: int = 32, flags=ACK, timestamps=None) -> Packets:
    """IPv4 packets, one per element of the arrays (numpy, vectorised; checksums correct)."""
    src = np.asarray(src, dtype=np.uint32)
    n = len(src)
    dst = np.broadcast_to(np.asarray(dst, dtype=np.uint32), (n,))
    sport = np.broadcast_to(np.asarray(sport, dtype=np.uint32), (n,))
    dport = np.broadcast_to(np.asarray(dport, dtype=np.uint32), (n,))
    l4 = 8 if proto == UDP else 20
    size = 20 + l4 + payload
    pkt = np.zeros((n, size), dtype=np.uint8)
    pkt[:, 0] = 0x45
    pkt[:, 2], pkt[:, 3] = size >> 8, size & 0xFF
    pkt[:, 8], pkt[:, 9] = 64, proto
    for k, shift in enumerate((24, 16, 8, 0)):
        pkt[:, 12 + k] = (src >> shift) & 0xFF
        pkt[:, 16 + k] = (dst >> shift) & 0xFF
    pkt[:, 20], pkt[:, 21] = sport >> 8, sport & 0xFF
    pkt[:, 22], pkt[:, 23] = dport >> 8, dport & 0xFF
    if proto == UDP:
        pkt[:, 24], pkt[:, 25] = (8 + payload) >> 8, (8 + payload) & 0xFF
        csum_at = 26
    else:
        pkt[:, 32] = 0x50
        pkt[:, 33] = np.broadcast_to(np.asarray(flags, dtype=np.uint8), (n,))
        pkt[:, 34], pkt[:, 35] = 0xFF, 0xFF
        csum_at = 36
    if payload:
        pkt[:, 20 + l4:] = (np.arange(payload, dtype=np.uint32) * 7 + 1).astype(np.uint8)
    words = pkt.astype(np.uint32)
    words = (words[:, 0::2] << 8) | words[:, 1::2] if size % 2 == 0 else None
    if words is None:
        padded = np.zeros((n, size + 1), dtype=np.uint32)
        padded[:, :size] = pkt
        words = (padded[:, 0::2] << 8) | padded[:, 1::2]
    ip = _fold(words[:, :10].sum(axis=1, dtype=np.uint64).astype(np.uint64))
    ip_csum = (~ip.astype(np.uint32)) & 0xFFFF
    pkt[:, 10], pkt[:, 11] = ip_csum >> 8, ip_csum & 0xFF
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + (l4 + payload)
    l4_sum = _fold(words[:, 10:].sum(axis=1, dtype=np.uint64) + pseudo.astype(np.uint64))
    l4_csum = (~l4_sum.astype(np.uint32)) & 0xFFFF
    if proto == UDP:
        l4_csum = np.where(l4_csum == 0, 0xFFFF, l4_csum)
    pkt[:, csum_at], pkt[:, csum_at + 1] = l4_csum >> 8, l4_csum & 0xFF
    offsets = np.arange(n, dtype=np.int64) * size
    lengths = np.full(n, size, dtype=np.int64)
    if timestamps is None:
        timestamps = EPOCH + np.arange(n, dtype=np.float64) * 1e-6
    return Packets(pkt.tobytes(), offsets, lengths, np.asarray(timestamps, dtype=np.float64))


def flow_endpoints(flows: np.ndarray):
    """(sandbox address, sandbox port, destination address, destination port) of flow ids."""
    flows = np.asarray(flows, dtype=np.int64)
    src = (SANDBOX_BASE + (flows % 65536)).astype(np.uint32)
    sport = (1024 + flows // 65536).astype(np.uint32)
    servers = np.array(DB_SERVERS, dtype=np.uint32)
    dst = servers[flows % len(servers)]
    return src, sport, dst, np.full(len(flows), DB_PORT, dtype=np.uint32)


def requests(flows, start: float = EPOCH, step: float = 1e-6, payload: int = 32) -> Packets:
    """One UDP request per flow id, sandbox to database."""
    src, sport, dst, dport = flow_endpoints(flows)
    stamps = start + np.arange(len(src), dtype=np.float64) * step
    return build(src, dst, sport, dport, UDP, payload, timestamps=stamps)


def replies(flows, start: float = EPOCH, step: float = 1e-6, payload: int = 32) -> Packets:
    """The database's UDP answer per flow id, in the sandbox's view."""
    src, sport, dst, dport = flow_endpoints(flows)
    stamps = start + np.arange(len(src), dtype=np.float64) * step
    return build(dst, src, dport, sport, UDP, payload, timestamps=stamps)


def concat(*parts: Packets) -> Packets:
    """One buffer from several (timestamps kept)."""
    buffers, offsets, base = [], [], 0
    for p in parts:
        buffers.append(p.buffer)
        offsets.append(p.offsets + base)
        base += len(p.buffer)
    return Packets(b"".join(buffers), np.concatenate(offsets), np.concatenate([p.lengths for p in parts]),
                   np.concatenate([p.timestamps for p in parts]))


def take(packets: Packets, order: np.ndarray, start: float = EPOCH, step: float = 1e-6) -> Packets:
    """The packets in ``order`` (indices may repeat), new timestamps ``start + k * step``."""
    order = np.asarray(order, dtype=np.int64)
    return Packets(packets.buffer, packets.offsets[order], packets.lengths[order],
                   start + np.arange(len(order), dtype=np.float64) * step)


def write_pcap(path: str, packets: Packets) -> None:
    """A LINKTYPE_RAW pcap of the packets (the project's writer)."""
    from hyperplane.io import PcapWriter

    with PcapWriter(path) as writer:
        buf = packets.buffer
        for off, n, ts in zip(packets.offsets.tolist(), packets.lengths.tolist(), packets.timestamps.tolist()):
            writer.write(buf[off:off + n], ts=ts)
