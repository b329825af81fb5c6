"""Pure: what a cluster lets a job author put into pods, beyond what the CRD already checks. The
allow-lists are operator settings (priority classes, toleration and node label keys, whether
imagePullSecrets may be named, optionally which label keys); `violation` names the first field of
a pod template that breaks them, in one line, or None. Both kinds run it before creating anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from kubeforge_api.podtemplate import PodTemplate

DEFAULT_TOLERATION_KEYS: Final = ("nvidia.com/gpu",)
DEFAULT_NODE_SELECTOR_KEYS: Final = ("kubernetes.io/arch", "kubernetes.io/os", "node.kubernetes.io/instance-type",
                                     "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
                                     "nvidia.com/gpu.product")


@dataclass(frozen=True)
class PodPolicy:
    """The allow-lists; an empty `label_keys` allows every key outside the reserved domains."""

    priority_classes: frozenset[str] = frozenset()
    toleration_keys: frozenset[str] = frozenset(DEFAULT_TOLERATION_KEYS)
    node_selector_keys: frozenset[str] = frozenset(DEFAULT_NODE_SELECTOR_KEYS)
    image_pull_secrets: bool = False
    label_keys: frozenset[str] = field(default_factory=frozenset)


def _allowed(values: frozenset[str]) -> str:
    return f"allowed: {', '.join(sorted(values))}" if values else "none is allowed"


def _key_problem(path: str, keys: list[str], allowed: frozenset[str], what: str) -> str | None:
    for i, key in enumerate(keys):
        if key not in allowed:
            where = path.format(i=i, key=key)
            return f"{where}: {what} {key!r} is not allowed by the operator's settings ({_allowed(allowed)})"
    return None


def violation(tmpl: PodTemplate, policy: PodPolicy, root: str = "spec.podTemplate") -> str | None:
    """The first field of `tmpl` the policy does not allow, as `path: why`; None when all are allowed."""
    name = tmpl.priority_class_name
    if name is not None and name not in policy.priority_classes:
        return (f"{root}.priorityClassName: {name!r} is not allowed by the operator's settings "
                f"({_allowed(policy.priority_classes)})")
    if tmpl.image_pull_secrets and not policy.image_pull_secrets:
        return f"{root}.imagePullSecrets: not allowed by the operator's settings (the registry is pulled anonymously)"
    checks = (
        (f"{root}.tolerations[{{i}}].key", [t.key for t in tmpl.tolerations], policy.toleration_keys, "toleration key"),
        (f"{root}.nodeSelector", list(tmpl.node_selector), policy.node_selector_keys, "node label key"),
        (f"{root}.affinity.nodeAffinity", tmpl.affinity.node_keys() if tmpl.affinity else [],
         policy.node_selector_keys, "node label key"),
        (f"{root}.labels", list(tmpl.labels) if policy.label_keys else [], policy.label_keys, "label key"),
    )
    for path, keys, allowed, what in checks:
        problem = _key_problem(path, keys, allowed, what)
        if problem is not None:
            return problem
    return None
