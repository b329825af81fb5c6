"""Typed ServingJob spec and status (kind `ServingJob`, short name `sj`). The CRD schema is generated
from these models, so every field is bounded and described here; the same models turn an admitted
spec dict into typed objects once, and re-check the cross-field rules the schema states with CEL
(exactly one model source; replicas or autoscaling, not both)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field, model_validator

from .trainingjob import Model, PodTemplate, Resources

SERVINGJOB_KIND: Final = "ServingJob"
SERVINGJOB_PLURAL: Final = "servingjobs"
SERVINGJOB_SHORT_NAME: Final = "sj"
SERVICE_PORT: Final = 80

# `pvc://CLAIM/PATH`, the form TrainingJob status.artifact.uri uses; CLAIM is a DNS-1123 name.
MODEL_URI_PATTERN: Final = r"^pvc://[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?(/[^/\x00]+)+/?$"
DNS1123_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$"
DNS1123_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"


class Variant(StrEnum):
    """Which artifact of a TrainingJob to serve."""

    COMPRESSED = "compressed"
    ORIGINAL = "original"
    BEST = "best"


class ServingConditionType(StrEnum):
    READY = "Ready"
    DEGRADED = "Degraded"


class ServingReason(StrEnum):
    """CamelCase reasons on ServingJob conditions and events."""

    MODEL_NOT_READY = "ModelNotReady"
    MODEL_LOADING = "ModelLoading"
    MODEL_LOADED = "ModelLoaded"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    INVALID_SPEC = "InvalidSpec"
    SUSPENDED = "Suspended"


class TrainingJobRef(Model):
    name: str = Field(max_length=253, pattern=DNS1123_NAME_PATTERN,
                      description="Name of a TrainingJob in the ServingJob's namespace.")
    variant: Variant = Field(default=Variant.COMPRESSED, description=(
        "Which of its artifacts to serve: `compressed` (the compression output, the default), `original` "
        "(the trained model) or `best` (the compressed artifact when the job has one, else the original)."))


class ModelSource(Model):
    """Exactly one of `trainingJobRef` or `uri`."""

    training_job_ref: TrainingJobRef | None = Field(default=None, description=(
        "Serve the artifact of a TrainingJob; the ServingJob waits (Ready=False, ModelNotReady) until "
        "the job has succeeded."))
    uri: str | None = Field(default=None, max_length=1024, pattern=MODEL_URI_PATTERN, description=(
        "Serve the artifact at `pvc://CLAIM/PATH` (the form TrainingJob `status.artifact.uri` uses): "
        "a directory holding `model.safetensors` and `model-card.json` on a PersistentVolumeClaim."))

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if (self.training_job_ref is None) == (self.uri is None):
            raise ValueError("model: exactly one of trainingJobRef or uri must be set")
        return self


class Autoscaling(Model):
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may create.")
    target_cpu_utilization_percentage: int = Field(default=80, ge=1, le=100, description=(
        "Average CPU utilization (percent of the CPU request) the HorizontalPodAutoscaler aims for."))

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class Batching(Model):
    max_batch_size: int = Field(default=32, ge=1, le=4096, description=(
        "Most rows (first tensor dimension, summed over requests) one model call takes; a single request "
        "with more rows is rejected with 422."))
    max_delay_ms: int = Field(default=0, ge=0, le=10_000, description=(
        "How long a batch may wait for more requests once the model is idle. 0 (the default) is "
        "opportunistic batching: dispatch at once when the model is idle, and batch whatever queued "
        "while it was busy."))


class Limits(Model):
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, description=(
        "Largest request body accepted; larger requests get 413."))
    max_queue_depth: int = Field(default=1024, ge=1, le=1_000_000, description=(
        "Most requests waiting for the model per replica; further requests get 503 with Retry-After."))
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description=(
        "A request that has no answer after this long gets 504; it is dropped from the queue if it has "
        "not reached the model yet."))


class Canary(Model):
    model: ModelSource = Field(description="The model the canary Deployment serves.")
    traffic_percent: int = Field(ge=0, le=100, description=(
        "Share of requests (by replica weight behind the one Service) that go to the canary."))


class ServingJobSpec(Model):
    model: ModelSource = Field(description="The model to serve. Change it to roll out (or promote) a model.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description=(
        "Fixed number of server replicas (default 1); not allowed together with autoscaling."))
    autoscaling: Autoscaling | None = Field(default=None, description=(
        "Scale between minReplicas and maxReplicas on CPU utilization (a HorizontalPodAutoscaler)."))
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching in each server.")
    limits: Limits = Field(default_factory=Limits, description="Per-request and queue limits in each server.")
    resources: Resources = Field(default_factory=Resources, description=(
        "Container resources (CPU, memory, `nvidia.com/gpu`) of each server replica."))
    image: str | None = Field(default=None, max_length=512, description=(
        "Server image; defaults to the operator's trainer image, which contains the server."))
    canary: Canary | None = Field(default=None, description=(
        "A second Deployment behind the same Service serving another model for a share of traffic."))
    suspend: bool = Field(default=False, description="Scale the servers to zero while keeping the resource.")
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description=(
        "The safe subset of pod settings (labels, annotations, nodeSelector, tolerations, affinity, "
        "priorityClassName, imagePullSecrets), as in TrainingJob."))

    @model_validator(mode="after")
    def _cross_field(self) -> ServingJobSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("spec.replicas and spec.autoscaling are mutually exclusive")
        return self

    @property
    def desired_replicas(self) -> int:
        """Replicas before any autoscaling: 0 when suspended."""
        if self.suspend:
            return 0
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas


class Condition(Model):
    type: str = Field(max_length=64, description="Condition type: Ready or Degraded.")
    status: str = Field(pattern="^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: str = Field(default="", max_length=128, description="CamelCase reason, e.g. ModelLoaded.")
    message: str = Field(default="", max_length=1024, description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, max_length=64, description=(
        "When the status last changed (RFC 3339)."))
    observed_generation: int | None = Field(default=None, ge=0, description=(
        "The spec generation the condition was computed from."))


class ResolvedModel(Model):
    uri: str = Field(max_length=1024, description="The artifact directory actually served (`pvc://CLAIM/PATH`).")
    digest: str | None = Field(default=None, max_length=71, pattern=DIGEST_PATTERN, description=(
        "sha256 digest of the served weights (from the model card)."))
    training_job: str | None = Field(default=None, max_length=253, description=(
        "The TrainingJob the artifact came from (lineage to its metrics and compression report)."))
    variant: Variant | None = Field(default=None, description="Which artifact of that TrainingJob is served.")


class CanaryStatus(Model):
    model: ResolvedModel | None = Field(default=None, description="The canary's resolved model.")
    traffic_percent: int = Field(default=0, ge=0, le=100, description="Share of traffic the canary receives.")
    replicas: int = Field(default=0, ge=0, le=1000, description="Canary replicas that exist.")
    ready_replicas: int = Field(default=0, ge=0, le=1000, description="Canary replicas with the model loaded.")


class ServingJobStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, description=(
        "Ready (the model is loaded and serving) and Degraded (a rollout or replicas are failing)."))
    url: str | None = Field(default=None, max_length=512, description=(
        "Cluster URL of the Service: http://NAME.NAMESPACE.svc.cluster.local (port 80)."))
    replicas: int = Field(default=0, ge=0, le=1000, description="Server replicas that exist (main Deployment).")
    ready_replicas: int = Field(default=0, ge=0, le=1000, description="Server replicas that are ready.")
    model: ResolvedModel | None = Field(default=None, description="The model actually served.")
    canary: CanaryStatus | None = Field(default=None, description="The canary, when one is configured.")


def service_url(name: str, namespace: str) -> str:
    """`status.url` of a ServingJob."""
    return f"http://{name}.{namespace}.svc.cluster.local"
