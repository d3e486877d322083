"""Private address allocation inside one subnet.

EC2 reserves five IPv4 addresses of every subnet: the network address, +1 (VPC router), +2
(Amazon DNS), +3 (future use) and the last (broadcast); in an IPv6 /64 the first four and the
last are reserved too [AWS-FACTS 7]. A Hyperplane ENI takes the lowest free address that is not
reserved and not held by another interface (the configuration's network interfaces, NAT gateway
private addresses, other live Hyperplane ENIs). Choosing the lowest keeps replays deterministic.
"""
from __future__ import annotations

import heapq
import ipaddress
from typing import Iterable, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class AddressPool:
    """Lowest-free-address allocator for one subnet CIDR.

    ``allocate`` is amortised O(log n): a cursor walks up the CIDR once, and addresses released
    below the cursor wait in a min-heap, so the lowest free address is the heap's top or the
    cursor's next free one.
    """

    def __init__(self, network: Network, held: Iterable[Address] = ()) -> None:
        self.network = network
        first = int(network.network_address)
        self._first_usable = first + 4
        self._last_usable = int(network.broadcast_address) - 1
        self._held: set[int] = {int(a) for a in held if a in network}
        self._cursor = self._first_usable
        self._released: list[int] = []

    def reserved(self, address: Address) -> bool:
        value = int(address)
        return not self._first_usable <= value <= self._last_usable

    def is_free(self, address: Address) -> bool:
        return address in self.network and not self.reserved(address) and int(address) not in self._held

    def allocate(self) -> Optional[Address]:
        """The lowest free address, now held; ``None`` when the subnet has none left."""
        while self._released:
            value = heapq.heappop(self._released)
            if value not in self._held:
                self._held.add(value)
                return self._address(value)
        while self._cursor <= self._last_usable:
            value = self._cursor
            self._cursor += 1
            if value not in self._held:
                self._held.add(value)
                return self._address(value)
        return None

    def has_free(self) -> bool:
        if any(v not in self._held for v in self._released):
            return True
        value = self._cursor
        while value <= self._last_usable:
            if value not in self._held:
                return True
            value += 1
        return False

    def hold(self, address: Address) -> None:
        """Mark an address as taken (an adopted interface)."""
        self._held.add(int(address))

    def release(self, address: Address) -> None:
        value = int(address)
        if value not in self._held:
            raise ValueError(f"{address} is not held in {self.network}")
        self._held.discard(value)
        if value < self._cursor:
            heapq.heappush(self._released, value)

    def _address(self, value: int) -> Address:
        return ipaddress.ip_address(value) if self.network.version == 4 else ipaddress.IPv6Address(value)
