"""The compiled route tables (_core.Lpm4 / _core.Lpm6) against a brute-force reference."""
from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_core = pytest.importorskip("hyperplane._core")

MAX_VALUE = 2**31 - 1


class BruteLpm:
    """Scan every prefix, keep the longest that contains the address."""

    def __init__(self, bits: int):
        self.bits = bits
        self.routes: dict[tuple[int, int], int] = {}

    def mask(self, length: int) -> int:
        return ((1 << length) - 1) << (self.bits - length)

    def insert(self, prefix: int, length: int, value: int) -> None:
        self.routes[(prefix, length)] = value

    def remove(self, prefix: int, length: int) -> None:
        del self.routes[(prefix, length)]

    def lookup(self, addr: int) -> int:
        best_len, best = -1, 0
        for (prefix, length), value in self.routes.items():
            if addr & self.mask(length) == prefix and length > best_len:
                best_len, best = length, value
        return best


def probes_for(routes, bits: int, extra=()) -> list[int]:
    """First and last address of every prefix and their neighbours."""
    top = (1 << bits) - 1
    out = set(extra) | {0, top}
    for prefix, length in routes:
        last = prefix | ((1 << (bits - length)) - 1)
        for a in (prefix - 1, prefix, prefix + 1, last - 1, last, last + 1):
            if 0 <= a <= top:
                out.add(a)
    return sorted(out)


@st.composite
def operations(draw, bits: int):
    """A sequence of inserts (some repeated, replacing) and removals of present prefixes."""
    anchors = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=4))
    n = draw(st.integers(1, 40))
    ops, present = [], set()
    for _ in range(n):
        if present and draw(st.integers(0, 3)) == 0:
            victim = draw(st.sampled_from(sorted(present)))
            present.discard(victim)
            ops.append(("remove", victim, None))
            continue
        if present and draw(st.integers(0, 5)) == 0:
            key = draw(st.sampled_from(sorted(present)))  # re-insert: replaces the value
        else:
            base = draw(st.sampled_from(anchors))
            noise = draw(st.integers(0, (1 << draw(st.integers(0, bits))) - 1))
            length = draw(st.one_of(st.sampled_from(sorted({0, 1, bits - 1, bits, 8, 16, 24})),
                                    st.integers(0, bits)))
            mask = ((1 << length) - 1) << (bits - length)
            key = ((base ^ noise) & mask, length)
        present.add(key)
        ops.append(("insert", key, draw(st.sampled_from([1, 2, 3, MAX_VALUE]) | st.integers(1, MAX_VALUE))))
    extra = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=20))
    return ops, extra


def apply(ops, table, ref):
    for op, (prefix, length), value in ops:
        if op == "insert":
            was_new = (prefix, length) not in ref.routes
            assert table.insert(prefix, length, value) == was_new
            ref.insert(prefix, length, value)
        else:
            table.remove(prefix, length)
            ref.remove(prefix, length)


# ---------------------------------------------------------------------------- IPv4


def check_lpm4_against_brute_force(first_stride, data):
    ops, extra = data
    table, ref = _core.Lpm4(first_stride), BruteLpm(32)
    apply(ops, table, ref)
    assert len(table) == len(ref.routes)
    assert table.items() == sorted((p, n, v) for (p, n), v in ref.routes.items())
    probes = probes_for(ref.routes, 32, extra)
    expected = [ref.lookup(a) for a in probes]
    assert [table.lookup(a) for a in probes] == expected
    batch = table.lookup_batch(np.array(probes, dtype=np.uint32))
    assert batch.dtype == np.uint32
    assert batch.tolist() == expected
    assert table.lookup_batch(np.array(probes, dtype=np.uint32), prefetch=False).tolist() == expected
    assert table.lookup_batch(np.array(probes, dtype=np.uint32), prefetch=True).tolist() == expected
    # removing every prefix, in another order, empties the table and frees every chunk
    for prefix, length in sorted(ref.routes, key=lambda k: (-k[1], k[0])):
        table.remove(prefix, length)
    assert len(table) == 0 and table.chunks == 0
    assert table.lookup_batch(np.array(probes, dtype=np.uint32)).max(initial=0) == 0


@given(data=operations(32))
def test_lpm4_16_8_8_matches_brute_force(data):
    check_lpm4_against_brute_force(16, data)


@settings(max_examples=30)  # each DIR-24-8 table zeroes 80 MiB
@given(data=operations(32))
def test_lpm4_dir_24_8_matches_brute_force(data):
    check_lpm4_against_brute_force(24, data)


def test_lpm4_batch_equals_scalar_on_random_table():
    rng = np.random.default_rng(7)
    table = _core.Lpm4()
    lengths = rng.choice([8, 12, 16, 18, 20, 22, 24, 26, 28, 32], size=3000)
    for addr, length in zip(rng.integers(0, 2**32, size=3000, dtype=np.uint64).tolist(), lengths.tolist()):
        table.insert(addr & (((1 << length) - 1) << (32 - length)), length, 1 + addr % 1000)
    addrs = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    batch = table.lookup_batch(addrs)
    assert batch.tolist() == [table.lookup(a) for a in addrs.tolist()]
    assert np.count_nonzero(batch) > 0
    for prefetch in (True, False):
        assert np.array_equal(table.lookup_batch(addrs, prefetch=prefetch), batch)
    out = np.zeros(addrs.shape[0], dtype=np.uint32)
    assert table.lookup_batch(addrs, out=out) is out
    assert np.array_equal(out, batch)
    # non-contiguous input is accepted (copied)
    assert table.lookup_batch(addrs[::2]).tolist() == batch[::2].tolist()


def test_lpm4_edges():
    t = _core.Lpm4()
    assert t.lookup(0) == 0 and len(t) == 0
    assert t.insert(0, 0, 1) is True
    assert t.lookup(0) == 1 and t.lookup(2**32 - 1) == 1
    t.insert(2**32 - 1, 32, 2)
    t.insert(0, 32, 3)
    assert (t.lookup(2**32 - 1), t.lookup(2**32 - 2), t.lookup(0), t.lookup(1)) == (2, 1, 3, 1)
    assert t.insert(0, 0, 9) is False  # replaced
    assert t.lookup(5) == 9 and len(t) == 3
    assert t.get(0, 0) == 9 and t.get(0, 1) is None and t.get(0, 1, 0) == 0
    t.remove(0, 0)
    assert t.lookup(5) == 0 and t.lookup(0) == 3
    with pytest.raises(KeyError):
        t.remove(0, 0)


def test_lpm4_longest_wins_whatever_the_order():
    routes = [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.0/24", 3), ("10.1.2.128/25", 4), ("10.1.2.3/32", 5)]
    probes = {"10.9.9.9": 1, "10.1.9.9": 2, "10.1.2.9": 3, "10.1.2.200": 4, "10.1.2.3": 5, "11.0.0.0": 0}
    for order in (routes, routes[::-1], routes[2:] + routes[:2]):
        t = _core.Lpm4()
        for cidr, value in order:
            net = ipaddress.ip_network(cidr)
            t.insert(int(net.network_address), net.prefixlen, value)
        for addr, value in probes.items():
            assert t.lookup(int(ipaddress.ip_address(addr))) == value, (order, addr)


@pytest.mark.parametrize(
    "prefix,length,value",
    [(0x0A000001, 8, 1), (0, 33, 1), (0, -1, 1), (2**32, 32, 1), (-1, 32, 1), (0, 0, 0), (0, 0, 2**31), (0, 0, -3)],
)
def test_lpm4_rejects_bad_input(prefix, length, value):
    t = _core.Lpm4()
    with pytest.raises(ValueError):
        t.insert(prefix, length, value)
    assert len(t) == 0


def test_lpm4_other_checks():
    with pytest.raises(ValueError):
        _core.Lpm4(20)
    t = _core.Lpm4()
    with pytest.raises(ValueError):
        t.remove(0x0A000001, 8)  # host bits
    with pytest.raises(TypeError):
        t.lookup_batch(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError):
        t.lookup_batch(np.zeros(4, dtype=np.uint32), out=np.zeros(3, dtype=np.uint32))
    assert t.lookup_batch(np.zeros(0, dtype=np.uint32)).shape == (0,)


def test_lpm4_memory_grows_with_routes_and_shrinks_back():
    t = _core.Lpm4()
    empty = t.lookup_memory_bytes
    for i in range(100):
        t.insert(0x0A000000 | (i << 8), 24, i + 1)
    assert t.chunks == 1  # all under 10.0/16
    assert t.lookup_memory_bytes == empty + 256 * 4
    assert t.memory_bytes >= t.lookup_memory_bytes
    for i in range(100):
        t.remove(0x0A000000 | (i << 8), 24)
    assert t.chunks == 0 and t.lookup_memory_bytes == empty
    assert _core.Lpm4(24).memory_bytes > 80 * 2**20 > _core.Lpm4(16).memory_bytes
    assert not t.prefetch_pays and _core.Lpm4(24).prefetch_pays


# ---------------------------------------------------------------------------- IPv6


def split(addrs):
    hi = np.array([a >> 64 for a in addrs], dtype=np.uint64)
    lo = np.array([a & (2**64 - 1) for a in addrs], dtype=np.uint64)
    return hi, lo


@given(data=operations(128))
def test_lpm6_matches_brute_force(data):
    ops, extra = data
    table, ref = _core.Lpm6(), BruteLpm(128)
    apply(ops, table, ref)
    assert len(table) == len(ref.routes)
    assert table.items() == sorted((p, n, v) for (p, n), v in ref.routes.items())
    assert table.lengths == len({n for _, n in ref.routes})
    probes = probes_for(ref.routes, 128, extra)
    expected = [ref.lookup(a) for a in probes]
    assert [table.lookup(a) for a in probes] == expected
    assert table.lookup_batch(*split(probes)).tolist() == expected


def test_lpm6_edges_and_errors():
    t = _core.Lpm6()
    top = 2**128 - 1
    t.insert(0, 0, 1)
    t.insert(top, 128, 2)
    net = ipaddress.ip_network("2001:db8::/32")
    t.insert(int(net.network_address), 32, 3)
    t.insert(int(net.network_address) | (1 << 64), 64, 4)  # 2001:db8:0:1::/64
    assert t.lookup(top) == 2 and t.lookup(top - 1) == 1 and t.lookup(0) == 1
    assert t.lookup(int(ipaddress.ip_address("2001:db8::5"))) == 3
    assert t.lookup(int(ipaddress.ip_address("2001:db8:0:1::5"))) == 4
    t.remove(int(net.network_address), 32)
    assert t.lookup(int(ipaddress.ip_address("2001:db8::5"))) == 1
    with pytest.raises(KeyError):
        t.remove(int(net.network_address), 32)
    for bad in [(1, 127, 1), (0, 129, 1), (2**128, 128, 1), (0, 0, 0)]:
        with pytest.raises(ValueError):
            t.insert(*bad)
    with pytest.raises(ValueError):
        t.lookup(2**128)
    with pytest.raises(TypeError):
        t.lookup_batch(np.zeros(2, dtype=np.uint32), np.zeros(2, dtype=np.uint32))
    with pytest.raises(ValueError):
        t.lookup_batch(np.zeros(2, dtype=np.uint64), np.zeros(3, dtype=np.uint64))


def test_lpm6_many_prefixes_grow_and_shrink_the_hash():
    rng = np.random.default_rng(3)
    t, ref = _core.Lpm6(), BruteLpm(128)
    for i in range(2000):
        length = int(rng.choice([32, 40, 48, 56, 64, 128]))
        addr = (int(rng.integers(0, 2**63)) << 65) | int(rng.integers(0, 2**63))
        prefix = addr & ref.mask(length)
        t.insert(prefix, length, 1 + i % 50)
        ref.insert(prefix, length, 1 + i % 50)
    grown = t.memory_bytes
    for prefix, length in list(ref.routes)[::2]:
        t.remove(prefix, length)
        ref.remove(prefix, length)
    # backward-shift deletion kept every survivor reachable
    assert len(t) == len(ref.routes) and t.memory_bytes == grown
    for (prefix, length), value in ref.routes.items():
        assert t.get(prefix, length) == value
    probes = [p | 1 for p, _ in ref.routes] + [p for p, _ in ref.routes]
    assert [t.lookup(a) for a in probes] == [ref.lookup(a) for a in probes]
