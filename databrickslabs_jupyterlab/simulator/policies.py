"""Cluster policies of the simulated workspace: definitions and their validation.

A policy definition maps attribute paths of the cluster spec (``autotermination_minutes``,
``data_security_mode``, ``ssh_public_keys.*`` for every element of a list) to a rule. The rule
types modelled are ``forbidden``, ``fixed``, ``allowlist`` and ``unlimited``; a cluster create or
edit that breaks a rule is refused with 400 ``INVALID_PARAMETER_VALUE`` and one
``Validation failed for <path>, <reason>`` clause per broken rule, joined by ``; `` (the shape
Databricks answers; the ``forbidden`` and ``allowlist`` reasons are the simulator's wording).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RULE_TYPES = ("forbidden", "fixed", "allowlist", "unlimited")

#: A policy forbidding SSH keys on its clusters (the case that matters to the product).
NO_SSH_KEYS = {"ssh_public_keys.*": {"type": "forbidden", "hidden": True}}


@dataclass
class ClusterPolicy:
    policy_id: str
    name: str
    definition: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "name": self.name,
            "definition": json.dumps(self.definition),
            "creator_user_name": "admin@example.com",
            "created_at_timestamp": 0,
            "is_default": False,
        }


def validate_definition(definition: Any) -> dict[str, dict[str, Any]]:
    """The definition as a dict of rules, or ValueError naming what is wrong."""
    if not isinstance(definition, dict):
        raise ValueError("a policy definition is a JSON object of attribute paths to rules")
    for path, rule in definition.items():
        if not isinstance(rule, dict) or rule.get("type") not in RULE_TYPES:
            raise ValueError(f"policy rule for {path} needs a type, one of {', '.join(RULE_TYPES)}")
        if rule["type"] == "fixed" and "value" not in rule:
            raise ValueError(f"policy rule for {path} of type fixed needs a value")
        if rule["type"] == "allowlist" and not isinstance(rule.get("values"), list):
            raise ValueError(f"policy rule for {path} of type allowlist needs values")
    return definition


def _values(spec: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(concrete path, value) for each value the path names in the spec; ``*`` walks a list."""
    found: list[tuple[str, Any]] = [("", spec)]
    for part in path.split("."):
        step: list[tuple[str, Any]] = []
        for prefix, node in found:
            here = f"{prefix}.{part}" if prefix else part
            if part == "*" and isinstance(node, list):
                step.extend((f"{prefix}.{i}", item) for i, item in enumerate(node))
            elif isinstance(node, dict) and node.get(part) not in (None, "", [], {}):
                step.append((here, node[part]))
        found = step
    return found


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def violations(definition: dict[str, dict[str, Any]], spec: dict[str, Any]) -> list[str]:
    """One ``Validation failed for ...`` clause per rule the spec breaks."""
    found = []
    for path, rule in definition.items():
        kind = rule["type"]
        present = _values(spec, path)
        if kind == "forbidden":
            found += [
                f"Validation failed for {p}, the value must not be present" for p, _ in present
            ]
        elif kind == "fixed":
            wanted = rule["value"]
            if not present and not rule.get("isOptional"):
                found.append(f"Validation failed for {path}, the value must be present")
            found += [
                f'Validation failed for {p}, the value must be {_shown(wanted)} (is "{_shown(v)}")'
                for p, v in present
                if v != wanted
            ]
        elif kind == "allowlist":
            allowed = rule["values"]
            found += [
                f"Validation failed for {p}, the value must be one of "
                f'{", ".join(_shown(a) for a in allowed)} (is "{_shown(v)}")'
                for p, v in present
                if v not in allowed
            ]
    return found
