"""The ENI finder: which Hyperplane ENIs a configuration gives rise to, and which functions use
each (what AWS's "Lambda ENI Finder" script answers for a real account, by matching each ENI's
subnet and security groups against every function's VpcConfig)."""
from __future__ import annotations

from typing import Optional

from hyperplane.control.eni import HyperplaneEni
from hyperplane.control.plane import ControlPlane


def find_enis(
    plane: ControlPlane, eni_id: Optional[str] = None, function: Optional[str] = None
) -> list[HyperplaneEni]:
    """The live ENIs, optionally only ``eni_id`` or only those ``function`` uses. An unknown
    ENI id or function name raises ``ValueError`` naming it."""
    if eni_id is not None:
        eni = plane.get_eni(eni_id)
        enis = [eni] if eni.live else []
    else:
        enis = plane.live_enis()
    if function is not None:
        wanted = {e.id for e in plane.enis_of(function)}
        enis = [e for e in enis if e.id in wanted]
    return enis


def describe(enis: list[HyperplaneEni]) -> dict:
    """``{"NetworkInterfaces": [...]}`` in EC2 DescribeNetworkInterfaces shape, each item with an
    extra ``Functions`` list (the names of the functions using it; not an EC2 field)."""
    return {"NetworkInterfaces": [dict(e.to_ec2(), Functions=list(e.functions)) for e in enis]}


def rows(enis: list[HyperplaneEni]) -> list[tuple[str, ...]]:
    """One table row per ENI: id, subnet (and AZ), security groups, addresses, status, functions."""
    out = []
    for e in enis:
        out.append(
            (
                e.id,
                e.subnet_id + (f"\n{e.availability_zone}" if e.availability_zone else ""),
                ", ".join(e.security_group_ids),
                "\n".join(str(a) for a in e.addresses),
                e.state.value + (" (orphaned)" if e.orphaned else ""),
                ", ".join(e.functions) or "-",
            )
        )
    return out


COLUMNS = ("ENI", "Subnet / AZ", "Security groups", "Private IP", "Status", "Functions")
