"""Idempotent helpers for Kubernetes-style conditions: setting one that did not change leaves
`lastTransitionTime` (and the list) exactly as it was."""

from __future__ import annotations

from typing import Any

Condition = dict[str, Any]


def find(conditions: list[Condition], ctype: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def is_true(conditions: list[Condition], ctype: str) -> bool:
    c = find(conditions, ctype)
    return c is not None and c.get("status") == "True"


def set_condition(conditions: list[Condition], ctype: str, status: bool, reason: str, message: str,
                  now: str, generation: int | None = None) -> list[Condition]:
    """A new list with `ctype` set; the transition time moves only when the status flips. Without
    `generation` the condition carries no observedGeneration of its own (the status's says it)."""
    value = "True" if status else "False"
    old = find(conditions, ctype)
    changed = old is None or old.get("status") != value
    new = {
        "type": ctype, "status": value, "reason": reason, "message": message[:1024],
        "lastTransitionTime": now if changed or old is None else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    if old == new:
        return conditions
    return [new if c.get("type") == ctype else c for c in conditions] if old else [*conditions, new]
