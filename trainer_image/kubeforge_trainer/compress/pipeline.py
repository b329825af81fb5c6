"""The compression stage: load the parent (a Kubeforge artifact, or a model users bring with their
own evaluation data: `sources`), evaluate it, make one candidate per method that applies to it,
evaluate it, time it against the baseline (interleaved rounds, in the form the server runs it; a
causal LM by its decode steps, in the form the generation engine runs) and judge it (`gate`: the
accuracy budget, then faster or smaller as the objective asks; select first: stop at the first
accepted; best: try all), write every candidate as an artifact and the report next to them, and
name the published one. A Hugging Face parent's candidates are Kubeforge artifacts that also carry
its config and tokenizer files (`variants.hf`)"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.compression import (
    REPORT_FILE,
    ArtifactRef,
    Candidate,
    CompressionReport,
    CompressionSpec,
    Latency,
    Measured,
    Method,
    Verdict,
    speed_phrase,
)
from kubeforge_api.storage import ModelFormat
from torch import nn

from .. import artifacts
from ..evaldata import EvalSource
from ..variants import encoded, serving_form, weights_bytes
from ..variants.codec import stored_parameters
from ..variants.quantize import QuantizeError, backend, slow_int8_cause
from . import gate, measure, prune, sources
from .distill import distill
from .evaluate import Evaluation
from .parent import CompressInputError as CompressInputError
from .parent import NoApplicableMethod as NoApplicableMethod
from .parent import Parent, relative


@dataclass
class Made:
    """One candidate before measurement: the model, how to store it, and what the card records."""

    model: nn.Module
    arch: dict[str, Any]
    encoding: str = "fp32"
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the stored tensors, once encoded


@dataclass
class Outcome:
    report: CompressionReport
    models: list[nn.Module | None]  # in-memory candidates, index-aligned with report.candidates


def make(method: Method, parent: Parent) -> Made:
    """Apply one method to a copy of the parent's model."""
    model, arch = copy.deepcopy(parent.model).eval(), parent.arch
    if method.quantize:
        q = method.quantize
        b = backend(q.backend, q.mode)
        if q.mode == "dynamic":
            return Made(b.dynamic(model), arch, "int8-dynamic", b.name)
        assert parent.data is not None
        return Made(b.static(model, parent.data.x_train[: q.calibration_samples]), arch, "int8-static", b.name)
    data, recipe = parent.data, parent.recipe
    assert data is not None and recipe is not None  # `Parent.inapplicable` keeps other formats out
    if method.prune:
        p = method.prune
        if p.structured:
            shapes = prune.structured(model, arch, p.amount)
            prune.fine_tune(model, data, recipe, p.fine_tune_steps)
            return Made(model, {**arch, "shapes": shapes})
        params = prune.unstructured(model, p.amount)
        prune.fine_tune(model, data, recipe, p.fine_tune_steps)
        prune.fold(params)
        return Made(model, arch, extra={"sparsity": prune.sparsity(model)})
    assert method.distill is not None
    s_arch, student = distill(parent.model, arch, method.distill, data, recipe)
    return Made(student, s_arch)


def drop_of(base: float, value: float, higher_is_better: bool, relative: bool) -> float:
    d = base - value if higher_is_better else value - base
    return d / abs(base) if relative and base else d


@dataclass
class Stage:
    """What the steps of one run share: the parent, the spec, the baseline's numbers and warnings."""

    parent: Parent
    spec: CompressionSpec
    rounds: int
    metric: str = ""
    base_metrics: dict[str, float] = field(default_factory=dict)
    base_samples: list[measure.Samples] = field(default_factory=list)  # the baseline's rounds, every session
    warnings: list[str] = field(default_factory=list)

    @property
    def higher(self) -> bool:
        return self.metric == "accuracy"


def budget_metric(spec: CompressionSpec, parent: Parent) -> str:
    """The metric the gate compares: the budget's, else the task's (accuracy, or perplexity for an LM)."""
    ev = parent.evaluation
    metric = spec.accuracy_budget.metric or ("perplexity" if ev.task == "lm" else "accuracy")
    if metric not in ev.produced:
        raise CompressInputError(f"accuracyBudget.metric {metric} is not measured for {parent.directory.name} "
                                 f"(use one of {', '.join(ev.produced)})")
    return metric


def run(parent: Path, spec: CompressionSpec, out_dir: Path, storage: Path, threads: int,
        rounds: int = 7, eval_data: EvalSource | None = None) -> Outcome:
    """Make, evaluate, time and judge one candidate per method in order; write them and the report.
    `eval_data`: the user's evaluation data, for a model no recipe describes."""
    torch.set_num_threads(threads)
    loaded = sources.load(parent, storage, eval_data)
    st = Stage(loaded, spec, rounds, warnings=list(loaded.notes))
    st.metric = budget_metric(spec, loaded)
    st.base_metrics = loaded.evaluation.metrics(loaded.model)
    made: list[Made | None] = []
    cands: list[Candidate] = []
    for method in spec.methods:
        why = loaded.inapplicable(method)
        if why or (spec.select == "first" and any(c.verdict == Verdict.ACCEPTED for c in cands)):
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(),
                                   verdict=Verdict.FAILED if why else Verdict.SKIPPED, error=why or None))
            continue
        try:
            m = make(method, loaded)
        except (QuantizeError, ValueError, RuntimeError, NotImplementedError) as e:
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.FAILED,
                                   error=(str(e).splitlines() or [type(e).__name__])[0][:1024]))
            continue
        made.append(m)
        cands.append(_judged(st, method, m))
    return _finish(st, made, cands, out_dir, storage, threads)


def _judged(st: Stage, method: Method, m: Made) -> Candidate:
    """Evaluate, encode and time one candidate (interleaved with the baseline, in the form the server
    runs it), then judge it."""
    ev = st.parent.evaluation
    got = ev.metrics(m.model)
    drop = drop_of(st.base_metrics[st.metric], got[st.metric], st.higher, st.spec.accuracy_budget.relative)
    m.state = encoded(m.model, m.encoding, m.backend)
    blob = weights_bytes(m.state)
    timed = measure.session([ev.timed(st.parent.model), timed_form(st.parent, m)], ev.inputs, st.rounds)
    base, own = timed.samples
    st.base_samples.append(base)
    if timed.attempts > 1:
        st.warnings.append(f"{method.label()}: timed {timed.attempts} times (a batch-1 call took longer than a "
                           "batch-8 call: the machine was busy)")
    extra: dict[str, Any] = {}
    if "sparsity" in m.extra:
        extra = {"sparsity": m.extra["sparsity"], "compressed_size_bytes": len(zlib.compress(blob, 6))}
    cand = Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.ACCEPTED,
                     drop=drop if math.isnan(drop) else round(drop, 6), speedup=measure.speedup(base, own),
                     size_ratio=measure.sig(st.parent.weights_bytes / len(blob), 3), **extra,
                     measured=Measured(metric=got[st.metric], metrics=got, size_bytes=len(blob),
                                       parameters=stored_parameters(m.state), latency_ms=measure.latency(own),
                                       decode_tokens_per_s=decode_rate(ev, measure.latency(own))))
    warning = _slow_backend(m, cand)
    if warning:
        st.warnings.append(f"{cand.method}: {warning}")
    return gate.judge(cand, st.spec, bool(timed.invalid), warning, "decode" if ev.timing == "decode" else "")


def timed_form(parent: Parent, m: Made) -> nn.Module:
    """The candidate in the form the server runs it: a Hugging Face variant as the one loader rebuilds
    it (the server runs it so: eagerly with its attention mask, or a causal LM in the generation
    engine), anything else in its back end's serving form (torchao's compiled)."""
    model = parent.evaluation.timed(m.model)
    if parent.format == ModelFormat.HF_TRANSFORMERS:
        return model
    return serving_form(m.backend, m.encoding, model)


def decode_rate(ev: Evaluation, lat: Latency) -> float | None:
    """Single-stream decode tokens/s of a causal LM timed by its decode steps (None for other models)."""
    if ev.timing != "decode" or lat.batch1 <= 0:
        return None
    return measure.sig(1000.0 / lat.batch1, 4)


def _slow_backend(m: Made, cand: Candidate) -> str:
    """A warning when an int8 back end is measurably slower than fp32 here: it is off its fast path."""
    spread = cand.speedup.batch1_spread if cand.speedup else None
    if not m.backend or spread is None or spread.high >= 1.0:
        return ""
    assert cand.speedup is not None
    cause = slow_int8_cause(m.backend)
    return (f"the int8 back end {m.backend} is {speed_phrase(cand.speedup.batch1)} than fp32 on this machine"
            + (f" ({cause})" if cause else ""))


def _baseline(st: Stage) -> Measured:
    pooled = {b: [x for s in st.base_samples for x in s[b]] for b in measure.BATCHES}
    lat = measure.latency(pooled) if st.base_samples else Latency(batch1=0, batch8=0)
    unique = {t.data_ptr(): t.numel() for t in st.parent.model.state_dict().values()}  # tied weights once
    return Measured(metric=st.base_metrics[st.metric], metrics=st.base_metrics, size_bytes=st.parent.weights_bytes,
                    parameters=sum(unique.values()), latency_ms=lat,
                    decode_tokens_per_s=decode_rate(st.parent.evaluation, lat) if st.base_samples else None)


def _finish(st: Stage, made: list[Made | None], cands: list[Candidate], out_dir: Path, storage: Path,
            threads: int) -> Outcome:
    """Write every measured candidate as an artifact, choose, and write the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(made):
        if m is None:
            continue
        directory = out_dir / f"{i}-{cands[i].method}"
        info = _write(directory, m.state, _card(st, m, cands[i]), st.parent)
        ref = ArtifactRef(path=relative(directory, storage), digest=info["digest"], size_bytes=info["sizeBytes"])
        cands[i] = cands[i].model_copy(update={"artifact": ref})
    chosen = gate.choose(st.spec, cands)
    reason, message = gate.outcome(cands, chosen, st.metric)
    spec = st.spec
    report = CompressionReport(
        metric=st.metric, higher_is_better=st.higher, budget=spec.accuracy_budget, select=spec.select,
        threads=threads, parent=st.parent.ref, baseline=_baseline(st), candidates=cands, chosen=chosen,
        artifact=cands[chosen].artifact if chosen is not None else None, reason=reason, message=message,
        objective=spec.objective, min_speedup=spec.min_speedup, rounds=st.rounds, timing=st.parent.evaluation.timing,
        warnings=st.warnings[:16])
    tmp = out_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report.dump(), indent=2))
    os.replace(tmp, out_dir / REPORT_FILE)
    return Outcome(report, [m.model if m else None for m in made])


def _write(directory: Path, state: dict[str, torch.Tensor], card: dict[str, Any], parent: Parent) -> dict[str, Any]:
    """The candidate's artifact (atomically); a Hugging Face parent's also carries its config and
    tokenizer or image-processor files, as its card's `architecture.files` names them."""
    if parent.format != ModelFormat.HF_TRANSFORMERS:
        return artifacts.write(directory, state, card)
    staging = directory.with_name(directory.name + ".staging")
    info = artifacts.write(staging, state, card)
    for name in parent.arch.get("files") or {}:
        shutil.copyfile(parent.directory / name, staging / name)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    return {**info, "path": directory.name, "sizeBytes": sum(f.stat().st_size for f in directory.iterdir())}


def _card(st: Stage, m: Made, cand: Candidate) -> dict[str, Any]:
    parent = st.parent
    keep: dict[str, Any] = {k: parent.card[k] for k in ("dataset", "recipe", "strategy") if k in parent.card}
    if parent.evaluation.dataset:
        keep["dataset"] = parent.evaluation.dataset
    assert cand.measured is not None
    return {**keep, "architecture": m.arch, "metrics": cand.measured.metrics,
            "lineage": {**parent.card.get("lineage", {}), "parent": parent.ref.dump(),
                        "parentFormat": parent.format.value, "method": cand.method, "parameters": cand.parameters},
            "compression": {"method": cand.method, "parameters": cand.parameters, "encoding": m.encoding,
                            "backend": m.backend, "engine": torch.backends.quantized.engine if m.backend else "",
                            "metric": st.metric, "report": cand.model_copy(update={"artifact": None}).dump()}}
