"""Placement constraints: ``node.labels.disk == ssd``, ``node.role != manager``.

The grammar and matching rules are Swarm's: ``==`` or ``!=``, values compared
case-insensitively, a missing label reads as the empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..api.models import Node

_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_.]*$")
_FIXED_KEYS = {"node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"}
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool
    value: str

    def matches(self, node: Node) -> bool:
        actual = node_attribute(node, self.key)
        return (actual.casefold() == self.value.casefold()) == self.equal

    def __str__(self) -> str:
        return f"{self.key}{'==' if self.equal else '!='}{self.value}"


def parse_constraint(expr: str) -> Constraint:
    """Parse one constraint; the error says what is wrong with it."""
    for op, equal in (("==", True), ("!=", False)):
        if op in expr:
            key, _, value = expr.partition(op)
            break
    else:
        raise ValueError(f"constraint {expr!r} has no operator: use == or !=")
    key, value = key.strip(), value.strip()
    if not _KEY.match(key):
        raise ValueError(f"constraint {expr!r}: invalid key {key!r}")
    if key not in _FIXED_KEYS and not any(key.startswith(p) and len(key) > len(p) for p in _LABEL_PREFIXES):
        raise ValueError(
            f"constraint {expr!r}: unknown key {key!r} (use node.id, node.hostname, node.role, "
            "node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>)"
        )
    if not value or "==" in value or "!=" in value:
        raise ValueError(f"constraint {expr!r}: invalid value {value!r}")
    return Constraint(key, equal, value)


def parse_constraints(exprs: list[str] | None) -> list[Constraint]:
    return [parse_constraint(e) for e in exprs or []]


def node_value(node: Node, key: str) -> str | None:
    """What a constraint or spread preference reads from a node; None where the node lacks that label."""
    fixed = {
        "node.id": node.ID,
        "node.hostname": node.Description.Hostname,
        "node.role": node.Spec.Role,
        "node.platform.os": node.Description.Platform.OS,
        "node.platform.arch": node.Description.Platform.Architecture,
    }
    if key in fixed:
        return fixed[key]
    for prefix, labels in (("node.labels.", node.Spec.Labels), ("engine.labels.", node.Description.Engine.Labels)):
        if key.startswith(prefix):
            return labels.get(key[len(prefix):])
    return None


def node_attribute(node: Node, key: str) -> str:
    """As constraints see it: a missing label reads as the empty string, as in Swarm."""
    value = node_value(node, key)
    return "" if value is None else value
