"""Pure rendering of a ServingJob's children: a Deployment per track (main, and canary when set)
running the inference server on a read-only model volume (a claim, or an emptyDir the storage
initializer fills from an object store), one ClusterIP Service on port 80 in
front of both, an optional HorizontalPodAutoscaler and a PodDisruptionBudget. Each child carries
the hash of its rendered form, so the controller updates it only when that form changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeforge_api.constants import (
    LABEL_MANAGED_BY,
    LABEL_OWNER_UID,
    LABEL_SERVING,
    LABEL_TRACK,
    MANAGED_BY,
)
from kubeforge_api.server_settings import (
    LIVENESS_PATH,
    MODEL_MOUNT,
    READINESS_PATH,
    SERVER_COMMAND,
    SERVER_CONTAINER_NAME,
    SERVER_PORT,
    SERVER_PORT_NAME,
    TERMINATION_LOG,
    ServerSettings,
)
from kubeforge_api.servingjob import SERVICE_PORT, ResolvedModel, ServingJobSpec
from kubeforge_api.storage import is_s3, split_pvc

from ..plan import ObjectRef
from .common import owner_reference, restricted_container_security, restricted_pod_security, with_hash
from .storage import fetch_container

Obj = dict[str, Any]
KIND = "ServingJob"
MAIN, CANARY = "main", "canary"
DEFAULT_CPU_REQUEST = "100m"  # the HPA measures CPU against the request
SHUTDOWN_DELAY = 15.0  # seconds: longer than endpoint removal takes to reach every kube-proxy
MiB = 1024 * 1024
COPY_SLACK = 16 * MiB  # above the published size (plus a quarter): room for a slightly larger copy
EMPTYDIR_HEADROOM = 64 * MiB  # the volume's limit above the copy's: file-system overhead, never an eviction


@dataclass(frozen=True)
class ModelVolume:
    """A model on a claim: the claim and the directory's path inside it, mounted read-only (subPath).
    `digest` is what the model's weights must have: the server refuses to serve anything else."""

    claim: str
    path: str
    digest: str | None = None


@dataclass(frozen=True)
class ObjectStoreVolume:
    """A model under an `s3://` uri: the storage initializer copies it into an emptyDir (verified against
    `digest` when known, bounded by `size_bytes` when known) before the server starts; only that init
    container sees the credentials of Secret `secret`."""

    uri: str
    secret: str
    digest: str | None = None
    size_bytes: int | None = None


ServedVolume = ModelVolume | ObjectStoreVolume  # where the servers find their model: claim or object store


def served_volume(model: ResolvedModel) -> ServedVolume:
    """Where a resolved model lives, as the Deployment mounts or fetches it."""
    if is_s3(model.uri):
        assert model.secret_ref is not None, "an s3:// model resolves with its Secret"
        return ObjectStoreVolume(model.uri, model.secret_ref.name, model.digest, model.size_bytes)
    claim, path = split_pvc(model.uri)
    return ModelVolume(claim, path, model.digest)


def selector(ref: ObjectRef) -> dict[str, str]:
    return {LABEL_SERVING: ref.name}


def _meta(ref: ObjectRef, name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"name": name, "namespace": ref.namespace, "ownerReferences": [owner_reference(ref, KIND)],
            "labels": {**selector(ref), LABEL_MANAGED_BY: MANAGED_BY, **(labels or {})}}


def deployment_name(ref: ObjectRef, track: str) -> str:
    return ref.name if track == MAIN else f"{ref.name}-canary"


def _model_mount(model: ServedVolume) -> Obj:
    mount = {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True}
    return {**mount, "subPath": model.path} if isinstance(model, ModelVolume) else mount


def _model_volume(model: ServedVolume) -> Obj:
    if isinstance(model, ModelVolume):
        return {"name": "model", "persistentVolumeClaim": {"claimName": model.claim, "readOnly": True}}
    if model.size_bytes is None:
        return {"name": "model", "emptyDir": {}}
    return {"name": "model", "emptyDir": {"sizeLimit": str(copy_limit(model.size_bytes) + EMPTYDIR_HEADROOM)}}


def copy_limit(size_bytes: int) -> int:
    """The most bytes the initializer copies for a model whose directory was published at `size_bytes`."""
    return size_bytes + size_bytes // 4 + COPY_SLACK


def _initializer(model: ObjectStoreVolume, image: str) -> Obj:
    """The init container that copies the model into the pod; the only one that sees the credentials."""
    extra = ["--digest", model.digest] if model.digest else []
    if model.size_bytes is not None:
        extra += ["--max-bytes", str(copy_limit(model.size_bytes))]
    return fetch_container(model.uri, model.secret, "model", MODEL_MOUNT, image, *extra)


def _container(spec: ServingJobSpec, settings: ServerSettings, model: ServedVolume) -> Obj:
    probe = {"httpGet": {"path": READINESS_PATH, "port": SERVER_PORT}, "periodSeconds": 2, "failureThreshold": 2}
    resources = spec.resources.dump()
    if "cpu" not in resources.get("requests", {}) and "cpu" not in resources.get("limits", {}):
        resources["requests"] = {**resources.get("requests", {}), "cpu": DEFAULT_CPU_REQUEST}
    return {
        "name": SERVER_CONTAINER_NAME, "command": list(SERVER_COMMAND),
        "env": [{"name": k, "value": v} for k, v in settings.to_env().items()],
        "ports": [{"name": SERVER_PORT_NAME, "containerPort": SERVER_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": LIVENESS_PATH, "port": SERVER_PORT}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "resources": {k: v for k, v in resources.items() if v},
        "volumeMounts": [_model_mount(model), {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container_security(),
    }


def render_deployment(ref: ObjectRef, spec: ServingJobSpec, track: str, model: ServedVolume, image: str,
                      replicas: int | None) -> Obj:
    """`replicas` None leaves the count to the HorizontalPodAutoscaler; a model in an object store is
    copied into the pod by an init container first."""
    # A stopping server keeps answering (not ready) until every proxy has dropped it from the Service.
    settings = ServerSettings.for_spec(ref.name, spec, model_digest=model.digest).model_copy(
        update={"shutdown_delay_seconds": SHUTDOWN_DELAY})
    tmpl = spec.pod_template
    labels = {**tmpl.labels, **selector(ref), LABEL_TRACK: track, LABEL_OWNER_UID: ref.uid,
              LABEL_MANAGED_BY: MANAGED_BY}
    image = spec.image or image
    pod_spec: Obj = {
        "containers": [{**_container(spec, settings, model), "image": image}],
        "enableServiceLinks": False, "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": restricted_pod_security(),
        "volumes": [_model_volume(model), {"name": "tmp", "emptyDir": {}}],
    }
    if isinstance(model, ObjectStoreVolume):
        pod_spec["initContainers"] = [_initializer(model, image)]
    pod_spec.update(tmpl.pod_spec_fields())
    dep_spec: Obj = {
        "selector": {"matchLabels": {**selector(ref), LABEL_TRACK: track}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels, "annotations": dict(tmpl.annotations)}, "spec": pod_spec},
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    return with_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": _meta(ref, deployment_name(ref, track), {LABEL_TRACK: track}), "spec": dep_spec})


def render_service(ref: ObjectRef) -> Obj:
    """Port 80 in front of every ready server of both tracks: traffic splits by replica count."""
    return with_hash({"apiVersion": "v1", "kind": "Service", "metadata": _meta(ref, ref.name),
                      "spec": {"type": "ClusterIP", "selector": selector(ref),
                               "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT_NAME}]}})


def render_hpa(ref: ObjectRef, spec: ServingJobSpec) -> Obj:
    assert spec.autoscaling is not None
    a = spec.autoscaling
    return with_hash({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                      "metadata": _meta(ref, ref.name),
                      "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ref.name},
                               "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
                               "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                   "type": "Utilization",
                                   "averageUtilization": a.target_cpu_utilization_percentage}}}],
                               "behavior": {
                                   "scaleUp": {"stabilizationWindowSeconds": a.scale_up_stabilization_seconds},
                                   "scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_seconds}}}})


def render_pdb(ref: ObjectRef) -> Obj:
    """At most one server of the ServingJob down at a time by voluntary disruption (drains); a server
    that never became ready may always be evicted, so one broken ServingJob cannot stall a drain."""
    return with_hash({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(ref, ref.name),
                      "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ref)},
                               "unhealthyPodEvictionPolicy": "AlwaysAllow"}})


def split(total: int, canary_percent: int) -> tuple[int, int]:
    """(main, canary) replicas for a traffic share: the canary gets its weight, at least one replica."""
    if canary_percent <= 0:
        return total, 0
    if canary_percent >= 100:
        return 0, max(total, 1)
    canary = max(1, round(total * canary_percent / 100))
    return max(total - canary, 1), canary
