"""The Helm chart under real helm (built from its Go module): lint, a rendering equal in substance to the
kustomize base, a values schema that rejects bad values, and a release's whole life in the embedded cluster.

The release here is installed with `replicas: 0`, so that it asserts what a user relies on besides a running
operator: CRDs established, the RBAC the API server evaluates, the objects created, changed and removed.
test_operator_in_cluster.py runs the chart's operator as pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, absent, helm, wait_for
from minicluster.kubeapi import ApiError

CHART = REPO / "manifests" / "chart" / "kubeforge"
SA = "kubeforge-operator"
CRDS = ("trainingjobs.kubeforge.dev", "servingjobs.kubeforge.dev")
HELM_ONLY_LABELS = ("app.kubernetes.io/instance", "helm.sh/chart")
Obj = dict[str, Any]


def parse(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def template(binary: Path, *args: str) -> list[Obj]:
    return parse(helm(binary, "template", "kubeforge", str(CHART), "--namespace=kubeforge-system", *args).stdout)


def kustomize_base() -> list[Obj]:
    """The base with the opt-in dashboard, as the chart renders with dashboard.enabled."""
    overlay = REPO / "manifests" / "overlays" / "dashboard"
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True,
                         timeout=120)
    return parse(out.stdout)


def of_kind(docs: list[Obj], *kinds: str) -> list[Obj]:
    return [d for d in docs if d["kind"] in kinds]


def rule_set(docs: list[Obj]) -> set[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    """Every (apiGroup, resource, verb) granted by the Roles and ClusterRoles, as comparable tuples."""
    return {(tuple(sorted(r["apiGroups"])), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
            for d in of_kind(docs, "ClusterRole", "Role") for r in d["rules"]}


def without_helm_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in HELM_ONLY_LABELS}


def normalised_deployment(dep: Obj) -> Obj:
    """The Deployment less what legitimately differs: Helm's release labels, the env (compared through the
    operator's own settings), an empty `args` and the pull policy Kubernetes defaults to for a tagged image."""
    dep = json.loads(json.dumps(dep))
    dep["metadata"]["labels"] = without_helm_labels(dep["metadata"]["labels"])
    spec = dep["spec"]
    spec["selector"]["matchLabels"] = without_helm_labels(spec["selector"]["matchLabels"])
    spec["template"]["metadata"]["labels"] = without_helm_labels(spec["template"]["metadata"]["labels"])
    for c in spec["template"]["spec"]["containers"]:
        c.pop("env")
        if not c.get("args", True):
            c.pop("args")
        if c.get("imagePullPolicy") == "IfNotPresent" and not c["image"].endswith(":latest"):
            c.pop("imagePullPolicy")
    return dep


def operator_settings(dep: Obj, monkeypatch: pytest.MonkeyPatch) -> Obj:
    """The settings the operator would load from this Deployment's environment."""
    from kubeforge_operator.settings import Settings

    with monkeypatch.context() as m:
        for var in [v for v in os.environ if v.startswith("KUBEFORGE_")]:
            m.delenv(var)
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            m.setenv(e["name"], e["value"] if "value" in e else json.dumps(e["valueFrom"]))
        return Settings().model_dump()


def test_lint_is_clean_with_the_chart_values_and_a_namespaced_install(helm_bin: Path) -> None:
    helm(helm_bin, "lint", "--strict", str(CHART))
    helm(helm_bin, "lint", "--strict", str(CHART), "--set=replicas=0,watchNamespaces={team-a,team-b},metricsPort=0")


def test_template_equals_the_kustomize_base_in_substance(helm_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chart, base = template(helm_bin, "--include-crds", "--set=dashboard.enabled=true"), kustomize_base()
    kinds = {d["kind"] for d in chart}
    assert kinds == {d["kind"] for d in base} - {"Namespace"}, kinds  # helm creates the release namespace
    by_name = {d["metadata"]["name"]: d for d in of_kind(base, "CustomResourceDefinition")}
    assert {d["metadata"]["name"]: d for d in of_kind(chart, "CustomResourceDefinition")} == by_name
    assert rule_set(chart) == rule_set(base)
    for docs in (chart, base):
        roles = {r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")}
        for b in of_kind(docs, "ClusterRoleBinding"):
            assert b["roleRef"]["name"] in roles or b["roleRef"]["name"] == "system:auth-delegator"
            [subject] = b["subjects"]
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == "kubeforge-system"
            assert subject["name"] in (SA, "kubeforge-dashboard")
    sa_chart, sa_base = of_kind(chart, "ServiceAccount"), of_kind(base, "ServiceAccount")
    assert [(s["metadata"]["name"], s["metadata"]["namespace"]) for s in sa_chart] == \
        [(s["metadata"]["name"], s["metadata"]["namespace"]) for s in sa_base]
    deployments = {d["metadata"]["name"]: d for d in of_kind(chart, "Deployment")}
    assert set(deployments) == {d["metadata"]["name"] for d in of_kind(base, "Deployment")}
    dep_chart, dep_base = deployments[SA], next(d for d in of_kind(base, "Deployment") if d["metadata"]["name"] == SA)
    assert normalised_deployment(dep_chart) == normalised_deployment(dep_base)
    assert operator_settings(dep_chart, monkeypatch) == operator_settings(dep_base, monkeypatch)
    policies = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    named = {"policyName": "kubeforge-job-size"}  # the chart prefixes the release name: two installs never clash
    assert [(d["kind"], {**d["spec"], **named} if "policyName" in d["spec"] else d["spec"])
            for d in of_kind(chart, *policies)] == [(d["kind"], d["spec"]) for d in of_kind(base, *policies)]
    assert not of_kind(template(helm_bin, "--set=admissionPolicy.enabled=false"), *policies)


def test_a_namespaced_install_grants_roles_only_in_the_watched_namespaces(helm_bin: Path) -> None:
    docs = template(helm_bin, "--set=watchNamespaces={team-a,team-b}")
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == SA]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    [cluster_role] = of_kind(docs, "ClusterRole")  # cluster-scoped reads only: CRDs, Nodes (node loss), Kueue's
    assert [(r["resources"], r["verbs"]) for r in cluster_role["rules"]] == [  # flavors and priority classes
        (["customresourcedefinitions"], ["get", "list", "watch"]), (["nodes"], ["get", "list", "watch"]),
        (["resourceflavors", "workloadpriorityclasses"], ["get", "list", "watch"])]
    env = {e["name"]: e.get("value") for e in of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert json.loads(env["KUBEFORGE_NAMESPACES"]) == ["team-a", "team-b"]


def test_the_node_fence_time_reaches_the_operators_settings(helm_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for args, seconds in (((), 0), (("--set=nodeFenceSeconds=30",), 30)):
        dep = next(d for d in of_kind(template(helm_bin, *args), "Deployment") if d["metadata"]["name"] == SA)
        assert operator_settings(dep, monkeypatch)["node_fence_seconds"] == seconds


@pytest.mark.parametrize(("setting", "message"), [
    ("replicas=-1", "replicas"),
    ("replicas=6", "replicas"),
    ("unknownKey=1", "unknownKey"),
    ("workers=many", "workers"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
    ("watchNamespaces={Team_A}", "watchNamespaces"),
    ("podPolicy.allowedPriorityClasses={System Critical}", "allowedPriorityClasses"),
    ("podPolicy.allowImagePullSecrets=maybe", "allowImagePullSecrets"),
    ("nodeFenceSeconds=-5", "nodeFenceSeconds"),
])
def test_values_schema_rejects_bad_values_naming_the_field(helm_bin: Path, setting: str, message: str) -> None:
    out = helm(helm_bin, "template", "kubeforge", str(CHART), f"--set={setting}", check=False)
    assert out.returncode != 0, out.stdout
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


# --- a release in the embedded cluster -------------------------------------------------------------------


@pytest.fixture
def watched(cluster: Cluster) -> Iterator[str]:
    """A namespace for a namespaced install to watch."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    cluster.client.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiError):
        cluster.client.delete(f"/api/v1/namespaces/{name}")


def can_i(cluster: Cluster, ns: str, verb: str, resource: str, where: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, f"--as=system:serviceaccount:{ns}:{SA}", "-n", where,
                          check=False)
    return out.stdout.strip() == "yes"


def release_objects(cluster: Cluster, release: str) -> list[str]:
    """Every object of the kinds the chart creates that carries the release's instance label."""
    kinds = "deployments,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings"
    out = cluster.kubectl("get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name")
    return out.stdout.split()


def deployment(cluster: Cluster, ns: str) -> Obj:
    return dict(cluster.client.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{SA}"))


def test_install_upgrade_uninstall(cluster: Cluster, helm_bin: Path, namespace: str, watched: str,
                                   tmp_path: Path) -> None:
    release = f"kf-{namespace}"
    cfg = cluster.kubeconfig
    notes = helm(helm_bin, "install", release, str(CHART), "-n", namespace, "--set=replicas=0", "--wait",
                 kubeconfig=cfg).stdout
    assert "scaled to 0" in notes and "Next steps:" in notes and "kubectl get tj,sj" in notes, notes  # NOTES.txt
    cluster.kubectl("wait", "--for=condition=Established", *(f"crd/{c}" for c in CRDS), "--timeout=60s")
    assert deployment(cluster, namespace)["spec"]["replicas"] == 0
    assert can_i(cluster, namespace, "create", "pods", "default")  # cluster-wide by default
    assert not can_i(cluster, namespace, "get", "secrets", "default")
    assert f"clusterrole.rbac.authorization.k8s.io/{release}-kubeforge-crds" in release_objects(cluster, release)
    cluster.kubectl("apply", "--server-side", "-k", str(REPO / "manifests" / "crds"))  # the CRD upgrade note's step

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"replicas": 0, "watchNamespaces": [watched],
                                      "resources": {"requests": {"cpu": "200m", "memory": "256Mi"},
                                                    "limits": {"memory": "1Gi"}}}))
    helm(helm_bin, "upgrade", release, str(CHART), "-n", namespace, "-f", str(values), "--wait", kubeconfig=cfg)
    container = deployment(cluster, namespace)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert {"name": "KUBEFORGE_NAMESPACES", "value": json.dumps([watched])} in container["env"]
    assert can_i(cluster, namespace, "create", "pods", watched)
    assert not can_i(cluster, namespace, "create", "pods", "default")
    history = json.loads(helm(helm_bin, "history", release, "-n", namespace, "-o", "json", kubeconfig=cfg).stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

    helm(helm_bin, "uninstall", release, "-n", namespace, "--wait", kubeconfig=cfg)
    wait_for(lambda: not release_objects(cluster, release), 60, what=f"release {release}'s objects to go")
    assert absent(cluster, f"/apis/apps/v1/namespaces/{namespace}/deployments/{SA}")
    assert absent(cluster, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{watched}/roles/{SA}")
    assert not can_i(cluster, namespace, "create", "pods", watched)
    for crd in CRDS:  # Helm's rule: CRDs from crds/ are installed once and never deleted
        assert cluster.client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
