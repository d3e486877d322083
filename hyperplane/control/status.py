"""Function states and reason codes, as Lambda's GetFunctionConfiguration reports them.

``State``: Pending | Active | Inactive | Failed; ``LastUpdateStatus``: InProgress | Successful |
Failed; the reason codes are the subset of Lambda's ``StateReasonCode`` enumeration that VPC
networking produces [AWS-FACTS 1, functions-states and API_FunctionConfiguration].
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class State(str, enum.Enum):
    PENDING = "Pending"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    FAILED = "Failed"


class StateReasonCode(str, enum.Enum):
    CREATING = "Creating"
    IDLE = "Idle"
    RESTORING = "Restoring"
    ENI_LIMIT_EXCEEDED = "EniLimitExceeded"
    SUBNET_OUT_OF_IP_ADDRESSES = "SubnetOutOfIPAddresses"
    INSUFFICIENT_ROLE_PERMISSIONS = "InsufficientRolePermissions"
    INVALID_SUBNET = "InvalidSubnet"
    INVALID_SECURITY_GROUP = "InvalidSecurityGroup"


#: The codes that say why creating or restoring network interfaces failed. Lambda's
#: ``LastUpdateStatusReasonCode`` takes the same values (its list is StateReasonCode minus
#: Idle/Creating/Restoring).
FAILURE_CODES = frozenset(
    {
        StateReasonCode.ENI_LIMIT_EXCEEDED,
        StateReasonCode.SUBNET_OUT_OF_IP_ADDRESSES,
        StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS,
        StateReasonCode.INVALID_SUBNET,
        StateReasonCode.INVALID_SECURITY_GROUP,
    }
)


class LastUpdateStatus(str, enum.Enum):
    IN_PROGRESS = "InProgress"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"


class RefusalReason(str, enum.Enum):
    """Why :meth:`ControlPlane.open_connection` gave no slot (the dataplane reports
    ``port-exhaustion`` for all of them)."""

    ENI_LIMIT_EXCEEDED = "EniLimitExceeded"  # the VPC's ENI quota is used up
    SUBNET_OUT_OF_IP_ADDRESSES = "SubnetOutOfIPAddresses"  # no address left for an overflow ENI
    ENI_CREATING = "EniCreating"  # the overflow ENI exists but is not usable yet
    REJECTED = "Rejected"  # the caller's accept() refused even a new, empty ENI
    FUNCTION_NOT_ACTIVE = "FunctionNotActive"  # the function has no serving ENI now


_STATE_REASONS = {
    StateReasonCode.CREATING: "The function is being created.",
    StateReasonCode.IDLE: "The function is inactive because it has not been invoked for a long time; "
    "Lambda reclaimed its Hyperplane ENIs.",
    StateReasonCode.RESTORING: "The function is being restored to an Active state.",
    StateReasonCode.ENI_LIMIT_EXCEEDED: "Lambda was unable to create a network interface because the "
    "VPC reached its limit of Hyperplane ENIs.",
    StateReasonCode.SUBNET_OUT_OF_IP_ADDRESSES: "Lambda was unable to create a network interface "
    "because the subnet has no free IP addresses.",
    StateReasonCode.INSUFFICIENT_ROLE_PERMISSIONS: "The function's execution role does not have "
    "permission to call ec2:CreateNetworkInterface.",
    StateReasonCode.INVALID_SUBNET: "One or more subnets of the VPC configuration are invalid.",
    StateReasonCode.INVALID_SECURITY_GROUP: "One or more security groups of the VPC configuration are invalid.",
}


def reason_text(code: Optional[StateReasonCode], detail: str = "") -> Optional[str]:
    """The human-readable ``StateReason`` for a code (plus a detail naming the resource)."""
    if code is None:
        return None
    text = _STATE_REASONS[code]
    return f"{text} {detail}".strip() if detail else text


@dataclass(frozen=True)
class FunctionStatus:
    """A snapshot of one function's state, as GetFunctionConfiguration would show it."""

    name: str
    state: State
    state_reason_code: Optional[StateReasonCode] = None
    state_reason: Optional[str] = None
    last_update_status: LastUpdateStatus = LastUpdateStatus.SUCCESSFUL
    last_update_status_reason_code: Optional[StateReasonCode] = None
    last_update_status_reason: Optional[str] = None
    vpc_id: Optional[str] = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    ipv6_allowed_for_dual_stack: bool = False
    eni_ids: tuple[str, ...] = ()  # the ENIs its invocations use now

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    def to_lambda(self) -> dict:
        """The status in Lambda ``GetFunctionConfiguration`` field names (absent fields omitted,
        as Lambda omits them)."""
        out: dict = {"FunctionName": self.name, "State": self.state.value}
        if self.state_reason is not None:
            out["StateReason"] = self.state_reason
        if self.state_reason_code is not None:
            out["StateReasonCode"] = self.state_reason_code.value
        out["LastUpdateStatus"] = self.last_update_status.value
        if self.last_update_status_reason is not None:
            out["LastUpdateStatusReason"] = self.last_update_status_reason
        if self.last_update_status_reason_code is not None:
            out["LastUpdateStatusReasonCode"] = self.last_update_status_reason_code.value
        if self.subnet_ids:
            out["VpcConfig"] = {
                "SubnetIds": list(self.subnet_ids),
                "SecurityGroupIds": list(self.security_group_ids),
                "VpcId": self.vpc_id,
                "Ipv6AllowedForDualStack": self.ipv6_allowed_for_dual_stack,
            }
        return out
