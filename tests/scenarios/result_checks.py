"""The checks every engine result must pass, shared by the scenario test modules (a module of its
own: ``from conftest import ...`` would find another directory's conftest first)."""
from __future__ import annotations

from hyperplane.checksum import verify
from hyperplane.codes import DropReason, Verdict


def check_result(result) -> None:
    """What holds for every result: one verdict, a reason exactly when dropped, valid checksums
    on every packet it put on a tap or emitted (fragments excepted: their L4 checksum cannot be
    checked alone)."""
    assert result.verdict in (Verdict.FORWARDED, Verdict.DROPPED)
    assert (result.reason == DropReason.NONE) == (result.verdict == Verdict.FORWARDED)
    for tap, data in list(result.taps.items()) + list(result.emitted):
        assert tap in ("lambda", "eni", "internet")
        if not _is_fragment(data):
            assert verify(data), f"bad checksum on the {tap} tap"


def _is_fragment(data: bytes) -> bool:
    return data[0] >> 4 == 4 and (((data[6] << 8) | data[7]) & 0x3FFF) != 0
