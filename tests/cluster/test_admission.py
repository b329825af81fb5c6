"""Bad TrainingJobs are rejected at `kubectl apply` by the CRD schema and CEL rules, with a message
naming the field; nothing is stored. No operator is needed for any of this."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, wait_for
from kubeforge_api.model import problems
from kubeforge_api.trainingjob import TrainingJob
from minicluster.operator_process import install
from pydantic import ValidationError

Obj = dict[str, Any]
BASE: Obj = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "bad"},
             "spec": {"command": ["python", "-c", "print()"]}}
RECIPE = {"model": "mlp", "dataset": "digits"}


def with_spec(**changes: Any) -> Obj:
    doc = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def named(name: str) -> Obj:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    return doc


CORPUS: list[tuple[str, Obj, str]] = [
    ("unknown-strategy", with_spec(strategy="horovod"), "spec.strategy"),
    ("negative-nodes", with_spec(nodes=-1), "spec.nodes"),
    ("zero-nodes", with_spec(nodes=0), "spec.nodes"),
    ("huge-nodes", with_spec(nodes=1_000_000), "spec.nodes"),
    ("zero-procs", with_spec(procsPerNode=0), "spec.procsPerNode"),
    ("recipe-and-command", with_spec(recipe=RECIPE), "spec.recipe"),
    ("neither-recipe-nor-command", with_spec(command=None), "spec.recipe"),
    ("args-without-command", with_spec(command=None, recipe=RECIPE, args=["x"]), "spec.args"),
    ("reserved-env-master-addr", with_spec(env=[{"name": "MASTER_ADDR", "value": "evil"}]), "spec.env[0]"),
    ("reserved-env-pet", with_spec(env=[{"name": "PET_NNODES", "value": "9"}]), "spec.env[0]"),
    ("reserved-env-kubeforge", with_spec(env=[{"name": "KUBEFORGE_SPEC", "value": "{}"}]), "spec.env[0]"),
    ("env-from-secret", with_spec(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     "spec.env[0].valueFrom"),
    ("privileged-security-context", with_spec(podTemplate={"securityContext": {"privileged": True}}),
     "spec.podTemplate.securityContext"),
    ("hostpath-volume", with_spec(podTemplate={"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
     "spec.podTemplate.volumes"),
    ("other-service-account", with_spec(podTemplate={"serviceAccountName": "admin"}),
     "spec.podTemplate.serviceAccountName"),
    ("host-network", with_spec(podTemplate={"hostNetwork": True}), "spec.podTemplate.hostNetwork"),
    ("raw-containers", with_spec(podTemplate={"containers": [{"name": "x", "image": "evil"}]}),
     "spec.podTemplate.containers"),
    ("privileged-at-spec-level", with_spec(privileged=True), "spec.privileged"),
    ("ps-count-with-ddp", with_spec(parameterServers=2), "spec.parameterServers"),
    ("ps-strategy-without-servers", with_spec(strategy="parameter-server"), "spec.parameterServers"),
    ("pipeline-one-rank", with_spec(strategy="pipeline"), "spec.nodes"),
    ("elastic-min-above-max", with_spec(nodes=2, elastic={"minNodes": 3, "maxNodes": 2}), "spec.elastic"),
    ("nodes-outside-elastic-range", with_spec(nodes=5, elastic={"minNodes": 1, "maxNodes": 2}), "spec.elastic"),
    ("name-too-long", named("x" * 60), "metadata.name"),
    ("oversized-env-value", with_spec(env=[{"name": "BIG", "value": "x" * 5000}]), "spec.env[0].value"),
    ("too-many-env-vars", with_spec(env=[{"name": f"V{i}", "value": ""} for i in range(65)]), "spec.env"),
    ("unknown-recipe-model", with_spec(command=None, recipe={"model": "resnet", "dataset": "digits"}),
     "spec.recipe.model"),
    ("negative-learning-rate", with_spec(command=None, recipe={**RECIPE, "learningRate": -1}),
     "spec.recipe.learningRate"),
    ("negative-backoff-limit", with_spec(runPolicy={"backoffLimit": -1}), "spec.runPolicy.backoffLimit"),
    ("unknown-clean-pod-policy", with_spec(runPolicy={"cleanPodPolicy": "Sometimes"}),
     "spec.runPolicy.cleanPodPolicy"),
    ("storage-path-escape", with_spec(storage={"path": "a/../../etc"}), "spec.storage.path"),
    ("image-with-spaces", with_spec(image="python; rm -rf /"), "spec.image"),
    ("bad-quantity", with_spec(resources={"limits": {"memory": "lots"}}), "spec.resources.limits"),
    ("dataset-file-without-path", with_spec(command=None, recipe={"model": "mlp", "dataset": "file"}),
     "spec.recipe.datasetPath"),
    ("duplicate-env-name", with_spec(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]), "spec.env[1]"),
    ("reserved-label-domain", with_spec(podTemplate={"labels": {"kubeforge.dev/job-name": "other"}}),
     "spec.podTemplate.labels"),
    ("apparmor-unconfined", with_spec(podTemplate={"annotations": {
        "container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}}), "spec.podTemplate.annotations"),
    ("label-key-syntax", with_spec(podTemplate={"labels": {"no spaces": "x"}}), "spec.podTemplate.labels"),
    ("label-value-syntax", with_spec(podTemplate={"labels": {"app": "no spaces"}}), "spec.podTemplate.labels.app"),
    ("toleration-without-key", with_spec(podTemplate={"tolerations": [{"operator": "Exists"}]}),
     "spec.podTemplate.tolerations[0].key"),
    ("affinity-unknown-field", with_spec(podTemplate={"affinity": {"nodeAffinity": {"anything": {"x": 1}}}}),
     "spec.podTemplate.affinity.nodeAffinity.anything"),
    ("affinity-exists-with-values", with_spec(podTemplate={"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "Exists", "values": ["amd64"]}]}]}}}}),
     "spec.podTemplate.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].values"),
    ("pod-affinity-without-topology-key", with_spec(podTemplate={"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"a": "b"}}}]}}}),
     "spec.podTemplate.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
    ("elastic-with-pipeline", with_spec(strategy="pipeline", nodes=2, elastic={"minNodes": 1, "maxNodes": 2}),
     "spec.elastic"),
]


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
