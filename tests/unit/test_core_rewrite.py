"""The C twin of the reference's per-connection Rewrite (``_core.rewrite_make`` /
``rewrite_apply``, used by the core backend's slow path) gives the same tuples and bytes as
:class:`hyperplane.reference.dataplane.Rewrite` for any packet, truncated or not."""
import pytest

pytest.importorskip("hyperplane._core")

from hypothesis import given, settings, strategies as st  # noqa: E402

from hyperplane import _core, packet as pk  # noqa: E402
from hyperplane.reference.dataplane import Rewrite, build_packet  # noqa: E402

addresses4 = st.integers(0, (1 << 32) - 1)
addresses6 = st.integers(0, (1 << 128) - 1)
ports = st.integers(0, 65535)


def _both(rewrite, data: bytes, p):
    return Rewrite.apply(rewrite, data, p), _core.rewrite_apply(rewrite, data, p)


@settings(max_examples=400)
@given(st.sampled_from([6, 17]), addresses4, addresses4, ports, ports, addresses4, ports, st.binary(max_size=30),
       st.booleans(), st.booleans(), st.integers(0, 60), st.booleans())
def test_ipv4_same_tuple_and_bytes(proto, src, dst, sport, dport, new_addr, new_port, payload, dst_side,
                                   zero_udp_checksum, cut, fragment):
    data = bytearray(build_packet(4, src, dst, proto, sport, dport, payload=payload))
    if proto == 17 and zero_udp_checksum:
        data[26:28] = b"\x00\x00"  # "no checksum": stays 0
    if fragment:
        data[6:8] = b"\x00\x10"  # a non-first fragment: the address only
    data = bytes(data)
    p = pk.parse(data)
    old_addr, old_port = (dst, dport) if dst_side else (src, sport)
    made = _core.rewrite_make(4, dst_side, old_addr, new_addr, old_port, new_port)
    assert made == Rewrite.make(4, dst_side, old_addr, new_addr, old_port, new_port)
    python, c = _both(made, data, p)
    assert c == python
    # the ports and checksums cut off (as a capture's snap length does): what is left is rewritten
    short = data[: max(20, len(data) - cut)]
    if pk.parse(short).ok:
        python, c = _both(made, short, pk.parse(short))
        assert c == python


@given(st.sampled_from([6, 17]), addresses6, addresses6, ports, ports, addresses6, ports, st.binary(max_size=30))
def test_ipv6_same_as_the_python_one(proto, src, dst, sport, dport, new_addr, new_port, payload):
    data = build_packet(6, src, dst, proto, sport, dport, payload=payload)
    p = pk.parse(data)
    made = _core.rewrite_make(6, False, src, new_addr, sport, new_port)
    assert made == Rewrite.make(6, False, src, new_addr, sport, new_port)
    python, c = _both(made, data, p)
    assert c == python


def test_udp_checksum_of_zero_is_written_as_ffff():
    # find a rewrite whose result sums to zero: the C twin writes 0xFFFF as the reference does
    data = build_packet(4, 0x0A000001, 0x0A000002, 17, 1000, 53, payload=b"x")
    p = pk.parse(data)
    hc = int.from_bytes(data[26:28], "big")
    for new_port in range(65536):
        made = Rewrite.make(4, False, 0x0A000001, 0x0A000001, 1000, new_port)
        python = Rewrite.apply(made, data, p)
        if python[26:28] == b"\xff\xff" and hc != 0xFFFF:
            assert _core.rewrite_apply(made, data, p) == python
            return
    pytest.fail("no port gives a zero UDP checksum")


def test_out_of_range_values_are_refused_like_the_python_one():
    for args in [(4, False, 1, 2, 1, 70000), (4, False, 1, 2, 1, -1), (4, True, 1, 1 << 32, 1, 1)]:
        with pytest.raises(OverflowError):
            Rewrite.make(*args)
        with pytest.raises(OverflowError):
            _core.rewrite_make(*args)
