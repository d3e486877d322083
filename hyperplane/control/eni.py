"""The Hyperplane ENI object: identity, address, users and connection counters.

What is documented and what is observed [AWS-FACTS 1]: one ENI per (subnet, security-group set),
65,000 connections each, shared by every function with that pair (documented). Its EC2 identity is
not documented by AWS and follows what users observe: ``InterfaceType`` ``lambda``, description
``AWS Lambda VPC ENI-<function>-<uuid>``, an ``ela-attach-…`` attachment the customer cannot
detach, ``RequesterManaged`` false and a ``RequesterId`` that is the execution role's principal.
"""
from __future__ import annotations

import enum
from typing import AbstractSet, Optional

from hyperplane.vpc.model import IPAddress


class EniState(str, enum.Enum):
    """Lifecycle of a Hyperplane ENI. The values are EC2 ``Status`` values, except ``deleted``
    (EC2 no longer lists a deleted interface; the emulator keeps it for the replay summary)."""

    ATTACHING = "attaching"  # being created: not usable until the creation delay has passed
    IN_USE = "in-use"  # used by at least one function
    AVAILABLE = "available"  # no function uses it: waiting for deletion, or orphaned
    DELETED = "deleted"


class HyperplaneEni:
    """One Hyperplane ENI. The control plane mutates it; everyone else reads it."""

    __slots__ = (
        "id", "key", "subnet_id", "vpc_id", "security_group_ids", "group_names", "private_ip",
        "ipv6_address", "availability_zone", "owner_id", "description", "attachment_id",
        "mac_address", "requester_id", "created_at", "ready_at", "state", "delete_at", "deleted_at",
        "orphaned", "adopted", "connections", "peak_connections", "_holders", "_history",
    )

    def __init__(
        self,
        *,
        id: str,
        subnet_id: str,
        vpc_id: str,
        security_group_ids: tuple[str, ...],
        group_names: tuple[str, ...],
        private_ip: IPAddress,
        ipv6_address: Optional[IPAddress],
        availability_zone: Optional[str],
        owner_id: str,
        description: str,
        attachment_id: str,
        mac_address: str,
        requester_id: str,
        created_at: float,
        ready_at: float,
        holders: AbstractSet[str],
        adopted: bool = False,
    ) -> None:
        self.id = id
        self.subnet_id = subnet_id
        self.vpc_id = vpc_id
        self.security_group_ids = security_group_ids
        self.key = (subnet_id, security_group_ids)
        self.group_names = group_names
        self.private_ip = private_ip
        self.ipv6_address = ipv6_address
        self.availability_zone = availability_zone
        self.owner_id = owner_id
        self.description = description
        self.attachment_id = attachment_id
        self.mac_address = mac_address
        self.requester_id = requester_id
        self.created_at = created_at
        self.ready_at = ready_at
        self.state = EniState.ATTACHING if ready_at > created_at else EniState.IN_USE
        self.delete_at: Optional[float] = None
        self.deleted_at: Optional[float] = None
        self.orphaned = False
        self.adopted = adopted
        self.connections = 0
        self.peak_connections = 0
        self._holders = holders  # the live set of functions using this ENI's (subnet, SG set)
        self._history: set[str] = set(holders)

    # --- read side --------------------------------------------------------------------------
    @property
    def functions(self) -> tuple[str, ...]:
        """Names of the functions using this ENI now (empty once no function uses it)."""
        return tuple(sorted(self._holders))

    @property
    def function_history(self) -> tuple[str, ...]:
        """Names of every function that used this ENI while it existed."""
        return tuple(sorted(self._history))

    @property
    def live(self) -> bool:
        return self.state is not EniState.DELETED

    @property
    def usable(self) -> bool:
        """Created, not being deleted: it may carry new connections."""
        return self.state is EniState.IN_USE

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return (self.private_ip,) if self.ipv6_address is None else (self.private_ip, self.ipv6_address)

    def summary(self) -> dict:
        """The replay-summary entry (DESIGN §4): functions are all that ever used it."""
        return {
            "id": self.id,
            "subnet_id": self.subnet_id,
            "security_group_ids": list(self.security_group_ids),
            "private_ip": str(self.private_ip),
            "functions": list(self.function_history),
            "peak_connections": self.peak_connections,
        }

    def to_ec2(self) -> dict:
        """This ENI in EC2 ``DescribeNetworkInterfaces`` shape (one ``NetworkInterfaces`` item)."""
        out = {
            "AvailabilityZone": self.availability_zone,
            "Description": self.description,
            "Groups": [{"GroupId": g, "GroupName": n} for g, n in zip(self.security_group_ids, self.group_names)],
            "InterfaceType": "lambda",
            "Ipv6Addresses": [{"Ipv6Address": str(self.ipv6_address)}] if self.ipv6_address else [],
            "MacAddress": self.mac_address,
            "NetworkInterfaceId": self.id,
            "OwnerId": self.owner_id,
            "PrivateIpAddress": str(self.private_ip),
            "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": str(self.private_ip)}],
            "RequesterId": self.requester_id,
            "RequesterManaged": False,
            "SourceDestCheck": True,
            "Status": self.state.value,
            "SubnetId": self.subnet_id,
            "TagSet": [],
            "VpcId": self.vpc_id,
        }
        if self.state in (EniState.IN_USE, EniState.ATTACHING):
            out["Attachment"] = {
                "AttachmentId": self.attachment_id,
                "DeleteOnTermination": False,
                "DeviceIndex": 1,
                "InstanceOwnerId": "amazon-aws",
                "Status": "attached" if self.state is EniState.IN_USE else "attaching",
            }
        return out

    # --- write side (control plane only) ------------------------------------------------------
    def _detach_holders(self) -> None:
        """Stop following the key's users (the ENI is orphaned or deleted)."""
        self._holders = frozenset()

    def _note_holder(self, name: str) -> None:
        self._history.add(name)

    def __repr__(self) -> str:
        return (
            f"HyperplaneEni({self.id}, {self.subnet_id}, {list(self.security_group_ids)}, {self.private_ip}, "
            f"{self.state.value}, connections={self.connections})"
        )
