"""Typed compression contract: `TrainingJob.spec.compression` (what to try and the accuracy budget),
the report the compression pod writes (baseline and every candidate, the gate's verdicts, the
published artifact) and the bounded termination message the operator reads back (it must fit the
kubelet's 4 KiB). Also the env contract of `python -m kubeforge_trainer compress` and a pure check of
a spec against the recipe it follows. Pydantic only: this package imports nothing of ours."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Final, Literal

from pydantic import Field, model_validator

from .model import TERMINATION_LIMIT, Finite, Model, NonNegative, RelativePath, Resources, Rule, Sha256Digest
from .sources import SecretRef, clean_uri_rule
from .storage import MAX_URI_LENGTH, STORAGE_URI_PATTERN, is_s3

REPORT_FILE: Final = "report.json"
Timing = Literal["forward", "decode"]  # what a latency times: a forward pass, or a causal LM's decode step
DEFAULT_INPUT: Final = "artifact"
DEFAULT_OUTPUT: Final = "compressed"


class CompressEnv(StrEnum):
    """Env the compression pod reads (args of the same names override; see kubeforge_trainer.compress)."""

    SPEC = "KUBEFORGE_COMPRESSION_SPEC"  # JSON CompressionSpec; else spec.compression of KUBEFORGE_SPEC
    JOB_SPEC = "KUBEFORGE_SPEC"  # the whole TrainingJob spec (same variable as training pods)
    STORAGE_DIR = "KUBEFORGE_STORAGE_DIR"  # the job's storage root (the claim's mount + spec.storage.path)
    INPUT = "KUBEFORGE_COMPRESS_INPUT"  # parent artifact dir, relative to storage (default "artifact")
    OUTPUT = "KUBEFORGE_COMPRESS_OUTPUT"  # where candidates + report.json go, relative (default "compressed")
    THREADS = "KUBEFORGE_COMPRESS_THREADS"  # torch threads for evaluation and timing: the pod's CPU request
    EVAL_DATA = "KUBEFORGE_COMPRESS_EVAL_DATA"  # local path of spec.compression.evalData (mounted or fetched)


class CompressionReason(StrEnum):
    """Reasons on the `Compressed` condition."""

    COMPRESSED = "Compressed"
    ACCURACY_BUDGET_EXCEEDED = "AccuracyBudgetExceeded"
    NOT_FASTER = "NotFaster"  # objective latency: no candidate within budget was measurably faster enough
    NOT_SMALLER = "NotSmaller"  # objective size: no candidate within budget was smaller
    MEASUREMENT_INVALID = "MeasurementInvalid"  # the timings could not be trusted (batch 1 slower than batch 8)
    COMPRESSION_FAILED = "CompressionFailed"


class Rejection(StrEnum):
    """Why a candidate was rejected (`Candidate.rejection`)."""

    ACCURACY = "AccuracyBudgetExceeded"  # the metric dropped more than the budget allows
    NOT_FASTER = "NotFaster"  # slower than, or as fast as, the baseline at batch 1
    NOT_MEASURABLY_FASTER = "NotMeasurablyFaster"  # faster, but within the spread of the measurement
    BELOW_MIN_SPEEDUP = "BelowMinSpeedup"  # measurably faster, but less than minSpeedup
    NOT_SMALLER = "NotSmaller"  # objective size: weights not smaller than the baseline's
    MEASUREMENT_INVALID = "MeasurementInvalid"  # its (or the baseline's) timings stayed implausible


def request_threads(cpu: int | str) -> int:
    """Timing threads for a CPU request (a Kubernetes quantity): the whole CPUs it guarantees, at least
    one ("2" -> 2, "1500m" -> 1, "500m" -> 1); more threads would time the neighbours' load too."""
    text = str(cpu).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 1
    return max(1, min(1024, math.floor(cores + 1e-9)))


def speed_phrase(ratio: float) -> str:
    """A speed-up as people say it: 2.677 -> '2.68x faster', 0.32 -> '3.12x slower', 0.059 -> '17x slower',
    within half a percent of 1 -> 'as fast'. Never a speed-up below one."""
    if not math.isfinite(ratio) or ratio <= 0:
        return "speed unknown"
    if abs(ratio - 1.0) < 0.005:
        return "as fast"
    return f"{times(ratio)}x faster" if ratio > 1 else f"{times(1 / ratio)}x slower"


def times(r: float) -> str:
    """A factor of at least 1 as printed: three significant digits below 10, whole numbers above."""
    return f"{r:.3g}" if r < 10 else f"{r:.0f}"


# ---------------------------------------------------------------------------------------------- spec


class Quantize(Model):
    """int8 post-training quantization."""

    mode: Literal["dynamic", "static"] = Field(
        default="dynamic", description="dynamic: int8 weights of Linear/LSTM layers, activations quantized at run "
        "time (MLPs, transformers); static: weights and activations int8 with calibration (CNNs, MLPs).")
    backend: Literal["auto", "eager", "torchao"] = Field(
        default="auto", description="Kernel back end: eager (torch.ao.quantization, fastest in eager mode on CPU), "
        "torchao (quantize_; fast only under torch.compile; dynamic mode only), auto (eager when present).")
    calibration_samples: int = Field(
        default=256, ge=8, le=100_000, description="Training samples fed through the model to calibrate "
        "activation ranges (static mode).")


class Prune(Model):
    """Magnitude pruning followed by a short fine-tune."""

    structured: bool = Field(
        default=True, description="true: remove whole neurons/channels (hidden units, conv channels, transformer "
        "FFN width) so layers really shrink; false: zero individual weights (reported as sparsity and compressed "
        "size only, never as a speed-up).")
    amount: float = Field(default=0.5, gt=0.0, le=0.95, description="Fraction of units (or weights) to remove.")
    fine_tune_steps: int = Field(default=100, ge=0, le=100_000,
                                 description="Optimizer steps on the training split after pruning.")


class Student(Model):
    """A smaller model of the teacher's family."""

    depth: int | None = Field(default=None, ge=1, le=64,
                              description="Layers (MLP hidden layers, GPT blocks); default: half the teacher's.")
    width: int | None = Field(default=None, ge=1, le=65536,
                              description="Hidden units (MLP), channels (CNN), dim (GPT); default: the teacher's.")


class Distill(Model):
    """Train a student from the teacher's outputs (soft targets) and the labels."""

    student: Student = Field(default_factory=Student, description="Shape of the student.")
    steps: int = Field(default=300, ge=1, le=1_000_000, description="Optimizer steps of student training.")
    temperature: float = Field(default=2.0, gt=0.0, le=100.0, description="Softmax temperature of the soft targets.")
    alpha: float = Field(default=0.5, ge=0.0, le=1.0,
                         description="Weight of the distillation loss; 1 - alpha weighs the label loss.")


class Method(Model):
    """One compression method: exactly one of quantize, prune, distill."""

    crd_rules = (Rule("[has(self.quantize), has(self.prune), has(self.distill)].filter(x, x).size() == 1",
                      "each method sets exactly one of quantize, prune, distill",
                      check=lambda m: sum(x is not None for x in (m.quantize, m.prune, m.distill)) == 1),)

    quantize: Quantize | None = Field(default=None, description="int8 quantization.")
    prune: Prune | None = Field(default=None, description="Structured or unstructured pruning.")
    distill: Distill | None = Field(default=None, description="Knowledge distillation into a smaller student.")

    @property
    def kind(self) -> str:
        return "quantize" if self.quantize else "prune" if self.prune else "distill"

    def label(self) -> str:
        """Short human name: quantize-dynamic, prune-structured, distill."""
        if self.quantize:
            return f"quantize-{self.quantize.mode}"
        if self.prune:
            return "prune-structured" if self.prune.structured else "prune-unstructured"
        return "distill"

    def parameters(self) -> dict[str, object]:
        inner = self.quantize or self.prune or self.distill
        assert inner is not None
        return inner.dump()


class AccuracyBudget(Model):
    """How much worse than the original a candidate may be."""

    crd_rules = (Rule("!has(self.maxPerplexityIncrease) || !has(self.metric) || self.metric == 'perplexity'",
                      "maxPerplexityIncrease judges perplexity: metric must be perplexity or unset", ".metric",
                      check=lambda b: b.max_perplexity_increase is None or b.metric == "perplexity"),)

    @model_validator(mode="before")
    @classmethod
    def _perplexity_budget(cls, data: object) -> object:
        """maxPerplexityIncrease is a relative budget on perplexity: the gate reads it as such."""
        if isinstance(data, dict):
            value = data.get("maxPerplexityIncrease", data.get("max_perplexity_increase"))
            if value is not None:
                return {**data, "metric": data.get("metric") or "perplexity", "maxDrop": value, "relative": True}
        return data

    metric: Literal["accuracy", "perplexity", "evalLoss"] | None = Field(
        default=None, description="Metric the gate compares; default: the recipe's (accuracy for classification, "
        "perplexity for text).")
    max_drop: float = Field(
        default=0.01, ge=0.0, le=1000.0, description="Largest allowed degradation, in the metric's units "
        "(accuracy is a fraction: 0.01 is one point) or, with relative, as a fraction of the baseline.")
    relative: bool = Field(default=False, description="maxDrop is a fraction of the baseline metric.")
    max_perplexity_increase: float | None = Field(default=None, ge=0.0, le=10.0, description=(
        "For language models: the largest relative increase of perplexity a candidate may have (0.02 is 2 %); "
        "it sets the metric to perplexity and replaces maxDrop and relative."))


class EvalData(Model):
    """The user's own evaluation data, for a model no recipe describes (a command job's artifact)."""

    crd_rules = (
        Rule("has(self.secretRef) == self.uri.startsWith('s3://')",
             "evalData.secretRef is required with an s3:// uri and allowed only with one", ".secretRef",
             check=lambda d: (d.secret_ref is not None) == is_s3(d.uri)),
        clean_uri_rule("uri"),
    )

    uri: str = Field(max_length=MAX_URI_LENGTH, pattern=STORAGE_URI_PATTERN, description=(
        "`pvc://CLAIM/PATH` or `s3://BUCKET/KEY` of the file (or, for images, the directory)."))
    format: Literal["jsonl", "images", "tensors", "text"] = Field(description=(
        "jsonl: one `{\"text\": ..., \"label\": ...}` per line (text classification, accuracy); images: a "
        "directory of LABEL/IMAGE files (image classification, accuracy); tensors: a safetensors file with "
        "`inputs` and `labels` (a torch.export model, accuracy); text: plain text (causal language model, "
        "perplexity)."))
    secret_ref: SecretRef | None = Field(default=None, description="With an s3:// uri: the credentials Secret.")
    max_samples: int = Field(default=2000, ge=1, le=1_000_000, description=(
        "Examples evaluated at most (the first ones), so a large file bounds the stage's time."))


class CompressionSpec(Model):
    """`spec.compression`: methods tried in order after training, gated by an accuracy budget and by
    what compression is for (faster or smaller)."""

    # A minSpeedup of 1 (the default) is what every spec dumped with its defaults holds: always allowed.
    crd_rules = (Rule("!has(self.minSpeedup) || self.minSpeedup == 1.0 || !has(self.objective) || "
                      "self.objective == 'latency'",
                      "minSpeedup applies to objective latency only (objective size publishes the smaller model "
                      "whatever its speed)", ".minSpeedup",
                      check=lambda s: s.min_speedup == 1.0 or s.objective == "latency"),)

    methods: list[Method] = Field(min_length=1, max_length=8,
                                  description="Methods tried in this order, each on the trained model.")
    accuracy_budget: AccuracyBudget = Field(default_factory=AccuracyBudget,
                                            description="The gate a candidate must pass to be published.")
    select: Literal["first", "best"] = Field(
        default="first", description="first: publish the first candidate that passes (later ones are skipped); "
        "best: try all, publish the passing one with the lowest batch-1 latency (objective latency) or the "
        "smallest weights (objective size).")
    objective: Literal["latency", "size"] = Field(
        default="latency", description="What compression is for. latency: a candidate must be measurably faster "
        "than the trained model at batch 1, timed in the form the inference server runs it, by at least "
        "minSpeedup; size: its weights must be smaller. A candidate that is not is Rejected with its numbers and "
        "never published, so `variant: best` serves the trained model instead.")
    min_speedup: float = Field(
        default=1.0, ge=1.0, le=1000.0, description="objective latency: the smallest batch-1 speed-up (trained "
        "model's median time / candidate's) a candidate must reach; whatever this says, the lower quartile of the "
        "per-round speed-ups must be above 1 (a difference inside the measurement's spread is not faster).")
    resources: Resources = Field(default_factory=Resources,
                                 description="Resources of the compression pod (CPU by default).")
    eval_data: EvalData | None = Field(default=None, description=(
        "Evaluate on this data instead of the recipe's: required for a command job's artifact (a Hugging Face "
        "or torch.export model)."))


def check_against_recipe(spec: CompressionSpec, recipe_model: str, recipe_dataset: str) -> list[str]:
    """Errors a spec has given the recipe it compresses (empty when fine); field paths are named."""
    errors: list[str] = []
    lm = recipe_model == "gpt"
    produced = {"perplexity", "evalLoss"} if lm else {"accuracy", "evalLoss"}
    metric = spec.accuracy_budget.metric
    if metric is not None and metric not in produced:
        errors.append(f"spec.compression.accuracyBudget.metric: {metric!r} is not produced by model {recipe_model} "
                      f"on dataset {recipe_dataset} (use one of {sorted(produced)})")
    for i, m in enumerate(spec.methods):
        where = f"spec.compression.methods[{i}]"
        if m.quantize and m.quantize.mode == "static" and lm:
            errors.append(f"{where}.quantize.mode: static int8 supports mlp and cnn models, not gpt (use dynamic)")
        if m.quantize and m.quantize.mode == "static" and m.quantize.backend == "torchao":
            errors.append(f"{where}.quantize.backend: torchao is supported for dynamic mode only")
        if m.quantize and m.quantize.mode == "dynamic" and recipe_model == "cnn":
            errors.append(f"{where}.quantize.mode: dynamic int8 only covers a CNN's last Linear layer (use static)")
        if m.distill and recipe_model == "cnn" and m.distill.student.depth not in (None, 2):
            errors.append(f"{where}.distill.student.depth: the cnn family has 2 conv layers; set width only")
    return errors


# -------------------------------------------------------------------------------------------- report


class ArtifactRef(Model):
    """Where an artifact lies on the job's storage and its weights' digest."""

    path: RelativePath = Field(description="Directory relative to the job's storage root.")
    digest: Sha256Digest = Field(description="sha256 of the safetensors weights file.")
    size_bytes: int = Field(ge=0, description="Bytes of the artifact directory (weights + card).")


class Spread(Model):
    """Lower and upper quartile of a value over the interleaved timing rounds."""

    low: NonNegative = Field(description="Lower quartile.")
    high: NonNegative = Field(description="Upper quartile.")


class Latency(Model):
    """Per batch size: the median over interleaved rounds (milliseconds per forward pass, or per decode
    step for a causal LM: see `CompressionReport.timing`; for a speed-up the trained model's time over
    the candidate's, round by round) and its spread."""

    batch1: NonNegative = Field(description="Median at batch 1.")
    batch8: NonNegative = Field(description="Median at batch 8.")
    batch1_spread: Spread | None = Field(default=None, description="Quartiles over the rounds at batch 1.")
    batch8_spread: Spread | None = Field(default=None, description="Quartiles over the rounds at batch 8.")


class Measured(Model):
    """Numbers measured for one model on the held-out split."""

    metric: float = Field(description="Value of the budget's metric.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Everything `evaluate` returned.")
    size_bytes: int = Field(ge=0, description="Bytes of the weights file.")
    parameters: int = Field(ge=0, description="Stored parameter count (int8 weights count as parameters).")
    latency_ms: Latency
    decode_tokens_per_s: float | None = Field(default=None, ge=0.0, description=(
        "Causal language models: single-stream decode tokens/s (1000 over the median ms of a decode step at "
        "batch 1)."))


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # within budget and faster (objective latency) or smaller (objective size)
    REJECTED = "rejected"  # over budget, or not faster / not smaller: `rejection` says which
    FAILED = "failed"  # the method could not run on this model
    SKIPPED = "skipped"  # select first: an earlier candidate was accepted


class Candidate(Model):
    method: str = Field(description="quantize-dynamic, quantize-static, prune-structured, prune-unstructured, distill.")
    parameters: dict[str, object] = Field(default_factory=dict, description="The method's settings as given.")
    verdict: Verdict
    measured: Measured | None = None
    drop: float | None = Field(default=None, description="Degradation vs baseline (relative if the budget is).")
    speedup: Latency | None = Field(default=None, description="Baseline latency / candidate latency per batch size.")
    size_ratio: float | None = Field(default=None, description="Baseline weights bytes / candidate weights bytes.")
    sparsity: float | None = Field(default=None, description="Unstructured pruning: fraction of zero weights.")
    compressed_size_bytes: int | None = Field(default=None, description="Weights file after zlib (sparsity honest).")
    artifact: ArtifactRef | None = None
    error: str | None = Field(default=None, max_length=1024, description="Why a failed method failed.")
    rejection: Rejection | None = Field(default=None, description="Why a rejected candidate was rejected.")
    note: str | None = Field(default=None, max_length=512, description=(
        "The verdict in words with its numbers (e.g. '3.0x slower at batch 1'), and warnings such as an int8 "
        "back end slower than fp32 on this machine."))


class CompressionReport(Model):
    """report.json next to the candidates; also `status.compression` (the operator may trim it)."""

    metric: str
    higher_is_better: bool
    budget: AccuracyBudget
    select: Literal["first", "best"]
    threads: int = Field(ge=1, description="torch threads used for every latency measurement.")
    parent: ArtifactRef
    baseline: Measured
    candidates: list[Candidate] = Field(max_length=8)
    chosen: int | None = Field(default=None, description="Index into candidates of the published one.")
    artifact: ArtifactRef | None = Field(default=None, description="The published (chosen) artifact.")
    reason: CompressionReason
    message: str = Field(max_length=1024)
    objective: Literal["latency", "size"] = Field(default="latency", description="spec.compression.objective.")
    min_speedup: float = Field(default=1.0, description="spec.compression.minSpeedup.")
    rounds: int = Field(default=0, ge=0, description="Interleaved timing rounds behind every median and spread.")
    timing: Timing = Field(default="forward", description=(
        "What a latency times. forward: one forward pass of a batch, as the inference server calls the model; "
        "decode (causal language models): one generation step of every sequence of the batch over a KV cache of "
        "its context, in the form the server generates with, so a speed-up is a ratio of decode tokens/s."))
    warnings: list[str] = Field(default_factory=list, max_length=16, description=(
        "What makes the numbers or a back end suspect (a re-measurement, an int8 back end slower than fp32)."))


# --------------------------------------------------------------------------------- termination message


class Summary(Model):
    """One model's numbers in the status: the task metric, weights bytes, latency per batch size."""

    metric: Finite | None = Field(default=None, description=(
        "The gate's metric on the held-out split (absent when it was not finite, e.g. a diverged model)."))
    size_bytes: int | None = Field(default=None, description="Bytes of the weights file.")
    latency_ms: Latency | None = Field(default=None, description=(
        "Median ms per forward pass (per decode step when timing is decode) at batch 1 and 8, with quartiles "
        "over the rounds."))
    decode_tokens_per_s: Finite | None = Field(default=None, description=(
        "Causal language models: single-stream decode tokens/s."))


class CandidateSummary(Summary):
    """One method tried, in the status."""

    method: str = Field(max_length=40, description="quantize-dynamic, quantize-static, prune-structured, "
                        "prune-unstructured or distill.")
    verdict: Verdict = Field(description="What the gate made of it.")
    parameters: dict[str, str] = Field(default_factory=dict, max_length=8, description="The method's settings.")
    drop: Finite | None = Field(default=None, description="Degradation vs the baseline (relative if the budget is).")
    speedup: Latency | None = Field(default=None, description=(
        "Baseline latency / candidate latency per batch size (median over rounds, with quartiles): below 1 is slower."))
    rejection: Rejection | None = Field(default=None, description="Why a rejected candidate was rejected.")
    note: str | None = Field(default=None, max_length=200, description=(
        "The verdict in words, e.g. '3.0x slower at batch 1 (2.8-3.2x)'."))


def _finite(x: float | None) -> float | None:
    """JSON (and so the status) has no NaN or infinity: a diverged model's metric is left out."""
    return x if x is not None and math.isfinite(x) else None


def _latency(lat: Latency | None) -> Latency | None:
    return lat if lat is not None and math.isfinite(lat.batch1) and math.isfinite(lat.batch8) else None


def _summary(c: Candidate) -> CandidateSummary:
    m = c.measured
    return CandidateSummary(method=c.method, verdict=c.verdict, drop=_finite(c.drop), speedup=_latency(c.speedup),
                            parameters={k[:40]: str(v)[:64] for k, v in list(c.parameters.items())[:8]},
                            metric=_finite(m.metric) if m else None, size_bytes=m.size_bytes if m else None,
                            latency_ms=_latency(m.latency_ms) if m else None,
                            decode_tokens_per_s=_finite(m.decode_tokens_per_s) if m else None, rejection=c.rejection,
                            note=c.note[:200] if c.note else None)


class CompressionTermination(Model):
    """What the compression pod writes to /dev/termination-log (<= 4 KiB): the condition to set, the
    published artifact and a summary; the full report is at reportPath on the storage."""

    compressed: bool
    reason: CompressionReason
    message: str = Field(max_length=512)
    report_path: str = Field(max_length=512)
    metric: str | None = Field(default=None, max_length=40, description="The metric the gate compared.")
    timing: Timing | None = Field(default=None, description="What a latency times (the report's timing).")
    budget: AccuracyBudget | None = None
    chosen: str | None = Field(default=None, max_length=40)
    artifact: ArtifactRef | None = None
    baseline: Summary | None = None
    candidates: list[CandidateSummary] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _published_means_compressed(self) -> CompressionTermination:
        """A published artifact and `compressed` go together, and only with the reason that says so."""
        if self.compressed != (self.artifact is not None) or \
                self.compressed != (self.reason == CompressionReason.COMPRESSED):
            raise ValueError("compressed, reason and artifact disagree")
        return self

    @classmethod
    def from_report(cls, report: CompressionReport, report_path: str) -> CompressionTermination:
        chosen = report.candidates[report.chosen].method if report.chosen is not None else None
        base = report.baseline
        return cls(compressed=report.chosen is not None, reason=report.reason, message=report.message[:512],
                   report_path=report_path, metric=report.metric[:40], timing=report.timing, budget=report.budget,
                   chosen=chosen, artifact=report.artifact,
                   baseline=Summary(metric=_finite(base.metric), size_bytes=base.size_bytes,
                                    latency_ms=_latency(base.latency_ms),
                                    decode_tokens_per_s=_finite(base.decode_tokens_per_s)),
                   candidates=[_summary(c) for c in report.candidates])

    def encode(self, limit: int = TERMINATION_LIMIT) -> str:
        """Compact JSON within `limit` bytes: sheds candidate details, then candidates, then the message."""
        current = self
        while True:
            text = json.dumps(current.dump(), separators=(",", ":"))
            if len(text.encode()) <= limit:
                return text
            if any(c.latency_ms or c.parameters or c.note or c.decode_tokens_per_s for c in current.candidates):
                slim = [c.model_copy(update={"latency_ms": None, "size_bytes": None, "parameters": {}, "note": None,
                                             "decode_tokens_per_s": None})
                        for c in current.candidates]
                current = current.model_copy(update={"candidates": slim})
            elif current.candidates:
                current = current.model_copy(update={"candidates": current.candidates[:-1]})
            elif current.message:
                current = current.model_copy(update={"message": current.message[: len(current.message) // 2]})
            else:
                return text[:limit]
