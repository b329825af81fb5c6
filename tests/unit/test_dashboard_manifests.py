"""The dashboard's install manifests: opt-in (a kustomize component the base leaves out, a chart value
off by default), read-only RBAC (the same rules in kustomize and the chart) plus the right to check
users' tokens and rights, sign-in on, a NetworkPolicy, a restricted Deployment with a health probe and
a ClusterIP Service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "manifests" / "components" / "dashboard"
BASE = COMPONENT / "dashboard.yaml"
CHART = REPO / "manifests" / "chart" / "kubeforge"
READ = {"get", "list", "watch"}


def base_docs() -> dict[str, dict[str, Any]]:
    """The component's objects by kind (the binding that grants the read rights for ClusterRoleBinding)."""
    docs = [d for d in yaml.safe_load_all(BASE.read_text()) if d]
    return {d["kind"]: d for d in docs if not d["metadata"]["name"].endswith("auth-delegator")}


def kustomized(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "manifests" / path)], capture_output=True, text=True,
                         check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_base_installs_no_dashboard_and_an_overlay_adds_it() -> None:
    assert not [d for d in kustomized("base") if "dashboard" in d["metadata"]["name"]]
    ours = {(d["kind"], d["metadata"]["name"]) for d in kustomized("overlays/dashboard")
            if "dashboard" in d["metadata"]["name"]}
    assert ours == {("ServiceAccount", "kubeforge-dashboard"), ("ClusterRole", "kubeforge-dashboard"),
                    ("ClusterRoleBinding", "kubeforge-dashboard"),
                    ("ClusterRoleBinding", "kubeforge-dashboard-auth-delegator"), ("Deployment", "kubeforge-dashboard"),
                    ("Service", "kubeforge-dashboard"), ("NetworkPolicy", "kubeforge-dashboard")}


def test_users_sign_in_and_see_what_their_own_rbac_allows() -> None:
    docs = [d for d in yaml.safe_load_all(BASE.read_text()) if d]
    (delegator,) = [d for d in docs if d["metadata"]["name"].endswith("delegator")]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"  # create tokenreviews and subjectaccessreviews
    assert delegator["subjects"] == [{"kind": "ServiceAccount", "name": "kubeforge-dashboard",
                                      "namespace": "kubeforge-system"}]
    (c,) = base_docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "KUBEFORGE_DASHBOARD_AUTH", "value": "token"} in c["env"]
    chart = (CHART / "templates" / "dashboard.yaml").read_text()
    assert "{name: KUBEFORGE_DASHBOARD_AUTH, value: {{ .Values.dashboard.auth | quote }}}" in chart
    assert yaml.safe_load((CHART / "values.yaml").read_text())["dashboard"]["auth"] == "token"


def test_a_network_policy_lets_in_only_the_dashboard_port_and_out_only_what_it_needs() -> None:
    (policy,) = [d for d in kustomized("overlays/dashboard") if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kubeforge-dashboard"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": 8501, "protocol": "TCP"}] and ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubeforge.dev/dashboard-access": "true"}}}]
    ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 6443, 8080]
    servers = next(rule for rule in spec["egress"] if "to" in rule)
    assert servers["to"][0]["podSelector"]["matchExpressions"] == [{"key": "kubeforge.dev/serving-name",
                                                                     "operator": "Exists"}]


def test_dashboard_role_reads_what_the_pages_show_and_nothing_else() -> None:
    rules = base_docs()["ClusterRole"]["rules"]
    granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("kubeforge.dev", "trainingjobs"): READ, ("kubeforge.dev", "servingjobs"): READ,
                       ("", "pods"): READ, ("", "events"): READ, ("", "nodes"): READ, ("", "namespaces"): READ,
                       ("", "pods/log"): {"get"}, ("metrics.k8s.io", "nodes"): {"get", "list"},
                       ("metrics.k8s.io", "pods"): {"get", "list"}, ("kueue.x-k8s.io", "clusterqueues"): READ,
                       ("kueue.x-k8s.io", "localqueues"): READ}
    binding = base_docs()["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubeforge-dashboard",
                                    "namespace": "kubeforge-system"}]


def test_chart_grants_the_same_rules_behind_its_value() -> None:
    template = (CHART / "templates" / "dashboard.yaml").read_text()
    assert template.startswith("{{- if .Values.dashboard.enabled }}") and template.rstrip().endswith("{{- end }}")
    chart_rules = yaml.safe_load(re.search(r"\nrules:\n(.*?)\n---", template, re.S).group(1))  # type: ignore[union-attr]
    assert chart_rules == base_docs()["ClusterRole"]["rules"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["dashboard"]["enabled"] is False


def test_dashboard_deployment_is_restricted_and_probed() -> None:
    docs = base_docs()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["serviceAccountName"] == "kubeforge-dashboard"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert {"name": "KUBEFORGE_DASHBOARD_SOURCE", "value": "kubernetes"} in c["env"]
    svc = docs["Service"]["spec"]
    assert svc["type"] == "ClusterIP" and svc["ports"][0]["targetPort"] == "http"
