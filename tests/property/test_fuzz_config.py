"""Fuzzing the configuration loader with mutated AWS JSON (issue 8).

Starting from real exports (``pcaps/demo/vpc/`` and the bundled ``hyperplane/data/example-vpc/``)
and from generated documents, one value somewhere in one file is deleted, retyped, replaced or
duplicated (or the file's text is cut short). ``load_vpc`` must return a valid model or raise a
:class:`ConfigError` whose message names the file and, for a problem inside it, the JSON path;
never another exception.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperplane.vpc.errors import ConfigError
from hyperplane.vpc.loader import load_vpc
from hyperplane.vpc.model import VpcModel
from hyperplane.testing import vpcs

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SOURCES = [os.path.join(ROOT, "pcaps", "demo", "vpc"), os.path.join(ROOT, "hyperplane", "data", "example-vpc")]


def _read(folder: str) -> dict[str, object]:
    return {name: json.load(open(os.path.join(folder, name), encoding="utf-8"))
            for name in sorted(os.listdir(folder)) if name.endswith(".json")}


EXPORTS = [_read(f) for f in SOURCES if os.path.isdir(f)]

#: Values that break AWS fields in every way we could think of.
BAD_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 70000, 2**63, 1.5, "", "x", "tcpx", "-2", "10.0.0.0/33",
                     "10.0.0.300", "::/129", "999.1.1.1/8", "sg-missing", "subnet-missing", "pl-missing",
                     "igw-missing", "nat-missing", "vpc-missing", "blackhole", "deleted", [], {}, [None], {"x": 1}]),
    st.text(max_size=12), st.integers(), st.lists(st.integers(), max_size=2),
)


def _paths(value, path=()):
    """Every (path, value) inside a JSON value."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, path + (i,))


def _parent(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, files: dict):
    files = copy.deepcopy(files)
    name = draw(st.sampled_from(sorted(files)))
    kind = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "truncate-text", "root"]))
    if kind == "root":
        files[name] = draw(BAD_VALUES)
        return files, name, kind
    if kind == "truncate-text":
        text = json.dumps(files[name])
        files[name] = text[: draw(st.integers(0, max(0, len(text) - 1)))]
        return files, name, kind
    paths = [p for p, _ in _paths(files[name]) if p]
    if not paths:
        return files, name, "none"
    path = draw(st.sampled_from(paths))
    parent = _parent(files[name], path)
    key = path[-1]
    if kind == "replace":
        parent[key] = draw(BAD_VALUES)
    elif kind == "delete":
        del parent[key]
    elif isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))  # the same object twice
    else:
        parent[key] = [parent[key], parent[key]]
    return files, name, kind


def load(files: dict):
    with tempfile.TemporaryDirectory(prefix="hyperplane-fuzz-") as folder:
        for name, content in files.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as out:
                out.write(content if isinstance(content, str) else json.dumps(content))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return load_vpc(folder), None
            except ConfigError as err:
                return None, err


def check(files: dict, name: str, kind: str) -> None:
    model, err = load(files)
    if err is None:
        assert isinstance(model, VpcModel)
        return
    message = str(err)
    assert "Traceback" not in message and "\n" not in message, message
    assert os.path.basename(err.file) in files, f"the error names no file of the configuration: {message}"
    assert message.startswith(err.file), message
    if kind in ("replace", "delete", "duplicate") and os.path.basename(err.file) == name:
        assert err.path, f"an error inside {name} must give the JSON path: {message}"


@pytest.mark.skipif(not EXPORTS, reason="no example export found")
@given(st.data())
def test_mutated_exports_load_or_fail_with_a_located_message(data):
    files, name, kind = data.draw(mutated(data.draw(st.sampled_from(EXPORTS))))
    check(files, name, kind)


@given(st.data())
def test_mutated_generated_documents_load_or_fail_with_a_located_message(data):
    document = data.draw(vpcs(subnets=(1, 3), security_groups=(1, 3)))
    files = {f"{key[0].lower()}{key[1:]}.json": {key: value} for key, value in document.items()}
    files, name, kind = data.draw(mutated(files))
    check(files, name, kind)
