"""Everything a job author writes is typed and bounded: no free-form object is left in either
kind's spec, every string, list and map under it has a length limit, and the install carries the
admission policy that caps the sum of a job's free text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeforge_api.codegen import KINDS
from kubeforge_api.crd import CrdKind, generate_crd

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def nodes(node: Obj, path: str) -> list[tuple[str, Obj]]:
    out = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        out += nodes(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        if isinstance(node.get(key), dict):
            out += nodes(node[key], path + suffix)
    return out


def spec_nodes(kind: CrdKind) -> list[tuple[str, Obj]]:
    committed = yaml.safe_load((REPO / "manifests" / "crds" / f"{kind.group}_{kind.plural}.yaml").read_text())
    assert committed == generate_crd(kind)
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return nodes(schema["properties"]["spec"], "spec")


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_no_free_form_object_is_left_in_the_spec(kind: CrdKind) -> None:
    free = [path for path, node in spec_nodes(kind) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert free == [], f"{kind.kind}: free-form fields {free}"


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_every_string_list_and_map_in_the_spec_is_bounded(kind: CrdKind) -> None:
    unbounded = []
    for path, node in spec_nodes(kind):
        bound = {"string": ("maxLength", "enum", "pattern"), "array": ("maxItems",)}.get(node.get("type", ""))
        if node.get("type") == "object" and "additionalProperties" in node:
            bound = ("maxProperties",)
        if node.get("x-kubernetes-int-or-string"):
            bound = ("pattern", "maxLength")
        if bound and not any(k in node for k in bound):
            unbounded.append(path)
    assert unbounded == [], f"{kind.kind}: unbounded {unbounded}"


def test_the_base_installs_the_admission_policy_that_caps_free_text() -> None:
    docs = list(yaml.safe_load_all((REPO / "manifests" / "base" / "admission-policy.yaml").read_text()))
    policy, binding = docs
    assert policy["kind"] == "ValidatingAdmissionPolicy" and policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": ["kubeforge.dev"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["trainingjobs", "servingjobs"]}]
    kustomization = yaml.safe_load((REPO / "manifests" / "base" / "kustomization.yaml").read_text())
    assert "admission-policy.yaml" in kustomization["resources"]
