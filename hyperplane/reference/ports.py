"""Source-port allocation: the port pool of a Hyperplane ENI and of a NAT gateway.

A Hyperplane ENI rewrites the sandbox's source (V2N) to its own address and a port from
1024-65535 (AWS-FACTS 1: Lambda's ephemeral range). What must be unique is the VPC-side 5-tuple:
(protocol, ENI port, destination address, destination port) among the ENI's live connections; the
same port may serve several destinations at once, as Linux NAT's per-destination pool does
(LINUX-PEER "the pool is per destination"). A NAT gateway does the same per public address, with
at most 55,000 connections per destination (address, port, protocol) per address (AWS-FACTS 5).

Choice of port (deterministic, no RNG): the search starts at ``lo + port_hash(seed, hint, proto,
dst_ip, dst_port) % size`` and probes upwards, wrapping from ``hi`` to ``lo``, to the first port
free for that destination. ``port_hash`` is a chain of the splitmix64 finaliser (constants
0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB) over ``seed``, then ``hint``,
``proto``, ``dst_port`` and ``dst_ip``, each non-negative integer folded in 64 bits at a time,
low word first (an IPv6 address is two words); Python's ``hash()`` is never used, so results do
not depend on ``PYTHONHASHSEED``. ``hint`` is whatever spreads connections (the dataplane passes
the sandbox's address and port); the same seed and hints give the same ports.

Each destination keeps the ports it uses in a set; a destination whose search needs more than
:data:`SPARSE_PROBE_LIMIT` probes switches to a bytearray bitmap searched with ``bytearray.find``
(C speed), so allocation stays fast up to a completely full destination. The port chosen is the
same in both representations.
"""
from __future__ import annotations

import ipaddress
from typing import Hashable, Sequence

from hyperplane import limits

_M64 = (1 << 64) - 1

#: Probes a set-backed destination may make before it switches to a bitmap.
SPARSE_PROBE_LIMIT = 64


def mix64(x: int) -> int:
    """The splitmix64 finaliser of a 64-bit integer (Steele, Lea, Flood 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _fold(h: int, value: int) -> int:
    """Fold a non-negative integer of any width into the running hash, 64 bits at a time."""
    if value < 0:
        raise ValueError("hash inputs must be non-negative integers")
    while True:
        h = mix64(h ^ (value & _M64))
        value >>= 64
        if not value:
            return h


def port_hash(seed: int, hint: int, proto: int, dst_ip: int, dst_port: int) -> int:
    """The documented 64-bit hash that picks where a port search starts."""
    h = mix64(seed & _M64)
    h = _fold(h, hint)
    h = _fold(h, proto)
    h = _fold(h, dst_port)
    return _fold(h, dst_ip)


class _DestinationPorts:
    """The ports (as offsets from ``lo``) one destination uses: a set, or a bitmap when dense."""

    __slots__ = ("used", "bitmap", "count")

    def __init__(self):
        self.used: set[int] | None = set()
        self.bitmap: bytearray | None = None
        self.count = 0

    def claim(self, start: int, size: int) -> int:
        """Take the first free offset at or after ``start`` (wrapping). The caller ensures
        ``count < size``."""
        used = self.used
        if used is not None:
            off = start
            for _ in range(SPARSE_PROBE_LIMIT):
                if off not in used:
                    used.add(off)
                    self.count += 1
                    return off
                off += 1
                if off == size:
                    off = 0
            self._densify(size)
        bitmap = self.bitmap
        off = bitmap.find(0, start)
        if off < 0:
            off = bitmap.find(0, 0, start)
        bitmap[off] = 1
        self.count += 1
        return off

    def _densify(self, size: int) -> None:
        bitmap = bytearray(size)
        for off in self.used:
            bitmap[off] = 1
        self.bitmap = bitmap
        self.used = None

    def holds(self, off: int) -> bool:
        if self.used is not None:
            return off in self.used
        return bool(self.bitmap[off])

    def drop(self, off: int) -> None:
        if self.used is not None:
            self.used.remove(off)  # KeyError when not held
        else:
            if not self.bitmap[off]:
                raise KeyError(off)
            self.bitmap[off] = 0
        self.count -= 1


class PortPool:
    """The source ports of one Hyperplane ENI: unique per (protocol, destination address,
    destination port) among live allocations. Ports ``lo``..``hi`` inclusive."""

    __slots__ = ("lo", "hi", "size", "seed", "count", "_dests")

    def __init__(self, lo: int = limits.PORT_RANGE[0], hi: int = limits.PORT_RANGE[1], seed: int = 0):
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port range {lo}-{hi} is outside 1-65535")
        if lo > hi:
            raise ValueError(f"port range {lo}-{hi} is empty (lo > hi)")
        self.lo = lo
        self.hi = hi
        self.size = hi - lo + 1
        self.seed = seed
        #: live allocations over all destinations
        self.count = 0
        self._dests: dict[tuple[int, int, int], _DestinationPorts] = {}

    def allocate(self, proto: int, dst_ip: int, dst_port: int, hint: int = 0) -> int | None:
        """A free source port toward (proto, dst_ip, dst_port), now taken; ``None`` when every
        port of the range is in use toward that destination. ``hint``: a non-negative int (or
        None = 0) spreading the search starts, e.g. ``sandbox_ip << 16 | sandbox_port``."""
        key = (proto, dst_ip, dst_port)
        dest = self._dests.get(key)
        if dest is None:
            dest = self._dests[key] = _DestinationPorts()
        elif dest.count >= self.size:
            return None
        start = port_hash(self.seed, hint or 0, proto, dst_ip, dst_port) % self.size
        off = dest.claim(start, self.size)
        self.count += 1
        return self.lo + off

    def release(self, proto: int, port: int, dst_ip: int, dst_port: int) -> None:
        """Give a port back. ``KeyError`` when it is not allocated toward that destination."""
        key = (proto, dst_ip, dst_port)
        dest = self._dests.get(key)
        off = port - self.lo
        if dest is None or not 0 <= off < self.size:
            raise KeyError((proto, port, dst_ip, dst_port))
        try:
            dest.drop(off)
        except KeyError:
            raise KeyError((proto, port, dst_ip, dst_port)) from None
        self.count -= 1
        if dest.count == 0:
            del self._dests[key]

    def in_use(self, proto: int, port: int, dst_ip: int, dst_port: int) -> bool:
        dest = self._dests.get((proto, dst_ip, dst_port))
        off = port - self.lo
        return dest is not None and 0 <= off < self.size and dest.holds(off)

    def count_for(self, proto: int, dst_ip: int, dst_port: int) -> int:
        """Live allocations toward one destination."""
        dest = self._dests.get((proto, dst_ip, dst_port))
        return 0 if dest is None else dest.count

    def can_allocate(self, proto: int, dst_ip: int, dst_port: int) -> bool:
        """O(1): is a port left toward this destination?"""
        dest = self._dests.get((proto, dst_ip, dst_port))
        return dest is None or dest.count < self.size

    def __repr__(self) -> str:
        return f"PortPool({self.lo}-{self.hi}, count={self.count}, destinations={len(self._dests)})"


def _address_int(address) -> int:
    return address if isinstance(address, int) else int(ipaddress.ip_address(address))


class NatPortPool:
    """The ports of a NAT gateway: one :class:`PortPool` per public address, at most
    ``per_destination`` live connections per destination per address (AWS-FACTS 5: 55,000).

    Addresses are tried in the order given (primary first). Each failure to find a port counts in
    ``error_port_allocation`` (the gateway's ``ErrorPortAllocation`` metric). ``public_ips`` may be
    ints or text; :meth:`allocate` returns them as given."""

    __slots__ = ("public_ips", "per_destination", "error_port_allocation", "peak_connections",
                 "count", "_pools")

    def __init__(self, public_ips: Sequence[Hashable], lo: int = limits.NAT_PORT_RANGE[0],
                 hi: int = limits.NAT_PORT_RANGE[1],
                 per_destination: int = limits.NAT_CONNECTIONS_PER_DESTINATION, seed: int = 0):
        if not public_ips:
            raise ValueError("a NAT gateway needs at least one address")
        if per_destination < 1:
            raise ValueError("per_destination must be at least 1")
        self.public_ips = tuple(public_ips)
        if len(set(self.public_ips)) != len(self.public_ips):
            raise ValueError("duplicate NAT gateway address")
        self.per_destination = per_destination
        self.error_port_allocation = 0
        self.peak_connections = 0
        self.count = 0
        self._pools = {
            ip: PortPool(lo, hi, seed=_fold(mix64(seed & _M64), _address_int(ip)))
            for ip in self.public_ips
        }

    def allocate(self, proto: int, dst_ip: int, dst_port: int, hint: int = 0):
        """``(public_ip, port)`` for a new connection toward (proto, dst_ip, dst_port), or
        ``None`` (and ``error_port_allocation`` + 1) when every address is at its limit."""
        limit = self.per_destination
        for ip in self.public_ips:
            pool = self._pools[ip]
            if pool.count_for(proto, dst_ip, dst_port) >= limit:
                continue
            port = pool.allocate(proto, dst_ip, dst_port, hint)
            if port is None:
                continue
            self.count += 1
            if self.count > self.peak_connections:
                self.peak_connections = self.count
            return ip, port
        self.error_port_allocation += 1
        return None

    def release(self, public_ip, proto: int, port: int, dst_ip: int, dst_port: int) -> None:
        """Give back a (public_ip, port) mapping. ``KeyError`` when it is not allocated."""
        pool = self._pools.get(public_ip)
        if pool is None:
            raise KeyError(public_ip)
        pool.release(proto, port, dst_ip, dst_port)
        self.count -= 1

    def in_use(self, public_ip, proto: int, port: int, dst_ip: int, dst_port: int) -> bool:
        pool = self._pools.get(public_ip)
        return pool is not None and pool.in_use(proto, port, dst_ip, dst_port)

    def can_allocate(self, proto: int, dst_ip: int, dst_port: int) -> bool:
        limit = self.per_destination
        return any(
            pool.count_for(proto, dst_ip, dst_port) < limit and pool.can_allocate(proto, dst_ip, dst_port)
            for pool in self._pools.values()
        )
