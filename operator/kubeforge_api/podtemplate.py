"""The pod settings a job author may choose (`spec.podTemplate` of both kinds), bounded and checked
at admission as the pod API would check them later: label and annotation keys are qualified names
outside the reserved domains (`kubernetes.io`, `k8s.io`, `kubeforge.dev` and their subdomains, which
hold AppArmor, seccomp and every key the operator selects pods by), label values are label values,
and a toleration names its key. Which priority classes, toleration and node keys a cluster allows
is the operator's setting, checked when it reconciles (kubeforge_operator.podpolicy)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .affinity import Affinity
from .labels import LabelValue, QualifiedName, key_syntax_rule, reserved_keys_rule
from .model import Model, Rule

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class LocalObjectReference(Model):
    """A Secret of the job's namespace that holds registry credentials."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")


class Toleration(Model):
    """A Kubernetes toleration: lets pods run on nodes with a matching taint. It must name its key
    (one without tolerates every taint, the control plane's included); which keys are allowed is an
    operator setting (by default only nvidia.com/gpu)."""

    crd_rules = (
        Rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || size(self.value) == 0",
             "a toleration with operator Exists must not have a value", ".value",
             check=lambda t: t.operator != "Exists" or not t.value),
        Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerationSeconds needs effect NoExecute", ".tolerationSeconds",
             check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute"),
    )

    key: QualifiedName = Field(description="Taint key (required: a toleration without one matches every taint).")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description=(
        "How key and value match (Equal when omitted)."))
    value: LabelValue | None = Field(default=None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description=(
        "Taint effect to match; omitted, it matches every effect."))
    toleration_seconds: int | None = Field(default=None, ge=0, le=31_536_000, description=(
        "With effect NoExecute: how long the pod stays bound after the taint appears."))


class PodTemplate(Model):
    """The only pod settings a user chooses; nothing else is accepted (no securityContext, volumes,
    hostNetwork or serviceAccountName), so creating a job never grants privileged pods. The
    operator's own labels always win over these, and it selects pods by its own keys only."""

    crd_rules = (key_syntax_rule("labels", "label"), reserved_keys_rule("labels", "label"),
                 key_syntax_rule("annotations", "annotation"), reserved_keys_rule("annotations", "annotation"))

    labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=32, description=(
        "Extra labels on every pod; keys under kubernetes.io/, k8s.io/ and kubeforge.dev/ are reserved."))
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=32, description=(
            "Extra annotations on every pod; keys under kubernetes.io/, k8s.io/ and kubeforge.dev/ (AppArmor, "
            "seccomp...) are reserved."))
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=32, description=(
        "Node labels the pods must be scheduled on; the keys the operator allows (a setting)."))
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description=(
        "PriorityClass of the pods; only those the operator allows (a setting; by default none)."))
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=8, description=(
        "Secrets for pulling the image; only when the operator allows them (a setting; by default not)."))
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description=(
        "Tolerations of the pods, with the keys the operator allows (GPU pods also get nvidia.com/gpu)."))
    affinity: Affinity | None = Field(default=None, description=(
        "Node affinity, pod affinity and anti-affinity (a bounded subset of a Kubernetes Affinity: match "
        "expressions, label selectors and topology keys; pod terms look at the job's own namespace)."))

    def pod_spec_fields(self, extra_tolerations: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
        """The pod spec fields this template sets (empty ones left out), tolerations after `extra_tolerations`."""
        fields: dict[str, Any] = {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [t.dump() for t in self.tolerations] + list(extra_tolerations),
            "affinity": self.affinity.model_dump(by_alias=True, exclude_defaults=True, mode="json")
            if self.affinity else None,
            "priorityClassName": self.priority_class_name,
            "imagePullSecrets": [s.dump() for s in self.image_pull_secrets],
        }
        return {k: v for k, v in fields.items() if v}
