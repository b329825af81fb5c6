"""The dashboard's install manifests: read-only RBAC (the same rules in kustomize and the chart), a
restricted Deployment with a health probe, a ClusterIP Service, and the chart's opt-in value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "manifests" / "base" / "dashboard.yaml"
CHART = REPO / "manifests" / "chart" / "kubeforge"
READ = {"get", "list", "watch"}


def base_docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(BASE.read_text()) if d}


def test_dashboard_role_reads_what_the_pages_show_and_nothing_else() -> None:
    rules = base_docs()["ClusterRole"]["rules"]
    granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("kubeforge.dev", "trainingjobs"): READ, ("kubeforge.dev", "servingjobs"): READ,
                       ("", "pods"): READ, ("", "events"): READ, ("", "nodes"): READ, ("", "namespaces"): READ,
                       ("", "pods/log"): {"get"}, ("metrics.k8s.io", "nodes"): {"get", "list"},
                       ("metrics.k8s.io", "pods"): {"get", "list"}}
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
