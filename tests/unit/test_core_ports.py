"""The compiled port pools (_core.PortPool / _core.NatPortPool) against hyperplane.reference.ports:
the same ports, counters and errors for the same calls (the ports are part of the rewritten bytes
both backends must agree on).

Three layers: the pinned cases of tests/unit/test_ports.py run against both implementations; a
hypothesis state machine driving the C pool and the reference in lockstep (few and many
destinations, IPv6 destinations, tiny ranges, several seeds, bulk allocations that switch the
C representation inline -> set -> bitmap and back); deterministic lockstep runs of full
exhaustion (64,512 ports) and churn at capacity, and of the nogil driver ports_churn_v4."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

from hyperplane import limits
from hyperplane.reference import ports as ref

_core = pytest.importorskip("hyperplane._core")

TCP, UDP = 6, 17
DB, WEB = 0x0A000210, 0x0A000311
V6 = 0x20010DB8000000000000000000000001
V4MAPPED = 0xFFFF0A000210  # ::ffff:10.0.2.16: high 64 bits zero, folds as one word
LAMBDA_PORTS = limits.PORT_RANGE[1] - limits.PORT_RANGE[0] + 1  # 64,512


@pytest.fixture(params=["reference", "core"])
def impl(request):
    """The module under test: PortPool and NatPortPool of one backend."""
    return ref if request.param == "reference" else _core


# ---------------------------------------------------------------- hash


def test_port_hash_pinned_values():
    assert _core.port_hash(0, 1, 6, DB, 5432) == 0x37CC8FB28C5F35B8
    assert _core.port_hash(7, 2**70 + 5, 17, V6, 53) == 0x9AC8420E1157BFE6
    with pytest.raises(ValueError):
        _core.port_hash(0, -1, 6, DB, 5432)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(-2**65, 2**66), hint=st.integers(0, 2**200), proto=st.integers(0, 255),
       dst=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**128 - 1)),
       dport=st.integers(0, 65535))
def test_port_hash_matches_reference(seed, hint, proto, dst, dport):
    assert _core.port_hash(seed, hint, proto, dst, dport) == ref.port_hash(seed, hint, proto, dst, dport)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**64 - 1),
       src=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**48), st.integers(0, 2**128 - 1)),
       sport=st.integers(0, 65535), proto=st.integers(0, 255),
       dst=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1)), dport=st.integers(0, 65535))
def test_fast_path_hash_helpers_match_reference(seed, src, sport, proto, dst, dport):
    """hp_port_hash_v4 and hp_port_hint_v6, what the compiled loop calls with (src, sport)."""
    want = ref.port_hash(seed, (src << 16) | sport, proto, dst, dport)
    assert _core.port_hash_sandbox(seed, src, sport, proto, dst, dport) == want


# ------------------------------------------- the pinned cases, both backends


@pytest.mark.parametrize("lo,hi", [(0, 100), (1, 65536), (100, 99), (-5, 10), (1024, 70000)])
def test_invalid_ranges_are_rejected(impl, lo, hi):
    with pytest.raises(ValueError):
        impl.PortPool(lo, hi)


def test_small_and_privileged_ranges(impl):
    pool = impl.PortPool(1, 1023)
    assert 1 <= pool.allocate(TCP, DB, 5432) <= 1023
    one = impl.PortPool(1023, 1023)
    assert one.allocate(TCP, DB, 5432) == 1023
    assert one.allocate(TCP, DB, 5432) is None
    pool = impl.PortPool()
    assert (pool.lo, pool.hi, pool.size, pool.seed) == (1024, 65535, LAMBDA_PORTS, 0)


def test_exhausting_one_destination_uses_every_port(impl):
    pool = impl.PortPool()
    ports = [pool.allocate(TCP, DB, 5432, hint=i) for i in range(LAMBDA_PORTS)]
    assert sorted(ports) == list(range(1024, 65536))
    assert pool.allocate(TCP, DB, 5432, hint=7) is None
    assert not pool.can_allocate(TCP, DB, 5432)
    assert pool.count == LAMBDA_PORTS and pool.count_for(TCP, DB, 5432) == LAMBDA_PORTS
    for proto, dst, dport in [(TCP, WEB, 5432), (TCP, DB, 5433), (UDP, DB, 5432)]:
        assert pool.can_allocate(proto, dst, dport)
        assert pool.allocate(proto, dst, dport) is not None
    pool.release(TCP, 40000, DB, 5432)
    assert not pool.in_use(TCP, 40000, DB, 5432)
    assert pool.allocate(TCP, DB, 5432, hint=123) == 40000
    assert pool.allocate(TCP, DB, 5432) is None


def test_same_hint_same_destination_still_unique(impl):
    pool = impl.PortPool(2000, 2999)
    ports = [pool.allocate(UDP, DB, 53, hint=0) for _ in range(1000)]
    assert len(set(ports)) == 1000 and pool.allocate(UDP, DB, 53) is None


def test_a_port_is_reused_for_another_destination(impl):
    pool = impl.PortPool(5000, 5000)
    assert pool.allocate(TCP, DB, 5432) == 5000
    assert pool.allocate(TCP, WEB, 443) == 5000
    assert pool.in_use(TCP, 5000, DB, 5432) and pool.in_use(TCP, 5000, WEB, 443)
    assert pool.count == 2


def test_release_errors_and_counts(impl):
    pool = impl.PortPool()
    port = pool.allocate(TCP, DB, 5432)
    for args in [(TCP, port, WEB, 5432), (TCP, 1000, DB, 5432), (TCP, 70000, DB, 5432), (TCP, -3, DB, 5432),
                 (300, port, DB, 5432), (TCP, port, 2**130, 5432), (TCP, port, DB, -1)]:
        with pytest.raises(KeyError):
            pool.release(*args)
        assert not pool.in_use(*args)
    pool.release(TCP, port, DB, 5432)
    assert pool.count == 0
    with pytest.raises(KeyError):
        pool.release(TCP, port, DB, 5432)
    assert pool.count_for(300, DB, 5432) == 0 and pool.can_allocate(300, DB, 5432)


def test_negative_inputs_and_none_hint(impl):
    pool = impl.PortPool(1024, 1025)
    with pytest.raises(ValueError):
        pool.allocate(TCP, DB, 5432, hint=-1)
    with pytest.raises(ValueError):
        pool.allocate(TCP, -1, 5432)
    a = pool.allocate(TCP, DB, 5432, hint=None)
    assert a == impl.PortPool(1024, 1025).allocate(TCP, DB, 5432, hint=0)
    pool.allocate(TCP, DB, 5432, hint=5)
    # a full destination answers None before the hint is looked at
    assert pool.allocate(TCP, DB, 5432, hint=-1) is None
    assert pool.count == 2


def test_core_rejects_destinations_it_cannot_key():
    pool = _core.PortPool()
    for args in [(256, DB, 80), (TCP, DB, 65536), (TCP, 2**128, 80)]:
        with pytest.raises(ValueError):
            pool.allocate(*args)
    with pytest.raises(TypeError):
        pool.allocate("tcp", DB, 80)
    assert pool.count == 0 and pool.destinations == 0


def test_deterministic_with_a_seed(impl):
    def run(seed):
        pool = impl.PortPool(seed=seed)
        return [pool.allocate(TCP, DB + i % 3, 5432, hint=i * 7919) for i in range(200)]

    assert run(0) == run(0) and run(1) == run(1) and run(0) != run(1)


def test_ipv6_destinations(impl):
    pool = impl.PortPool(seed=3)
    a = pool.allocate(TCP, V6, 443, hint=1)
    b = pool.allocate(TCP, V6, 443, hint=1)
    assert a != b and pool.count_for(TCP, V6, 443) == 2
    assert pool.count_for(TCP, V6 & (2**64 - 1), 443) == 0  # the high word is part of the key


def test_65000_live_allocations_over_mixed_destinations(impl):
    pool = impl.PortPool()
    seen = set()
    for i in range(65_001):
        dst = (DB + i % 7, 5432 + i % 3)
        port = pool.allocate(TCP, dst[0], dst[1], hint=i)
        assert port is not None and (port,) + dst not in seen
        seen.add((port,) + dst)
    assert pool.count == 65_001


def test_nat_pool_limit_per_destination_per_address_and_counter(impl):
    nat = impl.NatPortPool(["3.0.0.1", "3.0.0.2"], per_destination=limits.NAT_CONNECTIONS_PER_DESTINATION)
    first = [nat.allocate(TCP, DB, 443, hint=i) for i in range(55_000)]
    assert all(ip == "3.0.0.1" for ip, _ in first)
    assert len({port for _, port in first}) == 55_000
    assert nat.allocate(TCP, DB, 443, hint=1)[0] == "3.0.0.2"
    second = [nat.allocate(TCP, DB, 443, hint=i) for i in range(54_999)]
    assert all(m is not None and m[0] == "3.0.0.2" for m in second)
    assert nat.error_port_allocation == 0
    assert nat.allocate(TCP, DB, 443) is None and nat.allocate(TCP, DB, 443) is None
    assert nat.error_port_allocation == 2
    assert not nat.can_allocate(TCP, DB, 443)
    assert nat.allocate(TCP, DB, 8443)[0] == "3.0.0.1"
    assert nat.peak_connections == 110_001
    ip, port = first[0]
    nat.release(ip, TCP, port, DB, 443)
    assert nat.count == 110_000 and nat.peak_connections == 110_001
    again = nat.allocate(TCP, DB, 443, hint=99)
    assert again is not None and again[0] == ip and again[1] not in {p for _, p in first[1:]}


def test_nat_pool_small_limit_and_validation(impl):
    nat = impl.NatPortPool([1, 2], per_destination=2)
    got = [nat.allocate(UDP, DB, 53, hint=i) for i in range(5)]
    assert [m[0] for m in got[:4]] == [1, 1, 2, 2] and got[4] is None
    assert nat.error_port_allocation == 1
    for bad in ([], [1, 1]):
        with pytest.raises(ValueError):
            impl.NatPortPool(bad)
    with pytest.raises(ValueError):
        impl.NatPortPool([1], per_destination=0)
    with pytest.raises(KeyError):
        nat.release(3, UDP, 1024, DB, 53)
    with pytest.raises(KeyError):
        nat.release(1, UDP, 1, DB, 53)
    assert not nat.in_use(3, UDP, got[0][1], DB, 53) and nat.in_use(1, UDP, got[0][1], DB, 53)
    assert nat.public_ips == (1, 2) and nat.per_destination == 2


def test_a_deep_copy_holds_the_same_ports_and_lives_on_its_own(impl):
    """explain probes a deep copy of the dataplane: the copied pools hold what the originals hold
    (in every form: a few ports, a set, a bitmap), allocate next what the originals would, and
    change independently of them."""
    import copy

    pool = impl.PortPool(seed=3)
    held = [(dst, pool.allocate(TCP, dst, 443, hint=i)) for n, dst in ((3, DB), (300, WEB), (5000, V6))
            for i in range(n)]
    twin = copy.deepcopy(pool)
    assert twin.count == pool.count == len(held)
    assert all(twin.in_use(TCP, port, dst, 443) for dst, port in held)
    for dst in (DB, WEB, V6):
        assert twin.allocate(TCP, dst, 443, hint=77) == pool.allocate(TCP, dst, 443, hint=77)
    dst, port = held[400]
    twin.release(TCP, port, dst, 443)
    assert pool.in_use(TCP, port, dst, 443) and not twin.in_use(TCP, port, dst, 443)
    assert twin.count == pool.count - 1
    del pool
    assert twin.in_use(TCP, held[0][1], DB, 443)  # nothing shared with the freed original

    nat = impl.NatPortPool([0xCB007101, 0xCB007102], per_destination=10, seed=1)
    got = [nat.allocate(TCP, DB, 443, hint=i) for i in range(25)]
    assert got[-5:] == [None] * 5
    twin = copy.deepcopy(nat)
    assert (twin.count, twin.peak_connections, twin.error_port_allocation) == (20, 20, 5)
    (ip, port) = got[0]
    twin.release(ip, TCP, port, DB, 443)
    assert nat.in_use(ip, TCP, port, DB, 443) and not twin.in_use(ip, TCP, port, DB, 443)
    assert twin.allocate(TCP, DB, 443, hint=99) is not None and nat.allocate(TCP, DB, 443, hint=99) is None
    assert (twin.count, nat.count, nat.error_port_allocation) == (20, 20, 6)


def test_both_backends_give_the_same_ports_on_the_pinned_workloads():
    """The cases above, compared call by call rather than by property."""
    for seed in (0, 1, 2**64 - 1):
        a, b = ref.PortPool(seed=seed), _core.PortPool(seed=seed)
        for i in range(3000):
            key = (TCP if i % 5 else UDP, DB + i % 11, 5432 + i % 2)
            assert a.allocate(*key, hint=i * 7919) == b.allocate(*key, hint=i * 7919)
        x, y = ref.NatPortPool(["3.0.0.1", 7, "2001:db8::1"], 1024, 1100, 50, seed), \
            _core.NatPortPool(["3.0.0.1", 7, "2001:db8::1"], 1024, 1100, 50, seed)
        for i in range(200):
            assert x.allocate(TCP, DB, 443, hint=i) == y.allocate(TCP, DB, 443, hint=i)
        assert (x.error_port_allocation, x.peak_connections, x.count) == \
            (y.error_port_allocation, y.peak_connections, y.count) == (50, 150, 150)


# --------------------------------------------------- lockstep state machine


def _destinations(many: bool):
    protos = st.sampled_from([TCP, UDP, 1, 132])
    addrs = st.one_of(st.sampled_from([DB, WEB, V6, V4MAPPED, 0, 2**128 - 1]),
                      st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1))
    dports = st.sampled_from([0, 53, 443, 5432, 65535]) if not many else st.integers(0, 65535)
    return st.tuples(protos, addrs, dports)


HINTS = st.one_of(st.integers(0, 2**16), st.integers(0, 2**48), st.integers(0, 2**144), st.none())


class PortPoolLockstep(RuleBasedStateMachine):
    """The C pool and the reference receive the same calls; every answer must match."""

    dests = Bundle("dests")
    held = Bundle("held")

    @initialize(target=dests, lo=st.integers(1, 65535), width=st.sampled_from([0, 1, 3, 7, 63, 64, 65, 200, 5000, 70000]),
                seed=st.integers(-2**64, 2**65), few=_destinations(False))
    def make(self, lo, width, seed, few):
        hi = min(65535, lo + width)
        if width == 70000:
            lo, hi = limits.PORT_RANGE
        self.ref = ref.PortPool(lo, hi, seed=seed)
        self.core = _core.PortPool(lo, hi, seed=seed)
        self.live: dict[tuple, set[int]] = {}
        return few

    @rule(target=dests, dest=st.one_of(_destinations(False), _destinations(True)))
    def new_destination(self, dest):
        return dest

    @rule(target=held, dest=dests, hint=HINTS)
    def allocate(self, dest, hint):
        a = self.ref.allocate(*dest, hint=hint)
        b = self.core.allocate(*dest, hint=hint)
        assert a == b
        if a is None:
            assert len(self.live.get(dest, ())) == self.ref.size
            return None
        self.live.setdefault(dest, set()).add(a)
        return (dest, a)

    @rule(dest=dests, n=st.integers(1, 3000), hint0=st.integers(0, 2**40), step=st.sampled_from([0, 1, 65536]))
    def allocate_many(self, dest, n, hint0, step):
        """Enough allocations toward one destination to change its C form (set, bitmap)."""
        n = min(n, self.ref.size - len(self.live.get(dest, ())) + 1)
        for k in range(n):
            h = hint0 + k * step
            a = self.ref.allocate(*dest, hint=h)
            assert a == self.core.allocate(*dest, hint=h)
            if a is not None:
                self.live.setdefault(dest, set()).add(a)

    @rule(item=consumes(held))
    def release(self, item):
        if item is None:
            return
        dest, port = item
        proto, dst, dport = dest
        if port not in self.live.get(dest, ()):
            return  # already given back by release_many
        self.ref.release(proto, port, dst, dport)
        self.core.release(proto, port, dst, dport)
        self.live[dest].discard(port)

    @rule(dest=dests, frac=st.floats(0.0, 1.0), pick=st.randoms(use_true_random=False))
    def release_many(self, dest, frac, pick):
        """Give back a fraction of one destination's ports (forms shrink back)."""
        ports = sorted(self.live.get(dest, ()))
        proto, dst, dport = dest
        for port in pick.sample(ports, int(len(ports) * frac)):
            self.ref.release(proto, port, dst, dport)
            self.core.release(proto, port, dst, dport)
            self.live[dest].discard(port)

    @rule(dest=dests, port=st.integers(-1, 65536))
    def release_unknown(self, dest, port):
        assume(port not in self.live.get(dest, ()))
        proto, dst, dport = dest
        with pytest.raises(KeyError):
            self.ref.release(proto, port, dst, dport)
        with pytest.raises(KeyError):
            self.core.release(proto, port, dst, dport)

    @rule(dest=dests, port=st.integers(0, 65535))
    def query(self, dest, port):
        proto, dst, dport = dest
        assert self.ref.in_use(proto, port, dst, dport) == self.core.in_use(proto, port, dst, dport)
        assert self.ref.count_for(*dest) == self.core.count_for(*dest)
        assert self.ref.can_allocate(*dest) == self.core.can_allocate(*dest)

    @invariant()
    def same_state(self):
        if not hasattr(self, "ref"):
            return
        assert self.ref.count == self.core.count == sum(map(len, self.live.values()))
        for dest, ports in self.live.items():
            assert self.core.count_for(*dest) == len(ports) == self.ref.count_for(*dest)
            proto, dst, dport = dest
            for port in list(ports)[:50]:
                assert self.core.in_use(proto, port, dst, dport)


TestPortPoolLockstep = PortPoolLockstep.TestCase
TestPortPoolLockstep.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class NatPortPoolLockstep(RuleBasedStateMachine):
    dests = Bundle("dests")
    held = Bundle("held")

    @initialize(target=dests, ips=st.lists(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1),
                                                       st.sampled_from(["3.0.0.1", "2001:db8::1"])),
                                             min_size=1, max_size=4, unique=True),
                lo=st.integers(1, 65535), width=st.sampled_from([0, 2, 9, 100]), limit=st.integers(1, 120),
                seed=st.integers(0, 2**64), dest=_destinations(False))
    def make(self, ips, lo, width, limit, seed, dest):
        assume(len({str(ip) for ip in ips}) == len(ips))
        hi = min(65535, lo + width)
        self.ref = ref.NatPortPool(ips, lo, hi, limit, seed)
        self.core = _core.NatPortPool(ips, lo, hi, limit, seed)
        self.live: set[tuple] = set()
        return dest

    @rule(target=dests, dest=_destinations(True))
    def new_destination(self, dest):
        return dest

    @rule(target=held, dest=dests, hint=HINTS, n=st.integers(1, 60))
    def allocate(self, dest, hint, n):
        last = None
        for k in range(n):
            h = None if hint is None else hint + k
            a = self.ref.allocate(*dest, hint=h)
            assert a == self.core.allocate(*dest, hint=h)
            if a is not None:
                self.live.add((a[0], dest[0], a[1], dest[1], dest[2]))
                last = (a[0], dest[0], a[1], dest[1], dest[2])
        return last

    @rule(item=consumes(held))
    def release(self, item):
        if item is None or item not in self.live:
            return
        self.ref.release(*item)
        self.core.release(*item)
        self.live.discard(item)

    @rule(dest=dests)
    def query(self, dest):
        assert self.ref.can_allocate(*dest) == self.core.can_allocate(*dest)

    @invariant()
    def same_counters(self):
        if not hasattr(self, "ref"):
            return
        for name in ("error_port_allocation", "peak_connections", "count"):
            assert getattr(self.ref, name) == getattr(self.core, name)
        assert self.core.count == len(self.live)
        for item in list(self.live)[:30]:
            assert self.core.in_use(*item) and self.ref.in_use(*item)


TestNatPortPoolLockstep = NatPortPoolLockstep.TestCase
TestNatPortPoolLockstep.settings = settings(max_examples=80, stateful_step_count=30, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ------------------------------------------------- deterministic lockstep runs


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5])
@pytest.mark.parametrize("dst", [DB, V6, V4MAPPED])
def test_lockstep_exhaustion_then_churn_at_capacity(seed, dst):
    """Fill one destination to 64,512, then release/allocate at capacity: every port matches."""
    a, b = ref.PortPool(seed=seed), _core.PortPool(seed=seed)
    got = []
    for i in range(LAMBDA_PORTS):
        p = a.allocate(TCP, dst, 443, hint=i * 2654435761)
        assert p == b.allocate(TCP, dst, 443, hint=i * 2654435761)
        got.append(p)
    assert a.allocate(TCP, dst, 443, hint=3) is None and b.allocate(TCP, dst, 443, hint=3) is None
    assert b.stats()["bitmaps"] == 1
    for i in range(3000):
        victim = got[(i * 40503) % LAMBDA_PORTS]
        a.release(TCP, victim, dst, 443)
        b.release(TCP, victim, dst, 443)
        p = a.allocate(TCP, dst, 443, hint=i)
        assert p == b.allocate(TCP, dst, 443, hint=i) == victim  # the only free port
    # drain nearly all: the C form shrinks back (bitmap -> set -> inline) and still agrees
    for port in range(1024, 65536):
        if port % 5003:  # keeps 13 ports, <= HP_PORTS_SPARSE_BACK
            a.release(TCP, port, dst, 443)
            b.release(TCP, port, dst, 443)
    assert b.stats()["bitmaps"] == 0 and a.count == b.count
    for i in range(2000):
        assert a.allocate(TCP, dst, 443, hint=i) == b.allocate(TCP, dst, 443, hint=i)


def test_many_destinations_lockstep_and_memory():
    """100,000 destinations with one or two ports each (the destination table grows and shrinks)."""
    a, b = ref.PortPool(seed=11), _core.PortPool(seed=11)
    keys = [(TCP if i % 3 else UDP, 0x0A000000 + i * 7 if i % 4 else V6 + i, 443 + i % 5) for i in range(100_000)]
    held = []
    for i, key in enumerate(keys):
        p = a.allocate(*key, hint=i)
        assert p == b.allocate(*key, hint=i)
        held.append((key, p))
        if i % 2 == 0:
            q = a.allocate(*key, hint=i)
            assert q == b.allocate(*key, hint=i)
            held.append((key, q))
    stats = b.stats()
    assert stats["destinations"] == 100_000 and stats["bitmaps"] == 0 and stats["heap_bytes"] == 0
    assert b.memory_bytes() <= 64 * 150_000  # 32-byte records at load >= 3/8
    for key, port in held[::2]:
        a.release(key[0], port, key[1], key[2])
        b.release(key[0], port, key[1], key[2])
    assert a.count == b.count == len(held) // 2
    for key, port in held[1::2]:
        assert b.in_use(key[0], port, key[1], key[2])
    for i, key in enumerate(keys[:20_000]):
        assert a.allocate(*key, hint=i + 1) == b.allocate(*key, hint=i + 1)


@pytest.mark.parametrize("lo,hi,ndst,live", [(1024, 65535, 1, 61_000), (1024, 65535, 50, 40_000),
                                             (2000, 2063, 3, 150), (1, 1, 4, 3)])
def test_nogil_churn_driver_matches_reference(lo, hi, ndst, live):
    """ports_churn_v4 (hp_ports_allocate_v4 / hp_ports_release in one nogil loop) gives the ports the
    reference gives for the same calls, near capacity included."""
    n = live + 5000
    rng = np.random.default_rng(lo + ndst)
    dsts = (0x0A000000 + rng.integers(0, ndst, n)).astype(np.uint32)
    out = np.full(n, -1, np.int32)
    src = 0xAC100005
    core = _core.PortPool(lo, hi, seed=42)
    _core.ports_churn_v4(core, TCP, src, 443, dsts, out, live, 0, n)
    pool, want = ref.PortPool(lo, hi, seed=42), np.full(n, -1, np.int64)
    for i in range(n):
        j = i - live
        if j >= 0 and want[j] >= 0:
            pool.release(TCP, int(want[j]), int(dsts[j]), 443)
        p = pool.allocate(TCP, int(dsts[i]), 443, hint=(src << 16) | (i & 0xFFFF))
        want[i] = -1 if p is None else p
    live_want = want[n - live:]
    assert np.array_equal(out[n - live:], live_want)
    assert core.count == pool.count
