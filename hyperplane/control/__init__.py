"""The control plane: Lambda functions, the Hyperplane ENI manager, the function lifecycle and
the ENI finder. See ``docs/control-plane.md``."""
from hyperplane.control.eni import EniState, HyperplaneEni
from hyperplane.control.options import ControlOptions
from hyperplane.control.plane import ControlEvent, ControlPlane, Refusal, ResourceConflictError
from hyperplane.control.status import (
    FAILURE_CODES,
    FunctionStatus,
    LastUpdateStatus,
    RefusalReason,
    State,
    StateReasonCode,
)

__all__ = [
    "ControlEvent",
    "ControlOptions",
    "ControlPlane",
    "EniState",
    "FAILURE_CODES",
    "FunctionStatus",
    "HyperplaneEni",
    "LastUpdateStatus",
    "Refusal",
    "RefusalReason",
    "ResourceConflictError",
    "State",
    "StateReasonCode",
]
