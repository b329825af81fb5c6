"""Typed TrainingJob spec. The CRD schema (manifests/crds) rejects bad objects at admission; these
models turn an admitted spec dict into typed objects once, and re-check what the schema cannot
(so a job created before a schema change, or passed to `kubeforge run`, gets the same verdict)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .constants import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def dump(self) -> dict[str, Any]:
        """The camelCase wire form, without unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Strategy(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"
    PIPELINE = "pipeline"
    PARAMETER_SERVER = "parameter-server"


class CleanPodPolicy(StrEnum):
    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class Elastic(Model):
    min_nodes: int = Field(ge=1, le=256)
    max_nodes: int = Field(ge=1, le=256)
    max_restarts: int = Field(default=3, ge=0, le=100)


class Recipe(Model):
    model: str = Field(pattern="^(mlp|cnn|gpt)$")
    dataset: str = Field(pattern="^(digits|synthetic|text|file)$")
    dataset_path: str | None = None
    epochs: int = Field(default=10, ge=1, le=10000)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1, le=65536)
    gradient_accumulation: int = Field(default=1, ge=1, le=1024)
    learning_rate: float = Field(default=0.01, gt=0, le=10)
    optimizer: str = Field(default="adamw", pattern="^(sgd|adam|adamw)$")
    lr_schedule: str = Field(default="cosine", pattern="^(constant|cosine|linear)$")
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)
    precision: str = Field(default="fp32", pattern="^(fp32|bf16)$")
    seed: int = Field(default=0, ge=0)
    micro_batches: int = Field(default=4, ge=1, le=1024)
    pipeline_schedule: str = Field(default="1f1b", pattern="^(gpipe|1f1b)$")
    max_staleness: int = Field(default=2, ge=0, le=1000)
    bucket_cap_mb: int = Field(default=25, ge=1, le=1024, alias="bucketCapMB")
    model_config_: dict[str, int | str] = Field(default_factory=dict, alias="modelConfig")

    @model_validator(mode="after")
    def _file_needs_path(self) -> Recipe:
        if self.dataset == "file" and not self.dataset_path:
            raise ValueError("recipe.datasetPath is required with dataset 'file'")
        return self


class Checkpoint(Model):
    interval_steps: int = Field(default=100, ge=1)
    keep: int = Field(default=3, ge=1, le=100)


class ClaimRef(Model):
    claim_name: str


class Storage(Model):
    persistent_volume_claim: ClaimRef | None = None
    path: str = ""


class RunPolicy(Model):
    backoff_limit: int = Field(default=3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    startup_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    suspend: bool = False
    clean_pod_policy: CleanPodPolicy = CleanPodPolicy.RUNNING


class EnvVar(Model):
    name: str
    value: str = ""


class Resources(Model):
    limits: dict[str, int | str] = Field(default_factory=dict)
    requests: dict[str, int | str] = Field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return int(self.limits.get("nvidia.com/gpu", self.requests.get("nvidia.com/gpu", 0)))


class PodTemplate(Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    priority_class_name: str | None = None
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None


class TrainingJobSpec(Model):
    strategy: Strategy = Strategy.DDP
    nodes: int = Field(default=1, ge=1, le=256)
    procs_per_node: int = Field(default=1, ge=1, le=16)
    parameter_servers: int = Field(default=0, ge=0, le=32)
    elastic: Elastic | None = None
    image: str | None = None
    resources: Resources = Field(default_factory=Resources)
    env: list[EnvVar] = Field(default_factory=list)
    command: list[str] | None = None
    args: list[str] | None = None
    recipe: Recipe | None = None
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    storage: Storage | None = None
    compression: dict[str, Any] | None = None
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    pod_template: PodTemplate = Field(default_factory=PodTemplate)

    @model_validator(mode="after")
    def _cross_field(self) -> TrainingJobSpec:
        if (self.recipe is None) == (self.command is None):
            raise ValueError("exactly one of spec.recipe or spec.command must be set")
        if (self.strategy == Strategy.PARAMETER_SERVER) != (self.parameter_servers > 0):
            raise ValueError("spec.parameterServers must be >= 1 with strategy parameter-server and 0 otherwise")
        if self.strategy == Strategy.PIPELINE and self.world_size < 2:
            raise ValueError("strategy pipeline needs at least 2 ranks (nodes * procsPerNode)")
        if self.elastic and not self.elastic.min_nodes <= self.nodes <= self.elastic.max_nodes:
            raise ValueError("spec.nodes must lie within spec.elastic.minNodes..maxNodes")
        for e in self.env:
            if e.name in RESERVED_ENV_NAMES or e.name.startswith(RESERVED_ENV_PREFIXES):
                raise ValueError(f"spec.env: {e.name} is reserved by the operator")
        return self

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node
