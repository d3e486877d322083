"""docs/replay.md keeps up with the code: every drop reason and every replay option is documented,
and nothing that does not exist is."""
from __future__ import annotations

import os
import re

from e2e_support import ROOT, cli
from hyperplane.codes import DROP_REASON_LABELS

DOC = os.path.join(ROOT, "docs", "replay.md")


def _section(title: str) -> str:
    text = open(DOC, encoding="utf-8").read()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_every_drop_reason_has_exactly_one_line():
    rows = re.findall(r"^\| `([a-z-]+)` \|", _section("7. Drop reasons"), re.M)
    assert sorted(rows) == sorted(DROP_REASON_LABELS)
    assert len(rows) == len(set(rows))


def test_every_replay_option_is_in_the_table():
    run = cli("replay", "--help")
    assert run.exit_code == 0
    options = set(re.findall(r"(--[a-z][a-z-]+)", run.stdout)) - {"--help"}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", _section("3. Run it"), re.M))
    assert options == documented
