"""The TrainingJob resource as typed models: the one source of the CRD schema (descriptions,
defaults, ranges, CEL rules, printer columns; `make generate` writes manifests/crds and the field
reference in docs/api.md) and of the validation the operator, the trainer and `kubeforge run` apply
to a spec dict, so a job gets the same verdict, naming the same field, everywhere."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .compression import (
    AccuracyBudget,
    CandidateSummary,
    CompressionReason,
    CompressionSpec,
    CompressionTermination,
    Summary,
    Timing,
)
from .constants import (
    API_VERSION,
    GROUP,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES,
    TRAININGJOB_PLURAL,
    VERSION,
    State,
)
from .crd import Column, CrdKind
from .curves import MAX_CURVE_POINTS, Curve
from .finetune import Evaluation, Finetune
from .meta import MAX_NAME_LENGTH, NAME_TOO_LONG, Condition, ObjectMeta
from .model import IntOrString, Resources, Rule, RuleViolation, list_map, omit_default
from .model import Model as Model  # re-exported: other kinds import the base from here
from .podtemplate import PodTemplate as PodTemplate  # re-exported: both kinds share it
from .sources import SecretRef, clean_uri_rule
from .storage import MAX_URI_LENGTH, S3_URI_PATTERN, ModelFormat

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LongString = Annotated[str, Field(max_length=4096)]


class Strategy(StrEnum):
    """How ranks share the work."""

    DDP = "ddp"
    FSDP = "fsdp"
    PIPELINE = "pipeline"
    PARAMETER_SERVER = "parameter-server"


class CleanPodPolicy(StrEnum):
    """Which pods to delete when the job finishes."""

    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class Elastic(Model):
    """torchrun c10d rendezvous with `--nnodes=minNodes:maxNodes` (ddp and fsdp only)."""

    crd_rules = (
        Rule("self.minNodes <= self.maxNodes", "elastic.minNodes must not exceed elastic.maxNodes",
             check=lambda e: e.min_nodes <= e.max_nodes),
    )

    min_nodes: int = Field(ge=1, le=256, description="Fewest worker pods the job runs with.")
    max_nodes: int = Field(ge=1, le=256, description="Most worker pods the job runs with.")
    max_restarts: int = Field(default=3, ge=0, le=100, description="torchrun `--max-restarts` within one attempt.")


class Recipe(Model):
    """Built-in training: a model, a dataset and hyper-parameters; no code needed."""

    crd_rules = (
        Rule("self.dataset != 'file' || (has(self.datasetPath) && size(self.datasetPath) > 0)",
             "recipe.datasetPath is required with dataset 'file'", ".datasetPath",
             check=lambda r: r.dataset != "file" or bool(r.dataset_path)),
    )

    model: Literal["mlp", "cnn", "gpt"] = Field(description="Built-in model architecture.")
    dataset: Literal["digits", "synthetic", "text", "file"] = Field(
        description="Training data: scikit-learn digits, generated data, generated text, or `datasetPath`.")
    dataset_path: str | None = Field(default=None, max_length=1024, description=(
        "With dataset `file`: the data file under the job storage (.npz, .jsonl, .parquet)."))
    epochs: int = Field(default=10, ge=1, le=10000, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, ge=1, le=100_000_000,
                                  description="Stop after this many optimizer steps, even mid-epoch.")
    batch_size: int = Field(default=64, ge=1, le=65536, description="Samples per step and rank.")
    gradient_accumulation: int = Field(default=1, ge=1, le=1024,
                                       description="Micro-steps whose gradients add up to one optimizer step.")
    learning_rate: float = Field(default=0.01, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(default="adamw", description="Optimizer.")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up.")
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000, description="Steps of linear learning-rate warm-up.")
    grad_clip: float = Field(default=1.0, ge=0, le=1000, description="Gradient norm clipping; 0 turns it off.")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="Training precision (autocast).")
    seed: int = Field(default=0, ge=0, le=4294967295, description="Random seed (model init, data order).")
    micro_batches: int = Field(default=4, ge=1, le=1024, description="Strategy pipeline: micro-batches per step.")
    pipeline_schedule: Literal["gpipe", "1f1b"] = Field(default="1f1b", description="Strategy pipeline: schedule.")
    max_staleness: int = Field(default=2, ge=0, le=1000, description=(
        "Strategy parameter-server: how many steps a worker's parameters may lag behind the servers."))
    bucket_cap_mb: int = Field(default=25, ge=1, le=1024, alias="bucketCapMB",
                               description="Strategy ddp: gradient bucket size in MB.")
    model_config_: dict[str, IntOrString] = Field(
        default_factory=dict, alias="modelConfig", max_length=32, description=(
            "Model size knobs: hidden, layers, heads, dim, seqLen, vocab, samples, features, classes..."))


class Checkpoint(Model):
    """Checkpoint cadence and retention."""

    interval_steps: int = Field(default=100, ge=1, le=10_000_000, description="Save a checkpoint every N steps.")
    keep: int = Field(default=3, ge=1, le=100, description="Newest checkpoints kept; older ones are deleted.")


class ClaimRef(Model):
    """A PersistentVolumeClaim in the job's namespace."""

    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                            description="Name of the PersistentVolumeClaim.")


class Storage(Model):
    """Where checkpoints, metrics and the artifact go, mounted at /kubeforge/storage."""

    crd_rules = (
        Rule("!has(self.path) || !self.path.contains('..')", "storage.path must not contain '..'", ".path",
             check=lambda s: ".." not in s.path),
    )

    persistent_volume_claim: ClaimRef | None = Field(default=None, description=(
        "The claim to use; without one, an emptyDir that is lost when pods restart."))
    path: str = Field(default="", max_length=512, pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", description=(
        "Sub-directory inside the claim; empty means the job's name (re-creating a job of the same name resumes "
        "from its checkpoints)."))


class Output(Model):
    """A copy of the artifact in an object store, besides the job's storage."""

    crd_rules = (clean_uri_rule("uri"),)

    uri: str = Field(max_length=MAX_URI_LENGTH, pattern=S3_URI_PATTERN, description=(
        "`s3://BUCKET/PREFIX`: the artifact (and a compressed one, under `compressed/`) is uploaded there when "
        "the job succeeds; ServingJobs and fine-tunes can then start from it."))
    secret_ref: SecretRef = Field(description=(
        "The Secret holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL and "
        "AWS_REGION."))


class RunPolicy(Model):
    """Failure, deadline, suspension and clean-up policy (as for a Kubernetes Job)."""

    backoff_limit: int = Field(default=3, ge=0, le=100, description=(
        "Counted failures tolerated before Failed/BackoffLimitExceeded; disruptions (eviction, preemption, "
        "deletion) never count."))
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=31_536_000, description=(
        "Seconds from status.startTime until Failed/DeadlineExceeded; running pods are then deleted."))
    startup_deadline_seconds: int | None = Field(default=None, ge=1, le=86400, description=(
        "Seconds an attempt's pods may take to all run (scheduling, image pulls); "
        "then Failed/StartupDeadlineExceeded."))
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31_536_000, description=(
        "Delete the finished job (and through owner references its pods) this long after completionTime."))
    suspend: bool = Field(default=False, description=(
        "True deletes the pods and keeps the job; false resumes it (the active deadline restarts)."))
    clean_pod_policy: CleanPodPolicy = Field(default=CleanPodPolicy.RUNNING, description=(
        "Pods deleted when the job finishes: All, Running (finished pods stay for their logs) or None. "
        "Deadlines always stop running pods."))


class EnvVar(Model):
    """One extra environment variable of every training container (no valueFrom: no Secrets)."""

    crd_rules = (
        Rule(f"!(self.name in [{', '.join(repr(n) for n in sorted(RESERVED_ENV_NAMES))}])"
             + "".join(f" && !self.name.startsWith({p!r})" for p in RESERVED_ENV_PREFIXES),
             "env name is reserved by the operator (MASTER_ADDR, RANK, WORLD_SIZE, PET_*, TORCHELASTIC_*, "
             "KUBEFORGE_* ...)",
             check=lambda e: e.name not in RESERVED_ENV_NAMES and not e.name.startswith(RESERVED_ENV_PREFIXES)),
    )

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
                      description="Variable name; the operator's own names are reserved.")
    value: str = Field(default="", max_length=4096, json_schema_extra=omit_default, description="Variable value.")


def _same(field: str) -> str:
    """CEL: `field` is unchanged on update, including staying absent."""
    return f"(has(self.{field}) ? (has(oldSelf.{field}) && self.{field} == oldSelf.{field}) : !has(oldSelf.{field}))"


class TrainingJobSpec(Model):
    """What to train and how: the gang of pods, the program (recipe or command) and the policies."""

    crd_rules = (
        Rule("[has(self.recipe), has(self.command), has(self.finetune)].filter(x, x).size() == 1",
             "exactly one of spec.recipe, spec.command or spec.finetune must be set", ".recipe",
             check=lambda s: sum(x is not None for x in (s.recipe, s.command, s.finetune)) == 1),
        Rule("!has(self.finetune) || self.strategy in ['ddp', 'fsdp']",
             "spec.finetune runs with strategy ddp or fsdp", ".strategy",
             check=lambda s: s.finetune is None or s.strategy in (Strategy.DDP, Strategy.FSDP)),
        Rule("!has(self.compression) || !has(self.command) || has(self.compression.evalData)",
             "spec.compression of a command job needs spec.compression.evalData (no recipe says how to evaluate "
             "its model)", ".compression",
             check=lambda s: s.compression is None or s.command is None or s.compression.eval_data is not None),
        Rule("!has(self.compression) || (has(self.storage) && has(self.storage.persistentVolumeClaim))",
             "spec.compression needs spec.storage.persistentVolumeClaim (the compression pod reads the trained "
             "model from it)", ".compression",
             check=lambda s: s.compression is None or (s.storage is not None and s.storage.persistent_volume_claim
                                                       is not None)),
        Rule("!has(self.compression) || !has(self.recipe) || !has(self.compression.accuracyBudget) || "
             "!has(self.compression.accuracyBudget.metric) || (self.recipe.model == 'gpt' ? "
             "self.compression.accuracyBudget.metric != 'accuracy' : "
             "self.compression.accuracyBudget.metric != 'perplexity')",
             "spec.compression.accuracyBudget.metric must be one the recipe produces (accuracy for mlp and cnn, "
             "perplexity for gpt, or evalLoss)", ".compression",
             check=lambda s: s.compression is None or s.recipe is None or s.compression.accuracy_budget.metric
             not in ({"accuracy"} if s.recipe.model == "gpt" else {"perplexity"})),
        Rule("!has(self.output) || (has(self.storage) && has(self.storage.persistentVolumeClaim))",
             "spec.output needs spec.storage.persistentVolumeClaim (the publish pod reads the artifact from it)",
             ".output", check=lambda s: s.output is None or (s.storage is not None and s.storage.persistent_volume_claim
                                                               is not None)),
        Rule("!has(self.compression) || !has(self.finetune) || !has(self.compression.accuracyBudget) || "
             "!has(self.compression.accuracyBudget.metric) || self.compression.accuracyBudget.metric != 'accuracy'",
             "spec.compression.accuracyBudget.metric of a fine-tune is perplexity or evalLoss", ".compression",
             check=lambda s: s.compression is None or s.finetune is None
             or s.compression.accuracy_budget.metric != "accuracy"),
        Rule("!has(self.args) || has(self.command)", "spec.args requires spec.command", ".args",
             check=lambda s: s.args is None or s.command is not None),
        Rule("self.strategy == 'parameter-server' ? self.parameterServers >= 1 : self.parameterServers == 0",
             "spec.parameterServers must be >= 1 with strategy parameter-server and 0 otherwise", ".parameterServers",
             check=lambda s: (s.strategy == Strategy.PARAMETER_SERVER) == (s.parameter_servers > 0)),
        Rule("self.strategy != 'pipeline' || self.nodes * self.procsPerNode >= 2",
             "strategy pipeline needs at least 2 ranks (nodes * procsPerNode) to split the model", ".nodes",
             check=lambda s: s.strategy != Strategy.PIPELINE or s.world_size >= 2),
        Rule("!has(self.elastic) || (self.elastic.minNodes <= self.nodes && self.nodes <= self.elastic.maxNodes)",
             "spec.nodes must lie within spec.elastic.minNodes..maxNodes", ".elastic",
             check=lambda s: s.elastic is None or s.elastic.min_nodes <= s.nodes <= s.elastic.max_nodes),
        Rule("!has(self.elastic) || self.strategy in ['ddp', 'fsdp']",
             "spec.elastic is only supported with strategy ddp or fsdp", ".elastic",
             check=lambda s: s.elastic is None or s.strategy in (Strategy.DDP, Strategy.FSDP)),
        # Transition rules: only the API server sees the stored object (oldSelf).
        Rule("self.strategy == oldSelf.strategy && self.nodes == oldSelf.nodes && self.procsPerNode == "
             "oldSelf.procsPerNode && self.parameterServers == oldSelf.parameterServers",
             "spec.strategy, nodes, procsPerNode and parameterServers are immutable"),
        Rule("has(self.recipe) == has(oldSelf.recipe) && (!has(self.recipe) || self.recipe == oldSelf.recipe)",
             "spec.recipe is immutable", ".recipe"),
        Rule(_same("finetune"), "spec.finetune is immutable", ".finetune"),
        Rule("has(self.command) == has(oldSelf.command) && (!has(self.command) || self.command == oldSelf.command)"
             f" && {_same('args')}", "spec.command and spec.args are immutable", ".command"),
        Rule(f"{_same('image')} && {_same('storage')} && {_same('output')}",
             "spec.image, spec.storage and spec.output are immutable"),
        Rule("(has(self.runPolicy) && has(self.runPolicy.suspend) && self.runPolicy.suspend) || "
             f"({_same('resources')} && {_same('env')} && {_same('podTemplate')})",
             "spec.resources, env and podTemplate can change only while spec.runPolicy.suspend is true"),
    )

    strategy: Strategy = Field(default=Strategy.DDP, description=(
        "How ranks share the work: ddp (DistributedDataParallel), fsdp (fully sharded), pipeline (the model split "
        "into stages across ranks, needs at least 2 ranks), parameter-server (server pods hold parameter shards, "
        "workers push gradients asynchronously). Immutable."))
    nodes: int = Field(default=1, ge=1, le=256, description="Worker pods `<job>-node-<i>`. Immutable.")
    procs_per_node: int = Field(default=1, ge=1, le=16, description=(
        "Processes (ranks) per worker pod (torchrun --nproc-per-node); one per GPU on GPU nodes. Immutable."))
    parameter_servers: int = Field(default=0, ge=0, le=32, description=(
        "Server pods `<job>-ps-<i>`: at least 1 with strategy parameter-server, else 0. Immutable."))
    elastic: Elastic | None = Field(default=None, description=(
        "Elastic training: torchrun c10d rendezvous; nodes must lie within minNodes..maxNodes; ddp and fsdp only."))
    image: str | None = Field(default=None, max_length=512, pattern=r"^[^\s]+$", description=(
        "Container image; defaults to the operator's trainer image. Immutable."))
    resources: Resources = Field(default_factory=Resources, description=(
        "Resources of each worker pod. nvidia.com/gpu selects NCCL and adds a GPU toleration; otherwise gloo. "
        "Changes only while suspended."))
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra=list_map("name"), description=(
        "Extra environment of every training container; names unique. Reserved: MASTER_ADDR, MASTER_PORT, RANK, "
        "LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, NODE_RANK, NNODES, NPROC_PER_NODE and every PET_*, "
        "TORCHELASTIC_*, KUBEFORGE_*. Changes only while suspended."))
    command: list[LongString] | None = Field(default=None, min_length=1, max_length=64, description=(
        "Bring your own script: the container command. Pods carry the torchrun PET_* environment, so "
        "[torchrun, my_train.py] just works. Exactly one of recipe or command. Immutable."))
    args: list[LongString] | None = Field(default=None, max_length=128, description=(
        "Arguments of command (needs command). Immutable."))
    recipe: Recipe | None = Field(default=None, description=(
        "Built-in training: model, dataset and hyper-parameters, no code needed. Exactly one of recipe or command. "
        "Immutable."))
    finetune: Finetune | None = Field(default=None, description=(
        "Fine-tune a pretrained causal language model (full or LoRA) on JSONL chat, prompt-completion or text "
        "data. Exactly one of recipe, command or finetune. Immutable."))
    checkpoint: Checkpoint = Field(default_factory=Checkpoint, description="Checkpoint cadence and retention.")
    storage: Storage | None = Field(default=None, description=(
        "Where checkpoints, metrics and the artifact go, mounted at /kubeforge/storage. Without a claim, an emptyDir "
        "(lost when pods restart). Immutable."))
    compression: CompressionSpec | None = Field(default=None, description=(
        "Optional accuracy-gated compression stage after training (quantization, pruning, distillation); needs "
        "storage on a claim, and evalData for a command job."))
    output: Output | None = Field(default=None, description=(
        "Also publish the artifact to an object store (s3://) when the job succeeds. Immutable."))
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description=(
        "Failure, deadline, suspension and clean-up policy."))
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description=(
        "The only pod settings a user chooses: labels, annotations, nodeSelector, tolerations, affinity, "
        "priorityClassName, imagePullSecrets. Changes only while suspended."))

    @model_validator(mode="after")
    def _unique_env_names(self) -> TrainingJobSpec:
        seen: set[str] = set()
        for i, e in enumerate(self.env):  # the API server checks this as a list-map; no CEL rule states it
            if e.name in seen:
                raise RuleViolation(f".env[{i}]", f"duplicate env name {e.name}")
            seen.add(e.name)
        return self

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


class ReplicaStatus(Model):
    """Pod counts of one role in the current attempt."""

    pending: int | None = Field(default=None, ge=0, description="Pods created but not running yet.")
    active: int | None = Field(default=None, ge=0, description="Pods running.")
    succeeded: int | None = Field(default=None, ge=0, description="Pods that exited 0.")
    failed: int | None = Field(default=None, ge=0, description="Pods that failed.")


class LastFailure(Model):
    """The failure that decided the last gang restart, or the job's failure."""

    pod: str | None = Field(default=None, description="The pod that failed first.")
    container: str | None = Field(default=None, description="Its container that failed (empty for disruptions).")
    exit_code: int | None = Field(default=None, description="The container's exit code (0 for disruptions).")
    reason: str | None = Field(default=None, description="Why: Error, OOMKilled, Disrupted, PodDeleted...")
    message: str | None = Field(default=None, description="The container's termination message (its last 512 chars).")
    time: str | None = Field(default=None, description="When the container finished (RFC 3339).")


class Progress(Model):
    """Training progress as rank 0 last reported it."""

    step: int | None = Field(default=None, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    epoch: int | None = Field(default=None, description="Current epoch.")
    percent: str | None = Field(default=None, description="step / totalSteps, e.g. 42.0% (printer column Progress).")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eval: dict[str, float] | None = Field(default=None, description="Latest evaluation metrics, e.g. loss, accuracy.")
    samples_per_second: float | None = Field(default=None, description=(
        "Training throughput of the whole job, smoothed over about 20 s."))
    eta_seconds: int | None = Field(default=None, description=(
        "Estimated seconds until training completes, from the smoothed throughput."))


class CheckpointRef(Model):
    """The newest checkpoint written."""

    step: int | None = Field(default=None, description="The step it was written at.")


class ResumePoint(Model):
    """Where an attempt picked up training."""

    attempt: int | None = Field(default=None, description="The attempt (restartCount) that resumed.")
    step: int | None = Field(default=None, description="The checkpoint step it resumed from.")


class Artifact(Model):
    """The trained model: a directory in one of the model formats, with its digest."""

    uri: str | None = Field(default=None, description="pvc://<claim>/<path>/... or emptydir://<ns>/<job>/... (lost "
                                                      "with the pods).")
    digest: str | None = Field(default=None, description=(
        "sha256 digest: of the weights (kubeforge format) or of the manifest of every file (hf-transformers, "
        "torch-export)."))
    size_bytes: int | None = Field(default=None, description="Size of the model directory in bytes.")
    format: ModelFormat | None = Field(default=None, description=(
        "kubeforge (a recipe's model), hf-transformers or torch-export (what a command job wrote to "
        "$KUBEFORGE_OUTPUT_DIR)."))
    published_uri: str | None = Field(default=None, description=(
        "The copy under spec.output.uri (s3://BUCKET/PREFIX/...), once uploaded."))


class CompressionStatus(Model):
    """The compression stage in the status: attempts while it runs, then the summary the compression pod
    reported (its termination message) with the published artifact's location."""

    attempts: int | None = Field(default=None, description="Compression pods started so far (retries count).")
    disruptions: int | None = Field(default=None, description=(
        "Retries caused by disruptions (evictions, preemptions, deletions); not counted against backoffLimit."))
    last_failure: LastFailure | None = Field(default=None, description=(
        "The failure of the last compression pod that was retried; the next waits out the back-off from it."))
    compressed: bool | None = Field(default=None, description="Whether a candidate was published.")
    reason: CompressionReason | None = Field(default=None, description="Reason on the Compressed condition.")
    message: str | None = Field(default=None, description="What came of it, in a sentence.")
    report_path: str | None = Field(default=None, description="The full report, relative to the job's storage.")
    metric: str | None = Field(default=None, description="The metric the accuracy gate compared.")
    timing: Timing | None = Field(default=None, description=(
        "What the latencies time: forward (a forward pass of a batch) or decode (a causal LM's generation step of "
        "every sequence of the batch; speed-ups are ratios of decode tokens/s)."))
    budget: AccuracyBudget | None = Field(default=None, description="The accuracy budget applied.")
    chosen: str | None = Field(default=None, description="The method of the published candidate.")
    baseline: Summary | None = Field(default=None, description="The trained model, measured like the candidates.")
    candidates: list[CandidateSummary] | None = Field(default=None, max_length=8, description=(
        "Each method tried, in order: metric, drop, size, latency and speed-up at batch 1 and 8, verdict."))
    artifact: Artifact | None = Field(default=None, description="The published (compressed) model.")

    @classmethod
    def reported(cls, term: CompressionTermination, storage_uri: str, attempts: int) -> CompressionStatus:
        """The status of a finished stage: the pod's summary, its artifact path made a URI under the job's storage."""
        ref = term.artifact
        published = (Artifact(uri=f"{storage_uri}/{ref.path}", digest=ref.digest, size_bytes=ref.size_bytes,
                              format=ModelFormat.KUBEFORGE)
                     if ref else None)
        return cls(**term.model_dump(exclude={"artifact"}), artifact=published, attempts=attempts)


class TrainingJobStatus(Model):
    """What the operator observed; written only by the operator (status subresource)."""

    observed_generation: int | None = Field(default=None, description="The spec generation this status describes.")
    conditions: list[Condition] | None = Field(default=None, json_schema_extra=list_map("type"), description=(
        "Running, Restarting, Succeeded, Failed, Suspended, Compressed; Succeeded and Failed are terminal and "
        "never flip back."))
    state: State | None = Field(default=None, description="One word for kubectl get (printer column State).")
    reason: str | None = Field(default=None, description="The CamelCase reason behind state (kubectl get -o wide).")
    start_time: str | None = Field(default=None, description="When pods were first created, or the job resumed.")
    completion_time: str | None = Field(default=None, description="When the job succeeded or failed.")
    restart_count: int | None = Field(default=None, description="Gang restarts so far.")
    disruptions: int | None = Field(default=None, description="Restarts caused by disruptions (not counted against "
                                                              "backoffLimit).")
    replica_statuses: dict[str, ReplicaStatus] | None = Field(default=None, description=(
        "Pod counts per role (node, ps) of the current attempt."))
    last_failure: LastFailure | None = Field(default=None, description=(
        "The failure that decided the last restart or the job's failure."))
    progress: Progress | None = Field(default=None, description="Training progress as rank 0 last reported it.")
    metric: str | None = Field(default=None, max_length=64, description=(
        "The latest evaluation's headline metric, e.g. 'accuracy 0.967' or 'perplexity 12.3' (printer column "
        "Metric)."))
    history: dict[str, Curve] | None = Field(default=None, max_length=8, description=(
        "Metric curves (loss, evalLoss, accuracy, perplexity, samplesPerSecond), each one line of space-separated "
        f"step:value pairs, oldest first, e.g. '10:2.303 20:1.971'; thinned to at most {MAX_CURVE_POINTS} points."))
    last_checkpoint: CheckpointRef | None = Field(default=None, description="The newest checkpoint written.")
    resumed_from: ResumePoint | None = Field(default=None, description=(
        "The checkpoint the latest attempt resumed from (a `Resumed` Event says so when it happens)."))
    artifact: Artifact | None = Field(default=None, description=(
        "The trained model, once the job succeeded (for a LoRA fine-tune: the merged model)."))
    adapter_artifact: Artifact | None = Field(default=None, description=(
        "A LoRA fine-tune's adapter (a peft directory), beside the merged model."))
    evaluation: Evaluation | None = Field(default=None, description=(
        "A fine-tune's eval loss and perplexity before (the base model) and after, the share of trainable "
        "parameters and tokens/s."))
    compression: CompressionStatus | None = Field(default=None, description=(
        "The compression stage: the baseline and each method tried, the verdicts and the published artifact."))


class TrainingJob(Model):
    """Distributed PyTorch training on Kubernetes: a gang of worker pods, checkpoints, progress
    and a safetensors artifact."""

    crd_rules = (
        Rule(f"size(self.metadata.name) <= {MAX_NAME_LENGTH}", NAME_TOO_LONG,
             check=lambda j: len(j.metadata.name) <= MAX_NAME_LENGTH, error_path="metadata.name"),
    )

    api_version: str = Field(default=API_VERSION, description="kubeforge.dev/v1alpha1")
    kind: str = Field(default="TrainingJob", description="TrainingJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: TrainingJobSpec = Field(description="What to train and how.")
    status: TrainingJobStatus | None = Field(default=None, description="What the operator observed.")


CRD = CrdKind(
    group=GROUP, version=VERSION, kind="TrainingJob", plural=TRAININGJOB_PLURAL, model=TrainingJob,
    short_names=("tj",), categories=("kubeforge",), nested_defaults=False,
    columns=(
        Column("State", "string", ".status.state"),
        Column("Nodes", "integer", ".spec.nodes"),
        Column("Progress", "string", ".status.progress.percent"),
        Column("Metric", "string", ".status.metric"),
        Column("Restarts", "integer", ".status.restartCount"),
        Column("Compressed", "string", ".status.compression.chosen"),
        Column("Age", "date", ".metadata.creationTimestamp"),
        Column("Reason", "string", ".status.reason", priority=1),
    ),
)
