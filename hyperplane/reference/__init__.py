"""The pure-Python reference dataplane: the executable specification of the semantics
(``docs/dataplane.md``), the oracle the Cython core is tested against, and the fallback backend.

- :mod:`~hyperplane.reference.policy`: security groups, network ACLs, route tables (compiled);
- :mod:`~hyperplane.reference.conntrack`: the connection table and its timers;
- :mod:`~hyperplane.reference.ports`: the ENI and NAT gateway port pools;
- :mod:`~hyperplane.reference.dataplane`: the packet pipeline (:class:`Dataplane`).
"""
from hyperplane.reference.dataplane import Dataplane, Rewrite, build_packet
from hyperplane.reference.policy import Policy, PrefixMap

__all__ = ["Dataplane", "Policy", "PrefixMap", "Rewrite", "build_packet"]
