"""What a job author may put into pods: reserved keys and toleration shapes are refused by the
models (the CRD states the same rules), the operator's allow-lists fail a TrainingJob and hold a
ServingJob with `PodPolicyViolation` naming the field, and no user label can steer selection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubeforge_api.podtemplate import PodTemplate
from kubeforge_api.servingjob import ServingJobSpec
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.plan import ObjectRef, World
from kubeforge_operator.podpolicy import PodPolicy, violation
from kubeforge_operator.render.servingjob import ModelVolume, render_deployment, render_pdb, render_service
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.render.trainingjob import render_service as render_headless
from kubeforge_operator.servingjob.context import Config as ServingConfig
from kubeforge_operator.servingjob.decide import decide as decide_serving
from kubeforge_operator.settings import Settings
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide
from pydantic import ValidationError

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
REF = ObjectRef("demo", "ml", "u", 1)
OWN_DOMAIN = "kubeforge.dev/"


def template(**fields: Any) -> PodTemplate:
    return PodTemplate.model_validate(fields)


@pytest.mark.parametrize("bad", [
    {"labels": {"kubeforge.dev/job-name": "other"}},
    {"labels": {"app.kubernetes.io/managed-by": "kubeforge-operator"}},
    {"labels": {"node-role.kubernetes.io/control-plane": ""}},
    {"annotations": {"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}},
    {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
    {"annotations": {"kubeforge.dev/spec-hash": "x"}},
    {"annotations": {"x.k8s.io/anything": "x"}},
    {"labels": {"bad key": "x"}},
    {"labels": {"app": "not a label value"}},
    {"labels": {"a" * 64: "x"}},
    {"tolerations": [{"operator": "Exists"}]},
    {"tolerations": [{"key": "", "operator": "Exists"}]},
    {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"}]},
    {"tolerations": [{"key": "nvidia.com/gpu", "tolerationSeconds": 5}]},
    {"imagePullSecrets": [{"name": "Not_A_Name"}]},
    {"priorityClassName": "Has Spaces"},
])
def test_what_the_pod_api_or_the_reserved_domains_refuse_is_refused_by_the_models(bad: Obj) -> None:
    with pytest.raises(ValidationError):
        template(**bad)


def test_ordinary_settings_pass_the_models() -> None:
    t = template(labels={"team": "a", "example.com/cost-center": "42"}, annotations={"example.com/note": "hi there"},
                 tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 nodeSelector={"kubernetes.io/arch": "amd64"})
    assert violation(t, PodPolicy()) is None


@pytest.mark.parametrize(("fields", "policy", "field"), [
    ({"priorityClassName": "system-node-critical"}, PodPolicy(), "spec.podTemplate.priorityClassName"),
    ({"priorityClassName": "high"}, PodPolicy(priority_classes=frozenset({"low"})),
     "spec.podTemplate.priorityClassName"),
    ({"tolerations": [{"key": "nvidia.com/gpu"}, {"key": "dedicated", "operator": "Exists"}]}, PodPolicy(),
     "spec.podTemplate.tolerations[1].key"),
    ({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}, PodPolicy(), "spec.podTemplate.nodeSelector"),
    ({"imagePullSecrets": [{"name": "registry"}]}, PodPolicy(), "spec.podTemplate.imagePullSecrets"),
    ({"labels": {"app": "web"}}, PodPolicy(label_keys=frozenset({"team"})), "spec.podTemplate.labels"),
])
def test_the_allow_lists_name_the_field_in_one_line(fields: Obj, policy: PodPolicy, field: str) -> None:
    problem = violation(template(**fields), policy)
    assert problem is not None and problem.startswith(f"{field}: ") and "\n" not in problem, problem


@pytest.mark.parametrize(("fields", "policy"), [
    ({"priorityClassName": "high"}, PodPolicy(priority_classes=frozenset({"high"}))),
    ({"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
     PodPolicy(toleration_keys=frozenset({"dedicated"}))),
    ({"imagePullSecrets": [{"name": "registry"}]}, PodPolicy(image_pull_secrets=True)),
    ({"labels": {"team": "a"}}, PodPolicy(label_keys=frozenset({"team"}))),
])
def test_what_the_settings_allow_passes(fields: Obj, policy: PodPolicy) -> None:
    assert violation(template(**fields), policy) is None


def job(pod_template: Obj) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {"nodes": 2, "command": ["x"], "podTemplate": pod_template}, "status": {}}


def test_a_trainingjob_that_breaks_the_policy_fails_before_any_pod_exists() -> None:
    plan = decide(World(job({"priorityClassName": "system-node-critical"}), {}, frozenset(), NOW), Config("img"))
    failed = next(c for c in plan.status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "PodPolicyViolation"
    assert failed["message"].startswith("spec.podTemplate.priorityClassName: 'system-node-critical'")
    assert not plan.create
    assert ("Warning", "PodPolicyViolation") in [(e.type, e.reason) for e in plan.events]


def test_a_running_trainingjob_loses_its_pods_when_the_policy_forbids_them() -> None:
    spec = TrainingJobSpec.model_validate(job({"priorityClassName": "high"})["spec"])
    pods = [{**render_pod(REF, spec, m, 0, "img", "1Gi"), "status": {"phase": "Running"}} for m in members(spec)]
    for i, p in enumerate(pods):
        p["metadata"]["uid"] = f"uid-{i}"
    plan = decide(World(job({"priorityClassName": "high"}), {"Pod": pods}, frozenset(), NOW), Config("img"))
    assert plan.status["reason"] == "PodPolicyViolation"
    assert {c.name for c in plan.delete} == {"demo-node-0", "demo-node-1"}


def test_local_runs_have_no_allow_lists() -> None:
    plan = decide(World(job({"priorityClassName": "high"}), {}, frozenset(), NOW), Config("img", pod_policy=None))
    assert plan.status.get("reason") != "PodPolicyViolation" and plan.create


def serving(pod_template: Obj) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "pvc://models/m"}, "podTemplate": pod_template}, "status": {}}


def test_a_servingjob_that_breaks_the_policy_rolls_nothing_out() -> None:
    plan = decide_serving(World(serving({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}), {},
                                frozenset(), NOW), ServingConfig("img"))
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodPolicyViolation")
    assert ready["message"].startswith("spec.podTemplate.tolerations[0].key: toleration key 'dedicated'")
    assert not plan.create and not plan.update
    assert ("Warning", "PodPolicyViolation") in [(e.type, e.reason) for e in plan.events]


def test_operator_labels_win_and_selection_uses_only_operator_keys() -> None:
    """A user label can never replace an operator label, and every selector the operator writes uses
    keys under kubeforge.dev/, which the models refuse in user labels."""
    t = {"labels": {"app": "web", "team": "a"}}
    tj = TrainingJobSpec.model_validate(job(t)["spec"])
    sj = ServingJobSpec.model_validate(serving(t)["spec"])
    pod = render_pod(REF, tj, members(tj)[0], 0, "img", "1Gi")
    dep = render_deployment(REF, sj, "main", ModelVolume("models", "m"), "img", 1)
    for labels in (pod["metadata"]["labels"], dep["spec"]["template"]["metadata"]["labels"]):
        assert labels["app"] == "web" and labels["app.kubernetes.io/managed-by"] == "kubeforge-operator"
    selectors = [render_headless(REF)["spec"]["selector"], render_service(REF)["spec"]["selector"],
                 render_pdb(REF)["spec"]["selector"]["matchLabels"], dep["spec"]["selector"]["matchLabels"]]
    assert all(key.startswith(OWN_DOMAIN) for s in selectors for key in s), selectors


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFORGE_ALLOWED_PRIORITY_CLASSES", json.dumps(["batch-low"]))
    monkeypatch.setenv("KUBEFORGE_ALLOW_IMAGE_PULL_SECRETS", "true")
    policy = Settings().pod_policy()
    assert policy.priority_classes == {"batch-low"} and policy.image_pull_secrets
    assert policy.toleration_keys == {"nvidia.com/gpu"} and "kubernetes.io/arch" in policy.node_selector_keys
    assert Settings().policy().pod_policy == policy


AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]}]}},
    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname",
         "labelSelector": {"matchLabels": {"kubeforge.dev/job-name": "demo"}}}]}}


def test_a_typed_affinity_reaches_the_pods_as_written() -> None:
    tj = TrainingJobSpec.model_validate(job({"affinity": AFFINITY})["spec"])
    pod = render_pod(REF, tj, members(tj)[0], 0, "img", "1Gi")
    assert pod["spec"]["affinity"] == AFFINITY
    assert violation(tj.pod_template, PodPolicy()) is None


@pytest.mark.parametrize("bad", [
    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "k", "operator": "In"}]}]}}},
    {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1", "2"]}]}}]}},
    {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "namespaces": ["team-b"]}]}},
    {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"bad key": "x"}}}]}},
    {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname"}] * 9}},
    {"nodeAffinity": {"unknown": {}}},
])
def test_affinity_outside_the_bounded_subset_is_refused(bad: Obj) -> None:
    with pytest.raises(ValidationError):
        template(affinity=bad)


def test_node_affinity_keys_follow_the_node_selector_allow_list() -> None:
    t = template(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}]}})
    problem = violation(t, PodPolicy())
    assert problem is not None and problem.startswith("spec.podTemplate.affinity.nodeAffinity: node label key "
                                                      "'node-role.kubernetes.io/control-plane'"), problem
