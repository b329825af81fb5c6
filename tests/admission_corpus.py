"""Bad TrainingJobs, each with the field the API server names when it rejects it: the admission
corpus. The cluster tier applies them (tests/cluster/test_admission.py); the unit tier checks the
models reject them naming the same field (tests/unit/test_schema_source.py)."""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]
BASE: Obj = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "bad"},
             "spec": {"command": ["python", "-c", "print()"]}}
RECIPE = {"model": "mlp", "dataset": "digits"}
CLAIM = {"persistentVolumeClaim": {"claimName": "c"}}
FINETUNE = {"model": {"uri": "pvc://models/base/tiny-llama"}, "data": {"uri": "pvc://data/chat.jsonl"}}


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
    ("output-not-s3", with_spec(output={"uri": "pvc://models/x", "secretRef": {"name": "s3"}}), "spec.output.uri"),
    ("output-without-claim", with_spec(output={"uri": "s3://models/x", "secretRef": {"name": "s3"}}), "spec.output"),
    ("output-without-secret", with_spec(output={"uri": "s3://models/x"}, storage=CLAIM), "spec.output.secretRef"),
    ("output-dot-dot", with_spec(output={"uri": "s3://models/a/../b", "secretRef": {"name": "s3"}}, storage=CLAIM),
     "spec.output.uri"),
    ("compression-of-command-without-eval-data",
     with_spec(compression={"methods": [{"quantize": {}}]}, storage={"persistentVolumeClaim": {"claimName": "c"}}),
     "spec.compression"),
    ("eval-data-s3-without-secret", with_spec(storage={"persistentVolumeClaim": {"claimName": "c"}}, compression={
        "methods": [{"quantize": {}}], "evalData": {"uri": "s3://data/eval.jsonl", "format": "jsonl"}}),
     "spec.compression.evalData.secretRef"),
    ("eval-data-unknown-format", with_spec(storage={"persistentVolumeClaim": {"claimName": "c"}}, compression={
        "methods": [{"quantize": {}}], "evalData": {"uri": "pvc://data/eval.csv", "format": "csv"}}),
     "spec.compression.evalData.format"),
    ("finetune-and-command", with_spec(finetune=FINETUNE), "spec.recipe"),
    ("finetune-with-pipeline", with_spec(command=None, finetune=FINETUNE, strategy="pipeline", nodes=2),
     "spec.strategy"),
    ("finetune-lora-settings-with-full", with_spec(command=None, finetune={**FINETUNE, "method": "full",
                                                                            "lora": {"rank": 4}}),
     "spec.finetune.lora"),
    ("finetune-unknown-data-format", with_spec(command=None, finetune={
        **FINETUNE, "data": {"uri": "pvc://data/chat.jsonl", "format": "sharegpt"}}), "spec.finetune.data.format"),
    ("finetune-s3-model-without-secret", with_spec(command=None, finetune={
        **FINETUNE, "model": {"uri": "s3://models/base"}}), "spec.finetune.model.secretRef"),
    ("finetune-bad-target-module", with_spec(command=None, finetune={
        **FINETUNE, "lora": {"targetModules": ["q_proj; rm -rf"]}}), "spec.finetune.lora.targetModules[0]"),
    ("finetune-compressed-by-accuracy", with_spec(command=None, finetune=FINETUNE, storage=CLAIM, compression={
        "methods": [{"quantize": {}}], "accuracyBudget": {"metric": "accuracy"}}), "spec.compression"),
]
