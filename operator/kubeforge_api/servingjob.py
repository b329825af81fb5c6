"""Typed ServingJob spec and status (kind `ServingJob`, short name `sj`). The CRD schema is generated
from these models, so every field is bounded and described here; the same models turn an admitted
spec dict into typed objects once, and re-check the cross-field rules the schema states with CEL
(exactly one model source; replicas or autoscaling, not both). `spec.llm` configures a language
model's engine; `status.autoscaling` keeps what scaling on a server metric measured and decided."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field

from .constants import API_VERSION, GROUP, SERVINGJOB_PLURAL, VERSION
from .crd import Column, CrdKind
from .meta import Condition, ObjectMeta
from .model import Model, Resources, Rule, list_map
from .sources import SecretRef, clean_uri_rule
from .storage import MAX_URI_LENGTH, STORAGE_URI_PATTERN, ModelFormat, is_s3
from .trainingjob import PodTemplate

SERVINGJOB_KIND: Final = "ServingJob"
SERVINGJOB_SHORT_NAME: Final = "sj"
SERVICE_PORT: Final = 80

DNS1123_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$"
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
    POD_POLICY_VIOLATION = "PodPolicyViolation"  # the same as the TrainingJob reason
    FAILED_CREATE = "FailedCreate"  # the Deployment cannot create its pods (a quota, an admission policy)
    STORAGE_ACCESS_DENIED = "StorageAccessDenied"  # the object store refused the Secret's credentials
    STORAGE_UNAVAILABLE = "StorageUnavailable"  # the object store cannot be reached
    SUCCESSFUL_RESCALE = "SuccessfulRescale"  # Event only: the operator changed the replica count (the HPA's word)
    METRICS_ENDPOINT_MISBEHAVING = "MetricsEndpointMisbehaving"  # Warning Event only: a server's /metrics


class TrainingJobRef(Model):
    name: str = Field(max_length=253, pattern=DNS1123_NAME_PATTERN,
                      description="Name of a TrainingJob in the ServingJob's namespace.")
    variant: Variant = Field(default=Variant.BEST, description=(
        "Which of its artifacts to serve: `best` (the compressed artifact when the job published one, else the "
        "trained model; the default), `compressed` (only the compression output) or `original` (the trained "
        "model)."))


class ModelSource(Model):
    """Exactly one of `trainingJobRef` or `uri`; `secretRef` with (and only with) an `s3://` uri."""

    crd_rules = (
        Rule("has(self.trainingJobRef) != has(self.uri)", "model: exactly one of trainingJobRef or uri must be set",
             check=lambda m: (m.training_job_ref is None) != (m.uri is None)),
        Rule("has(self.secretRef) == (has(self.uri) && self.uri.startsWith('s3://'))",
             "model.secretRef is required with an s3:// uri and allowed only with one", ".secretRef",
             check=lambda m: (m.secret_ref is not None) == (m.uri is not None and is_s3(m.uri))),
        clean_uri_rule("uri"),
    )

    training_job_ref: TrainingJobRef | None = Field(default=None, description=(
        "Serve the artifact of a TrainingJob; the ServingJob waits (Ready=False, ModelNotReady) until "
        "the job has succeeded."))
    uri: str | None = Field(default=None, max_length=MAX_URI_LENGTH, pattern=STORAGE_URI_PATTERN, description=(
        "Serve the model directory at `pvc://CLAIM/PATH` (on a PersistentVolumeClaim, the form TrainingJob "
        "`status.artifact.uri` uses) or `s3://BUCKET/PREFIX` (copied into the pod by an init container first). "
        "The directory holds a Kubeforge artifact (`model.safetensors` + `model-card.json`), a Hugging Face "
        "transformers model (`config.json` + `*.safetensors`, tokenizer or image processor) or a `torch.export` "
        "program (`model.pt2`)."))
    secret_ref: SecretRef | None = Field(default=None, description=(
        "With an s3:// uri: the Secret holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally "
        "AWS_ENDPOINT_URL and AWS_REGION."))


class AutoscalingMetric(StrEnum):
    """What the replica count follows."""

    CPU = "cpu"
    WAITING_REQUESTS = "waitingRequests"
    KV_CACHE_USAGE = "kvCacheUsage"


SERVER_METRICS: Final = frozenset({AutoscalingMetric.WAITING_REQUESTS, AutoscalingMetric.KV_CACHE_USAGE})


class Autoscaling(Model):
    crd_rules = (Rule("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must not exceed "
                      "autoscaling.maxReplicas", ".minReplicas", check=lambda a: a.min_replicas <= a.max_replicas),)

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may create.")
    metric: AutoscalingMetric = Field(default=AutoscalingMetric.CPU, description=(
        "What the replica count follows: `cpu` (the default: CPU utilization, through a HorizontalPodAutoscaler), "
        "`waitingRequests` (a language model's requests waiting for a batch place or KV-cache blocks, average per "
        "replica) or `kvCacheUsage` (the share of KV-cache blocks in use, average per replica). For the two "
        "language-model metrics the operator reads each ready server's /metrics itself and sets the replica "
        "count the HPA way (ratio to the target, 10% tolerance, stabilization windows); `status.autoscaling` "
        "shows what it measured and decided."))
    target_cpu_utilization_percentage: int = Field(default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage",
                                                   description=(
        "With metric `cpu`: average CPU utilization (percent of the CPU request) the HorizontalPodAutoscaler aims "
        "for."))
    target_waiting_requests: float = Field(default=4.0, gt=0, le=100_000, description=(
        "With metric `waitingRequests`: the average number of waiting requests per replica to aim for."))
    target_kv_cache_usage_percent: int = Field(default=80, ge=1, le=100, alias="targetKVCacheUsagePercent",
                                               description=(
        "With metric `kvCacheUsage`: the average KV-cache usage per replica (percent of its blocks) to aim for."))
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600, description=(
        "How long load must stay high before replicas are added: the lowest recommendation of this window wins "
        "(the HPA's scale-up stabilization window; 0 = at once)."))
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600, description=(
        "How long load must stay low before replicas are removed: the highest recommendation of this window "
        "wins (the HPA's scale-down stabilization window)."))

    @property
    def on_server_metrics(self) -> bool:
        """Whether the operator scales on the servers' own metrics (no HorizontalPodAutoscaler)."""
        return self.metric in SERVER_METRICS

    @property
    def target(self) -> float:
        """The per-replica target of a server metric, in the unit the server reports (a share for KV usage)."""
        if self.metric == AutoscalingMetric.KV_CACHE_USAGE:
            return self.target_kv_cache_usage_percent / 100
        return self.target_waiting_requests


class Llm(Model):
    """How each server runs a causal language model (ignored for other models)."""

    kv_cache_bytes: int = Field(default=0, ge=0, le=1024**4, description=(
        "Bytes of the paged KV cache (keys and values of every layer), allocated once in blocks. 0 (the default): "
        "a quarter of `resources.limits.memory` when set, else the server's own default (a quarter of the "
        "container's or the GPU's free memory, no more than every running sequence's full context)."))
    kv_block_tokens: int = Field(default=16, ge=1, le=1024, description=(
        "Tokens per KV-cache block: the unit of allocation and of prefix caching."))
    max_running_requests: int = Field(default=64, ge=1, le=4096, description=(
        "Most sequences in the running batch of one step; further requests wait."))
    max_waiting_requests: int = Field(default=256, ge=0, le=1_000_000, description=(
        "Most requests waiting for a batch place or KV-cache blocks per replica; beyond it requests get 429 with "
        "Retry-After."))
    step_tokens: int = Field(default=256, ge=16, le=65_536, description=(
        "Most tokens one model step computes (one per decoding sequence first, then chunks of prompts): long "
        "prompts are prefilled in chunks so running streams keep flowing."))
    prefix_caching: bool = Field(default=True, description=(
        "Share the KV-cache blocks of a common prompt prefix (a system prompt) between requests."))


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
    crd_rules = (Rule("!(has(self.replicas) && has(self.autoscaling))",
                      "spec.replicas and spec.autoscaling are mutually exclusive", ".replicas",
                      check=lambda s: s.replicas is None or s.autoscaling is None),)

    model: ModelSource = Field(description="The model to serve. Change it to roll out (or promote) a model.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description=(
        "Fixed number of server replicas (default 1); not allowed together with autoscaling."))
    autoscaling: Autoscaling | None = Field(default=None, description=(
        "Scale between minReplicas and maxReplicas on CPU utilization (a HorizontalPodAutoscaler) or, for a "
        "language model, on waiting requests or KV-cache usage (the operator reads the servers' metrics)."))
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching in each server.")
    limits: Limits = Field(default_factory=Limits, description="Per-request and queue limits in each server.")
    llm: Llm = Field(default_factory=Llm, description=(
        "A causal language model's engine in each server: KV cache, batch and queue sizes, prefix caching."))
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

    @property
    def desired_replicas(self) -> int:
        """Replicas before any autoscaling: 0 when suspended."""
        if self.suspend:
            return 0
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas


class ResolvedModel(Model):
    uri: str = Field(max_length=MAX_URI_LENGTH, description=(
        "The model directory actually served (`pvc://CLAIM/PATH` or `s3://BUCKET/PREFIX`)."))
    secret_ref: SecretRef | None = Field(default=None, description="The credentials of an s3:// uri.")
    digest: str | None = Field(default=None, max_length=71, pattern=DIGEST_PATTERN, description=(
        "sha256 digest of the served model as published (a Kubeforge artifact's weights, or the manifest of "
        "every file of a Hugging Face or torch.export directory)."))
    format: ModelFormat | None = Field(default=None, description=(
        "The model's format as its TrainingJob recorded it (kubeforge, hf-transformers, torch-export)."))
    size_bytes: int | None = Field(default=None, ge=0, le=2**50, description=(
        "Size of the model directory as its TrainingJob recorded it; bounds the copy of an s3:// model."))
    training_job: str | None = Field(default=None, max_length=253, description=(
        "The TrainingJob the artifact came from (lineage to its metrics and compression report)."))
    variant: Variant | None = Field(default=None, description="Which artifact of that TrainingJob is served.")


class StoppedModel(Model):
    """A model the servers could neither find nor load before any of them served."""

    uri: str = Field(max_length=1024, description="The model's uri, as resolved.")
    generation: int = Field(ge=0, description="The spec generation it was stopped at; a new one tries again.")
    reason: ServingReason = Field(description="ModelNotFound, ModelLoadFailed or StorageAccessDenied.")
    message: str = Field(max_length=1024, description="The server's reason, naming the uri.")


class CanaryStatus(Model):
    model: ResolvedModel | None = Field(default=None, description="The canary's resolved model.")
    traffic_percent: int = Field(default=0, ge=0, le=100, description="Share of traffic the canary receives.")
    replicas: int = Field(default=0, ge=0, le=1000, description="Canary replicas that exist.")
    ready_replicas: int = Field(default=0, ge=0, le=1000, description="Canary replicas with the model loaded.")


MAX_RECOMMENDATIONS: Final = 32


class Recommendation(Model):
    """A replica count the autoscaler recommended, from this time until the next one."""

    time: str = Field(max_length=32, description="When it was first recommended (RFC 3339).")
    replicas: int = Field(ge=0, le=1000, description="The replicas the metric called for, within min and max.")


class AutoscalingStatus(Model):
    """What the operator measured and decided when scaling on a server metric."""

    metric: AutoscalingMetric = Field(description="The metric scaled on.")
    current: float | None = Field(default=None, ge=0, le=1_000_000, description=(
        "Its average over the ready servers that answered at the last reading (KV-cache usage as a share, 0-1); "
        "absent when none did."))
    replicas_measured: int = Field(default=0, ge=0, le=1000, description="Servers whose metrics were read.")
    desired_replicas: int = Field(ge=0, le=1000, description=(
        "The replica count the operator set (main and canary together)."))
    last_scale_time: str | None = Field(default=None, max_length=32, description=(
        "When the replica count last changed."))
    recommendations: list[Recommendation] = Field(default_factory=list, max_length=MAX_RECOMMENDATIONS,
                                                  description=(
        "Recent recommendations, oldest first, each kept while a stabilization window may need it: the "
        "stabilization reads them, so an operator restart loses nothing."))


class ServingJobStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra=list_map("type"),
                                        description=(
        "Ready (the model is loaded and serving) and Degraded (a rollout or replicas are failing)."))
    url: str | None = Field(default=None, max_length=512, description=(
        "Cluster URL of the Service: http://NAME.NAMESPACE.svc.cluster.local (port 80)."))
    replicas: int = Field(default=0, ge=0, le=1000, description="Server replicas that exist (main Deployment).")
    ready_replicas: int = Field(default=0, ge=0, le=1000, description="Server replicas that are ready.")
    model: ResolvedModel | None = Field(default=None, description=(
        "The model actually served: it changes only once every server of a rollout serves the new one."))
    target_model: ResolvedModel | None = Field(default=None, description=(
        "The model a rollout in progress moves to; absent once it is served (then it is `model`)."))
    canary: CanaryStatus | None = Field(default=None, description="The canary, when one is configured.")
    stopped: StoppedModel | None = Field(default=None, description=(
        "Set when the servers could not find or load the model before any served: they are scaled to 0 "
        "(no crash loop) until the spec changes."))
    autoscaling: AutoscalingStatus | None = Field(default=None, description=(
        "With autoscaling on waitingRequests or kvCacheUsage: the metric as read, the replicas decided and the "
        "recommendations the stabilization windows look at."))


def service_url(name: str, namespace: str) -> str:
    """`status.url` of a ServingJob."""
    return f"http://{name}.{namespace}.svc.cluster.local"


# The Service and `<name>-canary` Deployment names must be DNS labels (63 characters).
MAX_NAME_LENGTH: Final = 56


class ServingJob(Model):
    """A model (usually a TrainingJob's artifact) behind an Open Inference Protocol server with
    dynamic batching, autoscaling and safe rollouts."""

    crd_rules = (
        Rule(f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
             f"metadata.name must be at most {MAX_NAME_LENGTH} characters (the canary Deployment adds '-canary')",
             check=lambda j: len(j.metadata.name) <= MAX_NAME_LENGTH, error_path="metadata.name"),
    )

    api_version: str = Field(default=API_VERSION, description="kubeforge.dev/v1alpha1")
    kind: str = Field(default="ServingJob", description="ServingJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: ServingJobSpec = Field(description="What to serve and how.")
    status: ServingJobStatus | None = Field(default=None, description="What the operator observed.")


CRD = CrdKind(
    group=GROUP, version=VERSION, kind=SERVINGJOB_KIND, plural=SERVINGJOB_PLURAL, model=ServingJob,
    short_names=(SERVINGJOB_SHORT_NAME,), categories=("kubeforge",),
    columns=(
        Column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        Column("Replicas", "integer", ".status.readyReplicas"),
        Column("Model", "string", ".status.model.uri"),
        Column("URL", "string", ".status.url"),
        Column("Age", "date", ".metadata.creationTimestamp"),
        Column("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
    ),
)
