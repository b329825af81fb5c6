"""A bounded, typed subset of a Kubernetes Affinity for `spec.podTemplate.affinity`: node affinity
by match expressions (required and preferred), pod affinity and anti-affinity by label selector and
topology key. Every list and string is bounded; pod terms have no `namespaces` or
`namespaceSelector`, so they only ever look at the job's own namespace. Which node label keys
node affinity may use is the operator's setting, as for nodeSelector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .labels import LabelValue, QualifiedName, key_syntax_rule
from .model import Model, Rule

NO_VALUES = ("Exists", "DoesNotExist")


def _values_rule(numeric: bool) -> Rule:
    """In/NotIn need values, Exists/DoesNotExist take none (and Gt/Lt exactly one)."""
    cel = "(self.operator in ['Exists', 'DoesNotExist']) == (!has(self.values) || size(self.values) == 0)"
    message = "operator In and NotIn need values; Exists and DoesNotExist take none"
    if numeric:
        cel += " && (!(self.operator in ['Gt', 'Lt']) || size(self.values) == 1)"
        message += "; Gt and Lt take exactly one"
    return Rule(cel, message, ".values", check=lambda r: (r.operator in NO_VALUES) == (not r.values) and
                (r.operator not in ("Gt", "Lt") or len(r.values) == 1))


class NodeSelectorRequirement(Model):
    """A node label `key`, an operator and values."""

    crd_rules = (_values_rule(numeric=True),)

    key: QualifiedName = Field(description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(description=(
        "How the key's value relates to values."))
    values: list[LabelValue] = Field(default_factory=list, max_length=32, description="The values to compare with.")


class NodeSelectorTerm(Model):
    """Requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(min_length=1, max_length=16, description=(
        "Node label requirements, all of which must hold."))


class NodeSelector(Model):
    """Terms of which at least one must hold."""

    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=8, description=(
        "At least one of these terms must hold."))


class PreferredSchedulingTerm(Model):
    """A term the scheduler prefers, with its weight."""

    weight: int = Field(ge=1, le=100, description="Weight of the preference.")
    preference: NodeSelectorTerm = Field(description="The preferred term.")


class NodeAffinity(Model):
    """Which nodes the pods may or should run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(default=None, description=(
        "Nodes the pods must run on."))
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=8, description="Nodes the pods should run on.")


class LabelSelectorRequirement(Model):
    """A pod label `key`, an operator and values."""

    crd_rules = (_values_rule(numeric=False),)

    key: QualifiedName = Field(description="The pod label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description=(
        "How the key's value relates to values."))
    values: list[LabelValue] = Field(default_factory=list, max_length=32, description="The values to compare with.")


class LabelSelector(Model):
    """Pods of the job's namespace, by labels."""

    crd_rules = (key_syntax_rule("matchLabels", "matchLabels"),)

    match_labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=16, description=(
        "Labels the pods must have."))
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16, description=(
        "Label requirements the pods must meet."))


class PodAffinityTerm(Model):
    """Pods matching `labelSelector` in the job's namespace, within `topologyKey`."""

    label_selector: LabelSelector | None = Field(default=None, description="The pods this term is about.")
    topology_key: QualifiedName = Field(description=(
        "The node label whose equal values count as co-located (e.g. kubernetes.io/hostname)."))


class WeightedPodAffinityTerm(Model):
    """A preferred pod affinity term, with its weight."""

    weight: int = Field(ge=1, le=100, description="Weight of the preference.")
    pod_affinity_term: PodAffinityTerm = Field(description="The preferred term.")


class PodAffinity(Model):
    """Pods to run near (podAffinity) or away from (podAntiAffinity)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=8, description="Terms that must hold.")
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=8, description="Terms the scheduler prefers.")


class Affinity(Model):
    """Node affinity, pod affinity and pod anti-affinity."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Which nodes the pods may or should use.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pods to run near.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pods to run away from.")

    def node_keys(self) -> list[str]:
        """Every node label key node affinity schedules by."""
        node = self.node_affinity
        if node is None:
            return []
        terms = list(node.required_during_scheduling_ignored_during_execution.node_selector_terms
                     if node.required_during_scheduling_ignored_during_execution else [])
        terms += [p.preference for p in node.preferred_during_scheduling_ignored_during_execution]
        return [r.key for t in terms for r in t.match_expressions]
