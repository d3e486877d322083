"""Every default the emulator uses: capacities, port ranges, quotas, delays and the one table of
connection-tracking timeouts. Sources are in ``../shared/spec/AWS-FACTS.md`` (section in brackets).

Nothing else in the package hard-codes these numbers; options objects copy them as defaults.
"""
from __future__ import annotations

import enum
from types import MappingProxyType

# --- Hyperplane ENIs [AWS-FACTS 1] -------------------------------------------------------------
ENI_CAPACITY = 65_000  # concurrent connections per Hyperplane ENI
PORT_RANGE = (1024, 65535)  # Lambda ephemeral source ports, inclusive
ENIS_PER_VPC = 250  # "Elastic network interfaces per VPC" Lambda quota (default)
ENI_CREATION_DELAY = 0.0  # seconds; AWS: 60-90 s to several minutes. Replay starts Active.
IDLE_RECLAIM_PERIOD = 14 * 86400.0  # seconds; AWS: "consecutive weeks"; 14 d is 3rd-party lore
ENI_DELETION_DELAY = 20 * 60.0  # seconds after VPC config removal ("up to 20 minutes")
VPC_CONFIG_MAX_SUBNETS = 16
VPC_CONFIG_MAX_SECURITY_GROUPS = 5

# --- NAT gateway [AWS-FACTS 5] -----------------------------------------------------------------
NAT_CONNECTIONS_PER_DESTINATION = 55_000  # per public IP per (dst ip, dst port, proto)
NAT_IDLE_TIMEOUT = 350.0  # seconds, then RST to the source side
NAT_PORT_RANGE = (1024, 65535)

# --- Flow logs [AWS-FACTS 8] -------------------------------------------------------------------
FLOW_LOG_INTERVAL = 600  # seconds; 60 is the other allowed value
FLOW_LOG_INTERVALS = (60, 600)

# --- Network ACLs [AWS-FACTS 3] ----------------------------------------------------------------
NACL_USER_RULE_RANGE = (1, 32766)
NACL_DEFAULT_DENY_IPV4 = 32767
NACL_DEFAULT_DENY_IPV6 = 32768

# --- Well-known link-local services exempt from SGs, NACLs and flow logs [AWS-FACTS 2, 7, 8] -----
AMAZON_DNS_LINK_LOCAL = "169.254.169.253"
AMAZON_DNS_IPV6 = "fd00:ec2::253"
INSTANCE_METADATA = "169.254.169.254"
TIME_SYNC = "169.254.169.123"
DHCP_PORTS = (67, 68)

# --- Connection tracking timeouts [AWS-FACTS 2, 10] ---------------------------------------------


class Timeout(str, enum.Enum):
    """Keys of the timeout table. TCP states follow Linux conntrack names."""

    TCP_SYN_SENT = "tcp_syn_sent"
    TCP_SYN_RECV = "tcp_syn_recv"
    TCP_ESTABLISHED = "tcp_established"
    TCP_FIN_WAIT = "tcp_fin_wait"
    TCP_CLOSE_WAIT = "tcp_close_wait"
    TCP_LAST_ACK = "tcp_last_ack"
    TCP_TIME_WAIT = "tcp_time_wait"
    TCP_CLOSE = "tcp_close"
    UDP = "udp"
    UDP_STREAM = "udp_stream"


#: The one table of timeouts (seconds). AWS documents TCP established (432000, range 60-432000),
#: UDP (30, range 30-60) and UDP stream (180, range 60-180); the other TCP states are not
#: documented by AWS, so Linux conntrack's defaults are used.
TIMEOUTS = MappingProxyType(
    {
        Timeout.TCP_SYN_SENT: 120.0,
        Timeout.TCP_SYN_RECV: 60.0,
        Timeout.TCP_ESTABLISHED: 432_000.0,
        Timeout.TCP_FIN_WAIT: 120.0,
        Timeout.TCP_CLOSE_WAIT: 60.0,
        Timeout.TCP_LAST_ACK: 30.0,
        Timeout.TCP_TIME_WAIT: 120.0,
        Timeout.TCP_CLOSE: 10.0,
        Timeout.UDP: 30.0,
        Timeout.UDP_STREAM: 180.0,
    }
)

#: The ranges AWS accepts for the configurable timeouts (ConnectionTrackingSpecification).
TIMEOUT_RANGES = MappingProxyType(
    {
        Timeout.TCP_ESTABLISHED: (60.0, 432_000.0),
        Timeout.UDP: (30.0, 60.0),
        Timeout.UDP_STREAM: (60.0, 180.0),
    }
)


def timeouts(**overrides: float) -> dict[Timeout, float]:
    """The timeout table with overrides (by key name, e.g. ``udp=45``), validated against
    AWS's documented ranges where AWS documents one."""
    table = dict(TIMEOUTS)
    for name, value in overrides.items():
        try:
            key = Timeout(name)
        except ValueError:
            raise ValueError(f"unknown timeout {name!r}; known: {', '.join(t.value for t in Timeout)}") from None
        value = float(value)
        lo, hi = TIMEOUT_RANGES.get(key, (1.0, 432_000.0))
        if not lo <= value <= hi:
            raise ValueError(f"timeout {name}={value:g} s is outside AWS's range {lo:g}-{hi:g} s")
        table[key] = value
    return table
