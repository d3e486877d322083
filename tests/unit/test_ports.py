"""Source-port pools of Hyperplane ENIs and NAT gateways: ranges, uniqueness, exhaustion, reuse,
determinism, the NAT gateway's 55,000-per-destination limit."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hyperplane import limits
from hyperplane.reference.ports import NatPortPool, PortPool, mix64, port_hash

TCP, UDP = 6, 17
DB, WEB = 0x0A000210, 0x0A000311  # 10.0.2.16, 10.0.3.17
LAMBDA_PORTS = limits.PORT_RANGE[1] - limits.PORT_RANGE[0] + 1  # 64,512


@pytest.mark.parametrize("lo,hi", [(0, 100), (1, 65536), (100, 99), (-5, 10), (1024, 70000)])
def test_invalid_ranges_are_rejected(lo, hi):
    with pytest.raises(ValueError):
        PortPool(lo, hi)


def test_any_valid_range_is_accepted_including_privileged_ports():
    pool = PortPool(1, 1023)
    assert 1 <= pool.allocate(TCP, DB, 5432) <= 1023
    one = PortPool(1023, 1023)
    assert one.allocate(TCP, DB, 5432) == 1023
    assert one.allocate(TCP, DB, 5432) is None


def test_default_range_is_lambdas():
    pool = PortPool()
    assert (pool.lo, pool.hi, pool.size) == (1024, 65535, LAMBDA_PORTS)


def test_exhausting_one_destination_uses_every_port_including_both_edges():
    pool = PortPool()
    ports = [pool.allocate(TCP, DB, 5432, hint=i) for i in range(LAMBDA_PORTS)]
    assert None not in ports
    assert sorted(ports) == list(range(1024, 65536))  # 1024 and 65535 included, 1023 never
    assert pool.allocate(TCP, DB, 5432, hint=7) is None
    assert not pool.can_allocate(TCP, DB, 5432)
    assert pool.count == LAMBDA_PORTS
    # Other destinations (address, port or protocol) still get ports.
    for proto, dst, dport in [(TCP, WEB, 5432), (TCP, DB, 5433), (UDP, DB, 5432)]:
        assert pool.can_allocate(proto, dst, dport)
        assert pool.allocate(proto, dst, dport) is not None
    # Releasing one makes exactly that port available again.
    pool.release(TCP, 40000, DB, 5432)
    assert not pool.in_use(TCP, 40000, DB, 5432)
    assert pool.can_allocate(TCP, DB, 5432)
    assert pool.allocate(TCP, DB, 5432, hint=123) == 40000
    assert pool.allocate(TCP, DB, 5432) is None


def test_same_hint_same_destination_still_unique():
    pool = PortPool(2000, 2999)
    ports = [pool.allocate(UDP, DB, 53, hint=0) for _ in range(1000)]
    assert len(set(ports)) == 1000 and pool.allocate(UDP, DB, 53) is None


def test_a_port_is_reused_for_another_destination():
    pool = PortPool(5000, 5000)
    assert pool.allocate(TCP, DB, 5432) == 5000
    assert pool.allocate(TCP, WEB, 443) == 5000
    assert pool.in_use(TCP, 5000, DB, 5432) and pool.in_use(TCP, 5000, WEB, 443)
    assert pool.count == 2


def test_release_errors_and_counts():
    pool = PortPool()
    port = pool.allocate(TCP, DB, 5432)
    with pytest.raises(KeyError):
        pool.release(TCP, port, WEB, 5432)
    with pytest.raises(KeyError):
        pool.release(TCP, 1000, DB, 5432)
    pool.release(TCP, port, DB, 5432)
    assert pool.count == 0
    with pytest.raises(KeyError):
        pool.release(TCP, port, DB, 5432)


def test_deterministic_with_a_seed_and_different_with_another():
    def run(seed):
        pool = PortPool(seed=seed)
        return [pool.allocate(TCP, DB + i % 3, 5432, hint=i * 7919) for i in range(200)]

    assert run(0) == run(0)
    assert run(1) == run(1)
    assert run(0) != run(1)


def test_port_hash_is_fixed():
    # splitmix64's published first output for state 0: the finaliser is the documented one.
    assert mix64(0) == 0xE220A8397B1DCDAF
    # Pinned values: the Cython core must reproduce them; no dependence on Python's hash().
    assert port_hash(0, 1, 6, DB, 5432) == 0x37CC8FB28C5F35B8
    assert port_hash(7, 2**70 + 5, 17, 0x20010DB8000000000000000000000001, 53) == 0x9AC8420E1157BFE6
    assert port_hash(0, 1, 6, DB, 5432) != port_hash(0, 2, 6, DB, 5432)
    assert PortPool(seed=0).allocate(TCP, DB, 5432, hint=1) == 1024 + port_hash(0, 1, TCP, DB, 5432) % 64512
    with pytest.raises(ValueError):
        port_hash(0, -1, 6, DB, 5432)


def test_ipv6_destinations():
    v6 = 0x20010DB8000000000000000000000001
    pool = PortPool(seed=3)
    a = pool.allocate(TCP, v6, 443, hint=1)
    b = pool.allocate(TCP, v6, 443, hint=1)
    assert a != b and pool.count_for(TCP, v6, 443) == 2


def test_65000_live_allocations_over_mixed_destinations():
    pool = PortPool()
    seen = set()
    for i in range(65_001):
        dst = (DB + i % 7, 5432 + i % 3)
        port = pool.allocate(TCP, dst[0], dst[1], hint=i)
        assert port is not None
        key = (port,) + dst
        assert key not in seen
        seen.add(key)
    assert pool.count == 65_001


@settings(max_examples=80, deadline=None)
@given(lo=st.integers(1, 65535), width=st.integers(0, 40), seed=st.integers(0, 2**64),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2**40)), max_size=150))
def test_allocations_are_unique_and_in_range(lo, width, seed, ops):
    hi = min(65535, lo + width)
    pool = PortPool(lo, hi, seed=seed)
    live: dict[tuple, set[int]] = {}
    for allocate, dst_index, hint in ops:
        dst = (TCP if dst_index < 2 else UDP, DB + dst_index, 80)
        ports = live.setdefault(dst, set())
        if allocate or not ports:
            port = pool.allocate(dst[0], dst[1], dst[2], hint=hint)
            if len(ports) == hi - lo + 1:
                assert port is None
                continue
            assert port is not None and lo <= port <= hi and port not in ports
            ports.add(port)
        else:
            port = sorted(ports)[hint % len(ports)]
            pool.release(dst[0], port, dst[1], dst[2])
            ports.discard(port)
        assert pool.count == sum(len(p) for p in live.values())
        assert all(pool.in_use(d[0], p, d[1], d[2]) for d, ps in live.items() for p in ps)


def test_nat_pool_limit_per_destination_per_address_and_counter():
    nat = NatPortPool(["3.0.0.1", "3.0.0.2"], per_destination=limits.NAT_CONNECTIONS_PER_DESTINATION)
    first = [nat.allocate(TCP, DB, 443, hint=i) for i in range(55_000)]
    assert all(ip == "3.0.0.1" for ip, _ in first)
    assert len({port for _, port in first}) == 55_000
    assert nat.allocate(TCP, DB, 443, hint=1)[0] == "3.0.0.2"  # primary full: next address
    second = [nat.allocate(TCP, DB, 443, hint=i) for i in range(54_999)]
    assert all(m is not None and m[0] == "3.0.0.2" for m in second)
    assert nat.error_port_allocation == 0
    assert nat.allocate(TCP, DB, 443) is None
    assert nat.allocate(TCP, DB, 443) is None
    assert nat.error_port_allocation == 2
    assert not nat.can_allocate(TCP, DB, 443)
    # Another destination is not limited by the first one.
    assert nat.allocate(TCP, DB, 8443)[0] == "3.0.0.1"
    assert nat.peak_connections == 110_001
    ip, port = first[0]
    nat.release(ip, TCP, port, DB, 443)
    assert nat.count == 110_000 and nat.peak_connections == 110_001
    again = nat.allocate(TCP, DB, 443, hint=99)
    assert again is not None and again[0] == ip  # the primary address has room again
    assert again[1] not in {p for _, p in first[1:]}


def test_nat_pool_small_limit_and_validation():
    nat = NatPortPool([1, 2], per_destination=2)
    got = [nat.allocate(UDP, DB, 53, hint=i) for i in range(5)]
    assert [m[0] for m in got[:4]] == [1, 1, 2, 2] and got[4] is None
    assert nat.error_port_allocation == 1
    with pytest.raises(ValueError):
        NatPortPool([])
    with pytest.raises(ValueError):
        NatPortPool([1, 1])
    with pytest.raises(KeyError):
        nat.release(3, UDP, 1024, DB, 53)
