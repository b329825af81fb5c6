"""Pure pieces every kind's rendering shares: the controller owner reference, the restricted
security contexts (Pod Security "restricted"), and the spec-hash annotation by which the core
tells whether a child's rendered form changed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubeforge_api.constants import ANNOTATION_SPEC_HASH, API_VERSION

from ..plan import ObjectRef

Obj = dict[str, Any]
RUN_AS = 1000  # the images' unprivileged user and group
SECCOMP_DEFAULT = {"type": "RuntimeDefault"}


def owner_reference(ref: ObjectRef, kind: str) -> Obj:
    """The controller reference: the garbage collector removes the child with its owner."""
    return {"apiVersion": API_VERSION, "kind": kind, "name": ref.name, "uid": ref.uid,
            "controller": True, "blockOwnerDeletion": True}


def restricted_container_security() -> Obj:
    """A container's securityContext that Pod Security's `restricted` level admits."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "seccompProfile": dict(SECCOMP_DEFAULT)}


def restricted_pod_security() -> Obj:
    """A pod's securityContext that Pod Security's `restricted` level admits (volumes owned by the user)."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": dict(SECCOMP_DEFAULT)}


def with_hash(obj: Obj) -> Obj:
    """`obj` with the hash of its rendered form as an annotation."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"]
    obj["metadata"] = {**meta, "annotations": {**meta.get("annotations", {}), ANNOTATION_SPEC_HASH: digest}}
    return obj


def spec_hash(obj: Obj) -> str | None:
    """The spec-hash annotation of a rendered or observed child."""
    return (obj["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
