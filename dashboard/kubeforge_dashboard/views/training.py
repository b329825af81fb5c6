"""The training job page's view model: spec summary, a timeline of condition transitions, pods
(phase, node, restarts, last exit code), metric curves from `status.history`, the last checkpoint,
the artifact with its lineage (and a LoRA fine-tune's adapter beside it), and a fine-tune's
evaluation before and after. Pure: typed API models in, rows out. The compression report has
its own module (`compression`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kubeforge_api.constants import LABEL_RANK, LABEL_ROLE, State
from kubeforge_api.curves import decode
from kubeforge_api.finetune import Finetune
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob, TrainingJobStatus

from ..format import duration, number, size
from ..source import EventInfo, PodInfo

# Which history series go in which chart; any other series goes into the eval chart.
LOSS_SERIES = ("loss", "evalLoss")
THROUGHPUT_SERIES = ("samplesPerSecond",)
CHARTS = ("Loss", "Eval metric", "Samples per second")
FINISHED = frozenset({State.SUCCEEDED, State.FAILED, State.INTERRUPTED})


@dataclass(frozen=True)
class TimelineRow:
    time: str
    event: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class PodRow:
    name: str
    role: str
    rank: str
    phase: str
    ready: bool
    node: str
    restarts: int
    last_exit_code: int | None
    reason: str
    message: str


@dataclass(frozen=True)
class CurvePoint:
    series: str
    step: float
    value: float


def spec_summary(job: TrainingJob) -> list[tuple[str, str]]:
    s = job.spec
    out = [("Strategy", str(s.strategy)),
           ("Pods", f"{s.nodes} node{'s' if s.nodes != 1 else ''} x {s.procs_per_node} process"
                    f"{'es' if s.procs_per_node != 1 else ''}"
                    + (f" + {s.parameter_servers} parameter servers" if s.parameter_servers else ""))]
    if s.recipe is not None:
        r = s.recipe
        out += [("Recipe", f"{r.model} on {r.dataset}"),
                ("Training", f"{r.epochs} epochs, batch {r.batch_size}, lr {r.learning_rate:g}, {r.optimizer}"
                             + (f", at most {r.max_steps} steps" if r.max_steps else ""))]
    elif s.finetune is not None:
        out += finetune_summary(s.finetune)
    else:
        out.append(("Command", " ".join([*(s.command or []), *(s.args or [])])))
    limits = {**s.resources.requests, **s.resources.limits}
    if limits:
        out.append(("Resources per pod", ", ".join(f"{k}={v}" for k, v in sorted(limits.items()))))
    storage = s.storage
    if storage and storage.persistent_volume_claim:
        out.append(("Storage", f"claim {storage.persistent_volume_claim.claim_name}, "
                               f"path {storage.path or job.metadata.name}"))
    else:
        out.append(("Storage", "emptyDir (lost with the pods)"))
    rp = s.run_policy
    out.append(("Run policy", f"backoffLimit {rp.backoff_limit}"
                + (f", deadline {duration(rp.active_deadline_seconds)}" if rp.active_deadline_seconds else "")
                + (", suspended" if rp.suspend else "")))
    out.append(("Compression", "configured" if s.compression else "none"))
    return out


def finetune_summary(f: Finetune) -> list[tuple[str, str]]:
    """A fine-tune's method, base model, data and settings."""
    method = "full fine-tune"
    if f.method == "lora":
        method = (f"LoRA rank {f.lora.rank}, alpha {f.lora.alpha:g}, dropout {f.lora.dropout:g} on "
                  f"{', '.join(f.lora.target_modules)}")
    return [("Fine-tune", method), ("Base model", f.model.uri),
            ("Data", f"{f.data.uri} ({f.data.format})"
                     + (f", eval {f.eval_data.uri}" if f.eval_data else f", {f.eval_fraction:.0%} held back for eval")),
            ("Training", f"{f.epochs} epoch{'s' if f.epochs != 1 else ''}, batch {f.batch_size}, "
                         f"lr {f.learning_rate:g}, sequences of {f.max_seq_length} tokens"
                         + (", packed" if f.packing else "")
                         + (f", at most {f.max_steps} steps" if f.max_steps else ""))]


def evaluation_rows(status: TrainingJobStatus | None) -> list[tuple[str, str, str, str]]:
    """A fine-tune's eval loss and perplexity (metric, before, after, change), then the share of trainable
    parameters and training tokens/s; empty before the job reported any."""
    e = status.evaluation if status else None
    if e is None:
        return []
    rows = []
    for name in ("loss", "perplexity"):
        before = getattr(e.before, name) if e.before else None
        after = getattr(e.after, name) if e.after else None
        if before is None and after is None:
            continue
        ratio = after / before - 1 if before and after is not None else math.nan
        change = f"{ratio:+.1%}" if math.isfinite(ratio) else ""
        rows.append((name, number(before), number(after), change))
    if e.trainable_fraction is not None:
        rows.append(("trainable parameters", "", f"{e.trainable_fraction:.2%}", ""))
    if e.tokens_per_second is not None:
        rows.append(("training tokens/s", "", f"{e.tokens_per_second:,.0f}", ""))
    return rows


def finished(status: TrainingJobStatus | None) -> bool:
    """Whether nothing about the job changes any more (succeeded, failed, or a local run stopped)."""
    return bool(status and status.state in FINISHED)


def timeline(status: TrainingJobStatus | None) -> list[TimelineRow]:
    """Condition transitions (plus start and completion), oldest first."""
    if status is None:
        return []
    out = [TimelineRow(c.last_transition_time or "", c.type, c.status, c.reason or "", c.message or "")
           for c in status.conditions or []]
    if status.start_time:
        out.append(TimelineRow(status.start_time, "Started", "", "", "pods first created (or resumed)"))
    if status.completion_time:
        out.append(TimelineRow(status.completion_time, "Completed", "", str(status.state or ""), ""))
    return sorted(out, key=lambda r: (r.time, r.event))


def pod_rows(pods: list[PodInfo]) -> list[PodRow]:
    out = []
    for p in sorted(pods, key=lambda p: (p.labels.get(LABEL_ROLE, ""), int(p.labels.get(LABEL_RANK, "0") or 0),
                                         p.name)):
        last = next((c.exit_code if c.exit_code is not None else c.last_exit_code for c in p.containers
                     if c.exit_code is not None or c.last_exit_code is not None), None)
        reasons = [c.reason or c.last_reason for c in p.containers if c.reason or c.last_reason]
        out.append(PodRow(p.name, p.labels.get(LABEL_ROLE, ""), p.labels.get(LABEL_RANK, ""), p.phase, p.ready,
                          p.node, p.restarts, last, ", ".join(reasons), p.message))
    return out


def crashed(pod: PodInfo) -> bool:
    """Whether the pod has a previous container whose log is worth reading."""
    return any(c.restarts > 0 or c.last_exit_code is not None for c in pod.containers)


def curves(status: TrainingJobStatus | None) -> dict[str, list[CurvePoint]]:
    """Points per chart (CHARTS), from `status.history`; charts without points are left out."""
    history = (status.history if status else None) or {}
    charts: dict[str, list[CurvePoint]] = {c: [] for c in CHARTS}
    for series, points in history.items():
        chart = ("Loss" if series in LOSS_SERIES else "Samples per second" if series in THROUGHPUT_SERIES
                 else "Eval metric")
        charts[chart] += [CurvePoint(series, step, value) for step, value in decode(points)]
    return {c: pts for c, pts in charts.items() if pts}


def progress_line(status: TrainingJobStatus | None) -> str:
    p = status.progress if status else None
    if p is None or p.step is None:
        return "no progress reported yet"
    parts = [f"step {p.step}" + (f" of {p.total_steps}" if p.total_steps else "")]
    if p.percent:
        parts.append(p.percent)
    if p.epoch is not None:
        parts.append(f"epoch {p.epoch}")
    if p.loss is not None:
        parts.append(f"loss {number(p.loss)}")
    for k, v in sorted((p.eval or {}).items()):
        parts.append(f"eval {k} {number(v)}")
    if p.samples_per_second:
        parts.append(f"{p.samples_per_second:.0f} samples/s")
    if p.eta_seconds:
        parts.append(f"ETA {duration(p.eta_seconds)}")
    return ", ".join(parts)


def checkpoint_line(status: TrainingJobStatus | None) -> str:
    cp = status.last_checkpoint if status else None
    return f"step {cp.step}" if cp and cp.step is not None else "none written yet"


def artifact_rows(job: TrainingJob, serving: list[ServingJob]) -> list[tuple[str, str]]:
    """The artifact (uri, digest, size) and its lineage: the job that made it and who serves it."""
    art = job.status.artifact if job.status else None
    if art is None or not art.uri:
        return []
    served_by = [s.metadata.name for s in serving
                 if s.status and s.status.model and s.status.model.training_job == job.metadata.name]
    return [("URI", art.uri), ("Digest", art.digest or ""), ("Size", size(art.size_bytes)),
            ("Trained by", f"TrainingJob {job.metadata.namespace}/{job.metadata.name} ({job.spec.strategy}, "
                           f"{job.spec.world_size} ranks)"),
            ("Served by", ", ".join(served_by) or "no ServingJob"), *adapter_rows(job.status)]


def adapter_rows(status: TrainingJobStatus | None) -> list[tuple[str, str]]:
    """A LoRA fine-tune's adapter, shown beside the merged model it was merged into."""
    a = status.adapter_artifact if status else None
    if a is None or not a.uri:
        return []
    return [("Adapter URI", a.uri), ("Adapter digest", a.digest or ""), ("Adapter size", size(a.size_bytes))]


def event_rows(events: list[EventInfo]) -> list[dict[str, Any]]:
    return [{"time": e.time, "type": e.type, "reason": e.reason, "object": f"{e.object_kind}/{e.object_name}",
             "message": e.message, "count": e.count} for e in events]


def failure_line(status: TrainingJobStatus | None) -> str:
    """What failed last and where (`Error: exit code 3 in pod P, container C`); the failing process's own
    words are `failure_message`, shown apart (as code: a tenant wrote them)."""
    f = status.last_failure if status else None
    if f is None:
        return ""
    where = f" in pod {f.pod}" + (f", container {f.container}" if f.container else "") if f.pod else ""
    code = f"exit code {f.exit_code}" if f.exit_code is not None else ""
    return " ".join(x for x in (f"{f.reason or 'Failure'}:", code + where) if x).strip()


def failure_message(status: TrainingJobStatus | None) -> str:
    """The last failure's termination text (the cause a failing process wrote), or empty."""
    f = status.last_failure if status else None
    return (f.message or "") if f else ""
