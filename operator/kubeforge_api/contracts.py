"""Typed documents that cross a process boundary between Kubeforge's own programs: rank 0's
progress document (served on the progress port), the trainer's termination message, and the
record `kubeforge run` leaves for a local run. Producers and consumers both use these models, so
the wire format has one definition. Everything a pod says is bounded here: finite numbers, capped
key counts and string lengths, so nothing out of range can reach a job's status."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from .finetune import Evaluation
from .model import DIGEST, TERMINATION_LIMIT, Finite, NonNegative, RelativePath, Sha256Digest
from .storage import MAX_URI_LENGTH, S3_URI_PATTERN, ModelFormat
from .trainingjob import Model

MAX_STEP = 10**12
MAX_EVAL_KEYS = 16
MAX_HISTORY_POINTS = 2000
MAX_MESSAGE = 1024

Step = Annotated[int, Field(ge=0, le=MAX_STEP)]
MetricName = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class HistoryPoint(Model):
    """One point of the training curve (`kind` train or eval) or a start marker."""

    kind: Literal["start", "train", "eval"]
    step: Step
    time: NonNegative | None = None
    epoch: Step | None = None
    attempt: Step | None = None
    resumed_from: Step | None = None
    loss: Finite | None = None
    eval_loss: Finite | None = None
    accuracy: Finite | None = None
    perplexity: Finite | None = None
    samples_per_second: NonNegative | None = None
    lr: Finite | None = None


class ProgressDoc(Model):
    """What rank 0 serves at `GET /progress?since=STEP` (history holds only points after STEP)."""

    step: Step = 0
    total_steps: Step = 0
    epoch: Step = 0
    percent: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    loss: Finite | None = None
    eval: dict[MetricName, Finite] = Field(default_factory=dict, max_length=MAX_EVAL_KEYS)
    samples_per_second: NonNegative = 0.0
    eta_seconds: NonNegative | None = None
    last_checkpoint_step: Step | None = None
    resumed_from: Step | None = None  # the checkpoint step this attempt resumed from
    attempt: Step = 0
    phase: Literal["starting", "training", "finished"] = "starting"
    history: list[HistoryPoint] = Field(default_factory=list, max_length=MAX_HISTORY_POINTS)


class ArtifactInfo(Model):
    """An artifact directory under the job's storage, as the process that wrote it reports it."""

    path: RelativePath
    digest: Sha256Digest
    size_bytes: int = Field(ge=0, le=10**15)
    format: ModelFormat = ModelFormat.KUBEFORGE


class PublishResult(Model):
    """The publish pod's termination message: where each artifact was copied."""

    artifact: str | None = Field(default=None, max_length=MAX_URI_LENGTH, pattern=S3_URI_PATTERN)
    compressed: str | None = Field(default=None, max_length=MAX_URI_LENGTH, pattern=S3_URI_PATTERN)


class TrainingResult(Model):
    """Rank 0's termination message after training: the artifact and the final progress."""

    artifact: ArtifactInfo | None = None
    adapter_artifact: ArtifactInfo | None = None  # a LoRA fine-tune's adapter, beside the merged model
    evaluation: Evaluation | None = None  # a fine-tune's eval loss and perplexity before and after
    progress: ProgressDoc | None = None
    error: str | None = Field(default=None, max_length=MAX_MESSAGE)


class RunRecord(Model):
    """`run.json` of a local run (`kubeforge run`): read by the dashboard's local-runs source."""

    name: str
    uid: str
    file: str
    spec: dict[str, Any]
    start_time: str
    completion_time: str | None = None
    storage: str
    logs: str
    state: str
    restart_count: int = 0
    status: dict[str, Any] = Field(default_factory=dict, description="the TrainingJob status, as in a cluster")


def parse_result(message: str) -> TrainingResult | None:
    """A termination message as the typed result, or None when it is not one (e.g. a user's own
    command wrote something else there): never raises, never returns out-of-bounds values."""
    if not message or len(message) > TERMINATION_LIMIT:
        return None
    try:
        return TrainingResult.model_validate_json(message)
    except ValueError:
        return None


def parse_progress(body: bytes) -> ProgressDoc | None:
    """A progress reply as the typed document, or None when it is malformed (never raises)."""
    try:
        return ProgressDoc.model_validate_json(body)
    except (ValueError, RecursionError):
        return None


def storage_uri(claim: str | None, path: str, namespace: str, job: str) -> str:
    """Where a job's storage lives, as `status.artifact.uri` names it: `pvc://CLAIM/PATH` on a claim,
    else `emptydir://NAMESPACE/JOB` (gone with the pod: use storage to keep artifacts)."""
    return f"pvc://{claim}/{path or job}" if claim else f"emptydir://{namespace}/{job}"


MODEL_FORMAT = "kubeforge-model/v1"
FreeForm = dict[str, Any]


class WeightsRef(Model):
    file: str = Field(max_length=255, pattern=r"^[A-Za-z0-9._-]+\.safetensors$")
    digest: str = Field(pattern=DIGEST.pattern)


class ModelCard(Model):
    """`model-card.json` beside an artifact's weights: how to rebuild the model (architecture, and for
    a compressed variant its encoding), what it scored, where it came from (lineage). Written by the
    trainer and the compression stage, read by the one loader (serving, compression, dashboard)."""

    format: Literal["kubeforge-model/v1"]
    weights: WeightsRef
    created_at: str = Field(max_length=64)
    trainer: dict[str, str] = Field(default_factory=dict, max_length=16)
    architecture: FreeForm = Field(max_length=64)
    metrics: dict[MetricName, Finite] = Field(default_factory=dict, max_length=MAX_EVAL_KEYS)
    dataset: FreeForm | None = None
    recipe: FreeForm | None = None
    strategy: str | None = Field(default=None, max_length=64)
    lineage: FreeForm = Field(default_factory=dict, max_length=32)
    compression: FreeForm | None = None
