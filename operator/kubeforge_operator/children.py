"""Pure, for every kind: the children that should exist against those that do. A missing child
is created (unless created already and not yet seen), a child whose rendered form changed (its
spec-hash annotation differs) is updated, and an owned child nobody wants any more is deleted."""

from __future__ import annotations

from collections.abc import Iterable

from .plan import ChildRef, Obj, Plan, World
from .render.common import spec_hash

ChildKey = tuple[str, str]  # (kind, name)


def diff_children(plan: Plan, world: World, want: Iterable[Obj], kinds: Iterable[str],
                  keep: frozenset[str] = frozenset()) -> None:
    """Amend `plan` so the children of `kinds` become `want`; kinds in `keep` are never deleted."""
    have = {(kind, o["metadata"]["name"]): o for kind in kinds for o in world.owned(kind)}
    wanted: dict[ChildKey, Obj] = {(o["kind"], o["metadata"]["name"]): o for o in want}
    for ckey, obj in wanted.items():
        current = have.get(ckey)
        if current is None:
            if ckey not in world.expected:
                plan.create.append(obj)
        elif spec_hash(current) != spec_hash(obj):
            plan.update.append(obj)
    for (kind, name), obj in have.items():
        if (kind, name) not in wanted and kind not in keep:
            plan.delete.append(ChildRef(kind, name, obj["metadata"].get("uid", "")))
