"""Options of the control plane: capacities, quotas and delays, with their AWS sources.

Every default comes from :mod:`hyperplane.limits` (sources in ``AWS-FACTS.md`` section 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hyperplane import limits


@dataclass(frozen=True)
class ControlOptions:
    """How the Hyperplane ENI manager and the function lifecycle behave.

    - ``eni_capacity``: concurrent connections one Hyperplane ENI carries; AWS: "each Hyperplane
      ENI supports up to 65,000 connections/ports" [AWS-FACTS 1].
    - ``enis_per_vpc``: the Lambda "Elastic network interfaces per VPC" quota, default 250
      [AWS-FACTS 1]. Every live Hyperplane ENI of the VPC counts, orphaned ones included.
    - ``creation_delay``: seconds from "create the ENI" to "ENI usable"; AWS documents 60-90 s to
      several minutes, the default 0 makes a replay start with Active functions.
    - ``idle_reclaim``: seconds without invocation after which a function goes Inactive (AWS:
      "consecutive weeks"; 14 days is third-party lore).
    - ``deletion_delay``: seconds from "no function uses the ENI" to its deletion (AWS: "up to
      20 minutes").
    - ``seed``: drives the generated ENI ids, attachment ids and description UUIDs.
    """

    eni_capacity: int = limits.ENI_CAPACITY
    enis_per_vpc: int = limits.ENIS_PER_VPC
    creation_delay: float = limits.ENI_CREATION_DELAY
    idle_reclaim: float = limits.IDLE_RECLAIM_PERIOD
    deletion_delay: float = limits.ENI_DELETION_DELAY
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("eni_capacity", "enis_per_vpc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ControlOptions.{name} must be a positive integer, got {value!r}")
        for name in ("creation_delay", "idle_reclaim", "deletion_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ControlOptions.{name} must be a finite number of seconds, got {value!r}")
            if value < 0:
                raise ValueError(f"ControlOptions.{name} must not be negative, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.idle_reclaim == 0:
            raise ValueError("ControlOptions.idle_reclaim must be greater than 0 seconds")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"ControlOptions.seed must be an integer, got {self.seed!r}")
