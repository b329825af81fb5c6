"""The install manifests: one CRD source, least-privilege RBAC, a restricted operator Deployment."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def rendered(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_crds_are_byte_identical_to_the_single_source() -> None:
    source = sorted(p.name for p in (MANIFESTS / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    chart = sorted(p.name for p in (MANIFESTS / "chart" / "kubeforge" / "crds").glob("*.yaml"))
    assert source == chart
    for name in source:
        chart_copy = MANIFESTS / "chart" / "kubeforge" / "crds" / name
        assert (MANIFESTS / "crds" / name).read_bytes() == chart_copy.read_bytes()


def test_rbac_is_least_privilege() -> None:
    for docs in (rendered(MANIFESTS / "base"), rendered(MANIFESTS / "overlays" / "kind")):
        rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
        assert rules
        for r in rules:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in r[key], r
            assert not {"secrets", "pods/exec", "pods/attach", "serviceaccounts/token"} & set(r["resources"]), r
            assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), r


def test_operator_deployment_is_single_recreate_and_restricted() -> None:
    dep = next(d for d in rendered(MANIFESTS / "base") if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "kubeforge-operator")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_kind_overlay_never_pulls() -> None:
    for dep in (d for d in rendered(MANIFESTS / "overlays" / "kind") if d["kind"] == "Deployment"):
        assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never", dep["metadata"]


def test_samples_are_valid_kubeforge_objects() -> None:
    from kubeforge_api.servingjob import ServingJob
    from kubeforge_api.trainingjob import TrainingJob

    models = {"TrainingJob": TrainingJob, "ServingJob": ServingJob}
    samples = sorted((MANIFESTS / "samples").glob("*.yaml"))
    assert samples
    for s in samples:
        for doc in yaml.safe_load_all(s.read_text()):
            assert doc["kind"] in (*models, "PersistentVolumeClaim"), s
            if doc["kind"] in models:
                models[doc["kind"]].model_validate(doc)
