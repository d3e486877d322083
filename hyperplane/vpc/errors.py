"""Errors and warnings of the VPC loader, and the located-value reader that produces them.

Every mistake in a configuration is reported as one :class:`ConfigError` naming the file and the
JSON path of the offending value, so the CLI can print it on one line::

    vpc.json: SecurityGroups[2].IpPermissions[0].FromPort: 70000 is not a port

Non-fatal findings (unknown top-level keys, dangling route targets, ...) are
:class:`ConfigWarning` messages in the same ``file: path: message`` form.

:class:`Node` wraps one value read from a file together with where it came from; its typed
accessors (``node.str("VpcId")``, ``node.list("Subnets")``, ...) raise a located
:class:`ConfigError` when the value is missing or has the wrong type, so the loader never builds
an error message by hand for the common cases.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Iterator, Optional

_MISSING = object()


class ConfigError(ValueError):
    """A configuration mistake. ``file`` is the file as the user named it (or ``""``), ``path``
    the JSON path inside it (``Subnets[1].CidrBlock``, or ``""`` for the whole file) and
    ``message`` what is wrong. ``str(err)`` is ``"file: path: message"`` without empty parts."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(format_location(file, path, message))


class ConfigWarning(UserWarning):
    """A non-fatal finding of the loader (also collected in ``VpcModel.warnings``)."""


def format_location(file: str, path: str, message: str) -> str:
    return ": ".join(part for part in (file, path, message) if part)


def describe(value: Any) -> str:
    """A short rendering of a JSON value for messages: ``70000``, ``'tcpx'``, ``a list``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value, default=str)[:60]


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}[kind]


class Node:
    """A value from a configuration file and where it is (file, JSON path)."""

    __slots__ = ("value", "file", "path")

    def __init__(self, value: Any, file: str, path: str = "") -> None:
        self.value = value
        self.file = file
        self.path = path

    # --- locating --------------------------------------------------------------------------
    def child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str, key: str | int | None = None) -> ConfigError:
        """A :class:`ConfigError` at this node (or at its child ``key``)."""
        return ConfigError(self.file, self.path if key is None else self.child_path(key), message)

    def where(self, key: str | int | None = None) -> str:
        """``file: path`` of this node or a child, for warnings and cross-references."""
        return format_location(self.file, self.path if key is None else self.child_path(key), "")

    # --- structure -------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def child(self, key: str | int) -> "Node":
        return Node(self.value[key], self.file, self.child_path(key))

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        """The value of ``key`` checked to be of ``kind``; ``default`` when absent or null
        (a :class:`ConfigError` when absent and no default is given)."""
        self.expect(dict)
        raw = self.value.get(key)
        if raw is None:
            if default is _MISSING:
                raise self.error("required field is missing", key)
            return default
        if not _is_kind(raw, kind):
            raise self.error(f"expected {_type_name(kind)}, got {describe(raw)}", key)
        return raw

    def str(self, key: str, default: Any = _MISSING) -> Any:
        return self.get(key, str, default)

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        return self.get(key, bool, default)

    def int(self, key: str, default: Any = _MISSING) -> Any:
        """An integer; numeric strings are accepted (YAML and some tools quote numbers)."""
        self.expect(dict)
        raw = self.value.get(key)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                raise self.error(f"expected an integer, got {describe(raw)}", key) from None
        return self.get(key, int, default)

    def list(self, key: str) -> Iterator["Node"]:
        """The items of the list under ``key`` (none when the key is absent)."""
        self.expect(dict)
        raw = self.value.get(key)
        if raw is None:
            return iter(())
        if not isinstance(raw, list):
            raise self.error(f"expected a list, got {describe(raw)}", key)
        node = self.child(key)
        return (node.child(i) for i in range(len(raw)))

    def items(self) -> Iterator["Node"]:
        self.expect(list)
        return (self.child(i) for i in range(len(self.value)))

    def expect(self, kind: type) -> None:
        if not _is_kind(self.value, kind):
            raise self.error(f"expected {_type_name(kind)}, got {describe(self.value)}")

    # --- typed values ----------------------------------------------------------------------
    def network(self, key: str, version: Optional[int] = None) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """A CIDR, canonicalised as AWS does (``10.0.0.5/16`` -> ``10.0.0.0/16``)."""
        text = self.str(key)
        family = {4: "an IPv4 CIDR", 6: "an IPv6 CIDR", None: "a CIDR"}[version]
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise self.error(f"{describe(text)} is not {family}", key) from None
        if "/" not in text or (version is not None and net.version != version):
            raise self.error(f"{describe(text)} is not {family}", key)
        return net

    def address(self, key: str, version: Optional[int] = None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        text = self.str(key)
        family = {4: "an IPv4 address", 6: "an IPv6 address", None: "an IP address"}[version]
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            raise self.error(f"{describe(text)} is not {family}", key) from None
        if version is not None and ip.version != version:
            raise self.error(f"{describe(text)} is not {family}", key)
        return ip


def _is_kind(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
