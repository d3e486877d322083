"""Deterministic identifiers for the resources the control plane creates.

AWS generates ENI ids (``eni-`` + 17 hex digits), attachment ids (``ela-attach-`` + 17 hex digits
for Lambda's ENIs, AWS-FACTS 1) and the UUID in the ENI description at random. Here they come from
SHA-256 of the seed and a counter, so the same inputs and seed give the same ids in every run.
"""
from __future__ import annotations

import hashlib
import uuid


class IdFactory:
    """Hands out ids derived from ``seed`` and a running counter; never the clock or an RNG."""

    def __init__(self, seed: int = 0, taken: frozenset[str] | set[str] = frozenset()) -> None:
        self._seed = seed
        self._counter = 0
        self._taken = set(taken)

    def _digest(self, kind: str) -> bytes:
        self._counter += 1
        return hashlib.sha256(f"hyperplane:{self._seed}:{kind}:{self._counter}".encode()).digest()

    def _unique(self, kind: str, prefix: str) -> str:
        while True:
            value = prefix + self._digest(kind).hex()[:17]
            if value not in self._taken:
                self._taken.add(value)
                return value

    def eni_id(self) -> str:
        """``eni-`` + 17 hex digits, never one the configuration already uses."""
        return self._unique("eni", "eni-")

    def attachment_id(self) -> str:
        return self._unique("attach", "ela-attach-")

    def description_uuid(self) -> str:
        return str(uuid.UUID(bytes=self._digest("uuid")[:16], version=4))

    def mac_address(self) -> str:
        """A locally administered unicast MAC (``02:…``), as EC2 gives its interfaces."""
        raw = self._digest("mac")[:5]
        return "02:" + ":".join(f"{b:02x}" for b in raw)

    def role_id(self, role: str) -> str:
        """A stable ``AROA…`` unique id for an execution role (IAM role ids are 21 characters)."""
        digest = hashlib.sha256(f"hyperplane:{self._seed}:role:{role}".encode()).hexdigest()
        return "AROA" + digest[:17].upper()
