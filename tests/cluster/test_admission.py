"""Bad TrainingJobs are rejected at `kubectl apply` by the CRD schema and CEL rules, with a message
naming the field; nothing is stored. No operator is needed for any of this."""

from __future__ import annotations

import copy

import pytest
import yaml
from admission_corpus import BASE, CORPUS, RECIPE, Obj, named, with_spec
from conftest import REPO, Cluster, wait_for
from kubeforge_api.model import problems
from kubeforge_api.trainingjob import TrainingJob
from minicluster.operator_process import install
from pydantic import ValidationError


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    install(cluster.kubeconfig)


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 25


@pytest.mark.parametrize(("case", "doc", "field"), CORPUS, ids=[c[0] for c in CORPUS])
def test_invalid_trainingjob_is_rejected_naming_the_field(cluster: Cluster, crds: None, namespace: str, case: str,
                                                          doc: Obj, field: str) -> None:
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0, f"{case} was accepted"
    assert field in out.stderr, out.stderr
    listed = cluster.kubectl("get", "tj", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_fields_that_shape_the_gang_are_immutable(cluster: Cluster, crds: None, namespace: str) -> None:
    ok = copy.deepcopy(BASE)
    ok["metadata"]["name"] = "fixed"
    ok["spec"]["runPolicy"] = {"suspend": True}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(ok))
    for change, message in [({"nodes": 4}, "immutable"), ({"strategy": "fsdp"}, "immutable"),
                            ({"command": ["python", "-c", "print(1)"]}, "immutable")]:
        patched = copy.deepcopy(ok)
        patched["spec"].update(change)
        out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(patched), check=False)
        assert out.returncode != 0 and message in out.stderr, (change, out.stderr)
    # While suspended, scheduling knobs may change (as for a suspended Job).
    patched = copy.deepcopy(ok)
    patched["spec"]["podTemplate"] = {"nodeSelector": {"pool": "gpu"}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(patched))
    running = copy.deepcopy(patched)
    running["spec"]["runPolicy"] = {"suspend": False}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(running))
    changed = copy.deepcopy(running)
    changed["spec"]["podTemplate"] = {"nodeSelector": {"pool": "cpu"}}
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert out.returncode != 0 and "suspend" in out.stderr, out.stderr
    # Without runPolicy (the API server does not fill it in) the rule still judges: not suspended.
    plain = named("plain")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(plain))
    plain["spec"]["podTemplate"] = {"nodeSelector": {"pool": "cpu"}}
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(plain), check=False)
    assert out.returncode != 0 and "can change only while spec.runPolicy.suspend is true" in out.stderr, out.stderr


def test_defaults_of_the_spec_are_filled_in_by_the_api_server_those_inside_its_objects_by_the_models(
        cluster: Cluster, crds: None, namespace: str) -> None:
    """The spec's own fields get their defaults from the API server (CEL rules read them); the
    stored spec otherwise holds what its author wrote (`kubectl describe` stays short), and the
    models, which every reader parses a spec with, apply the rest, as `kubectl explain` says."""
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = "defaults"
    doc["spec"]["recipe"], doc["spec"]["runPolicy"] = dict(RECIPE), {"cleanPodPolicy": "None"}
    del doc["spec"]["command"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    spec = cluster.client.get(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/trainingjobs/defaults")["spec"]
    assert spec["strategy"] == "ddp" and spec["nodes"] == 1 and spec["procsPerNode"] == 1
    assert spec["parameterServers"] == 0
    assert spec["recipe"] == RECIPE and spec["runPolicy"] == {"cleanPodPolicy": "None"} and "checkpoint" not in spec
    typed = TrainingJob.model_validate({**doc, "spec": spec}).spec
    policy = typed.run_policy
    assert (policy.backoff_limit, policy.suspend, typed.checkpoint.interval_steps) == (3, False, 100)
    assert typed.recipe is not None and (typed.recipe.epochs, typed.recipe.optimizer) == (10, "adamw")
    out = " ".join(cluster.kubectl("explain", "trainingjob.spec.recipe.epochs").stdout.split())
    assert "Range: 1 to 10000. Default: 10." in out, out


def local_verdict(doc: Obj) -> str | None:
    """The field the models name first for `doc`, or None when they accept it."""
    try:
        TrainingJob.model_validate(doc)
    except ValidationError as e:
        return problems(e)[0][0]
    return None


def test_the_models_and_the_api_server_give_the_same_verdict(cluster: Cluster, crds: None, namespace: str) -> None:
    """`kubeforge run` and `kubectl apply` agree: the corpus is refused by both, naming the same
    field; every sample is admitted by both."""
    for case, doc, _ in CORPUS:
        field = local_verdict(doc)
        out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc),
                              check=False)
        assert field is not None and out.returncode != 0, (case, field, out.stderr)
        assert field in out.stderr, (case, field, out.stderr)
    samples = [d for p in sorted((REPO / "manifests" / "samples").glob("*.yaml"))
               for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "TrainingJob"]
    assert samples
    for doc in samples:
        assert local_verdict(doc) is None, doc["metadata"]["name"]
        cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def undescribed(node: Obj, path: str) -> list[str]:
    missing = [] if node.get("description") else [path]
    for name, child in (node.get("properties") or {}).items():
        missing += undescribed(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict) and node[key].get("properties"):
            missing += undescribed(node[key], f"{path}[]")
    return missing


def test_kubectl_explain_describes_every_field(cluster: Cluster, crds: None) -> None:
    out = wait_for(lambda: cluster.kubectl("explain", "trainingjob.spec.runPolicy.backoffLimit", check=False).stdout,
                   what="the TrainingJob schema in the published OpenAPI")
    text = " ".join(out.split())  # kubectl wraps long descriptions
    assert "Counted failures tolerated before Failed/BackoffLimitExceeded" in text, out
    assert "Range: 0 to 100. Default: 3." in text, out
    status = cluster.kubectl("explain", "trainingjob.status.progress.samplesPerSecond").stdout
    assert "Training throughput" in status and "<no description>" not in status, status
    published = cluster.client.get("/openapi/v3/apis/kubeforge.dev/v1alpha1")["components"]["schemas"]
    schema = published["dev.kubeforge.v1alpha1.TrainingJob"]["properties"]
    paths = undescribed(schema["spec"], "spec") + undescribed(schema["status"], "status")
    assert paths == [], f"kubectl explain says <no description> for {paths}"


AFFINITY = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
    {"weight": 10, "preference": {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In",
                                                        "values": ["amd64", "arm64"]}]}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                    "matchLabels": {"kubeforge.dev/job-name": "ok"}}}}]}}


def test_a_typed_affinity_is_admitted_as_written(cluster: Cluster, crds: None, namespace: str) -> None:
    doc = with_spec(podTemplate={"affinity": AFFINITY})
    doc["metadata"]["name"] = "ok"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    stored = cluster.client.get(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/trainingjobs/ok")
    assert stored["spec"]["podTemplate"]["affinity"] == AFFINITY


@pytest.mark.parametrize(("case", "spec", "words"), [
    ("long-args", {"args": ["x" * 4000] * 20}, "at most 65536"),
    ("long-env", {"env": [{"name": f"V{i}", "value": "x" * 4000} for i in range(20)]}, "at most 65536"),
    ("long-annotations", {"podTemplate": {"annotations": {f"example.com/a{i}": "x" * 4000 for i in range(5)}}},
     "at most 16384"),
])
def test_the_admission_policy_caps_a_jobs_free_text(cluster: Cluster, crds: None, namespace: str, case: str,
                                                    spec: Obj, words: str) -> None:
    """Every field passes the schema on its own; the ValidatingAdmissionPolicy refuses the sum."""
    doc = with_spec(**spec)
    assert local_verdict(doc) is None, case

    def refused() -> str | None:
        out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc),
                              check=False)
        return out.stderr if out.returncode != 0 else None

    stderr = wait_for(refused, 30, what="the admission policy to take effect")
    assert "kubeforge-job-size" in stderr and words in stderr, stderr
    small = with_spec(args=["x" * 4000] * 10)
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(small))
